//! Logs as the ecosystem does them: `--log-format json` gives one JSON object per log line,
//! `-q` leaves errors alone, `-v` adds info lines to a command that is quiet by default.

mod harness;

use std::time::Duration;

use harness::*;

/// A config whose Redis wants a password it is not given: every command that connects
/// logs, then stops at once with exit 2.
fn refused_config(dir: &TempDir, redis: &Redis) -> String {
    let path = dir.path().join("ferry.toml");
    std::fs::write(
        &path,
        format!(
            "[redis]\nurl = \"redis://127.0.0.1:{}\"\n\n\
             [endpoints.a]\nurl = \"http://127.0.0.1:9\"\nregion = \"us-east-1\"\n\n\
             [[rules]]\nname = \"r\"\nsource = {{ endpoint = \"a\", bucket = \"src-b\" }}\n\
             destination = {{ endpoint = \"a\", bucket = \"dst-b\" }}\n",
            redis.port
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// The environment of each run: no `RUST_LOG` (which would override the flags), and a CA
/// bundle, whose loading is always logged at info.
fn vars(dir: &TempDir) -> Vec<(&'static str, String)> {
    let bundle = dir.path().join("ca.pem");
    ferry_testkit::tls::PrivateCa::new("logs").write_ca_pem(&bundle);
    vec![
        ("RUST_LOG", String::new()),
        ("AWS_CA_BUNDLE", bundle.to_str().unwrap().to_string()),
    ]
}

fn stderr_of(dir: &TempDir, args: &[&str]) -> String {
    let name = unique("ferry");
    let vars = vars(dir);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut p = spawn_logged_with(
        std::path::Path::new(ferry_bin()),
        dir.path(),
        &name,
        args,
        &vars,
    );
    let status = p
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("ferry {args:?} did not stop"));
    assert_eq!(status.code(), Some(2), "{}", p.log_text());
    p.log_text()
}

#[test]
fn log_format_json_quiet_and_verbose_do_what_they_say() {
    let dir = TempDir::new("logs");
    let redis = Redis::start_with_password("a-password");
    let config = refused_config(&dir, &redis);

    let text = stderr_of(&dir, &["coordinator", "--config", &config]);
    assert!(text.contains(" INFO "), "{text}");
    // The final error is said once, as a plain line; the JSON log also carries it as a
    // record (below), for a collector.
    assert_eq!(
        text.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{text}"
    );
    assert!(!text.contains(" ERROR "), "said twice:\n{text}");

    let json = stderr_of(
        &dir,
        &["coordinator", "--config", &config, "--log-format", "json"],
    );
    let lines: Vec<serde_json::Value> = json
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let levels: Vec<&str> = lines.iter().filter_map(|l| l["level"].as_str()).collect();
    assert!(
        levels.contains(&"INFO") && levels.contains(&"ERROR"),
        "{json}"
    );
    assert!(
        lines.iter().all(|l| l["fields"]["message"].is_string()),
        "{json}"
    );
    assert!(
        !json.contains(" INFO "),
        "text lines among the JSON:\n{json}"
    );

    let quiet = stderr_of(&dir, &["-q", "coordinator", "--config", &config]);
    assert!(!quiet.contains(" INFO "), "{quiet}");
    assert!(
        quiet.contains("NOAUTH"),
        "the error still says why:\n{quiet}"
    );

    // `sync` shows warnings and errors alone by default; -v adds info lines.
    let sync = |extra: &[&str]| {
        let mut args = vec!["sync", "a:src-b", "a:dst-b", "--config", &config];
        args.extend_from_slice(extra);
        stderr_of(&dir, &args)
    };
    let quiet_by_default = sync(&[]);
    assert!(!quiet_by_default.contains(" INFO "), "{quiet_by_default}");
    assert!(quiet_by_default.contains("NOAUTH"), "{quiet_by_default}");
    assert!(sync(&["-v"]).contains(" INFO "));
}
