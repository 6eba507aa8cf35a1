//! The config file: typed values, loaded from TOML and validated once.
//!
//! Parsing ([`parse`]) walks the raw TOML and collects every problem it finds (unknown keys,
//! wrong types, bad values) instead of stopping at the first; [`validate`] then checks what
//! spans several places: endpoint references, overlapping prefixes, bucket pairing.

mod parse;
mod secrets;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::ByteSize;
pub use secrets::{redact_known, redact_url, remember, secrets_held, warn_if_exposed};
pub use validate::{BucketRef, check_pairing};

/// Largest number of prefixes one rule may list.
pub const MAX_PREFIXES: usize = 1000;
/// Largest prefix, in bytes of UTF-8.
pub const MAX_PREFIX_BYTES: usize = 1022;
/// Default number of attempts before a task goes to dead letters.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// Default time between the starts of two iterations.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// Default size from which an object is copied in parts.
pub const DEFAULT_MULTIPART_THRESHOLD: ByteSize = ByteSize(100 * ByteSize::MIB);

/// Default part size.
pub const DEFAULT_PART_SIZE: ByteSize = ByteSize(50 * ByteSize::MIB);

/// Default most key ranges per listing prefix.
pub const DEFAULT_LIST_RANGES: u32 = 16;

/// Default fewest source keys per key range.
pub const DEFAULT_LIST_RANGE_MIN_KEYS: u64 = 50_000;

/// A whole, validated config file.
#[derive(Clone, Debug)]
pub struct Config {
    /// Shared queue and ledger; `None` means a single process with an embedded queue.
    pub redis: Option<RedisConfig>,
    /// Named S3-compatible services.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Replication rules, in file order.
    pub rules: Vec<Rule>,
    /// What each priced endpoint charges (`[pricing.ENDPOINT]`), for `ferry estimate`.
    pub pricing: BTreeMap<String, Pricing>,
}

/// What an endpoint charges, in the user's currency: per GB read out of it, and per 1,000
/// requests of each class (class A: PUT, COPY, POST, LIST; class B: GET, HEAD and the rest;
/// DELETE is free, as on AWS).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pricing {
    /// Per GB (10^9 bytes) read out of the endpoint by another one.
    pub egress_per_gb: f64,
    /// Per 1,000 class A requests.
    pub class_a_per_1000: f64,
    /// Per 1,000 class B requests.
    pub class_b_per_1000: f64,
}

impl Config {
    /// Reads, parses and validates a config file; every problem found is returned together.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem::new(
                path.display().to_string(),
                format!("cannot read the config file: {e}"),
            )],
        })?;
        let config = Self::from_toml(&text)?;
        warn_if_exposed(path, &text);
        Ok(config)
    }

    /// Parses and validates config text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let (config, mut problems) = parse::parse(text)?;
        problems.extend(validate::validate(&config));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// What is wrong with `rule` as a rule of this config, by the checks a config file's
    /// rules pass, each problem at a path within the rule (`source.bucket`, `part_size`, ...),
    /// and a pairing of a bucket with itself at `rules`. For a rule built from elsewhere than
    /// the file (`ferry sync`'s arguments).
    pub fn check_rule(&self, rule: &Rule) -> Vec<Problem> {
        let mut problems = validate::rule_problems(self, rule);
        let pair: Vec<_> = BucketRef::of_rule(self, rule).into_iter().collect();
        problems.extend(
            check_pairing(&pair)
                .into_iter()
                .map(|message| Problem::new("rules", message)),
        );
        problems
    }

    /// The endpoint a rule side refers to; validation guarantees it exists.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.get(name)
    }

    /// The rule with this name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Where Redis is and which key namespace ferry uses there.
#[derive(Clone)]
pub struct RedisConfig {
    /// Connection URL (in a cluster, the first seed node); may carry a password, so it is
    /// never printed whole.
    pub url: String,
    /// Every key ferry writes starts with this.
    pub namespace: String,
    /// Talk to a Redis Cluster (`cluster = true`, or several `urls`): commands go to the
    /// master of each key's slot, following the cluster as it fails over.
    pub cluster: bool,
    /// Further seed nodes of the cluster, after `url` (from `urls`).
    pub seeds: Vec<String>,
    /// A PEM file of certificate authorities trusted on `rediss://` connections, besides the
    /// system's and `AWS_CA_BUNDLE`'s.
    pub ca_file: Option<std::path::PathBuf>,
}

impl RedisConfig {
    /// One Redis server at `url`, keys under `namespace`.
    pub fn new(url: impl Into<String>, namespace: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            namespace: namespace.into(),
            cluster: false,
            seeds: Vec::new(),
            ca_file: None,
        }
    }

    /// A Redis Cluster reached through the seed nodes `urls` (at least one).
    pub fn cluster(urls: &[String], namespace: impl Into<String>) -> Self {
        RedisConfig {
            url: urls.first().cloned().unwrap_or_default(),
            namespace: namespace.into(),
            cluster: true,
            seeds: urls.iter().skip(1).cloned().collect(),
            ca_file: None,
        }
    }

    /// The URL with its user and password replaced, safe for logs and errors; in a cluster,
    /// every seed, comma-separated.
    pub fn redacted_url(&self) -> String {
        std::iter::once(&self.url)
            .chain(&self.seeds)
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// [`RedisConfig::connection_url`] of every node given (one unless a cluster has seeds).
    /// Contains the secret: never log it.
    pub fn connection_urls(&self) -> Vec<String> {
        std::iter::once(&self.url)
            .chain(&self.seeds)
            .map(|u| encode_userinfo(u))
            .collect()
    }

    /// The URL as the Redis client parses it: user and password percent-encoded, so that a
    /// password holding `/`, `@`, `:` or `#` as written in the config reaches Redis whole.
    /// Contains the secret: never log it.
    pub fn connection_url(&self) -> String {
        encode_userinfo(&self.url)
    }

    /// Remembers the passwords of its URLs for [`redact_known`].
    pub fn remember_passwords(&self) {
        for url in std::iter::once(&self.url).chain(&self.seeds) {
            if let Some((_, userinfo, _)) = split_userinfo(url) {
                let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
                remember(password);
                remember(&String::from_utf8_lossy(&percent_decode(password)));
            }
        }
    }
}

/// `url` with its user and password percent-encoded (see [`RedisConfig::connection_url`]).
fn encode_userinfo(url: &str) -> String {
    let Some((scheme, userinfo, rest)) = split_userinfo(url) else {
        return url.to_string();
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    let enc = |s: &str| percent_encode(&percent_decode(s));
    match password {
        Some(p) => format!("{scheme}{}:{}@{rest}", enc(user), enc(p)),
        None => format!("{scheme}{}@{rest}", enc(user)),
    }
}

/// `scheme://`, the userinfo and the rest, when the URL has a userinfo. The userinfo ends at
/// the last `@`, since a password may hold any character, `/` and `@` included.
fn split_userinfo(url: &str) -> Option<(&str, &str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let at = rest.rfind('@')?;
    Some((&url[..scheme_end], &rest[..at], &rest[at + 1..]))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("namespace", &self.namespace)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// A named S3-compatible service.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The name used in rules.
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:9000`; `None` means AWS's own endpoints.
    pub url: Option<String>,
    /// Signing region.
    pub region: String,
    /// Path-style (`host/bucket/key`) rather than virtual-hosted addressing.
    pub path_style: bool,
    /// Where credentials come from.
    pub credentials: Credentials,
}

impl Endpoint {
    /// What identifies the service in pairing checks: its URL, or `aws:REGION`.
    pub fn identity(&self) -> String {
        match &self.url {
            Some(url) => url.trim_end_matches('/').to_ascii_lowercase(),
            None => format!("aws:{}", self.region),
        }
    }
}

/// Credentials for one endpoint. Secrets never implement `Display` and redact in `Debug`.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Keys given in the config file, or read from named environment variables at start.
    Static {
        /// The access key id (not secret by itself, still kept out of Redis).
        access_key_id: String,
        /// The secret key.
        secret_access_key: Secret,
    },
    /// A named profile from the shared AWS config and credentials files.
    Profile(String),
    /// The standard AWS provider chain (environment, profile, web identity, IMDS, ...).
    DefaultChain,
}

/// A secret string: printed as `***` by `Debug` and not printable by `Display`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret, and remembers it so that [`redact_known`] hides it wherever it shows up.
    pub fn new(value: String) -> Self {
        remember(&value);
        Secret(value)
    }
    /// The secret itself, for the one place that needs it (the SDK's credentials).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One replication pairing and its policies.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique name, `[a-z0-9-]{1,63}`.
    pub name: String,
    /// Where objects come from.
    pub source: Source,
    /// Where objects go.
    pub destination: Destination,
    /// When an existing destination object may be replaced.
    pub overwrite: Overwrite,
    /// Whether objects ferry did not write may be replaced.
    pub overwrite_unmanaged: bool,
    /// When the rule stops iterating.
    pub stop: Stop,
    /// Pause between iterations.
    pub interval: Duration,
    /// Whether deletions are propagated (managed objects only).
    pub delete: bool,
    /// Objects at or above this size are copied in parts.
    pub multipart_threshold: ByteSize,
    /// Size of each part (grown so no object needs over 10,000 parts).
    pub part_size: ByteSize,
    /// Attempts per task before it goes to dead letters.
    pub max_attempts: u32,
    /// Most key ranges a large listing prefix is split into, each listed and diffed on its
    /// own, in parallel (1 = never split).
    pub list_ranges: u32,
    /// Fewest source keys per range: a prefix is split into at most its estimated size over
    /// this many ranges.
    pub list_range_min_keys: u64,
    /// What to do with source objects that are archived and not restored.
    pub archived: Archived,
    /// S3 requests per second for the rule, both sides, every worker together (0 = no
    /// limit).
    pub max_requests_per_second: u64,
    /// Bytes per second the rule copies, every worker together (0 = no limit).
    pub max_bandwidth: ByteSize,
    /// Change notifications the rule follows between iterations; `None` = iterations only.
    pub events: Option<Events>,
    /// The bearer token a webhook request must carry (from `events_token_env`).
    pub events_token: Option<Secret>,
    /// Which objects it copies (`include`, `exclude`, `min_size`, `max_size`, `min_age`,
    /// `max_age`).
    pub filter: crate::filter::Filter,
    /// Where each iteration's report is written (`report`), if anywhere.
    pub report: Option<crate::report::ReportTarget>,
    /// Which versions of each key it copies (`versions`).
    pub versions: Versions,
    /// With `versions = "all"`: each copy carries its source version's id and Last-Modified
    /// as metadata (`version_marker`).
    pub version_marker: bool,
    /// The source as it was at this moment (ms since the epoch; `sync --at`): each key's
    /// version current then is copied, and nothing for a key absent or deleted then.
    pub at_ms: Option<i64>,
}

impl Rule {
    /// A rule from `source` to `destination` with every other setting at its default, as a
    /// `[[rules]]` table that gives only those would have it.
    pub fn with_defaults(name: String, source: Source, destination: Destination) -> Rule {
        Rule {
            name,
            source,
            destination,
            overwrite: Overwrite::IfNewer,
            overwrite_unmanaged: false,
            stop: Stop::Never,
            interval: DEFAULT_INTERVAL,
            delete: false,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            list_ranges: DEFAULT_LIST_RANGES,
            list_range_min_keys: DEFAULT_LIST_RANGE_MIN_KEYS,
            archived: Archived::Skip,
            max_requests_per_second: 0,
            max_bandwidth: ByteSize(0),
            events: None,
            events_token: None,
            filter: crate::filter::Filter::default(),
            report: None,
            versions: Versions::Current,
            version_marker: false,
            at_ms: None,
        }
    }
}

/// Which versions of each key a rule copies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Versions {
    /// The current version of each key (a key whose current version is a delete marker is
    /// not copied).
    #[default]
    Current,
    /// Every version and delete marker, oldest first, to a versioned destination.
    All,
}

impl Versions {
    /// The config file's names.
    pub const NAMES: [(&'static str, Versions); 2] =
        [("current", Versions::Current), ("all", Versions::All)];
}

/// Where a rule's change notifications come from (see PRODUCT.md, "Events").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Events {
    /// An SQS queue that receives the source bucket's notifications.
    Sqs {
        /// The queue's URL.
        queue_url: String,
        /// The endpoint whose credentials and region reach the queue (default: the source's).
        endpoint: String,
    },
    /// `POST /events/RULE` on the coordinator's `--events-listen` address.
    Webhook {
        /// The SNS topics whose messages are taken (empty: any topic, once the message's
        /// signature holds).
        sns_topics: Vec<String>,
    },
}

/// What to do with a source object in an archive class that is not restored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Archived {
    /// Skip it and count it as `archived` (the iteration can still succeed).
    #[default]
    Skip,
    /// Dead-letter it, with the reason.
    Fail,
}

impl Rule {
    /// With `events = { webhook = true }`: the SNS topics it takes (empty: any).
    pub fn webhook(&self) -> Option<&[String]> {
        match &self.events {
            Some(Events::Webhook { sns_topics }) => Some(sns_topics),
            _ => None,
        }
    }

    /// The source prefixes to list, sorted; one empty prefix for the whole bucket.
    ///
    /// Sorted non-overlapping prefixes list in key order one after another, so listing them in
    /// this order yields one globally sorted stream.
    pub fn listing_prefixes(&self) -> Vec<String> {
        if self.source.prefixes.is_empty() {
            return vec![String::new()];
        }
        let mut prefixes = self.source.prefixes.clone();
        prefixes.sort();
        prefixes
    }
}

/// The source side of a rule.
#[derive(Clone, Debug)]
pub struct Source {
    /// Endpoint name.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Prefixes to replicate; empty means the whole bucket.
    pub prefixes: Vec<String>,
}

/// The destination side of a rule.
#[derive(Clone, Debug)]
pub struct Destination {
    /// Endpoint name.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Storage class for every copy; `None` keeps the source object's class.
    pub storage_class: Option<StorageClass>,
}

/// When an existing destination object may be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overwrite {
    /// Never replace an existing destination object.
    Never,
    /// Replace it when the source's Last-Modified is newer.
    IfNewer,
    /// Replace it when size or ETag differ.
    IfDifferent,
    /// Replace it every iteration.
    Always,
}

impl Overwrite {
    /// Each setting by its name in the config file and on the command line.
    pub const NAMES: [(&'static str, Overwrite); 4] = [
        ("never", Overwrite::Never),
        ("if-newer", Overwrite::IfNewer),
        ("if-different", Overwrite::IfDifferent),
        ("always", Overwrite::Always),
    ];

    /// The setting named `text`; the error says which names there are.
    pub fn parse(text: &str) -> Result<Overwrite, String> {
        one_of(text, &Self::NAMES)
    }
}

/// The value `choices` names `given`; the error says which names there are.
pub(crate) fn one_of<T: Copy>(given: &str, choices: &[(&str, T)]) -> Result<T, String> {
    match choices.iter().find(|(name, _)| *name == given) {
        Some((_, value)) => Ok(*value),
        None => {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            Err(format!("{given:?} is not one of {}", names.join(", ")))
        }
    }
}

/// When a rule stops iterating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After one iteration.
    Once,
    /// After this many consecutive empty iterations.
    Empty(u32),
    /// Never.
    Never,
}

impl Stop {
    /// `once`, `never` or `empty:N`; the error says which forms there are.
    pub fn parse(text: &str) -> Result<Stop, String> {
        match text {
            "once" => Ok(Stop::Once),
            "never" => Ok(Stop::Never),
            _ => match text.strip_prefix("empty:").map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 1 => Ok(Stop::Empty(n)),
                _ => Err(format!(
                    "{text:?} is not a stop condition (\"once\", \"empty:N\" with N >= 1, or \"never\")"
                )),
            },
        }
    }
}

/// The S3 storage classes a rule may set on its copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageClass {
    /// STANDARD
    Standard,
    /// STANDARD_IA
    StandardIa,
    /// ONEZONE_IA
    OnezoneIa,
    /// INTELLIGENT_TIERING
    IntelligentTiering,
    /// GLACIER
    Glacier,
    /// GLACIER_IR
    GlacierIr,
    /// DEEP_ARCHIVE
    DeepArchive,
    /// REDUCED_REDUNDANCY
    ReducedRedundancy,
}

impl StorageClass {
    /// Every class, with its S3 name.
    pub const ALL: [(StorageClass, &'static str); 8] = [
        (StorageClass::Standard, "STANDARD"),
        (StorageClass::StandardIa, "STANDARD_IA"),
        (StorageClass::OnezoneIa, "ONEZONE_IA"),
        (StorageClass::IntelligentTiering, "INTELLIGENT_TIERING"),
        (StorageClass::Glacier, "GLACIER"),
        (StorageClass::GlacierIr, "GLACIER_IR"),
        (StorageClass::DeepArchive, "DEEP_ARCHIVE"),
        (StorageClass::ReducedRedundancy, "REDUCED_REDUNDANCY"),
    ];

    /// The S3 name, e.g. `STANDARD_IA`.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, s)| *s)
            .unwrap_or("STANDARD")
    }

    /// Parses an S3 name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, s)| *s == name).map(|(c, _)| *c)
    }

    /// Parses an S3 name; the error says which names there are.
    pub fn parse_named(name: &str) -> Result<Self, String> {
        Self::parse(name).ok_or_else(|| {
            let known: Vec<_> = Self::ALL.iter().map(|(_, n)| *n).collect();
            format!(
                "{name:?} is not a storage class (one of {})",
                known.join(", ")
            )
        })
    }
}

/// One problem in a config file: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// A path into the file, e.g. `rules[0] (photos-dr).source.prefixes[2]`.
    pub path: String,
    /// Why it is wrong.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a config file.
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid configuration: {n} problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
