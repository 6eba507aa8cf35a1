//! Storage errors and the single place that decides what an S3 failure means.

use std::fmt;

/// What a caller should do about a storage error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A transient fault (timeout, connection reset, 5xx): retry with backoff.
    Retryable,
    /// The service asks us to slow down (503 SlowDown, 429): retry, more slowly.
    Throttled,
    /// The object does not exist (any more).
    NotFound,
    /// A condition (If-Match, If-None-Match) failed: the object changed since it was planned.
    /// Never a reason to give up: the caller re-plans against what is there now.
    PreconditionFailed,
    /// The object is archived (GLACIER, DEEP_ARCHIVE, an archive tier) and not restored, so
    /// its bytes cannot be read (`InvalidObjectState`).
    Archived,
    /// Retrying will not help (access denied, bad request, no such bucket, ...).
    Permanent,
}

impl ErrorKind {
    /// Whether the operation may succeed if tried again unchanged.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Retryable | ErrorKind::Throttled)
    }
}

/// A failed storage operation: what was being done, on what, and why.
#[derive(Debug, thiserror::Error)]
pub struct StorageError {
    /// How to react.
    pub kind: ErrorKind,
    /// The S3 operation, e.g. `GetObject`.
    pub operation: &'static str,
    /// What it was done to, e.g. `s3://photos/2024/a.jpg on endpoint east`.
    pub target: String,
    /// HTTP status, when the service answered.
    pub status: Option<u16>,
    /// The service's error code (e.g. `InvalidPart`), when it gave one.
    pub code: Option<String>,
    /// The cause, as the service or the transport gave it.
    pub message: String,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.operation, self.target, self.message)?;
        if let Some(status) = self.status {
            write!(f, " (http {status})")?;
        }
        Ok(())
    }
}

/// Classifies an S3 failure from its HTTP status and error code. This is the only function
/// that decides whether an S3 error is retryable, throttling, not-found, a failed
/// precondition or permanent.
pub fn classify(status: Option<u16>, code: Option<&str>) -> ErrorKind {
    match code {
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "TooManyRequests"
            | "RequestLimitExceeded"
            | "TooManyRequestsException",
        ) => return ErrorKind::Throttled,
        // A vanished object, or a vanished multipart upload (aborted by another worker, or
        // already completed): the multipart code decides what that means.
        Some("NoSuchKey" | "NoSuchVersion" | "NoSuchUpload") => return ErrorKind::NotFound,
        // A missing bucket is a configuration problem, not a vanished object.
        Some("NoSuchBucket") => return ErrorKind::Permanent,
        Some("PreconditionFailed") => return ErrorKind::PreconditionFailed,
        Some("InvalidObjectState") => return ErrorKind::Archived,
        // A feature the server lacks (Garage: tagging) is a fact, not a fault.
        Some("NotImplemented") => return ErrorKind::Permanent,
        Some(
            "InternalError"
            | "ServiceUnavailable"
            | "RequestTimeout"
            | "RequestTimeTooSkewed"
            | "OperationAborted"
            | "BadDigest"
            | "IncompleteBody",
        ) => return ErrorKind::Retryable,
        _ => {}
    }
    match status {
        None => ErrorKind::Retryable,
        Some(404) => ErrorKind::NotFound,
        Some(412) => ErrorKind::PreconditionFailed,
        Some(429 | 503) => ErrorKind::Throttled,
        Some(408) => ErrorKind::Retryable,
        Some(s) if s >= 500 => ErrorKind::Retryable,
        Some(_) => ErrorKind::Permanent,
    }
}

/// The message for a transport failure whose cause is a server certificate the client does
/// not trust (unknown authority, expired, for another name), or `None` for any other failure.
/// Such a failure is permanent: the next try meets the same certificate.
pub(crate) fn untrusted_certificate(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let found = certificate_error(err)?;
    Some(format!(
        "the endpoint's TLS certificate is not trusted ({found}); for an endpoint under a \
         private certificate authority, set {} to the authority's PEM file",
        super::CA_BUNDLE_VAR
    ))
}

/// The rustls certificate error among `err` and its causes, looking inside `io::Error`s too
/// (whose `source` skips the error they wrap).
fn certificate_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(rustls::Error::InvalidCertificate(cert)) = e.downcast_ref::<rustls::Error>() {
            return Some(format!("{cert:?}"));
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(found) = certificate_error(inner)
        {
            return Some(found);
        }
        cause = e.source();
    }
    None
}

/// A transport failure (no answer from the server) in words: what happened, where, and what
/// to check, never a dump of the error's structure. `address` is the endpoint's URL.
pub(crate) fn transport_words(err: &(dyn std::error::Error + 'static), address: &str) -> String {
    if let Some(message) = untrusted_certificate(err) {
        return message;
    }
    let chain = error_chain(err);
    if let Some(io) = io_error(err) {
        use std::io::ErrorKind as Io;
        let words = match io.kind() {
            Io::ConnectionRefused => Some(format!(
                "connection refused at {address}: nothing listens there; check the endpoint's \
                 url and that the server is up"
            )),
            Io::TimedOut => Some(format!(
                "timed out connecting to {address}: the host does not answer"
            )),
            Io::ConnectionReset => Some(format!("the connection to {address} was reset")),
            Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof => {
                Some(format!("{address} closed the connection"))
            }
            Io::HostUnreachable | Io::NetworkUnreachable => Some(format!(
                "no route to {address}: the network cannot reach it"
            )),
            _ => None,
        };
        if let Some(words) = words {
            return words;
        }
    }
    if chain.contains("dns error") || chain.contains("failed to lookup address") {
        return format!(
            "the host name of {address} does not resolve ({}); check the endpoint's url",
            innermost(err)
        );
    }
    format!("{chain} ({address})")
}

/// The first `io::Error` among `err` and its causes.
fn io_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = e.source();
    }
    None
}

/// The last cause of `err`: usually the one that says what happened.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(c) = last.source() {
        last = c;
    }
    last.to_string()
}

/// An error and its causes, each said once: hyper's own message alone ("client error
/// (Connect)") rarely says what happened, and a wrapper often repeats its cause.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_error_inside_an_io_error_is_found_and_others_are_not() {
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, cert);
        let message = untrusted_certificate(&wrapped).expect("found inside io::Error");
        assert!(message.contains("UnknownIssuer"), "{message}");
        assert!(message.contains("AWS_CA_BUNDLE"), "{message}");

        let other =
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(untrusted_certificate(&other), None);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(untrusted_certificate(&refused), None);
    }

    #[test]
    fn classification_table() {
        assert_eq!(classify(Some(503), Some("SlowDown")), ErrorKind::Throttled);
        assert_eq!(classify(Some(503), None), ErrorKind::Throttled);
        assert_eq!(
            classify(Some(500), Some("InternalError")),
            ErrorKind::Retryable
        );
        assert_eq!(classify(Some(502), None), ErrorKind::Retryable);
        assert_eq!(classify(None, None), ErrorKind::Retryable);
        assert_eq!(classify(Some(404), None), ErrorKind::NotFound);
        assert_eq!(classify(Some(404), Some("NoSuchKey")), ErrorKind::NotFound);
        assert_eq!(
            classify(Some(404), Some("NoSuchBucket")),
            ErrorKind::Permanent
        );
        assert_eq!(
            classify(Some(404), Some("NoSuchUpload")),
            ErrorKind::NotFound
        );
        assert_eq!(classify(Some(412), None), ErrorKind::PreconditionFailed);
        assert_eq!(
            classify(Some(403), Some("InvalidObjectState")),
            ErrorKind::Archived
        );
        assert_eq!(
            classify(Some(501), Some("NotImplemented")),
            ErrorKind::Permanent
        );
        assert_eq!(
            classify(Some(403), Some("AccessDenied")),
            ErrorKind::Permanent
        );
        assert_eq!(
            classify(Some(400), Some("RequestTimeout")),
            ErrorKind::Retryable
        );
        assert_eq!(
            classify(Some(400), Some("InvalidArgument")),
            ErrorKind::Permanent
        );
    }

    #[test]
    fn a_refused_connection_is_said_in_words_with_the_address() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "os error 111");
        let words = transport_words(&refused, "http://127.0.0.1:9");
        assert!(
            words.starts_with("connection refused at http://127.0.0.1:9: "),
            "{words}"
        );
    }

    #[test]
    fn a_cause_repeated_by_its_wrapper_is_said_once() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "io error: {}", self.0)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrapper(std::io::Error::other("broken"));
        assert_eq!(error_chain(&e), "io error: broken");
    }
}
