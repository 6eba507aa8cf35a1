//! The compose deployment cannot run here (no Docker engine), so check what can be checked:
//! its example config validates, and every ferry flag it uses exists.

mod harness;

use harness::ferry_output;

#[test]
fn the_compose_example_config_validates() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/compose/ferry.toml");
    let vars = [
        "SOURCE_KEY_ID",
        "SOURCE_SECRET",
        "DEST_KEY_ID",
        "DEST_SECRET",
    ];
    let out = std::process::Command::new(harness::ferry_bin())
        .args(["validate", "--config", config])
        .envs(vars.iter().map(|v| (*v, "example")))
        .output()
        .expect("running ferry");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_flag_in_compose_yaml_exists() {
    let compose =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/compose.yaml"))
            .expect("reading compose.yaml");
    let mut checked = 0;
    for line in compose
        .lines()
        .filter(|l| l.trim_start().starts_with("command:"))
    {
        let words: Vec<String> = line
            .split(['[', ']', ','])
            .map(|w| w.trim().trim_matches('"').to_string())
            .filter(|w| !w.is_empty() && w != "command:")
            .collect();
        if words.first().is_some_and(|w| w == "redis-server") {
            continue;
        }
        let (_, help, _) = ferry_output(&[&words[0], "--help"]);
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(flag.as_str()),
                "`ferry {}` has no flag {flag}",
                words[0]
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "expected to check the coordinator's and worker's flags"
    );
}
