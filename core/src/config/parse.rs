//! Walks raw TOML into typed config values, collecting every problem on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use toml::{Table, Value};

use super::{
    Archived, Config, ConfigError, Credentials, DEFAULT_LIST_RANGE_MIN_KEYS, DEFAULT_LIST_RANGES,
    DEFAULT_MAX_ATTEMPTS, Destination, Endpoint, Events, Overwrite, Problem, RedisConfig, Rule,
    Secret, Source, Stop, StorageClass,
};
use crate::units::{ByteSize, parse_duration};

/// Parses what it can: the config (with defaults where a value was bad) and every problem.
pub(super) fn parse(text: &str) -> Result<(Config, Vec<Problem>), ConfigError> {
    let root: Table = toml::from_str(text).map_err(|e| ConfigError {
        problems: vec![Problem::new(
            "config",
            format!("not valid TOML: {}", e.message().trim()),
        )],
    })?;
    let mut problems = Vec::new();
    let top = Fields::new("", &root);

    let redis = top
        .table("redis", &mut problems)
        .map(|t| parse_redis(&t, &mut problems));
    let mut endpoints = BTreeMap::new();
    if let Some(table) = top.table("endpoints", &mut problems) {
        for (name, value) in table.table {
            let path = format!("endpoints.{name}");
            match value.as_table() {
                Some(t) => {
                    let fields = Fields::new(&path, t);
                    if let Some(ep) = parse_endpoint(name, &fields, &mut problems) {
                        endpoints.insert(name.clone(), ep);
                    }
                    fields.finish(&mut problems);
                }
                None => problems.push(Problem::new(path, "must be a table")),
            }
        }
    }
    let mut rules = Vec::new();
    if let Some(items) = top.array("rules", &mut problems) {
        for (i, value) in items.iter().enumerate() {
            let label = value
                .get("name")
                .and_then(Value::as_str)
                .map(|n| format!("rules[{i}] ({n})"))
                .unwrap_or_else(|| format!("rules[{i}]"));
            match value.as_table() {
                Some(t) => {
                    let fields = Fields::new(&label, t);
                    if let Some(rule) = parse_rule(&fields, &mut problems) {
                        rules.push(rule);
                    }
                    fields.finish(&mut problems);
                }
                None => problems.push(Problem::new(label, "must be a table")),
            }
        }
    }
    top.finish(&mut problems);
    Ok((
        Config {
            redis,
            endpoints,
            rules,
        },
        problems,
    ))
}

fn parse_redis(t: &Fields<'_>, problems: &mut Vec<Problem>) -> RedisConfig {
    let url = t.string("url", problems);
    let urls: Option<Vec<String>> = t.array("urls", problems).map(|items| {
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_str() {
                Some(s) => Some(s.to_string()),
                None => {
                    problems.push(Problem::new(
                        format!("{}[{i}]", t.path("urls")),
                        format!("must be a string, found {}", v.type_str()),
                    ));
                    None
                }
            })
            .collect()
    });
    let cluster_flag = t.bool("cluster", problems);
    let (all, cluster) = match (url, urls) {
        (Some(_), Some(_)) => {
            problems.push(Problem::new(
                t.path("urls"),
                "give either `url` (one server, or one cluster seed) or `urls` (cluster seeds), not both",
            ));
            (Vec::new(), false)
        }
        (None, Some(urls)) => {
            if urls.is_empty() {
                problems.push(Problem::new(
                    t.path("urls"),
                    "is empty: list at least one node of the cluster",
                ));
            }
            if cluster_flag == Some(false) && urls.len() > 1 {
                problems.push(Problem::new(
                    t.path("cluster"),
                    "is false, but several `urls` name the nodes of a cluster: set it to true, or give one `url`",
                ));
            }
            let cluster = cluster_flag.unwrap_or(urls.len() > 1);
            (urls, cluster)
        }
        (url, None) => (
            vec![url.unwrap_or_else(|| "redis://127.0.0.1:6379".to_string())],
            cluster_flag.unwrap_or(false),
        ),
    };
    check_redis_urls(t, &all, cluster, problems);
    let namespace = t
        .string("namespace", problems)
        .unwrap_or_else(|| "ferry".to_string());
    if namespace.is_empty() || namespace.contains(['{', '}', ' ']) {
        problems.push(Problem::new(
            t.path("namespace"),
            format!("{namespace:?} must be non-empty, without spaces or braces"),
        ));
    }
    let ca_file = t.string("ca_file", problems).map(std::path::PathBuf::from);
    if ca_file.is_some() && !all.iter().any(|u| u.starts_with("rediss://")) {
        problems.push(Problem::new(
            t.path("ca_file"),
            "only applies to TLS connections: use rediss:// in the URL",
        ));
    }
    t.finish(problems);
    let redis = if cluster {
        RedisConfig::cluster(&all, namespace)
    } else {
        RedisConfig::new(all.into_iter().next().unwrap_or_default(), namespace)
    };
    RedisConfig { ca_file, ..redis }
}

/// Every Redis URL is redis://, rediss:// or unix:// (and a cluster's not unix://).
fn check_redis_urls(t: &Fields<'_>, all: &[String], cluster: bool, problems: &mut Vec<Problem>) {
    let field = if t.table.get("urls").is_some() {
        "urls"
    } else {
        "url"
    };
    for url in all {
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://"))
        {
            problems.push(Problem::new(
                t.path(field),
                format!(
                    "{:?} is not a Redis URL (expected redis://, rediss:// or unix://)",
                    super::redact_url(url)
                ),
            ));
        } else if cluster && url.starts_with("unix://") {
            problems.push(Problem::new(
                t.path(field),
                format!(
                    "{:?}: a Redis Cluster is reached over TCP (redis:// or rediss://), not a unix socket",
                    super::redact_url(url)
                ),
            ));
        }
    }
}

fn parse_endpoint(name: &str, t: &Fields<'_>, problems: &mut Vec<Problem>) -> Option<Endpoint> {
    let url = t.string("url", problems);
    if let Some(u) = &url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        problems.push(Problem::new(
            t.path("url"),
            format!("{u:?} must start with http:// or https://"),
        ));
    }
    let region = t.string("region", problems);
    let path_style = t.bool("path_style", problems).unwrap_or(false);
    let key = t.string("access_key_id", problems);
    let secret = t.string("secret_access_key", problems);
    let key_env = t.string("access_key_id_env", problems);
    let secret_env = t.string("secret_access_key_env", problems);
    let profile = t.string("profile", problems);

    let sources = [
        key.is_some() || secret.is_some(),
        key_env.is_some() || secret_env.is_some(),
        profile.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        problems.push(Problem::new(
            t.path(""),
            "give credentials one way only: access_key_id/secret_access_key, \
             access_key_id_env/secret_access_key_env, or profile",
        ));
    }
    let credentials = match (key, secret, key_env, secret_env, profile) {
        (Some(k), Some(s), ..) => Credentials::Static {
            access_key_id: k,
            secret_access_key: Secret::new(s),
        },
        (Some(_), None, ..) | (None, Some(_), ..) => {
            problems.push(Problem::new(
                t.path(""),
                "access_key_id and secret_access_key must be given together",
            ));
            Credentials::DefaultChain
        }
        (None, None, Some(ke), Some(se), _) => {
            let k = read_env(&ke, &t.path("access_key_id_env"), problems);
            let s = read_env(&se, &t.path("secret_access_key_env"), problems);
            match (k, s) {
                (Some(k), Some(s)) => Credentials::Static {
                    access_key_id: k,
                    secret_access_key: Secret::new(s),
                },
                // Already reported; keep the endpoint so rules that use it are still checked.
                _ => Credentials::DefaultChain,
            }
        }
        (None, None, Some(_), None, _) | (None, None, None, Some(_), _) => {
            problems.push(Problem::new(
                t.path(""),
                "access_key_id_env and secret_access_key_env must be given together",
            ));
            Credentials::DefaultChain
        }
        (None, None, None, None, Some(p)) => Credentials::Profile(p),
        (None, None, None, None, None) => Credentials::DefaultChain,
    };
    let region = region.unwrap_or_else(|| "us-east-1".to_string());
    Some(Endpoint {
        name: name.to_string(),
        url: url.map(|u| u.trim_end_matches('/').to_string()),
        region,
        path_style,
        credentials,
    })
}

fn read_env(var: &str, path: &str, problems: &mut Vec<Problem>) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            problems.push(Problem::new(
                path,
                format!("environment variable {var} is not set"),
            ));
            None
        }
    }
}

fn parse_rule(t: &Fields<'_>, problems: &mut Vec<Problem>) -> Option<Rule> {
    let name = t.string("name", problems);
    if name.is_none() && t.table.get("name").is_none() {
        problems.push(Problem::new(t.path("name"), "is required"));
    }
    let source = parse_source(t, problems);
    let destination = parse_destination(t, problems);
    let overwrite = t.choice(
        "overwrite",
        &[
            ("never", Overwrite::Never),
            ("if-newer", Overwrite::IfNewer),
            ("if-different", Overwrite::IfDifferent),
            ("always", Overwrite::Always),
        ],
        Overwrite::IfNewer,
        problems,
    );
    let overwrite_unmanaged = t.bool("overwrite_unmanaged", problems).unwrap_or(false);
    let stop = t.string("stop", problems).map_or(Stop::Never, |s| {
        parse_stop(&s).unwrap_or_else(|e| {
            problems.push(Problem::new(t.path("stop"), e));
            Stop::Never
        })
    });
    let interval = t
        .duration("interval", problems)
        .unwrap_or(Duration::from_secs(15 * 60));
    let delete = t.bool("delete", problems).unwrap_or(false);
    let multipart_threshold = t
        .size("multipart_threshold", problems)
        .unwrap_or(ByteSize(100 * ByteSize::MIB));
    let part_size = t
        .size("part_size", problems)
        .unwrap_or(ByteSize(50 * ByteSize::MIB));
    let max_attempts = t.integer_as("max_attempts", DEFAULT_MAX_ATTEMPTS, problems, |n| {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("{n} is out of range (1 to 1000)"))
    });
    let list_ranges = t.integer_as("list_ranges", DEFAULT_LIST_RANGES, problems, |n| {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=256).contains(n))
            .ok_or_else(|| format!("{n} is out of range (1 to 256)"))
    });
    let list_range_min_keys = t.integer_as(
        "list_range_min_keys",
        DEFAULT_LIST_RANGE_MIN_KEYS,
        problems,
        |n| {
            u64::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{n} must be 1 or more"))
        },
    );

    let archived = t.choice(
        "archived",
        &[("skip", Archived::Skip), ("fail", Archived::Fail)],
        Archived::Skip,
        problems,
    );

    let max_requests_per_second = t.integer_as("max_requests_per_second", 0, problems, |n| {
        u64::try_from(n).map_err(|_| format!("{n} must be 0 (no limit) or more"))
    });
    let max_bandwidth = t.size("max_bandwidth", problems).unwrap_or(ByteSize(0));
    let source_endpoint = source.as_ref().and_then(|(e, _, _)| e.clone());
    let (events, events_token) = parse_rule_events(t, source_endpoint, problems);
    let filter = parse_filter(t, problems);

    let (src_endpoint, src_bucket, prefixes) = source?;
    let (dst_endpoint, dst_bucket, storage_class) = destination?;
    Some(Rule {
        name: name?,
        source: Source {
            endpoint: src_endpoint?,
            bucket: src_bucket?,
            prefixes,
        },
        destination: Destination {
            endpoint: dst_endpoint?,
            bucket: dst_bucket?,
            storage_class,
        },
        overwrite,
        overwrite_unmanaged,
        stop,
        interval,
        delete,
        multipart_threshold,
        part_size,
        max_attempts,
        list_ranges,
        list_range_min_keys,
        archived,
        max_requests_per_second,
        max_bandwidth,
        events,
        events_token,
        filter,
    })
}

/// A rule's `events` and `events_token_env` (read from the environment now).
fn parse_rule_events(
    t: &Fields<'_>,
    source_endpoint: Option<String>,
    problems: &mut Vec<Problem>,
) -> (Option<Events>, Option<Secret>) {
    let events = t
        .table("events", problems)
        .and_then(|e| parse_events(&e, source_endpoint, problems));
    let events_token = t.string("events_token_env", problems).and_then(|var| {
        if !matches!(events, Some(Events::Webhook { .. })) {
            problems.push(Problem::new(
                t.path("events_token_env"),
                "only applies with events = { webhook = true }",
            ));
        }
        read_env(&var, &t.path("events_token_env"), problems).map(Secret::new)
    });
    (events, events_token)
}

/// A rule's filters: `include`, `exclude`, `min_size`, `max_size`, `min_age`, `max_age`.
fn parse_filter(t: &Fields<'_>, problems: &mut Vec<Problem>) -> crate::filter::Filter {
    crate::filter::Filter::new(
        t.strings("include", problems).unwrap_or_default(),
        t.strings("exclude", problems).unwrap_or_default(),
        t.size("min_size", problems).map(|s| s.0),
        t.size("max_size", problems).map(|s| s.0),
        t.duration("min_age", problems),
        t.duration("max_age", problems),
    )
    .unwrap_or_else(|bad| {
        for (key, message) in bad {
            problems.push(Problem::new(t.path(&key), message));
        }
        crate::filter::Filter::default()
    })
}

/// A rule's `source`: its endpoint, bucket and prefixes, as far as they are right.
#[allow(clippy::type_complexity)]
fn parse_source(
    t: &Fields<'_>,
    problems: &mut Vec<Problem>,
) -> Option<(Option<String>, Option<String>, Vec<String>)> {
    let found = t.table("source", problems).map(|s| {
        let endpoint = s.required_string("endpoint", problems);
        let bucket = s.required_string("bucket", problems);
        let prefixes = s.strings("prefixes", problems).unwrap_or_default();
        s.finish(problems);
        (endpoint, bucket, prefixes)
    });
    if t.table.get("source").is_none() {
        problems.push(Problem::new(t.path("source"), "is required"));
    }
    found
}

/// A rule's `destination`: its endpoint, bucket and storage class, as far as they are right.
#[allow(clippy::type_complexity)]
fn parse_destination(
    t: &Fields<'_>,
    problems: &mut Vec<Problem>,
) -> Option<(Option<String>, Option<String>, Option<StorageClass>)> {
    let found = t.table("destination", problems).map(|d| {
        let endpoint = d.required_string("endpoint", problems);
        let bucket = d.required_string("bucket", problems);
        let storage_class = d.string("storage_class", problems).and_then(|c| {
            let parsed = StorageClass::parse(&c);
            if parsed.is_none() {
                let known: Vec<_> = StorageClass::ALL.iter().map(|(_, n)| *n).collect();
                problems.push(Problem::new(
                    d.path("storage_class"),
                    format!("{c:?} is not a storage class (one of {})", known.join(", ")),
                ));
            }
            parsed
        });
        d.finish(problems);
        (endpoint, bucket, storage_class)
    });
    if t.table.get("destination").is_none() {
        problems.push(Problem::new(t.path("destination"), "is required"));
    }
    found
}

/// `events = { sqs = "URL" [, endpoint = "NAME"] }` or
/// `events = { webhook = true [, sns_topics = ["ARN", ...]] }`.
fn parse_events(
    e: &Fields<'_>,
    source_endpoint: Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<Events> {
    let sqs = e.string("sqs", problems);
    let webhook = e.bool("webhook", problems);
    let endpoint = e.string("endpoint", problems);
    let sns_topics = e.strings("sns_topics", problems);
    for (i, arn) in sns_topics.iter().flatten().enumerate() {
        if !is_topic_arn(arn) {
            problems.push(Problem::new(
                e.path(&format!("sns_topics[{i}]")),
                format!("{arn:?} is not an SNS topic ARN (arn:PARTITION:sns:REGION:ACCOUNT:NAME)"),
            ));
        }
    }
    e.finish(problems);
    if sns_topics.is_some() && webhook != Some(true) {
        problems.push(Problem::new(
            e.path("sns_topics"),
            "only applies with webhook = true (SQS deliveries are not signed by SNS)",
        ));
    }
    match (sqs, webhook) {
        (Some(url), None | Some(false)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(Problem::new(
                    e.path("sqs"),
                    format!("{url:?} is not an SQS queue URL (expected http:// or https://)"),
                ));
            }
            Some(Events::Sqs {
                queue_url: url,
                endpoint: endpoint.or(source_endpoint)?,
            })
        }
        (None, Some(true)) => {
            if endpoint.is_some() {
                problems.push(Problem::new(
                    e.path("endpoint"),
                    "only applies with sqs (a webhook needs no credentials)",
                ));
            }
            Some(Events::Webhook {
                sns_topics: sns_topics.unwrap_or_default(),
            })
        }
        (None, Some(false)) => None,
        (Some(_), Some(true)) => {
            problems.push(Problem::new(
                e.path(""),
                "give one source of events: sqs = \"QUEUE_URL\" or webhook = true, not both",
            ));
            None
        }
        (None, None) => {
            problems.push(Problem::new(
                e.path(""),
                "needs sqs = \"QUEUE_URL\" or webhook = true",
            ));
            None
        }
    }
}

/// `arn:PARTITION:sns:REGION:ACCOUNT:NAME`, every part present.
fn is_topic_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "sns"
        && parts.iter().all(|p| !p.is_empty())
}

fn parse_stop(s: &str) -> Result<Stop, String> {
    match s {
        "once" => Ok(Stop::Once),
        "never" => Ok(Stop::Never),
        _ => match s.strip_prefix("empty:").map(str::parse::<u32>) {
            Some(Ok(n)) if n >= 1 => Ok(Stop::Empty(n)),
            _ => Err(format!(
                "{s:?} is not a stop condition (\"once\", \"empty:N\" with N >= 1, or \"never\")"
            )),
        },
    }
}

/// A table being read: typed getters record problems, and `finish` reports the keys nobody read.
struct Fields<'a> {
    prefix: String,
    table: &'a Table,
    read: std::cell::RefCell<BTreeSet<String>>,
}

impl<'a> Fields<'a> {
    fn new(prefix: &str, table: &'a Table) -> Self {
        Fields {
            prefix: prefix.to_string(),
            table,
            read: Default::default(),
        }
    }

    fn path(&self, key: &str) -> String {
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{key}", self.prefix),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.read.borrow_mut().insert(key.to_string());
        self.table.get(key)
    }

    fn typed<T>(
        &self,
        key: &str,
        what: &str,
        problems: &mut Vec<Problem>,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.get(key)?;
        let out = f(value);
        if out.is_none() {
            problems.push(Problem::new(
                self.path(key),
                format!("must be {what}, found {}", value.type_str()),
            ));
        }
        out
    }

    fn string(&self, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
        self.typed(key, "a string", problems, |v| {
            v.as_str().map(str::to_string)
        })
    }

    fn required_string(&self, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
        let value = self.string(key, problems);
        if self.table.get(key).is_none() {
            problems.push(Problem::new(self.path(key), "is required"));
        }
        value
    }

    fn bool(&self, key: &str, problems: &mut Vec<Problem>) -> Option<bool> {
        self.typed(key, "true or false", problems, Value::as_bool)
    }

    /// The integer `key` as `check` takes it; `default` when absent, or (with the problem
    /// `check` names) when refused.
    fn integer_as<T>(
        &self,
        key: &str,
        default: T,
        problems: &mut Vec<Problem>,
        check: impl Fn(i64) -> Result<T, String>,
    ) -> T {
        match self.integer(key, problems).map(check) {
            None => default,
            Some(Ok(value)) => value,
            Some(Err(message)) => {
                problems.push(Problem::new(self.path(key), message));
                default
            }
        }
    }

    /// The string `key`, one of `choices` (by name); `default` when absent or not one.
    fn choice<T: Copy>(
        &self,
        key: &str,
        choices: &[(&str, T)],
        default: T,
        problems: &mut Vec<Problem>,
    ) -> T {
        let Some(given) = self.string(key, problems) else {
            return default;
        };
        match choices.iter().find(|(name, _)| *name == given) {
            Some((_, value)) => *value,
            None => {
                let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                problems.push(Problem::new(
                    self.path(key),
                    format!("{given:?} is not one of {}", names.join(", ")),
                ));
                default
            }
        }
    }

    fn integer(&self, key: &str, problems: &mut Vec<Problem>) -> Option<i64> {
        self.typed(key, "an integer", problems, Value::as_integer)
    }

    fn array(&self, key: &str, problems: &mut Vec<Problem>) -> Option<&'a Vec<Value>> {
        self.typed(key, "an array", problems, Value::as_array)
    }

    /// An array of strings; an item that is not one is a problem (and left out).
    fn strings(&self, key: &str, problems: &mut Vec<Problem>) -> Option<Vec<String>> {
        let items = self.array(key, problems)?;
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| match v.as_str() {
                    Some(p) => Some(p.to_string()),
                    None => {
                        problems.push(Problem::new(
                            self.path(&format!("{key}[{i}]")),
                            "must be a string",
                        ));
                        None
                    }
                })
                .collect(),
        )
    }

    fn table(&self, key: &str, problems: &mut Vec<Problem>) -> Option<Fields<'a>> {
        let path = self.path(key);
        self.typed(key, "a table", problems, Value::as_table)
            .map(|t| Fields::new(&path, t))
    }

    fn size(&self, key: &str, problems: &mut Vec<Problem>) -> Option<ByteSize> {
        let value = self.get(key)?;
        let parsed = match value {
            Value::String(s) => ByteSize::parse(s),
            Value::Integer(n) if *n >= 0 => Ok(ByteSize(*n as u64)),
            other => Err(format!(
                "must be a size such as \"100MiB\", found {}",
                other.type_str()
            )),
        };
        parsed
            .map_err(|e| problems.push(Problem::new(self.path(key), e)))
            .ok()
    }

    fn duration(&self, key: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
        let text = self.string(key, problems)?;
        parse_duration(&text)
            .map_err(|e| problems.push(Problem::new(self.path(key), e)))
            .ok()
    }

    fn finish(&self, problems: &mut Vec<Problem>) {
        let read = self.read.borrow();
        for key in self.table.keys() {
            if !read.contains(key) {
                problems.push(Problem::new(self.path(key), "unknown key"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    /// `(path, message)` of every problem with `[redis]` written as `redis`.
    fn redis_problems(redis: &str) -> Vec<(String, String)> {
        let (_, problems) = parse(&format!("[redis]\n{redis}\n")).expect("valid TOML");
        problems
            .into_iter()
            .filter(|p| p.path.starts_with("redis"))
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn a_ca_file_is_read_for_tls_and_named_without_it() {
        let (config, problems) =
            parse("[redis]\nurl = \"rediss://h:1\"\nca_file = \"/etc/ca.pem\"\n").unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            config.redis.unwrap().ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        let problems = redis_problems("url = \"redis://h:1\"\nca_file = \"/etc/ca.pem\"");
        assert!(
            problems
                .iter()
                .any(|(p, m)| p == "redis.ca_file" && m.contains("rediss://")),
            "{problems:?}"
        );
    }

    /// `(path, message)` of every problem of a rule whose events are `events`.
    fn events_problems(events: &str) -> (Vec<(String, String)>, Option<super::Events>) {
        let text = format!(
            "[endpoints.a]\nregion = \"us-east-1\"\n[[rules]]\nname = \"r\"\n\
             source = {{ endpoint = \"a\", bucket = \"src-b\" }}\n\
             destination = {{ endpoint = \"a\", bucket = \"dst-b\" }}\nevents = {events}\n"
        );
        let (config, problems) = parse(&text).expect("valid TOML");
        (
            problems.into_iter().map(|p| (p.path, p.message)).collect(),
            config.rules.first().and_then(|r| r.events.clone()),
        )
    }

    #[test]
    fn sns_topics_are_read_and_bad_ones_named() {
        let arn = "arn:aws:sns:us-east-1:123456789012:photos";
        let (problems, events) =
            events_problems(&format!("{{ webhook = true, sns_topics = [\"{arn}\"] }}"));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            events,
            Some(super::Events::Webhook {
                sns_topics: vec![arn.to_string()]
            })
        );
        for (events, path, says) in [
            (
                "{ webhook = true, sns_topics = [\"photos\"] }",
                "sns_topics[0]",
                "is not an SNS topic ARN",
            ),
            (
                "{ webhook = true, sns_topics = [\"arn:aws:sqs:us-east-1:1:q\"] }",
                "sns_topics[0]",
                "is not an SNS topic ARN",
            ),
            (
                "{ webhook = true, sns_topics = [3] }",
                "sns_topics[0]",
                "must be a string",
            ),
            (
                "{ sqs = \"https://sqs/q\", sns_topics = [\"arn:aws:sns:r:1:t\"] }",
                "sns_topics",
                "only applies with webhook = true",
            ),
        ] {
            let (problems, _) = events_problems(events);
            assert!(
                problems
                    .iter()
                    .any(|(p, m)| p.ends_with(path) && m.contains(says)),
                "{events}: expected {path}: ...{says}..., got {problems:?}"
            );
        }
    }

    #[test]
    fn cluster_settings_are_read_and_bad_ones_named() {
        let (config, _) =
            parse("[redis]\nurls = [\"redis://a:1\", \"redis://:pw@b:2\"]\n").expect("valid TOML");
        let redis = config.redis.expect("a redis section");
        assert!(redis.cluster, "several urls mean a cluster");
        assert_eq!(redis.connection_urls(), ["redis://a:1", "redis://:pw@b:2"]);
        assert_eq!(redis.redacted_url(), "redis://a:1,redis://***@b:2");

        let (config, _) = parse("[redis]\nurl = \"redis://a:1\"\ncluster = true\n").unwrap();
        assert!(config.redis.unwrap().cluster);

        for (text, path, says) in [
            (
                "url = \"redis://a:1\"\nurls = [\"redis://b:1\"]",
                "redis.urls",
                "not both",
            ),
            ("urls = []", "redis.urls", "is empty"),
            (
                "urls = [\"redis://a:1\", 7]",
                "redis.urls[1]",
                "must be a string",
            ),
            (
                "urls = [\"redis://a:1\", \"redis://b:1\"]\ncluster = false",
                "redis.cluster",
                "is false",
            ),
            (
                "url = \"unix:///tmp/r.sock\"\ncluster = true",
                "redis.url",
                "over TCP",
            ),
            (
                "urls = [\"http://a:1\"]",
                "redis.urls",
                "is not a Redis URL",
            ),
        ] {
            let problems = redis_problems(text);
            assert!(
                problems.iter().any(|(p, m)| p == path && m.contains(says)),
                "{text:?}: expected {path}: ...{says}..., got {problems:?}"
            );
        }
    }
}
