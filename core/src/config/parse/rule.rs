//! A `[[rule]]` table: its source, destination, filters, events and stop.

use super::{Fields, read_env};
use crate::config::{
    Archived, DEFAULT_INTERVAL, DEFAULT_LIST_RANGE_MIN_KEYS, DEFAULT_LIST_RANGES,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, Destination, Events,
    Overwrite, Problem, Rule, Secret, Source, Stop, StorageClass, Versions,
};
use crate::units::ByteSize;

pub(super) fn parse_rule(t: &Fields<'_>, problems: &mut Vec<Problem>) -> Option<Rule> {
    let name = t.string("name", problems);
    if name.is_none() && t.table.get("name").is_none() {
        problems.push(Problem::new(t.path("name"), "is required"));
    }
    let source = parse_source(t, problems);
    let destination = parse_destination(t, problems);
    let (overwrite, overwrite_unmanaged) = parse_overwrite(t, problems);
    let stop = t.string("stop", problems).map_or(Stop::Never, |s| {
        Stop::parse(&s).unwrap_or_else(|e| {
            problems.push(Problem::new(t.path("stop"), e));
            Stop::Never
        })
    });
    let interval = t.duration("interval", problems).unwrap_or(DEFAULT_INTERVAL);
    let delete = t.bool("delete", problems).unwrap_or(false);
    let multipart_threshold = t
        .size("multipart_threshold", problems)
        .unwrap_or(DEFAULT_MULTIPART_THRESHOLD);
    let part_size = t.size("part_size", problems).unwrap_or(DEFAULT_PART_SIZE);
    let max_attempts = t.integer_as("max_attempts", DEFAULT_MAX_ATTEMPTS, problems, |n| {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("{n} is out of range (1 to 1000)"))
    });
    let (list_ranges, list_range_min_keys) = parse_list_ranges(t, problems);
    let archived = t.choice(
        "archived",
        &[("skip", Archived::Skip), ("fail", Archived::Fail)],
        Archived::Skip,
        problems,
    );

    let (max_requests_per_second, max_bandwidth) = parse_limits(t, problems);
    let source_endpoint = source.as_ref().and_then(|(e, _, _)| e.clone());
    let (events, events_token) = parse_rule_events(t, source_endpoint, problems);
    let filter = parse_filter(t, problems);
    let report = t.string("report", problems).and_then(|text| {
        crate::report::ReportTarget::parse(&text)
            .map_err(|e| problems.push(Problem::new(t.path("report"), e)))
            .ok()
    });

    let versions = t.choice("versions", &Versions::NAMES, Versions::Current, problems);
    let version_marker = t.bool("version_marker", problems).unwrap_or(false);

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
        report,
        versions,
        version_marker,
        at_ms: None,
    })
}

/// A rule's `overwrite` and `overwrite_unmanaged`.
fn parse_overwrite(t: &Fields<'_>, problems: &mut Vec<Problem>) -> (Overwrite, bool) {
    let overwrite = t.choice("overwrite", &Overwrite::NAMES, Overwrite::IfNewer, problems);
    let overwrite_unmanaged = t.bool("overwrite_unmanaged", problems).unwrap_or(false);
    (overwrite, overwrite_unmanaged)
}

/// A rule's `list_ranges` and `list_range_min_keys`.
fn parse_list_ranges(t: &Fields<'_>, problems: &mut Vec<Problem>) -> (u32, u64) {
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
    (list_ranges, list_range_min_keys)
}

/// A rule's `max_requests_per_second` and `max_bandwidth`.
fn parse_limits(t: &Fields<'_>, problems: &mut Vec<Problem>) -> (u64, ByteSize) {
    let max_requests_per_second = t.integer_as("max_requests_per_second", 0, problems, |n| {
        u64::try_from(n).map_err(|_| format!("{n} must be 0 (no limit) or more"))
    });
    let max_bandwidth = t.size("max_bandwidth", problems).unwrap_or(ByteSize(0));
    (max_requests_per_second, max_bandwidth)
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
            StorageClass::parse_named(&c)
                .map_err(|e| problems.push(Problem::new(d.path("storage_class"), e)))
                .ok()
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
