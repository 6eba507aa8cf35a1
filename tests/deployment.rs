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
    let compose = yaml(&compose_file("compose.yaml"));
    let mut checked = 0;
    // the services built from this repository run ferry; the others are Redis, Prometheus...
    for (name, service) in compose["services"].as_object().unwrap() {
        if service.get("build").is_none() {
            continue;
        }
        let words: Vec<&str> = service["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has a command list"))
            .iter()
            .filter_map(|w| w.as_str())
            .collect();
        let (_, help, _) = ferry_output(&[words[0], "--help"]);
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(flag),
                "service {name}: `ferry {}` has no flag {flag}",
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

/// Parses a YAML file with Python's PyYAML (scripts/deps.sh installs it) into JSON.
fn yaml(path: &str) -> serde_json::Value {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            path,
        ])
        .output()
        .expect("running python3 (scripts/deps.sh installs it with PyYAML)");
    assert!(
        out.status.success(),
        "{path} does not parse as YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from python")
}

fn compose_file(name: &str) -> String {
    format!("{}/compose/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Every metric name ferry defines, read from the one module that names them.
fn defined_metrics() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/core/src/telemetry.rs"
    ))
    .expect("reading telemetry.rs");
    text.split('"')
        .filter(|s| s.starts_with("ferry_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_compose_file_runs_redis_with_aof_and_scales_workers() {
    let compose = yaml(&compose_file("compose.yaml"));
    let services = compose["services"].as_object().expect("services");
    for name in ["redis", "coordinator", "worker", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "no service {name}");
    }
    let redis = &services["redis"];
    let command: Vec<&str> = redis["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(command.windows(2).any(|w| w == ["--appendonly", "yes"]));
    assert!(redis["healthcheck"]["test"].is_array());
    let worker = &services["worker"];
    assert!(
        worker.get("container_name").is_none() && worker.get("ports").is_none(),
        "a fixed name or host port would stop --scale worker=N"
    );
    for monitoring in ["prometheus", "grafana"] {
        assert!(
            services[monitoring]["profiles"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x == "monitoring")),
            "{monitoring} is an optional profile"
        );
    }
    // credentials come from the environment, never written into the file
    let text = std::fs::read_to_string(compose_file("compose.yaml")).unwrap();
    for service in ["coordinator", "worker"] {
        for (key, value) in services[service]["environment"].as_object().unwrap() {
            if key.contains("KEY") || key.contains("SECRET") {
                assert!(
                    value.as_str().unwrap().starts_with("${"),
                    "{key} is baked in"
                );
            }
        }
    }
    assert!(!text.contains("secret_access_key ="));
}

#[test]
fn prometheus_scrapes_the_ports_ferry_listens_on() {
    let prometheus = yaml(&compose_file("prometheus.yml"));
    let jobs = prometheus["scrape_configs"]
        .as_array()
        .expect("scrape_configs");
    let text = serde_json::to_string(jobs).unwrap();
    assert!(text.contains("coordinator:9090"), "{text}");
    assert!(text.contains("\"worker\""), "{text}");
    let compose = std::fs::read_to_string(compose_file("compose.yaml")).unwrap();
    assert_eq!(
        compose
            .matches("\"--metrics-listen\", \"0.0.0.0:9090\"")
            .count(),
        2,
        "coordinator and worker serve metrics on 9090"
    );
    for file in [
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/ferry.yml",
    ] {
        assert!(yaml(&compose_file(file)).is_object(), "{file}");
    }
}

#[test]
fn the_dashboard_parses_and_uses_only_metrics_that_exist() {
    let text = std::fs::read_to_string(compose_file("grafana/dashboards/ferry.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let known = defined_metrics();
    let mut used = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            used.extend(
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("ferry_"))
                    .map(str::to_string),
            );
        }
    }
    assert!(used.len() >= 6, "{used:?}");
    for metric in &used {
        // A histogram's series carry a suffix.
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| metric.strip_suffix(s))
            .unwrap_or(metric);
        assert!(
            known.iter().any(|k| k == metric || k == base),
            "the dashboard uses {metric}, which ferry does not export"
        );
    }
    for wanted in [
        "ferry_tasks",
        "ferry_replication_lag_seconds",
        "ferry_bytes_copied_total",
        "ferry_s3_errors_total",
        "ferry_event_lag_seconds_bucket",
        "ferry_events_total",
    ] {
        assert!(used.iter().any(|m| m == wanted), "no panel shows {wanted}");
    }
}
