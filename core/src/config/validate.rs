//! Checks that span several places in the config: names, references, prefixes, pairing.

use std::collections::BTreeMap;

use super::{Config, MAX_PREFIX_BYTES, MAX_PREFIXES, Problem, Rule};

pub(super) fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, rule) in config.rules.iter().enumerate() {
        let at = format!("rules[{i}] ({})", rule.name);
        if let Some(first) = seen.insert(rule.name.clone(), i) {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!("{:?} is already the name of rules[{first}]", rule.name),
            ));
        }
        problems.extend(rule_problems(config, rule).into_iter().map(|p| Problem {
            path: format!("{at}.{}", p.path),
            message: p.message,
        }));
    }
    let refs: Vec<_> = config
        .rules
        .iter()
        .filter_map(|r| BucketRef::of_rule(config, r))
        .collect();
    for message in check_pairing(&refs) {
        problems.push(Problem::new("rules", message));
    }
    problems
}

/// What is wrong with `rule` in `config`, each problem at a path within the rule (`name`,
/// `source.bucket`, `part_size`, ...): its name, its endpoints, buckets, prefixes and sizes.
pub(super) fn rule_problems(config: &Config, rule: &Rule) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !valid_rule_name(&rule.name) {
        problems.push(Problem::new(
            "name",
            format!(
                "{:?} must be 1 to 63 characters of a-z, 0-9 and -",
                rule.name
            ),
        ));
    }
    for (side, endpoint, bucket) in [
        ("source", &rule.source.endpoint, &rule.source.bucket),
        (
            "destination",
            &rule.destination.endpoint,
            &rule.destination.bucket,
        ),
    ] {
        if !config.endpoints.contains_key(endpoint) {
            let known: Vec<_> = config.endpoints.keys().map(String::as_str).collect();
            problems.push(Problem::new(
                format!("{side}.endpoint"),
                format!(
                    "unknown endpoint {endpoint:?} (defined: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        if let Err(why) = check_bucket_name(bucket) {
            problems.push(Problem::new(
                format!("{side}.bucket"),
                format!("{bucket:?} is not a valid S3 bucket name: {why}"),
            ));
        }
    }
    if let Some(super::Events::Sqs { endpoint, .. }) = &rule.events
        && !config.endpoints.contains_key(endpoint)
    {
        problems.push(Problem::new(
            "events.endpoint",
            format!("unknown endpoint {endpoint:?}"),
        ));
    }
    if let Some(crate::report::ReportTarget::Bucket { endpoint, .. }) = &rule.report
        && !config.endpoints.contains_key(endpoint)
    {
        problems.push(Problem::new(
            "report",
            format!("unknown endpoint {endpoint:?} in the report's s3:// address"),
        ));
    }
    check_prefixes(rule, &mut problems);
    check_sizes(rule, &mut problems);
    check_versions(rule, &mut problems);
    problems
}

/// `versions = "all"` and what it rules out.
fn check_versions(rule: &Rule, problems: &mut Vec<Problem>) {
    if rule.at_ms.is_some() {
        for (conflict, given) in [
            ("versions", rule.versions == super::Versions::All),
            ("delete", rule.delete),
            ("events", rule.events.is_some()),
        ] {
            if given {
                problems.push(Problem::new(
                    conflict,
                    "cannot be used with --at, which copies each key's version as it was \
                     then and leaves the rest of the destination alone",
                ));
            }
        }
    }
    if rule.versions != super::Versions::All {
        if rule.version_marker {
            problems.push(Problem::new(
                "version_marker",
                "only applies with versions = \"all\"",
            ));
        }
        return;
    }
    if rule.delete {
        problems.push(Problem::new(
            "delete",
            "cannot be true with versions = \"all\": a version deleted at the source is never \
             deleted at the destination (as AWS replication does), and a delete marker is \
             copied as one; remove delete = true",
        ));
    }
    if rule.events.is_some() {
        problems.push(Problem::new(
            "events",
            "cannot be used with versions = \"all\" yet: events do not carry the version \
             order; iterations alone copy every version",
        ));
    }
}

fn valid_rule_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// S3's bucket naming rules (the strict, DNS-compatible form).
fn check_bucket_name(name: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&name.len()) {
        return Err("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("only a-z, 0-9, '.' and '-' are allowed");
    }
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return Err("must not contain two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("must not be formatted as an IP address");
    }
    Ok(())
}

fn check_prefixes(rule: &Rule, problems: &mut Vec<Problem>) {
    let prefixes = &rule.source.prefixes;
    if prefixes.len() > MAX_PREFIXES {
        problems.push(Problem::new(
            "source.prefixes",
            format!(
                "{} prefixes given, at most {MAX_PREFIXES} are allowed",
                prefixes.len()
            ),
        ));
    }
    for (i, p) in prefixes.iter().enumerate() {
        if p.is_empty() || p.len() > MAX_PREFIX_BYTES {
            problems.push(Problem::new(
                format!("source.prefixes[{i}]"),
                format!(
                    "is {} bytes long; a prefix must be 1 to {MAX_PREFIX_BYTES} bytes of UTF-8",
                    p.len()
                ),
            ));
        }
    }
    // Keys that start with a prefix sort right after it, so after sorting every overlap is
    // found by scanning forward from each prefix while the next ones still start with it.
    let mut sorted: Vec<(usize, &String)> = prefixes.iter().enumerate().collect();
    sorted.sort_by(|a, b| a.1.cmp(b.1));
    for (n, (i, p)) in sorted.iter().enumerate() {
        for (j, q) in sorted[n + 1..]
            .iter()
            .take_while(|(_, q)| q.starts_with(p.as_str()))
        {
            let message = if p == q {
                format!("{q:?} is listed twice (also prefixes[{i}])")
            } else {
                format!("overlapping prefixes: {p:?} (prefixes[{i}]) is a prefix of {q:?}")
            };
            problems.push(Problem::new(format!("source.prefixes[{j}]"), message));
        }
    }
}

fn check_sizes(rule: &Rule, problems: &mut Vec<Problem>) {
    use crate::parts::{MAX_PART, MIN_PART};
    if !(MIN_PART..=MAX_PART).contains(&rule.part_size.0) {
        problems.push(Problem::new(
            "part_size",
            format!(
                "{} is outside S3's part size limits (5MiB to 5GiB)",
                rule.part_size
            ),
        ));
    }
    if rule.multipart_threshold.0 == 0 || rule.multipart_threshold.0 > MAX_PART {
        problems.push(Problem::new(
            "multipart_threshold",
            format!(
                "{} must be above 0 and at most 5GiB (the largest single PUT)",
                rule.multipart_threshold
            ),
        ));
    }
}

/// The two buckets a rule pairs, identified by endpoint service and bucket name, as stored in
/// Redis for cross-process pairing checks. Holds no credentials.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketRef {
    /// The rule's name.
    pub rule: String,
    /// `endpoint identity/bucket` of the source.
    pub source: String,
    /// `endpoint identity/bucket` of the destination.
    pub destination: String,
}

impl BucketRef {
    /// The buckets of `rule`, if its endpoints exist.
    pub fn of_rule(config: &Config, rule: &Rule) -> Option<BucketRef> {
        let src = config.endpoints.get(&rule.source.endpoint)?;
        let dst = config.endpoints.get(&rule.destination.endpoint)?;
        Some(BucketRef {
            rule: rule.name.clone(),
            source: format!("{}/{}", src.identity(), rule.source.bucket),
            destination: format!("{}/{}", dst.identity(), rule.destination.bucket),
        })
    }
}

/// The pairing rule: a bucket used by one rule (as source or destination) may not appear in
/// any other rule, and a rule's source and destination differ. Returns one message a conflict.
pub fn check_pairing(rules: &[BucketRef]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut owner: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for r in rules {
        if r.source == r.destination {
            problems.push(format!(
                "rule {:?}: source and destination are the same bucket ({})",
                r.rule, r.source
            ));
            continue;
        }
        for (side, bucket) in [("source", &r.source), ("destination", &r.destination)] {
            match owner.get(bucket.as_str()) {
                Some((other, other_side)) if *other != r.rule => problems.push(format!(
                    "rule {:?}: bucket {bucket} cannot be its {side}: it is already the \
                     {other_side} of rule {other:?} (a bucket belongs to one pairing only; \
                     `ferry forget {other}` drops that pairing)",
                    r.rule
                )),
                _ => {
                    owner.insert(bucket, (&r.rule, side));
                }
            }
        }
    }
    problems
}
