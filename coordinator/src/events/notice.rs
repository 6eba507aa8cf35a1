//! S3 event notifications, as AWS, SNS, SQS, MinIO and Ceph RGW deliver them, normalized to
//! one record per object change.
//!
//! Bodies accepted (see PRODUCT.md, "Events"):
//! - AWS's `{"Records": [...]}`, which MinIO's webhook and Ceph's HTTP push also send (MinIO
//!   adds top-level `EventName` and `Key`, and names events `s3:ObjectCreated:Put`);
//! - the same inside an SNS envelope (`"Type": "Notification"`, the records as a JSON string
//!   in `Message`), and SNS's `SubscriptionConfirmation`;
//! - S3's test event (`"Event": "s3:TestEvent"`), sent when a notification is configured.

use serde_json::Value;

/// The largest body the webhook reads.
pub const MAX_BODY: usize = 1024 * 1024;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `ObjectCreated:*`, or `ObjectRestore:Completed` (an archived object readable again).
    Created,
    /// `ObjectRemoved:*`, or a lifecycle expiration.
    Removed,
    /// Anything else (tagging, ACLs, replication, restore started...): counted and dropped.
    Other,
}

/// One object change, whatever delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// The bucket it happened in.
    pub bucket: String,
    /// The object key, decoded (notifications URL-encode it, `+` for a space).
    pub key: String,
    /// What changed.
    pub kind: EventKind,
    /// The event name without MinIO's `s3:` prefix, e.g. `ObjectCreated:Put`.
    pub name: String,
    /// The object's size, when given.
    pub size: Option<u64>,
    /// The object's ETag (unquoted), when given.
    pub etag: Option<String>,
    /// Orders the events of one key: upper-case hex, compared after right-padding the
    /// shorter with zeros ([`sequencer_cmp`]).
    pub sequencer: Option<String>,
    /// When the change happened, ms since the Unix epoch.
    pub time_ms: Option<u64>,
}

/// What a notification body holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Object changes (possibly none).
    Records(Vec<EventRecord>),
    /// S3's test event: nothing to do.
    Test,
    /// SNS asks to confirm a subscription by fetching `subscribe_url`.
    SubscriptionConfirmation {
        /// The URL that confirms it.
        subscribe_url: String,
        /// The topic, for the log.
        topic_arn: String,
    },
    /// An SNS message of another type (`UnsubscribeConfirmation`): nothing to do.
    OtherSns(String),
}

/// Why a body is not a notification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAnEvent(pub String);

fn bad(why: impl Into<String>) -> NotAnEvent {
    NotAnEvent(why.into())
}

/// An SNS message as delivered over HTTP: what its signature covers, and the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnsEnvelope {
    /// `Notification`, `SubscriptionConfirmation` or `UnsubscribeConfirmation`.
    pub kind: String,
    /// The topic that sent it.
    pub topic_arn: String,
    /// Every string field of the message, by name (those the signature covers among them).
    fields: std::collections::BTreeMap<String, String>,
}

impl SnsEnvelope {
    /// A field of the message, when present.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The text SNS signs (see "Verifying the signatures of Amazon SNS messages"): each
    /// covered field's name and value on lines of their own, in byte order of the names.
    /// A notification covers `Message`, `MessageId`, `Subject` (when present), `Timestamp`,
    /// `TopicArn` and `Type`; a (un)subscription confirmation `Message`, `MessageId`,
    /// `SubscribeURL`, `Timestamp`, `Token`, `TopicArn` and `Type`.
    pub fn string_to_sign(&self) -> Result<String, NotAnEvent> {
        let (covered, optional): (&[&str], &[&str]) = if self.kind == "Notification" {
            (
                &[
                    "Message",
                    "MessageId",
                    "Subject",
                    "Timestamp",
                    "TopicArn",
                    "Type",
                ],
                &["Subject"],
            )
        } else {
            (
                &[
                    "Message",
                    "MessageId",
                    "SubscribeURL",
                    "Timestamp",
                    "Token",
                    "TopicArn",
                    "Type",
                ],
                &[],
            )
        };
        let mut text = String::new();
        for name in covered {
            match self.field(name) {
                Some(value) => {
                    text.push_str(name);
                    text.push('\n');
                    text.push_str(value);
                    text.push('\n');
                }
                None if optional.contains(name) => {}
                None => return Err(bad(format!("SNS {} without {name}", self.kind))),
            }
        }
        Ok(text)
    }
}

/// Parses a notification body: an S3 event, S3's test event, or either inside an SNS envelope.
pub fn parse(body: &[u8]) -> Result<Notice, NotAnEvent> {
    parse_delivery(body).map(|(_, notice)| notice)
}

/// [`parse`], with the SNS envelope the body came in, if any (its signature is to be checked
/// before the notice is believed).
pub fn parse_delivery(body: &[u8]) -> Result<(Option<SnsEnvelope>, Notice), NotAnEvent> {
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let notice = parse_value(&value, true)?;
    let envelope = match (&notice, value.get("Type").and_then(Value::as_str)) {
        (_, Some(kind)) if value.get("Records").is_none() => {
            let fields = value
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect::<std::collections::BTreeMap<_, _>>();
            Some(SnsEnvelope {
                kind: kind.to_string(),
                topic_arn: fields.get("TopicArn").cloned().unwrap_or_default(),
                fields,
            })
        }
        _ => None,
    };
    Ok((envelope, notice))
}

fn parse_value(value: &Value, may_be_sns: bool) -> Result<Notice, NotAnEvent> {
    let Some(object) = value.as_object() else {
        return Err(bad("not a JSON object"));
    };
    if let Some(records) = object.get("Records") {
        let Some(items) = records.as_array() else {
            return Err(bad("Records is not an array"));
        };
        return items
            .iter()
            .enumerate()
            .map(|(i, r)| record(r).map_err(|e| bad(format!("Records[{i}]: {}", e.0))))
            .collect::<Result<Vec<_>, _>>()
            .map(Notice::Records);
    }
    if object.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notice::Test);
    }
    if may_be_sns && let Some(kind) = object.get("Type").and_then(Value::as_str) {
        let field = |name: &str| {
            object
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("SNS {kind} without {name}")))
        };
        return match kind {
            "Notification" => {
                let message = field("Message")?;
                let inner: Value = serde_json::from_str(message)
                    .map_err(|e| bad(format!("SNS Message is not JSON: {e}")))?;
                parse_value(&inner, false)
            }
            "SubscriptionConfirmation" => Ok(Notice::SubscriptionConfirmation {
                subscribe_url: field("SubscribeURL")?.to_string(),
                topic_arn: field("TopicArn")?.to_string(),
            }),
            other => Ok(Notice::OtherSns(other.to_string())),
        };
    }
    Err(bad(
        "neither S3 event records, an S3 test event nor an SNS message",
    ))
}

fn record(r: &Value) -> Result<EventRecord, NotAnEvent> {
    let text = |v: Option<&Value>, what: &str| -> Result<String, NotAnEvent> {
        v.and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(format!("{what} is missing or not a string")))
    };
    let name = text(r.get("eventName"), "eventName")?;
    let name = name.strip_prefix("s3:").unwrap_or(&name).to_string();
    let s3 = r.get("s3").ok_or_else(|| bad("s3 is missing"))?;
    let bucket = text(s3.pointer("/bucket/name"), "s3.bucket.name")?;
    let object = s3
        .get("object")
        .ok_or_else(|| bad("s3.object is missing"))?;
    let raw_key = text(object.get("key"), "s3.object.key")?;
    // Ceph RGW sends keys as they are; AWS, MinIO and the rest URL-encode them.
    let raw = r.get("eventSource").and_then(Value::as_str) == Some("ceph:s3");
    let decoded = if raw {
        Some(raw_key.clone())
    } else {
        decode_key(&raw_key)
    };
    let key = decoded.ok_or_else(|| {
        bad(format!(
            "s3.object.key {raw_key:?} is not a URL-encoded UTF-8 key"
        ))
    })?;
    if key.is_empty() {
        return Err(bad("s3.object.key is empty"));
    }
    // AWS sends numbers; some gateways send the size as a string.
    let size = match object.get("size") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| bad("s3.object.size is not a size"))?,
        ),
        Some(Value::String(s)) => Some(s.parse().map_err(|_| bad("s3.object.size is not a size"))?),
        Some(_) => return Err(bad("s3.object.size is not a size")),
    };
    let etag = object
        .get("eTag")
        .and_then(Value::as_str)
        .map(|e| e.trim_matches('"').to_string())
        .filter(|e| !e.is_empty());
    let sequencer = match object.get("sequencer").and_then(Value::as_str) {
        None | Some("") => None,
        Some(s) if s.bytes().all(|b| b.is_ascii_hexdigit()) => Some(s.to_ascii_uppercase()),
        Some(s) => return Err(bad(format!("s3.object.sequencer {s:?} is not hexadecimal"))),
    };
    let time_ms = match r.get("eventTime").and_then(Value::as_str) {
        None => None,
        Some(t) => Some(
            parse_time(t).ok_or_else(|| bad(format!("eventTime {t:?} is not an ISO-8601 time")))?,
        ),
    };
    let kind = if name.starts_with("ObjectCreated:") || name == "ObjectRestore:Completed" {
        EventKind::Created
    } else if name.starts_with("ObjectRemoved:") || name.starts_with("LifecycleExpiration:") {
        EventKind::Removed
    } else {
        EventKind::Other
    };
    Ok(EventRecord {
        bucket,
        key,
        kind,
        name,
        size,
        etag,
        sequencer,
        time_ms,
    })
}

/// An ISO-8601 UTC time (`2026-12-02T15:22:15.123Z`, any fraction) in ms since the epoch.
fn parse_time(t: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()?;
    time.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// Decodes a notification's key: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub fn decode_key(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Orders two sequencers of one key as S3 says to: right-pad the shorter with zeros, then
/// compare as strings.
pub fn sequencer_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let width = a.len().max(b.len());
    let pad = |s: &str| format!("{s:0<width$}");
    pad(a).cmp(&pad(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    fn aws(name: &str, key: &str, seq: &str) -> String {
        format!(
            r#"{{"Records":[{{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
            "eventTime":"2026-12-02T15:22:15.123Z","eventName":"{name}",
            "s3":{{"s3SchemaVersion":"1.0","bucket":{{"name":"photos"}},
            "object":{{"key":"{key}","size":42,"eTag":"0123abcd","sequencer":"{seq}"}}}}}}]}}"#
        )
    }

    fn one(body: &str) -> EventRecord {
        match parse(body.as_bytes()) {
            Ok(Notice::Records(mut r)) if r.len() == 1 => r.remove(0),
            other => panic!("expected one record, got {other:?}"),
        }
    }

    #[test]
    fn an_aws_record_is_normalized() {
        let r = one(&aws(
            "ObjectCreated:Put",
            "a/b+c%2Bd%C3%A9.txt",
            "0055aed6dcd90281e5",
        ));
        assert_eq!(r.bucket, "photos");
        assert_eq!(r.key, "a/b c+dé.txt");
        assert_eq!(r.kind, EventKind::Created);
        assert_eq!(r.size, Some(42));
        assert_eq!(r.etag.as_deref(), Some("0123abcd"));
        assert_eq!(r.sequencer.as_deref(), Some("0055AED6DCD90281E5"));
        assert_eq!(r.time_ms, Some(1_796_224_935_123));
        // moto writes microseconds and no zone.
        assert_eq!(
            parse_time("2026-12-02T15:22:15.123456"),
            Some(1_796_224_935_123)
        );
    }

    #[test]
    fn minio_and_removals_and_others() {
        assert_eq!(
            one(&aws("s3:ObjectCreated:Put", "k", "1")).name,
            "ObjectCreated:Put"
        );
        assert_eq!(
            one(&aws("ObjectRemoved:DeleteMarkerCreated", "k", "1")).kind,
            EventKind::Removed
        );
        assert_eq!(
            one(&aws("LifecycleExpiration:Delete", "k", "1")).kind,
            EventKind::Removed
        );
        assert_eq!(
            one(&aws("ObjectTagging:Put", "k", "1")).kind,
            EventKind::Other
        );
    }

    #[test]
    fn an_sns_envelope_is_opened() {
        let inner = aws("ObjectCreated:Copy", "x", "2");
        let body = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        assert_eq!(one(&body).key, "x");
        let confirm = serde_json::json!({"Type": "SubscriptionConfirmation",
            "SubscribeURL": "http://h/confirm", "TopicArn": "arn:t", "Token": "x"});
        assert_eq!(
            parse(confirm.to_string().as_bytes()),
            Ok(Notice::SubscriptionConfirmation {
                subscribe_url: "http://h/confirm".into(),
                topic_arn: "arn:t".into()
            })
        );
        let test = serde_json::json!({"Type": "Notification",
            "Message": r#"{"Service":"Amazon S3","Event":"s3:TestEvent"}"#});
        assert_eq!(parse(test.to_string().as_bytes()), Ok(Notice::Test));
    }

    #[test]
    fn an_sns_envelope_keeps_what_its_signature_covers() {
        let body = serde_json::json!({"Type": "Notification", "MessageId": "m",
            "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": aws("ObjectCreated:Put", "x", "1"),
            "Timestamp": "2026-12-07T00:00:00.000Z", "Signature": "c2ln",
            "SignatureVersion": "1", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/c.pem",
            "UnsubscribeURL": "https://u"});
        let (envelope, notice) = parse_delivery(body.to_string().as_bytes()).unwrap();
        let envelope = envelope.expect("an SNS envelope");
        assert!(matches!(notice, Notice::Records(ref r) if r.len() == 1));
        assert_eq!(envelope.topic_arn, "arn:aws:sns:us-east-1:1:t");
        assert_eq!(envelope.field("SignatureVersion"), Some("1"));
        let message = body["Message"].as_str().unwrap();
        assert_eq!(
            envelope.string_to_sign().unwrap(),
            format!(
                "Message\n{message}\nMessageId\nm\nTimestamp\n2026-12-07T00:00:00.000Z\n\
                 TopicArn\narn:aws:sns:us-east-1:1:t\nType\nNotification\n"
            )
        );
        let confirm = serde_json::json!({"Type": "SubscriptionConfirmation", "MessageId": "m",
            "TopicArn": "t", "Message": "hi", "Timestamp": "z", "SubscribeURL": "https://s"});
        let (envelope, _) = parse_delivery(confirm.to_string().as_bytes()).unwrap();
        let e = envelope.unwrap().string_to_sign().unwrap_err();
        assert_eq!(e.0, "SNS SubscriptionConfirmation without Token");
        // Plain records come in no envelope.
        let (envelope, _) = parse_delivery(aws("ObjectCreated:Put", "x", "1").as_bytes()).unwrap();
        assert_eq!(envelope, None);
    }

    #[test]
    fn minio_and_ceph_bodies_are_read() {
        // MinIO's webhook: top-level EventName and Key, records named with "s3:".
        let minio = r#"{"EventName":"s3:ObjectRemoved:Delete","Key":"photos/a%20b.jpg",
            "Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"",
            "eventTime":"2026-12-02T10:00:00.123Z","eventName":"s3:ObjectRemoved:Delete",
            "userIdentity":{"principalId":"minioadmin"},"s3":{"s3SchemaVersion":"1.0",
            "configurationId":"Config","bucket":{"name":"photos","arn":"arn:aws:s3:::photos"},
            "object":{"key":"a%20b.jpg","sequencer":"17C2D1B8A3E2F001"}}}]}"#;
        let r = one(minio);
        assert_eq!(
            (r.kind, r.key.as_str(), r.size),
            (EventKind::Removed, "a b.jpg", None)
        );
        assert_eq!(r.sequencer.as_deref(), Some("17C2D1B8A3E2F001"));
        // Ceph RGW's HTTP push: microseconds, opaque data, size as a number.
        let ceph = r#"{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3",
            "awsRegion":"default","eventTime":"2026-12-02T10:00:00.123456Z",
            "eventName":"ObjectCreated:CompleteMultipartUpload","userIdentity":{"principalId":"u"},
            "s3":{"s3SchemaVersion":"1.0","configurationId":"ferry","bucket":{"name":"photos",
            "ownerIdentity":{"principalId":"u"},"arn":"arn:aws:s3:::photos","id":"x"},
            "object":{"key":"dir/a+b%.bin","size":104857600,"eTag":"\"abc-2\"","versionId":"",
            "sequencer":"F7E6D75DC742D108","metadata":[],"tags":[]}},"eventId":"1","opaqueData":""}]}"#;
        let r = one(ceph);
        assert_eq!(
            (r.kind, r.size, r.etag.as_deref()),
            (EventKind::Created, Some(104_857_600), Some("abc-2"))
        );
        assert_eq!(r.time_ms, Some(1_796_205_600_123));
        assert_eq!(r.key, "dir/a+b%.bin", "Ceph's keys are not URL-encoded");
    }

    #[test]
    fn bad_bodies_say_why() {
        for (body, why) in [
            ("nope", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"Records": 3}"#, "Records is not an array"),
            (
                r#"{"Records": [{"eventName": "ObjectCreated:Put"}]}"#,
                "Records[0]: s3 is missing",
            ),
            (r#"{"hello": 1}"#, "neither"),
            (&aws("ObjectCreated:Put", "%ZZ", "1"), "not a URL-encoded"),
            (&aws("ObjectCreated:Put", "k", "xyz"), "not hexadecimal"),
        ] {
            let e = parse(body.as_bytes()).unwrap_err();
            assert!(e.0.contains(why), "{body}: {e}");
        }
    }

    #[test]
    fn sequencers_compare_right_padded() {
        assert_eq!(
            sequencer_cmp("0055AED6DCD90281E5", "0055AED6DCD90281E6"),
            Ordering::Less
        );
        assert_eq!(
            sequencer_cmp("0055AED6DCD9028", "0055AED6DCD90281E5"),
            Ordering::Less
        );
        assert_eq!(
            sequencer_cmp("0056", "0055AED6DCD90281E5"),
            Ordering::Greater
        );
        assert_eq!(sequencer_cmp("AB", "AB00"), Ordering::Equal);
    }
}
