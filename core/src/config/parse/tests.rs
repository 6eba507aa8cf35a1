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
fn events_problems(events: &str) -> (Vec<(String, String)>, Option<crate::config::Events>) {
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
        Some(crate::config::Events::Webhook {
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
