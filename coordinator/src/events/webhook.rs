//! `POST /events/RULE`: S3 event notifications pushed over HTTP (AWS's JSON, an SNS
//! envelope, MinIO's webhook, Ceph RGW's HTTP push).
//!
//! A request is answered 2xx only once its tasks are in the queue, so a sender that retries
//! until it gets one loses nothing. Bad input enqueues nothing and never stops the listener:
//! 400 for a body that is not an event (with the reason), 401 for a missing or wrong token,
//! 404 for a rule that does not take webhook events, 405 for another method, 413 for a body
//! over 1 MiB, 503 when the queue or a store could not be reached (send it again).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ferry_common::config::{Events, Rule};
use ferry_common::events::{self, MAX_BODY, Notice};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::{Tally, apply};
use crate::Context;

/// How long an SNS subscription confirmation may take.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A bound events listener.
pub struct Listener {
    listener: TcpListener,
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
        Ok(Listener {
            listener: TcpListener::bind(addr).await?,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Serves the events endpoint until shutdown.
pub async fn serve(ctx: Context, listener: Listener) {
    let ctx = Arc::new(ctx);
    loop {
        let accepted = tokio::select! {
            a = listener.listener.accept() => a,
            _ = ctx.cancel.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accepting an events connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&ctx, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "events connection ended");
            }
        });
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body + "\n")));
    *r.status_mut() = status;
    r
}

async fn answer(ctx: &Context, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(name) = req.uri().path().strip_prefix("/events/") else {
        return reply(StatusCode::NOT_FOUND, "not found: POST /events/RULE".into());
    };
    let Some(rule) = ctx
        .config
        .rule(name)
        .filter(|r| r.events == Some(Events::Webhook))
    else {
        return reply(
            StatusCode::NOT_FOUND,
            format!("no rule named {name:?} takes webhook events"),
        );
    };
    if req.method() != Method::POST {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "use POST".into());
        r.headers_mut().insert(
            hyper::header::ALLOW,
            "POST".parse().expect("a valid header"),
        );
        return r;
    }
    if !authorized(rule, req.headers().get(AUTHORIZATION)) {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            "a missing or wrong token (Authorization: Bearer TOKEN)".into(),
        );
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            "Bearer realm=\"ferry\"".parse().expect("a valid header"),
        );
        return r;
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return too_large();
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    match events::parse(&body) {
        Err(e) => {
            Tally {
                invalid: 1,
                ..Tally::default()
            }
            .publish(&rule.name);
            reply(StatusCode::BAD_REQUEST, format!("not an S3 event: {e}"))
        }
        Ok(Notice::Test) => reply(StatusCode::OK, "test event received".into()),
        Ok(Notice::OtherSns(kind)) => reply(StatusCode::OK, format!("SNS {kind} noted")),
        Ok(Notice::SubscriptionConfirmation {
            subscribe_url,
            topic_arn,
        }) => match confirm(&subscribe_url).await {
            Ok(()) => {
                info!(rule = %rule.name, topic = %topic_arn, "confirmed the SNS subscription");
                reply(
                    StatusCode::OK,
                    format!("subscription to {topic_arn} confirmed"),
                )
            }
            Err(e) => {
                warn!(rule = %rule.name, topic = %topic_arn, error = %e,
                    "could not confirm the SNS subscription");
                reply(
                    StatusCode::BAD_GATEWAY,
                    format!("confirming the subscription failed: {e}"),
                )
            }
        },
        Ok(Notice::Records(records)) => match apply(ctx, rule, records).await {
            Ok(tally) => {
                let mut r = reply(
                    StatusCode::OK,
                    serde_json::to_string(&tally).unwrap_or_default(),
                );
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    "application/json".parse().expect("a valid header"),
                );
                r
            }
            Err(e) => {
                warn!(rule = %rule.name, error = %e, "could not apply webhook events");
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("could not enqueue the events, send them again: {e}"),
                )
            }
        },
    }
}

fn too_large() -> Response<Full<Bytes>> {
    reply(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is over {MAX_BODY} bytes"),
    )
}

/// Whether the request carries the rule's token: `Bearer TOKEN`, or HTTP Basic with the token
/// as the password (what SNS sends for `https://user:TOKEN@host/...` endpoints). A rule
/// without `events_token_env` takes any request.
fn authorized(rule: &Rule, header: Option<&hyper::header::HeaderValue>) -> bool {
    let Some(token) = &rule.events_token else {
        return true;
    };
    let Some(value) = header.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let given = if let Some(t) = value.strip_prefix("Bearer ") {
        t.trim().as_bytes().to_vec()
    } else if let Some(b) = value.strip_prefix("Basic ") {
        match base64_decode(b.trim()) {
            Some(pair) => match pair.iter().position(|&c| c == b':') {
                Some(i) => pair[i + 1..].to_vec(),
                None => return false,
            },
            None => return false,
        }
    } else {
        return false;
    };
    same(&given, token.expose().as_bytes())
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// Confirms an SNS subscription by fetching its `SubscribeURL`.
async fn confirm(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("SubscribeURL: {e}"))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("loading the system's CA certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Empty<Bytes>>(https);
    let answer = tokio::time::timeout(CONFIRM_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("SubscribeURL answered {}", answer.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes() {
        assert_eq!(
            base64_decode("c25zOnNlY3JldA==").as_deref(),
            Some(&b"sns:secret"[..])
        );
        assert_eq!(base64_decode("YQ").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("!!"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
