//! Walks raw TOML into typed config values, collecting every problem on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use toml::{Table, Value};

use super::{Config, ConfigError, Credentials, Endpoint, Pricing, Problem, RedisConfig, Secret};
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
    let pricing = top
        .table("pricing", &mut problems)
        .map(|t| parse_pricing(&t, &endpoints, &mut problems))
        .unwrap_or_default();
    top.finish(&mut problems);
    Ok((
        Config {
            redis,
            endpoints,
            rules,
            pricing,
        },
        problems,
    ))
}

/// `[pricing.ENDPOINT]`: `egress_per_gb`, `requests_per_1000 = { class_a, class_b }`.
fn parse_pricing(
    table: &Fields<'_>,
    endpoints: &BTreeMap<String, Endpoint>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Pricing> {
    let mut out = BTreeMap::new();
    for name in table.table.keys() {
        let Some(t) = table.table(name, problems) else {
            continue;
        };
        if !endpoints.contains_key(name) {
            problems.push(Problem::new(
                t.path(""),
                format!(
                    "no endpoint {name:?} to price (endpoints: {})",
                    endpoints.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let mut pricing = Pricing {
            egress_per_gb: t.amount("egress_per_gb", problems).unwrap_or(0.0),
            ..Pricing::default()
        };
        if let Some(requests) = t.table("requests_per_1000", problems) {
            pricing.class_a_per_1000 = requests.amount("class_a", problems).unwrap_or(0.0);
            pricing.class_b_per_1000 = requests.amount("class_b", problems).unwrap_or(0.0);
            requests.finish(problems);
        }
        t.finish(problems);
        out.insert(name.clone(), pricing);
    }
    out
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

mod fields;
mod rule;
#[cfg(test)]
mod tests;

use fields::Fields;
use rule::parse_rule;
