//! A single-node Ceph cluster with a RADOS Gateway: one monitor, one OSD on memstore and one
//! `radosgw`, all configured and kept in a temporary directory of their own, on free ports,
//! with their own cephx keyring. Nothing goes to `/etc/ceph` or `/var/lib/ceph`.
//!
//! The settings that make it start in a second or two and answer small requests quickly are
//! in `../shared/TESTING.md`: memstore, pools of size 1, a short paxos propose interval, and
//! `tcp_nodelay` on the beast frontend.
//!
//! `mon data avail crit = 0`: a monitor refuses to start, silently with exit code 28, when the
//! filesystem holding its data has less than 5 % free. These machines share a large disk
//! whose free share can dip below that; a test cluster of a few megabytes must not care.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::servers::{Proc, TempDir, free_port, random_hex};

/// The Debian packages a gateway needs (`scripts/deps.sh --ceph` installs them).
pub const PACKAGES: &str = "ceph-mon ceph-osd radosgw ceph-common";

/// A running single-node cluster and its gateway.
pub struct Rgw {
    /// The S3 port.
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    /// Gateway, OSD and monitor, stopped in that order on drop.
    pub procs: Vec<Proc>,
    pub dir: TempDir,
}

fn require(bin: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!("{bin} is not installed: run scripts/test.sh (it installs the Debian packages {PACKAGES})")
    })
}

/// Runs a Ceph tool to completion, panicking with its output when it fails.
fn tool(bin: &str, args: &[&str]) -> String {
    let out = Command::new(require(bin))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn daemon(bin: &str, dir: &Path, name: &str, args: &[&str]) -> Proc {
    let log = dir.join(format!("log/{name}.out"));
    let child = Command::new(require(bin))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("ceph daemon log"))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    Proc {
        child,
        name: name.into(),
        log: Some(log),
    }
}

fn uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Rgw {
    /// Starts a cluster and its gateway, and creates an S3 user. Panics when the Ceph
    /// packages are missing or the cluster does not come up.
    pub fn start() -> Rgw {
        Rgw::start_under(&std::env::temp_dir())
    }

    /// Like [`Rgw::start`], with the cluster's files in a new directory in `parent`.
    pub fn start_under(parent: &Path) -> Rgw {
        Rgw::start_in(parent, free_port())
    }

    /// [`Rgw::start`], trying S3 port `s3` first (another one when it is taken).
    pub fn start_trying_port(s3: u16) -> Rgw {
        Rgw::start_in(&std::env::temp_dir(), s3)
    }

    fn start_in(parent: &Path, s3: u16) -> Rgw {
        let dir = TempDir::under(parent, "rgw");
        let d = dir.path().to_str().expect("utf-8 temp dir").to_string();
        for sub in ["run", "log", "mon", "osd/osd.0", "rgw"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("ceph dirs");
        }
        let (v1, v2) = (free_port(), free_port());
        let fsid = uuid();
        let conf = format!("{d}/ceph.conf");
        let keyring = format!("{d}/keyring");
        std::fs::write(
            &conf,
            format!(
                "[global]\nfsid = {fsid}\nmon host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]\n\
                 mon initial members = a\nauth cluster required = cephx\n\
                 auth service required = cephx\nauth client required = cephx\n\
                 keyring = {keyring}\nosd objectstore = memstore\n\
                 memstore device bytes = 8589934592\n\
                 osd pool default size = 1\nosd pool default min size = 1\n\
                 mon allow pool size one = true\nmon warn on pool no redundancy = false\n\
                 paxos propose interval = 0.05\n\
                 mon data avail crit = 0\nmon data avail warn = 0\n\
                 run dir = {d}/run\nadmin socket = {d}/run/$name.asok\n\
                 log file = {d}/log/$name.log\npid file = {d}/run/$name.pid\n\
                 mon data = {d}/mon/$name\nosd data = {d}/osd/$name\n\
                 osd max object name len = 2048\nosd max object namespace len = 256\n\
                 [client.rgw]\nrgw frontends = beast endpoint=127.0.0.1:{s3} tcp_nodelay=1\n\
                 rgw data = {d}/rgw\n"
            ),
        )
        .expect("writing ceph.conf");
        let auth = |name: &str, caps: &[&str]| {
            let mut args = vec![keyring.as_str(), "--gen-key", "-n", name];
            for cap in caps {
                let (service, what) = cap.split_once(' ').expect("cap");
                args.extend(["--cap", service, what]);
            }
            tool("ceph-authtool", &args);
        };
        tool(
            "ceph-authtool",
            &[
                "--create-keyring",
                &keyring,
                "--gen-key",
                "-n",
                "mon.",
                "--cap",
                "mon",
                "allow *",
            ],
        );
        auth(
            "client.admin",
            &["mon allow *", "osd allow *", "mgr allow *"],
        );
        auth("osd.0", &["mon allow profile osd", "osd allow *"]);
        auth("client.rgw", &["mon allow rw", "osd allow rwx"]);
        let monmap = format!("{d}/monmap");
        let addrs = format!("[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]");
        tool(
            "monmaptool",
            &["--create", "--addv", "a", &addrs, "--fsid", &fsid, &monmap],
        );
        tool(
            "ceph-mon",
            &[
                "-c",
                &conf,
                "--mkfs",
                "-i",
                "a",
                "--monmap",
                &monmap,
                "--keyring",
                &keyring,
            ],
        );
        let mut mon = daemon(
            "ceph-mon",
            dir.path(),
            "ceph-mon",
            &["-c", &conf, "-i", "a", "-f"],
        );
        mon.wait_listening(v2, Duration::from_secs(20));
        let mut procs = vec![mon];
        let osd = uuid();
        tool("ceph", &["-c", &conf, "osd", "new", &osd, "0"]);
        tool(
            "ceph-osd",
            &["-c", &conf, "-i", "0", "--mkfs", "--osd-uuid", &osd],
        );
        procs.insert(
            0,
            daemon(
                "ceph-osd",
                dir.path(),
                "ceph-osd",
                &["-c", &conf, "-i", "0", "-f"],
            ),
        );
        // A free port may be taken by another test's server before the gateway binds it
        // (it then exits 98, EADDRINUSE): it starts again on another.
        let mut s3 = s3;
        for attempt in 1.. {
            let frontends = format!("beast endpoint=127.0.0.1:{s3} tcp_nodelay=1");
            let mut gateway = daemon(
                "radosgw",
                dir.path(),
                "radosgw",
                &[
                    "-c",
                    &conf,
                    "-n",
                    "client.rgw",
                    "-f",
                    "--rgw_frontends",
                    &frontends,
                ],
            );
            match serving(&mut gateway, s3, Duration::from_secs(60)) {
                Ok(()) => {
                    procs.insert(0, gateway);
                    break;
                }
                Err(Some(status)) if status.code() == Some(98) && attempt < 5 => {
                    s3 = free_port();
                }
                Err(Some(status)) => {
                    panic!("radosgw exited ({status}) before serving on port {s3}")
                }
                Err(None) => panic!("radosgw did not answer on port {s3} within 60s"),
            }
        }
        let access_key = format!("RGW{}", random_hex(8).to_uppercase());
        let secret_key = random_hex(20);
        tool(
            "radosgw-admin",
            &[
                "-c",
                &conf,
                "user",
                "create",
                "--uid",
                "ferry-test",
                "--display-name",
                "ferry test",
                "--access-key",
                &access_key,
                "--secret",
                &secret_key,
            ],
        );
        Rgw {
            port: s3,
            access_key,
            secret_key,
            procs,
            dir,
        }
    }
}

/// Waits until `gateway` answers a plain GET of `/` on `port` with a listing of buckets (its
/// pools are made, and it is this gateway, not another server that took the port), or
/// exits: `Err(Some(status))`; `Err(None)` after `timeout`.
fn serving(
    gateway: &mut Proc,
    port: u16,
    timeout: Duration,
) -> Result<(), Option<std::process::ExitStatus>> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = gateway.child.try_wait() {
            return Err(Some(status));
        }
        let answered = std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
                let mut answer = Vec::new();
                s.take(64 * 1024).read_to_end(&mut answer)?;
                let text = String::from_utf8_lossy(&answer);
                Ok(text.split_whitespace().nth(1) == Some("200")
                    && text.contains("ListAllMyBucketsResult"))
            })
            .unwrap_or(false);
        if answered {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
