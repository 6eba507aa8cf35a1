//! The docs tell the truth and stay true: every flag the README and `docs/` name is one that
//! `ferry ... --help` (or a script's `--help`, or another tool's manual) lists; every flag
//! of ferry's is documented; and every config key `docs/configuration.md` lists is one the
//! config parser knows.

mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use harness::{TempDir, ferry_bin};

/// Flags the docs name that belong to other tools, each with its tool.
const OTHER_TOOLS: [(&str, &str); 23] = [
    ("--path", "cargo install"),
    ("--all-targets", "cargo clippy"),
    ("--check", "cargo fmt"),
    ("--release", "cargo build"),
    ("--test", "cargo nextest"),
    ("--workspace", "cargo"),
    ("--ignored", "cargo test"),
    ("--nocapture", "cargo test"),
    ("--test-threads", "cargo test"),
    ("--checkers", "rclone"),
    ("--checksum", "rclone"),
    ("--download", "rclone check"),
    ("--fast-list", "rclone"),
    ("--tpslimit", "rclone"),
    ("--transfers", "rclone"),
    ("--bucket", "aws s3api"),
    ("--endpoint-url", "aws cli"),
    ("--notification-configuration", "aws s3api"),
    ("--attributes", "aws sqs"),
    ("--name", "aws sqs"),
    ("--event", "mc event add"),
    ("--next", "bench/listing"),
    ("--latency-ms", "bench/listing"),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn output(mut command: Command) -> String {
    let out = command.output().expect("running a --help");
    assert!(out.status.success(), "{command:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn help(args: &[&str]) -> String {
    let mut command = Command::new(ferry_bin());
    command.args(args).arg("--help");
    output(command)
}

/// Every `--flag` in `text` (a trailing `-`, as in `--dst-...`, is a family, not a flag).
fn flags(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let mut end = start + 2;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'-')
        {
            end += 1;
        }
        let flag = &text[start..end];
        if before_ok
            && flag.len() > 2
            && bytes[start + 2].is_ascii_lowercase()
            && !flag.ends_with('-')
        {
            found.insert(flag.to_string());
        }
        i = end.max(start + 2);
    }
    found
}

fn subcommands() -> Vec<String> {
    let top = help(&[]);
    let listed = top
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .split("\n\n")
        .next()
        .unwrap_or_default();
    listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

fn ferry_flags() -> BTreeSet<String> {
    let mut all = flags(&help(&[]));
    for sub in subcommands() {
        all.extend(flags(&help(&[&sub])));
    }
    all
}

fn docs_text() -> String {
    let mut text = std::fs::read_to_string(root().join("README.md")).unwrap();
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            text += &std::fs::read_to_string(path).unwrap();
        }
    }
    text
}

fn script_flags() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for script in ferry_testkit::SCRIPTS {
        let mut command = Command::new(root().join(script));
        command.arg("--help");
        all.extend(flags(&output(command)));
    }
    all
}

#[test]
fn every_flag_the_docs_name_exists_and_every_ferry_flag_is_documented() {
    let ferry = ferry_flags();
    assert!(
        ferry.contains("--include") && ferry.contains("--state-dir"),
        "{ferry:?}"
    );
    let scripts = script_flags();
    let docs = flags(&docs_text());
    let unknown: Vec<&String> = docs
        .iter()
        .filter(|f| {
            !ferry.contains(*f) && !scripts.contains(*f) && !OTHER_TOOLS.iter().any(|(o, _)| o == f)
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "the docs name flags nothing has: {unknown:?}"
    );
    let undocumented: Vec<&String> = ferry
        .iter()
        .filter(|f| !docs.contains(*f) && !["--help", "--version"].contains(&f.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "ferry's flags the README and docs/ never name: {undocumented:?}"
    );
}

/// The keys of `docs/configuration.md`'s tables, by section: `redis`, `endpoints`, `rules`.
fn documented_keys() -> Vec<(&'static str, String)> {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let mut section = "";
    let mut keys = Vec::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = if title.contains("[redis]") {
                "redis"
            } else if title.contains("[endpoints") {
                "endpoints"
            } else if title.contains("[[rules]]") {
                "rules"
            } else {
                ""
            };
            continue;
        }
        let Some(cell) = line.strip_prefix("| ") else {
            continue;
        };
        let first = cell.split(" |").next().unwrap_or_default();
        if section.is_empty() || first == "key" || first.starts_with("---") {
            continue;
        }
        for key in first.split(", ") {
            keys.push((section, key.trim_matches('`').to_string()));
        }
    }
    keys
}

#[test]
fn every_config_key_the_docs_list_is_known_to_the_parser() {
    let keys = documented_keys();
    assert!(
        keys.iter().any(|(s, k)| *s == "rules" && k == "include"),
        "{keys:?}"
    );
    let dir = TempDir::new("docs-keys");
    let mut keys = keys;
    // The check itself: a key nobody knows must be caught.
    keys.push(("rules", "no_such_key".into()));
    for (section, key) in &keys {
        let config = match (*section, key.split_once('.')) {
            ("redis", _) => format!("[redis]\nurl = \"redis://127.0.0.1:1\"\n{key} = \"x\"\n"),
            ("endpoints", _) => format!("[endpoints.e]\n{key} = \"x\"\n"),
            (_, Some((table, inner))) => format!(
                "[endpoints.e]\n[[rules]]\nname = \"r\"\n\
                 source = {{ endpoint = \"e\", bucket = \"b\"{} }}\n\
                 destination = {{ endpoint = \"e\", bucket = \"c\"{} }}\n",
                if table == "source" {
                    format!(", {inner} = \"x\"")
                } else {
                    String::new()
                },
                if table == "destination" {
                    format!(", {inner} = \"x\"")
                } else {
                    String::new()
                },
            ),
            _ => format!(
                "[endpoints.e]\n[[rules]]\nname = \"r\"\n\
                 source = {{ endpoint = \"e\", bucket = \"b\" }}\n\
                 destination = {{ endpoint = \"e\", bucket = \"c\" }}\n{key} = \"x\"\n"
            ),
        };
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, &config).unwrap();
        let out = Command::new(ferry_bin())
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let leaf = key.rsplit('.').next().unwrap();
        let unknown = said
            .lines()
            .any(|l| l.contains("unknown key") && l.contains(leaf));
        if key == "no_such_key" {
            assert!(unknown, "an unknown key goes unnoticed:\n{said}");
            continue;
        }
        assert!(
            !unknown,
            "docs/configuration.md lists [{section}] {key}, which the parser does not know:\n{config}\n{said}"
        );
    }
}
