//! `ferry validate`: every class of bad input is rejected with where and why, all problems
//! together, exit code 2; secrets never appear in the output.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use harness::{TempDir, ferry_output};

const ENDPOINTS: &str = r#"
[endpoints.east]
url = "http://127.0.0.1:9000"
region = "us-east-1"
path_style = true
access_key_id = "AKIDEXAMPLE"
secret_access_key = "SUPER-SECRET-VALUE"

[endpoints.west]
url = "http://127.0.0.1:9100"
region = "eu-west-1"
path_style = true
"#;

fn validate(config: &str) -> (i32, String) {
    let dir = TempDir::new("validate");
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, config).expect("writing config");
    let (code, stdout, stderr) =
        ferry_output(&["validate", "--config", path.to_str().expect("path")]);
    assert!(!stdout.contains("SUPER-SECRET-VALUE") && !stderr.contains("SUPER-SECRET-VALUE"));
    (code, format!("{stdout}{stderr}"))
}

fn rule(body: &str) -> String {
    format!("{ENDPOINTS}\n[[rules]]\n{body}\n")
}

#[test]
fn a_valid_config_passes_with_a_summary() {
    let config = format!(
        "[redis]\nurl = \"redis://app:hunter2@127.0.0.1:6379\"\n{}",
        rule(
            "name = \"photos-dr\"\n\
             source = { endpoint = \"east\", bucket = \"photos\", prefixes = [\"2024/\", \"2025/\"] }\n\
             destination = { endpoint = \"west\", bucket = \"photos-dr\", storage_class = \"STANDARD_IA\" }\n\
             overwrite = \"if-newer\"\nstop = \"empty:3\"\ninterval = \"15m\"\n\
             multipart_threshold = \"100MiB\"\npart_size = \"50MiB\""
        )
    );
    let (code, out) = validate(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok: 2 endpoint(s), 1 rule(s), 2 prefix(es)"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "the redis password leaked: {out}");
}

#[test]
fn each_class_of_bad_input_is_rejected_with_where_and_why() {
    let src = "source = { endpoint = \"east\", bucket = \"photos\" }";
    let dst = "destination = { endpoint = \"west\", bucket = \"photos-dr\" }";
    let too_many: Vec<String> = (0..1001).map(|i| format!("\"p{i:04}/\"")).collect();
    let long = "x".repeat(1023);
    let cases: Vec<(String, &str)> = vec![
        (
            rule(&format!("name = \"Bad_Name\"\n{src}\n{dst}")),
            "rules[0] (Bad_Name).name: \"Bad_Name\" must be 1 to 63 characters",
        ),
        (
            rule(&format!(
                "name = \"a\"\nsource = {{ endpoint = \"east\", bucket = \"photos\", prefixes = [{}] }}\n{dst}",
                too_many.join(",")
            )),
            "1001 prefixes given, at most 1000",
        ),
        (
            rule(&format!(
                "name = \"a\"\nsource = {{ endpoint = \"east\", bucket = \"photos\", prefixes = [\"{long}\"] }}\n{dst}"
            )),
            "is 1023 bytes long",
        ),
        (
            rule(&format!(
                "name = \"a\"\nsource = {{ endpoint = \"east\", bucket = \"photos\", prefixes = [\"test\", \"test/01\"] }}\n{dst}"
            )),
            "overlapping prefixes: \"test\" (prefixes[0]) is a prefix of \"test/01\"",
        ),
        (
            rule(&format!(
                "name = \"a\"\n{src}\ndestination = {{ endpoint = \"west\", bucket = \"b\", storage_class = \"COLD\" }}"
            )),
            "\"COLD\" is not a storage class",
        ),
        (
            rule(&format!(
                "name = \"a\"\n{src}\ndestination = {{ endpoint = \"mars\", bucket = \"photos-dr\" }}"
            )),
            "unknown endpoint \"mars\"",
        ),
        (
            rule(&format!(
                "name = \"a\"\n{src}\ndestination = {{ endpoint = \"west\", bucket = \"Bad_Bucket\" }}"
            )),
            "\"Bad_Bucket\" is not a valid S3 bucket name",
        ),
        (
            rule(&format!(
                "name = \"a\"\n{src}\ndestination = {{ endpoint = \"east\", bucket = \"photos\" }}"
            )),
            "source and destination are the same bucket",
        ),
        (
            rule(&format!("name = \"a\"\n{src}\n{dst}\ncolour = \"red\"")),
            "rules[0] (a).colour: unknown key",
        ),
        (
            rule(&format!("name = \"a\"\n{src}\n{dst}\ninterval = \"soon\"")),
            "rules[0] (a).interval: \"soon\" is not a duration",
        ),
        (
            rule(&format!("name = \"a\"\n{src}\n{dst}\npart_size = \"lots\"")),
            "rules[0] (a).part_size: \"lots\" is not a size",
        ),
        (
            rule(&format!("name = \"a\"\n{src}\n{dst}\npart_size = \"1MiB\"")),
            "outside S3's part size limits",
        ),
        (
            rule(&format!("name = \"a\"\n{src}\n{dst}\nstop = \"sometimes\"")),
            "is not a stop condition",
        ),
        (
            rule(&format!("name = \"a\"\n{src}\n{dst}\narchived = \"thaw\"")),
            "rules[0] (a).archived: \"thaw\" is not one of skip, fail",
        ),
        (
            rule(&format!(
                "name = \"a\"\n{src}\n{dst}\nmax_requests_per_second = -5"
            )),
            "rules[0] (a).max_requests_per_second: -5 must be 0 (no limit) or more",
        ),
        (
            rule(&format!(
                "name = \"a\"\n{src}\n{dst}\nmax_requests_per_second = \"fast\""
            )),
            "rules[0] (a).max_requests_per_second: must be an integer",
        ),
        (
            rule(&format!("name = \"a\"\n{src}\n{dst}\nlist_ranges = 0")),
            "rules[0] (a).list_ranges: 0 is out of range (1 to 256)",
        ),
        (
            rule(&format!("name = \"a\"\n{src}\n{dst}\nlist_ranges = 1000")),
            "rules[0] (a).list_ranges: 1000 is out of range (1 to 256)",
        ),
        (
            rule(&format!(
                "name = \"a\"\n{src}\n{dst}\nlist_range_min_keys = 0"
            )),
            "rules[0] (a).list_range_min_keys: 0 must be 1 or more",
        ),
        (
            rule(&format!(
                "name = \"a\"\n{src}\n{dst}\nmax_bandwidth = \"wide\""
            )),
            "rules[0] (a).max_bandwidth: \"wide\" is not a size",
        ),
        (
            rule(&format!(
                "name = \"a\"\n{src}\n{dst}\noverwrite = \"maybe\""
            )),
            "\"maybe\" is not one of never, if-newer, if-different, always",
        ),
        (
            format!("{ENDPOINTS}\n[endpoints.west.extra]\nx = 1\n"),
            "endpoints.west.extra: unknown key",
        ),
        ("this is not toml".to_string(), "not valid TOML"),
    ];
    for (config, expected) in cases {
        let (code, out) = validate(&config);
        assert_eq!(
            code, 2,
            "expected exit 2 for {expected:?}, got {code}: {out}"
        );
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
}

#[test]
fn pairing_forbids_every_chain_and_fan() {
    // A->B is taken; each of A->C, C->B, B->C and C->A must be refused.
    for (second_src, second_dst) in [("a", "c"), ("c", "b"), ("b", "c"), ("c", "a")] {
        let config = format!(
            "{ENDPOINTS}\n[[rules]]\nname = \"first\"\n\
             source = {{ endpoint = \"east\", bucket = \"bucket-a\" }}\n\
             destination = {{ endpoint = \"west\", bucket = \"bucket-b\" }}\n\
             [[rules]]\nname = \"second\"\n\
             source = {{ endpoint = \"{}\", bucket = \"bucket-{second_src}\" }}\n\
             destination = {{ endpoint = \"{}\", bucket = \"bucket-{second_dst}\" }}\n",
            if second_src == "a" {
                "east"
            } else if second_src == "b" {
                "west"
            } else {
                "east"
            },
            if second_dst == "b" {
                "west"
            } else if second_dst == "a" {
                "east"
            } else {
                "west"
            },
        );
        let (code, out) = validate(&config);
        assert_eq!(code, 2, "{second_src}->{second_dst} was accepted: {out}");
        assert!(
            out.contains("a bucket belongs to one pairing only"),
            "{out}"
        );
    }
}

#[test]
fn every_problem_is_reported_together() {
    let config = rule(
        "name = \"Bad\"\nsource = { endpoint = \"nowhere\", bucket = \"x\" }\n\
         destination = { endpoint = \"west\", bucket = \"ok-bucket\", storage_class = \"COLD\" }\n\
         interval = \"soon\"\nunknown = 1",
    );
    let (code, out) = validate(&config);
    assert_eq!(code, 2);
    assert!(out.contains("invalid configuration: 6 problems"), "{out}");
}

#[test]
fn a_missing_file_is_a_configuration_error() {
    let (code, _, stderr) = ferry_output(&["validate", "--config", "/nonexistent/ferry.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
}

#[test]
fn bad_events_settings_are_rejected_with_where_and_why() {
    let sides = "source = { endpoint = \"east\", bucket = \"photos\" }\n\
                 destination = { endpoint = \"west\", bucket = \"photos-dr\" }";
    for (events, expected) in [
        (
            "events = { sqs = \"queue\", webhook = true }",
            "rules[0] (a).events: give one source of events",
        ),
        (
            "events = { }",
            "rules[0] (a).events: needs sqs = \"QUEUE_URL\" or webhook = true",
        ),
        (
            "events = { sqs = \"queue\" }",
            "rules[0] (a).events.sqs: \"queue\" is not an SQS queue URL",
        ),
        (
            "events = { sqs = \"https://sqs.us-east-1.amazonaws.com/1/q\", endpoint = \"nowhere\" }",
            "rules[0] (a).events.endpoint: unknown endpoint \"nowhere\"",
        ),
        (
            "events = { webhook = true, endpoint = \"east\" }",
            "rules[0] (a).events.endpoint: only applies with sqs",
        ),
        (
            "events = { webhook = true, queue = 1 }",
            "rules[0] (a).events.queue: unknown key",
        ),
        (
            "events = { webhook = true }\nevents_token_env = \"FERRY_TEST_UNSET_TOKEN\"",
            "rules[0] (a).events_token_env: environment variable FERRY_TEST_UNSET_TOKEN is not set",
        ),
        (
            "events_token_env = \"HOME\"",
            "rules[0] (a).events_token_env: only applies with events = { webhook = true }",
        ),
    ] {
        let (code, out) = validate(&rule(&format!("name = \"a\"\n{events}\n{sides}")));
        assert_eq!(code, 2, "{events}: {out}");
        assert!(
            out.contains(expected),
            "{events}: expected {expected:?} in {out}"
        );
    }
    let ok = rule(&format!(
        "name = \"a\"\nevents = {{ sqs = \"https://sqs.us-east-1.amazonaws.com/1/q\" }}\n{sides}"
    ));
    let (code, out) = validate(&ok);
    assert_eq!(code, 0, "{out}");
}
