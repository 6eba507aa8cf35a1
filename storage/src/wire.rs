//! What both request paths to S3 share on the wire: upload bodies of a known length in
//! frames ([`SizedBody`]), the idle-timeout watchdog of uploads ([`watch_upload`]), ETags
//! quoted as conditions carry them, and how statuses, addresses and archives are named. The
//! SDK path (`s3.rs`) and the lean path (`direct.rs`) both use it; neither uses the other's.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferry_core::telemetry::Metric;
use http_body::{Frame, SizeHint};

use super::{BodyStream, ErrorKind, StorageError, Timeouts};

pub(crate) fn status_text(status: u16) -> String {
    match status {
        403 => "access denied".into(),
        404 => "not found".into(),
        412 => "precondition failed (the object changed)".into(),
        _ => format!("http status {status}"),
    }
}

/// An ETag as conditional headers carry it: in double quotes (RFC 9110), which some servers
/// insist on.
pub(crate) fn quoted(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

/// How far an upload has got, shared between its body and its watchdog.
pub(crate) struct Progress {
    started: Instant,
    /// Milliseconds since `started` of the last byte handed to the connection.
    last_ms: AtomicU64,
    /// Set once the whole body has been handed over.
    sent: AtomicBool,
}

impl Progress {
    pub(crate) fn new() -> Arc<Progress> {
        Arc::new(Progress {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            sent: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// An endpoint's URL as errors name it: the configured one, or AWS's for the region.
pub(crate) fn address(url: Option<&str>, region: &str) -> String {
    match url {
        Some(url) => url.to_string(),
        None => format!("https://s3.{region}.amazonaws.com"),
    }
}

/// Runs an upload under an idle timeout instead of a cap on its total time: it fails only
/// when no byte moved for `idle`, or when the body is all sent and no answer came within
/// `first_byte`.
pub(crate) async fn watch_upload<T>(
    upload: impl std::future::Future<Output = Result<T, StorageError>>,
    progress: &Progress,
    timeouts: Timeouts,
    operation: &'static str,
    target: impl FnOnce() -> String,
) -> Result<T, StorageError> {
    let watchdog = async {
        let tick = (timeouts.idle.min(timeouts.first_byte) / 4).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(tick).await;
            let quiet = progress.quiet_for();
            if progress.sent.load(Ordering::Relaxed) {
                if quiet >= timeouts.first_byte {
                    return format!(
                        "no answer within {:?} after the whole body was sent",
                        timeouts.first_byte
                    );
                }
            } else if quiet >= timeouts.idle {
                return format!("the upload made no progress for {:?}", timeouts.idle);
            }
        }
    };
    tokio::select! {
        result = upload => result,
        message = watchdog => {
            Metric::S3Errors.counter(&[("operation", operation.into()), ("status", "timeout".into())])
                .increment(1);
            Err(StorageError {
                kind: ErrorKind::Retryable,
                operation,
                target: target(),
                status: None,
                code: None,
                message,
            })
        }
    }
}

/// A request body of a known length, so the SDK can stream it with a trailing checksum
/// (aws-chunked encoding needs the decoded length up front).
///
/// Small chunks (a GET body arrives in pieces of a few KiB) are gathered into frames of up to
/// [`FRAME`] bytes: fewer, larger writes cost the receiving server far less CPU, and memory
/// stays bounded by one frame per upload. Every frame handed over counts as progress for the
/// upload's idle timeout.
pub(crate) struct SizedBody {
    inner: BodyStream,
    remaining: u64,
    pending: BytesMut,
    done: bool,
    progress: Arc<Progress>,
}

/// Most bytes gathered into one request body frame.
const FRAME: usize = 256 * 1024;

impl http_body::Body for SizedBody {
    type Data = Bytes;
    type Error = StorageError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StorageError>>> {
        let this = &mut *self;
        while !this.done && this.pending.len() < FRAME {
            match this.inner.as_mut().poll_next(cx) {
                // A chunk that fills a frame on its own goes as it is, without a copy.
                Poll::Ready(Some(Ok(chunk))) if this.pending.is_empty() && chunk.len() >= FRAME => {
                    this.remaining = this.remaining.saturating_sub(chunk.len() as u64);
                    this.progress.touch();
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(Some(Ok(chunk))) => this.pending.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.done = true,
                // The source wakes this task when more arrives.
                Poll::Pending => return Poll::Pending,
            }
        }
        this.progress.touch();
        if this.pending.is_empty() {
            this.progress.sent.store(true, Ordering::Relaxed);
            return Poll::Ready(None);
        }
        let frame = this.pending.split().freeze();
        this.remaining = this.remaining.saturating_sub(frame.len() as u64);
        if this.done {
            this.progress.sent.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl SizedBody {
    /// A body of `length` bytes from `body`, reporting progress to `progress`.
    pub(crate) fn new(body: BodyStream, length: u64, progress: Arc<Progress>) -> SizedBody {
        if length == 0 {
            progress.sent.store(true, Ordering::Relaxed);
        }
        SizedBody {
            inner: body,
            remaining: length,
            pending: BytesMut::new(),
            done: false,
            progress,
        }
    }
}

/// [`archived`], from the headers' text (`x-amz-storage-class`, `x-amz-archive-status`,
/// `x-amz-restore`).
pub(crate) fn archived_str(
    class: Option<&str>,
    status: Option<&str>,
    restore: Option<&str>,
) -> bool {
    let restored = restore.is_some_and(|r| r.contains("ongoing-request=\"false\""));
    let in_archive = matches!(class, Some("GLACIER" | "DEEP_ARCHIVE"))
        || matches!(status, Some("ARCHIVE_ACCESS" | "DEEP_ARCHIVE_ACCESS"));
    in_archive && !restored
}
