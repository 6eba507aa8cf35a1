//! A real Redis Cluster on this machine: `redis-server --cluster-enabled yes` nodes on free
//! ports, joined by `redis-cli --cluster create`, for tests that need slots, redirects and
//! failovers.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::servers::{Proc, TempDir, wait_for_port};

/// How long a master may be silent before its replica takes over (ms). Failure reports live
/// twice this long, and a master is marked failed only once a majority of masters report it
/// within that window: on a loaded 2-core machine (a full test run), gossip late by more than
/// 3 s kept a killed master from ever being marked failed within a minute at 1,500 ms.
const NODE_TIMEOUT_MS: u64 = 5000;

/// A node as `CLUSTER NODES` shows it: port, whether it is a live master, its slot ranges.
type NodeView = (u16, bool, Vec<(u16, u16)>);

/// One node of the cluster.
struct Node {
    port: u16,
    proc: Option<Proc>,
}

/// A running cluster; every node is killed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: TempDir,
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    let mut n = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    loop {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20_000 + ((n >> 33) % 25_000) as u16;
        if !taken.contains(&port) && free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// Runs `redis-cli -p PORT ARGS` and returns its output (empty if the node does not answer).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits until the cluster
    /// serves every slot.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let dir = TempDir::new("redis-cluster");
        let mut nodes: Vec<Node> = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let taken: Vec<u16> = nodes.iter().map(|n| n.port).collect();
            let port = free_cluster_port(&taken);
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("creating a node's directory");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                // A replica takes over however long it has been out of touch.
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting redis-server (is it installed? run scripts/test.sh)");
            wait_for_port(port, Duration::from_secs(10), "redis-server (cluster node)");
            nodes.push(Node {
                port,
                proc: Some(Proc {
                    child,
                    name: format!("redis cluster node {port}"),
                    log: None,
                }),
            });
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running redis-cli --cluster create");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_healthy(Duration::from_secs(60));
        cluster
    }

    /// A seed URL for every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The `[redis]` section of a ferry config for this cluster.
    pub fn redis_toml(&self, namespace: &str) -> String {
        let urls: Vec<String> = self.urls().iter().map(|u| format!("{u:?}")).collect();
        format!(
            "[redis]\nurls = [{}]\ncluster = true\nnamespace = {namespace:?}\n",
            urls.join(", ")
        )
    }

    /// Ports of the nodes still running.
    fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| n.port)
    }

    /// `(port, is master, slot ranges)` of every node, as a live node sees the cluster. A
    /// line whose address is not one of this cluster's nodes (`:0@0`, a node the view has no
    /// address for yet, under load) is left out.
    fn topology(&self) -> Vec<NodeView> {
        let Some(port) = self.live().next() else {
            return Vec::new();
        };
        cli(port, &["cluster", "nodes"])
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let addr = fields.get(1)?.split('@').next()?;
                let node_port: u16 = addr.rsplit(':').next()?.parse().ok()?;
                if !self.nodes.iter().any(|n| n.port == node_port) {
                    return None;
                }
                let flags = fields.get(2)?;
                let master = flags.contains("master") && !flags.contains("fail");
                let ranges = fields
                    .iter()
                    .skip(8)
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((node_port, master, ranges))
            })
            .collect()
    }

    /// The port of the master serving `key`'s slot (waiting up to 30 s for a view that
    /// names one of this cluster's nodes).
    pub fn master_of(&self, key: &str) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(port) = self.try_master_of(key) {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no master of this cluster serves the slot of {key}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of the master serving `key`'s slot, if one does (not during a failover).
    fn try_master_of(&self, key: &str) -> Option<u16> {
        let port = self.live().next()?;
        let slot: u16 = cli(port, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .ok()?;
        self.topology()
            .into_iter()
            .find(|(_, master, ranges)| {
                *master && ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|(p, _, _)| p)
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill9(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut proc) = node.proc.take() {
            proc.kill9();
        }
    }

    /// Waits until a replica has taken over `key`'s slot from the master on `old` (killed),
    /// and the cluster serves every slot again; returns the new master's port.
    pub fn wait_failover(&self, key: &str, old: u16, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(port) = self.try_master_of(key)
                && port != old
            {
                self.wait_healthy(deadline.saturating_duration_since(Instant::now()));
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no replica took over from the master on port {old} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every live node reports the cluster `ok` (all slots served by a live
    /// master), or panics after `timeout`.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self
                .live()
                .all(|p| cli(p, &["cluster", "info"]).contains("cluster_state:ok"));
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the redis cluster was not healthy within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sum of every live node's CPU seconds (user + system), from `INFO cpu`.
    pub fn cpu_seconds(&self) -> f64 {
        self.live()
            .map(|p| {
                cli(p, &["info", "cpu"])
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .filter(|(k, _)| *k == "used_cpu_sys" || *k == "used_cpu_user")
                    .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
                    .sum::<f64>()
            })
            .sum()
    }
}
