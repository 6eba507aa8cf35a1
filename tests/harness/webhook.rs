//! The events webhook from outside: an HTTP/1.1 POST, and the bodies S3 and SNS send.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::Env;
use ferry_testkit::servers::unique;

/// An HTTP/1.1 POST to `127.0.0.1:port`; returns the status and body.
pub fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the webhook");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    // A body refused early (413) may be answered before it is all sent.
    s.write_all(body).ok();
    let mut answer = String::new();
    // The answer read up to a reset, if the server closed early.
    s.read_to_string(&mut answer).ok();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// An AWS S3 event body of one record.
pub fn event(name: &str, bucket: &str, raw_key: &str, sequencer: &str) -> String {
    serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-02T10:00:00.000Z", "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket},
               "object": {"key": raw_key, "size": 1, "sequencer": sequencer}}
    }]})
    .to_string()
}

pub fn tally(body: &str) -> serde_json::Value {
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{body:?}: {e}"))
}

/// Subscribes `endpoint` (a webhook URL, a token in its userinfo if any) to a new moto SNS
/// topic, which the source bucket `bucket` then notifies of every created object; returns
/// the topic's ARN.
pub async fn notify_through_sns(env: &Env, bucket: &str, endpoint: &str) -> String {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, TopicConfiguration};
    let sns_topic = sns_call(
        env,
        &[("Action", "CreateTopic"), ("Name", &unique("topic"))],
        "TopicArn",
    )
    .await;
    sns_call(
        env,
        &[
            ("Action", "Subscribe"),
            ("TopicArn", &sns_topic),
            ("Protocol", "http"),
            ("Endpoint", endpoint),
        ],
        "SubscriptionArn",
    )
    .await;
    env.src
        .client()
        .put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .topic_configurations(
                    TopicConfiguration::builder()
                        .topic_arn(&sns_topic)
                        .events(Event::S3ObjectCreated)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .expect("notifying the topic");
    sns_topic
}

/// One call of moto's SNS query API (no SNS SDK needed); returns the text of `<field>`.
pub async fn sns_call(env: &Env, params: &[(&str, &str)], field: &str) -> String {
    let body: String = params
        .iter()
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let port = env.src.url().rsplit(':').next().unwrap().parse().unwrap();
    let auth = "AWS4-HMAC-SHA256 Credential=testing/20261202/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0";
    let (code, out) = tokio::task::spawn_blocking(move || {
        post(
            port,
            "/",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", auth),
            ],
            body.as_bytes(),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 200, "{out}");
    let open = format!("<{field}>");
    let start = out.find(&open).unwrap_or_else(|| panic!("{out}")) + open.len();
    let end = out[start..].find('<').unwrap() + start;
    out[start..end].to_string()
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
