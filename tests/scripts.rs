//! The repository's scripts as a newcomer first meets them: `--help` prints what the script
//! does and takes, and installs, builds and starts nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_testkit::SCRIPTS;

/// Commands an installing or building script would run: each stand-in records its name.
const INSTALLERS: [&str; 10] = [
    "cargo",
    "apt-get",
    "pip",
    "pip3",
    "rclone",
    "garage",
    "redis-server",
    "moto_server",
    "sudo",
    "git",
];

#[test]
fn every_script_prints_its_help_and_installs_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shims = ferry_testkit::servers::TempDir::new("script-help");
    let record = shims.path().join("called");
    for name in INSTALLERS {
        let shim = shims.path().join(name);
        std::fs::write(
            &shim,
            format!("#!/bin/sh\necho {name} >> '{}'\nexit 1\n", record.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", shims.path().display());
    for script in SCRIPTS {
        for flag in ["--help", "-h"] {
            let started = Instant::now();
            let out = Command::new(root.join(script))
                .arg(flag)
                .env("PATH", &path)
                .env("HOME", shims.path())
                .current_dir(root)
                .output()
                .unwrap_or_else(|e| panic!("running {script}: {e}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{script} {flag}: {}\n{stdout}\n{stderr}",
                out.status
            );
            let header = std::fs::read_to_string(root.join(script))
                .unwrap()
                .lines()
                .nth(1)
                .unwrap()
                .trim_start_matches("# ")
                .to_string();
            assert!(
                stdout.starts_with(&header),
                "{script} {flag} did not print its header {header:?}:\n{stdout}"
            );
            assert!(
                !record.exists(),
                "{script} {flag} ran {}",
                std::fs::read_to_string(&record).unwrap_or_default()
            );
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{script} {flag} took long"
            );
        }
    }
}
