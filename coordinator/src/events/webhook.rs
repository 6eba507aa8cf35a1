//! `POST /events/RULE`: S3 event notifications pushed over HTTP (AWS's JSON, an SNS
//! envelope, MinIO's webhook, Ceph RGW's HTTP push).
//!
//! A request is answered 2xx only once its tasks are in the queue, so a sender that retries
//! until it gets one loses nothing. Bad input enqueues nothing and never stops the listener:
//! 400 for a body that is not an event (with the reason), 401 for a missing or wrong token,
//! 403 for an SNS message that is not believed (see below), 404 for a rule that does not take
//! webhook events, 405 for another method, 413 for a body over 1 MiB, 503 when the queue or a
//! store could not be reached (send it again).
//!
//! An SNS message is believed when its signature holds ([`SnsCheck`]) and its topic is one
//! of the rule's `sns_topics` (when it names some). An unsigned one (an SNS-compatible sender
//! that is not AWS) is taken only on a rule with a token, since the token is then all that
//! vouches for it; a subscription is confirmed only on a signed confirmation whose
//! `SubscribeURL` is SNS's own, so a forged one makes the coordinator fetch nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::events::notice::{self as events, MAX_BODY, Notice, SnsEnvelope};
use bytes::Bytes;
use ferry_core::config::Rule;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::sns::SnsCheck;
use super::{Tally, apply};
use crate::Context;

/// A bound events listener.
pub struct Listener {
    listener: TcpListener,
    sns: Arc<SnsCheck>,
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port); SNS messages are checked with `sns`.
    pub async fn bind(addr: SocketAddr, sns: SnsCheck) -> std::io::Result<Listener> {
        Ok(Listener {
            listener: TcpListener::bind(addr).await?,
            sns: Arc::new(sns),
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
        let sns = listener.sns.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (ctx, sns) = (ctx.clone(), sns.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(&ctx, &sns, req).await) }
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

async fn answer(ctx: &Context, sns: &SnsCheck, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let rule = match route(ctx, &req) {
        Ok(rule) => rule,
        Err(refused) => return *refused,
    };
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
    let notice = match events::parse_delivery(&body) {
        Ok((Some(envelope), notice)) => match admit(sns, rule, &envelope).await {
            Ok(()) => Ok(notice),
            Err(why) => {
                warn!(rule = %rule.name, topic = %envelope.topic_arn, kind = %envelope.kind,
                    reason = %why, "refused an SNS message");
                Tally {
                    refused: 1,
                    ..Tally::default()
                }
                .publish(&rule.name);
                return reply(StatusCode::FORBIDDEN, format!("refused: {why}"));
            }
        },
        Ok((None, notice)) => Ok(notice),
        Err(e) => Err(e),
    };
    act(ctx, sns, rule, notice).await
}

/// The rule a request is for, when it may be: a webhook rule's path, POST, and the token
/// where the rule has one; else the answer that refuses it.
fn route<'c>(
    ctx: &'c Context,
    req: &Request<Incoming>,
) -> Result<&'c Rule, Box<Response<Full<Bytes>>>> {
    let Some(name) = req.uri().path().strip_prefix("/events/") else {
        return Err(Box::new(reply(
            StatusCode::NOT_FOUND,
            "not found: POST /events/RULE".into(),
        )));
    };
    let Some(rule) = ctx.config.rule(name).filter(|r| r.webhook().is_some()) else {
        return Err(Box::new(reply(
            StatusCode::NOT_FOUND,
            format!("no rule named {name:?} takes webhook events"),
        )));
    };
    if req.method() != Method::POST {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "use POST".into());
        r.headers_mut().insert(
            hyper::header::ALLOW,
            "POST".parse().expect("a valid header"),
        );
        return Err(Box::new(r));
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
        return Err(Box::new(r));
    }
    Ok(rule)
}

/// Does what a notice asks: confirms a subscription, or decides and enqueues its records.
async fn act(
    ctx: &Context,
    sns: &SnsCheck,
    rule: &Rule,
    notice: Result<Notice, events::NotAnEvent>,
) -> Response<Full<Bytes>> {
    match notice {
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
        }) => match sns.confirm(&subscribe_url).await {
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

/// Whether an SNS message is believed (see the module's documentation); why not, when not.
async fn admit(sns: &SnsCheck, rule: &Rule, message: &SnsEnvelope) -> Result<(), String> {
    let topics = rule.webhook().unwrap_or_default();
    if !topics.is_empty() && !topics.contains(&message.topic_arn) {
        return Err(format!(
            "topic {:?} is not one of rule {}'s sns_topics",
            message.topic_arn, rule.name
        ));
    }
    if message.field("Signature").is_some() {
        return sns
            .verify(message)
            .await
            .map_err(|e| format!("the SNS signature does not hold: {e}"));
    }
    if message.kind == "SubscriptionConfirmation" {
        return Err("an unsigned subscription confirmation is never confirmed".into());
    }
    if rule.events_token.is_none() {
        return Err(format!(
            "an unsigned SNS message is taken only with a token (rule {} has no events_token_env)",
            rule.name
        ));
    }
    Ok(())
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
