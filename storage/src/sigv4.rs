//! AWS Signature Version 4, in the `Authorization` header, as S3 checks it: the signer of the
//! lean request path ([`super::direct`]).
//!
//! S3 signs the path exactly as sent (percent-encoded once, never normalised), so the caller
//! passes the encoded path it puts on the wire. The day's signing key is derived once per
//! day and secret, not once per request: one HMAC signs a request, where a derivation costs
//! five. A test checks every signature against the AWS SDK's own signer.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// The payload hash of a request whose body is not hashed (its integrity is checked by
/// Content-MD5 or an `x-amz-checksum-*` header instead).
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Headers never signed: proxies and clients may change them on the way.
const UNSIGNED_HEADERS: [&str; 4] = [
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// A request's time as SigV4 writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// `YYYYMMDDTHHMMSSZ`, the `x-amz-date` header.
    pub(crate) date_time: String,
    /// Days since the Unix epoch: which signing key applies.
    pub(crate) day: u64,
}

impl Stamp {
    /// The stamp of `time` (UTC).
    pub(crate) fn at(time: SystemTime) -> Stamp {
        let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let day = secs / 86_400;
        let (y, m, d) = civil_from_days(day as i64);
        let rem = secs % 86_400;
        Stamp {
            date_time: format!(
                "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
                rem / 3600,
                rem / 60 % 60,
                rem % 60
            ),
            day,
        }
    }

    /// `YYYYMMDD`, the credential scope's date.
    pub(crate) fn date(&self) -> &str {
        &self.date_time[..8]
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A day's signing key for one secret, region and service.
#[derive(Clone)]
pub(crate) struct DayKey {
    /// The day it signs for (days since the epoch).
    pub(crate) day: u64,
    key: [u8; 32],
}

impl DayKey {
    /// Derives the key of `stamp`'s day.
    pub(crate) fn derive(secret: &str, stamp: &Stamp, region: &str, service: &str) -> DayKey {
        let k = hmac(format!("AWS4{secret}").as_bytes(), stamp.date().as_bytes());
        let k = hmac(&k, region.as_bytes());
        let k = hmac(&k, service.as_bytes());
        DayKey {
            day: stamp.day,
            key: hmac(&k, b"aws4_request"),
        }
    }
}

impl std::fmt::Debug for DayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DayKey {{ day: {}, key: *** }}", self.day)
    }
}

/// Who signs, and for what scope.
pub(crate) struct Scope<'a> {
    /// The access key id.
    pub(crate) access_key_id: &'a str,
    /// The signing region.
    pub(crate) region: &'a str,
    /// The signing name (`s3`).
    pub(crate) service: &'a str,
}

/// A request to sign, without a query string (GetObject and PutObject have none).
pub(crate) struct Signable<'a> {
    /// `GET`, `PUT`, ...
    pub(crate) method: &'a str,
    /// The encoded path, as sent.
    pub(crate) path: &'a str,
    /// Every header, with `host`, `x-amz-date`, `x-amz-content-sha256` and any session token
    /// already set: all are signed but [`UNSIGNED_HEADERS`].
    pub(crate) headers: &'a HeaderMap,
    /// The `x-amz-content-sha256` value.
    pub(crate) payload_hash: &'a str,
}

/// The `Authorization` header of `request` at `stamp`.
pub(crate) fn authorization(
    request: &Signable<'_>,
    stamp: &Stamp,
    scope: &Scope<'_>,
    key: &DayKey,
) -> String {
    let Signable {
        method,
        path,
        headers,
        payload_hash,
    } = *request;
    let mut names: Vec<&str> = headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| !UNSIGNED_HEADERS.contains(n))
        .collect();
    names.sort_unstable();
    let signed = names.join(";");

    let mut creq = Sha256::new();
    creq.update(method.as_bytes());
    creq.update(b"\n");
    creq.update(path.as_bytes());
    // The empty query string.
    creq.update(b"\n\n");
    for name in &names {
        creq.update(name.as_bytes());
        creq.update(b":");
        for (i, value) in headers.get_all(*name).iter().enumerate() {
            if i > 0 {
                creq.update(b",");
            }
            update_trimmed(&mut creq, value.as_bytes());
        }
        creq.update(b"\n");
    }
    creq.update(b"\n");
    creq.update(signed.as_bytes());
    creq.update(b"\n");
    creq.update(payload_hash.as_bytes());
    let creq = hex::encode(creq.finalize());

    let credential_scope = format!(
        "{}/{}/{}/aws4_request",
        stamp.date(),
        scope.region,
        scope.service
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{credential_scope}\n{creq}",
        stamp.date_time
    );
    let signature = hex::encode(hmac(&key.key, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed}, Signature={signature}",
        scope.access_key_id
    )
}

/// Feeds a header value as SigV4 canonicalises it: spaces trimmed at both ends and runs of
/// spaces collapsed to one (spaces only, as S3 does; tabs and other whitespace stay).
fn update_trimmed(hasher: &mut Sha256, value: &[u8]) {
    let start = value.iter().position(|&b| b != b' ');
    let Some(start) = start else { return };
    let end = value
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |e| e + 1);
    let value = &value[start..end];
    if !value.windows(2).any(|w| w == b"  ") {
        hasher.update(value);
        return;
    }
    let mut previous_space = false;
    for &b in value {
        if b == b' ' && previous_space {
            continue;
        }
        previous_space = b == b' ';
        hasher.update([b]);
    }
}

/// Percent-encodes an object key for a request path: everything but RFC 3986's unreserved
/// characters and `/`, as the AWS SDK encodes S3 keys.
pub(crate) fn encode_key(out: &mut String, key: &str) {
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use std::time::Duration;

    #[test]
    fn stamps_are_utc_calendar_dates() {
        let at = |secs| Stamp::at(UNIX_EPOCH + Duration::from_secs(secs)).date_time;
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_440_938_160), "20150830T123600Z");
        assert_eq!(at(4_107_542_399), "21000228T235959Z");
        assert_eq!(at(1_796_529_599), "20261206T035959Z");
    }

    /// The example of AWS's SigV4 documentation (GET of an S3 object, with a range), whose
    /// signature is published.
    #[test]
    fn the_documented_s3_get_example_signs_as_published() {
        let stamp = Stamp {
            date_time: "20130524T000000Z".into(),
            day: 15_849,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            "host",
            HeaderValue::from_static("examplebucket.s3.amazonaws.com"),
        );
        headers.insert("range", HeaderValue::from_static("bytes=0-9"));
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static(
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        );
        headers.insert("x-amz-date", HeaderValue::from_static("20130524T000000Z"));
        let scope = Scope {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            region: "us-east-1",
            service: "s3",
        };
        let key = DayKey::derive(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            &stamp,
            "us-east-1",
            "s3",
        );
        let request = Signable {
            method: "GET",
            path: "/test.txt",
            headers: &headers,
            payload_hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        };
        let auth = authorization(&request, &stamp, &scope, &key);
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_runs_of_spaces_collapsed() {
        let digest = |v: &[u8]| {
            let mut h = Sha256::new();
            update_trimmed(&mut h, v);
            hex::encode(h.finalize())
        };
        let plain = |v: &[u8]| hex::encode(Sha256::digest(v));
        assert_eq!(digest(b"  a  b   c "), plain(b"a b c"));
        assert_eq!(digest(b"a\t b"), plain(b"a\t b"));
        assert_eq!(digest(b"   "), plain(b""));
        assert_eq!(digest(b"x"), plain(b"x"));
    }

    /// The AWS SDK's signer, as the S3 client sets it up (single encoding, no normalisation,
    /// `x-amz-content-sha256`), for `headers` besides the ones it adds itself.
    fn reference(
        method: &str,
        url: &str,
        headers: &[(String, String)],
        time: SystemTime,
        token: Option<&str>,
    ) -> String {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode, sign,
        };
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_string),
            None,
            "test",
        );
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-3")
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            SignableBody::UnsignedPayload,
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        instructions
            .headers()
            .find(|(n, _)| *n == "authorization")
            .map(|(_, v)| v.to_string())
            .unwrap()
    }

    proptest::proptest! {
        /// Any key, any metadata, with or without a session token, on any day: the same
        /// `Authorization` as the AWS SDK's signer.
        #[test]
        fn signatures_agree_with_the_aws_sdk_signer(
            key in "\\PC{0,40}",
            put in proptest::bool::ANY,
            meta in proptest::collection::vec(("[a-z0-9-]{1,12}", "[ -~]{0,30}"), 0..5),
            token in proptest::option::of("[A-Za-z0-9+/=]{10,60}"),
            secs in 0u64..4_000_000_000,
        ) {
            let time = UNIX_EPOCH + Duration::from_secs(secs);
            let stamp = Stamp::at(time);
            let mut path = "/bucket/".to_string();
            encode_key(&mut path, &key);
            let url = format!("http://127.0.0.1:3900{path}");
            let method = if put { "PUT" } else { "GET" };
            let mut given = vec![("host".to_string(), "127.0.0.1:3900".to_string())];
            for (name, value) in &meta {
                given.push((format!("x-amz-meta-{name}"), value.clone()));
            }
            if put {
                given.push(("content-length".into(), "4096".into()));
                given.push(("content-md5".into(), "1B2M2Y8AsgTpgAmY7PhCfg==".into()));
            }
            let mut headers = HeaderMap::new();
            for (name, value) in &given {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            headers.insert("x-amz-content-sha256", HeaderValue::from_static(UNSIGNED_PAYLOAD));
            headers.insert("x-amz-date", HeaderValue::from_str(&stamp.date_time).unwrap());
            if let Some(t) = &token {
                headers.insert("x-amz-security-token", HeaderValue::from_str(t).unwrap());
            }
            headers.insert("user-agent", HeaderValue::from_static("ferry/test"));
            let scope = Scope { access_key_id: "AKIDEXAMPLE", region: "eu-west-3", service: "s3" };
            let day = DayKey::derive("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &stamp, "eu-west-3", "s3");
            let request = Signable { method, path: &path, headers: &headers, payload_hash: UNSIGNED_PAYLOAD };
            let ours = authorization(&request, &stamp, &scope, &day);
            proptest::prop_assert_eq!(ours, reference(method, &url, &given, time, token.as_deref()));
        }
    }

    #[test]
    fn keys_are_encoded_like_the_sdk_encodes_them() {
        let mut out = String::new();
        encode_key(&mut out, "a/b c+%#ü~._-:,=&?*'()!$;@[]");
        assert_eq!(
            out,
            "a/b%20c%2B%25%23%C3%BC~._-%3A%2C%3D%26%3F%2A%27%28%29%21%24%3B%40%5B%5D"
        );
    }
}
