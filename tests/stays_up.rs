//! Staying up: Redis restarts and outages longer than every lease, a paused leader, a rule
//! whose bucket is gone, a worker partitioned from Redis, S3 fault storms, a flaky
//! credential provider, slow links, tasks of a newer ferry, namespaces shared by mistake.
//! Every fault is injected for real (kill -9, SIGSTOP, a network namespace, the fault proxy),
//! and the checks are what a user would check: the destination equals the source, nothing
//! is left open, the counts are exact.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_testkit::proxy::{Action, FaultProxy, Match, Rule};
use harness::data::{
    Seed, assert_replica, assert_same_objects, list_keys, open_uploads, put_multipart, seed,
};
use harness::{
    Env, NetNs, Proc, Redis, S3Server, TempDir, ferry_bin, ferry_output, free_port, history,
    iteration_record, rule_toml, samples, scrape, spawn_ferry, spawn_logged, unique, wait_until,
};

const MIB: u64 = 1024 * 1024;

fn env_aof(label: &str) -> Env {
    Env {
        redis: Redis::start_aof(),
        src: S3Server::garage(),
        dst: S3Server::garage(),
        dir: TempDir::new(label),
        ns: unique("ns"),
    }
}

fn alive(p: &mut Proc) -> bool {
    matches!(p.child.try_wait(), Ok(None))
}

fn exits_ok(p: &mut Proc, timeout: Duration) {
    let status = p
        .wait_timeout(timeout)
        .unwrap_or_else(|| panic!("{} did not finish within {timeout:?}", p.name));
    assert!(status.success(), "{} exited with {status}", p.name);
}

fn occurrences(p: &Proc, needle: &str) -> usize {
    p.log_text().matches(needle).count()
}

async fn seeds(env: &Env, bucket: &str, n: usize) -> Vec<Seed> {
    let seeds: Vec<Seed> = (0..n)
        .map(|i| Seed::new(format!("s/{:02}/{i:05}", i % 40), format!("object {i}")))
        .collect();
    seed(&env.src.client(), bucket, &seeds).await;
    seeds
}

/// Every planned task done, nothing dead, and exactly `n` objects listed and copied.
fn assert_exact(record: &HashMap<String, u64>, n: u64) {
    assert_eq!(record.get("listed"), Some(&n), "{record:?}");
    assert_eq!(record.get("copied"), Some(&n), "{record:?}");
    assert_eq!(record.get("planned"), record.get("done"), "{record:?}");
    assert_eq!(record.get("dead"), None, "{record:?}");
}

fn worker_args<'a>(config: &'a str, id: &'a str, metrics: &'a str) -> Vec<&'a str> {
    vec![
        "worker",
        "--config",
        config,
        "--id",
        id,
        "--concurrency",
        "4",
        "--lease",
        "3s",
        "--metrics-listen",
        metrics,
    ]
}

/// Redis is killed while the coordinator is planning (a small `--max-outstanding` keeps it
/// planning) and comes back from its AOF: the coordinator and the workers ride it out, and
/// the iteration ends with every object listed and copied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_while_planning_loses_nothing_and_counts_nothing_twice() {
    let mut env = env_aof("restart-planning");
    let (sb, db) = env.bucket_pair().await;
    let n = 3000;
    seeds(&env, &sb, n).await;
    let config = env.write_config("r.toml", &rule_toml("r", &sb, &db, "stop = \"once\""));
    let dir = env.dir.path();
    let mut coordinator = spawn_ferry(
        dir,
        "coordinator",
        &[
            "coordinator",
            "--config",
            &config,
            "--max-outstanding",
            "100",
        ],
    );
    let ports = [free_port(), free_port()];
    let listens: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut workers: Vec<Proc> = ["w1", "w2"]
        .iter()
        .zip(&listens)
        .map(|(id, m)| spawn_ferry(dir, id, &worker_args(&config, id, m)))
        .collect();
    wait_until(Duration::from_secs(120), "planning to be under way", || {
        let redis = &env.redis;
        let ns = env.ns.clone();
        async move {
            let r = iteration_record(redis, &ns, "r", 1).await;
            r.get("planned").copied().unwrap_or(0) >= 600 && !r.contains_key("sealed")
        }
    })
    .await;
    env.redis.kill9();
    // The outage itself: four seconds without Redis.
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.redis.restart();
    exits_ok(&mut coordinator, Duration::from_secs(300));
    assert_exact(
        &iteration_record(&env.redis, &env.ns, "r", 1).await,
        n as u64,
    );
    for w in &mut workers {
        assert!(alive(w), "{} died in the outage:\n{}", w.name, w.log_text());
    }
    assert_eq!(
        occurrences(&coordinator, "redis is unreachable"),
        1,
        "one warning per outage:\n{}",
        coordinator.log_text()
    );
    assert!(occurrences(&coordinator, "redis is reachable again") >= 1);
    let disconnected: f64 = samples(&scrape(ports[0]), "ferry_redis_disconnected_seconds")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert!(disconnected > 1.0, "{disconnected}");
    let copied = assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await;
    assert_eq!(copied, n);
    for w in &mut workers {
        w.sigterm();
        exits_ok(w, Duration::from_secs(30));
    }
}

/// Processes started while Redis is down wait for it; later, while tasks are being copied,
/// Redis stays away for longer than both the task leases and the leader lease. Everything
/// resumes: in-flight copies ack (fenced as ever), expired leases are redone, and the counts
/// stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_every_lease_is_ridden_out() {
    let mut env = env_aof("long-outage");
    let (sb, db) = env.bucket_pair().await;
    let n = 1500;
    seeds(&env, &sb, n).await;
    let config = env.write_config("r.toml", &rule_toml("r", &sb, &db, "stop = \"once\""));
    let dir = env.dir.path();
    env.redis.kill9();
    let mut coordinator = spawn_ferry(
        dir,
        "coordinator",
        &["coordinator", "--config", &config, "--leader-lease", "3s"],
    );
    let (m1, m2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut workers = vec![
        spawn_ferry(dir, "w1", &worker_args(&config, "w1", &m1)),
        spawn_ferry(dir, "w2", &worker_args(&config, "w2", &m2)),
    ];
    wait_until(
        Duration::from_secs(30),
        "the processes to wait for redis",
        || {
            let waiting = workers
                .iter()
                .chain([&coordinator])
                .all(|p| p.log_text().contains("redis is unreachable"));
            async move { waiting }
        },
    )
    .await;
    env.redis.restart();
    wait_until(Duration::from_secs(120), "copies to be under way", || {
        let redis = &env.redis;
        let ns = env.ns.clone();
        async move {
            let r = iteration_record(redis, &ns, "r", 1).await;
            r.contains_key("sealed") && r.get("done").copied().unwrap_or(0) >= 200
        }
    })
    .await;
    env.redis.kill9();
    // Longer than the 3 s task leases and the 3 s leader lease.
    tokio::time::sleep(Duration::from_secs(10)).await;
    env.redis.restart();
    exits_ok(&mut coordinator, Duration::from_secs(300));
    assert_exact(
        &iteration_record(&env.redis, &env.ns, "r", 1).await,
        n as u64,
    );
    for w in &mut workers {
        assert!(alive(w), "{} died in the outage:\n{}", w.name, w.log_text());
        w.sigterm();
        exits_ok(w, Duration::from_secs(30));
    }
    assert_eq!(history(&env.redis, &env.ns, "r").await, vec![1]);
    assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await;
}

/// The leader is paused (SIGSTOP) mid-planning past its lease; a standby takes over and
/// finishes the iteration. The old leader, woken, is fenced off: it plans nothing, counts
/// nothing, and, the run's single iteration being done, stops without another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_off_when_it_wakes_and_once_means_once() {
    let env = Env::start("paused-leader");
    let (sb, db) = env.bucket_pair().await;
    let n = 2000;
    seeds(&env, &sb, n).await;
    let config = env.write_config("r.toml", &rule_toml("r", &sb, &db, "stop = \"once\""));
    let dir = env.dir.path();
    let coordinator = |name: &str| {
        spawn_ferry(
            dir,
            name,
            &[
                "coordinator",
                "--config",
                &config,
                "--coordinator-id",
                name,
                "--leader-lease",
                "2s",
                "--max-outstanding",
                "100",
            ],
        )
    };
    let mut old = coordinator("old");
    wait_until(
        Duration::from_secs(30),
        "the first coordinator to lead",
        || {
            let leads = old.log_text().contains("leading rule");
            async move { leads }
        },
    )
    .await;
    let mut standby = coordinator("standby");
    let m = format!("127.0.0.1:{}", free_port());
    let mut worker = spawn_ferry(dir, "w", &worker_args(&config, "w", &m));
    wait_until(Duration::from_secs(120), "planning to be under way", || {
        let redis = &env.redis;
        let ns = env.ns.clone();
        async move {
            let r = iteration_record(redis, &ns, "r", 1).await;
            r.get("planned").copied().unwrap_or(0) >= 300 && !r.contains_key("sealed")
        }
    })
    .await;
    old.signal("STOP");
    wait_until(Duration::from_secs(30), "the standby to take over", || {
        let took = standby.log_text().contains("leading rule");
        async move { took }
    })
    .await;
    old.signal("CONT");
    exits_ok(&mut standby, Duration::from_secs(300));
    exits_ok(&mut old, Duration::from_secs(60));
    assert_exact(
        &iteration_record(&env.redis, &env.ns, "r", 1).await,
        n as u64,
    );
    assert_eq!(
        history(&env.redis, &env.ns, "r").await,
        vec![1],
        "once means one iteration, whoever leads"
    );
    let old_log = old.log_text();
    assert!(
        old_log.contains("lost the leader lease") || old_log.contains("leader lease lost"),
        "{old_log}"
    );
    assert!(
        old_log.contains("already met its stop condition"),
        "{old_log}"
    );
    worker.sigterm();
    exits_ok(&mut worker, Duration::from_secs(30));
    assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await;
}

/// One rule's source bucket is gone: that rule is marked failed, with the reason, in
/// `ferry status`, and tried again at each interval; the other rule keeps replicating, and the
/// coordinator keeps running. Once the bucket is back, the failed rule recovers. With
/// `stop = "once"` on both, the coordinator exits 1 only after the good rule finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_rule_is_that_rules_alone() {
    let env = Env::start("failing-rule");
    let (good_src, good_dst) = env.bucket_pair().await;
    let (bad_src, bad_dst) = (unique("gone"), unique("d"));
    env.dst.create_bucket(&bad_dst).await;
    seed(&env.src.client(), &good_src, &[Seed::new("g/1", "one")]).await;
    let rules = rule_toml("good", &good_src, &good_dst, "interval = \"1s\"")
        + &rule_toml("bad", &bad_src, &bad_dst, "interval = \"2s\"");
    let config = env.write_config("rules.toml", &rules);
    let dir = env.dir.path();
    let mut run = spawn_ferry(dir, "run", &["run", "--config", &config]);
    let status = |config: String| async move {
        let (code, out, err) = ferry_output(&["status", "--config", &config, "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("status json")
    };
    wait_until(
        Duration::from_secs(60),
        "the bad rule to show as failed",
        || {
            let s = status(config.clone());
            async move {
                let s = s.await;
                s["rules"][1]["state"] == "failed"
                    && s["rules"][1]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("NoSuchBucket"))
            }
        },
    )
    .await;
    // The good rule goes on: a new object arrives within its next iterations.
    seed(&env.src.client(), &good_src, &[Seed::new("g/2", "two")]).await;
    wait_until(
        Duration::from_secs(60),
        "the good rule to copy a new object",
        || {
            let client = env.dst.client();
            let bucket = good_dst.clone();
            async move { list_keys(&client, &bucket).await.len() == 2 }
        },
    )
    .await;
    assert!(alive(&mut run), "the process exited:\n{}", run.log_text());
    // The bucket comes back: the rule's next attempt succeeds.
    env.src.create_bucket(&bad_src).await;
    seed(&env.src.client(), &bad_src, &[Seed::new("b/1", "back")]).await;
    wait_until(Duration::from_secs(60), "the bad rule to recover", || {
        let client = env.dst.client();
        let bucket = bad_dst.clone();
        async move { list_keys(&client, &bucket).await.len() == 1 }
    })
    .await;
    let s = status(config.clone()).await;
    assert_ne!(s["rules"][1]["state"], "failed", "{s}");
    // Stopped by SIGTERM, `ferry run` drains and says so: 128 + 15.
    run.sigterm();
    let status = run
        .wait_timeout(Duration::from_secs(60))
        .expect("ferry run stops on SIGTERM");
    assert_eq!(status.code(), Some(143), "{}", run.log_text());

    // Both with stop = "once": exit 1, after the good rule is done.
    let (good_src, good_dst) = env.bucket_pair().await;
    seed(&env.src.client(), &good_src, &[Seed::new("g/1", "one")]).await;
    let (gone, gone_dst) = (unique("gone"), unique("d"));
    env.dst.create_bucket(&gone_dst).await;
    let rules = rule_toml("good2", &good_src, &good_dst, "stop = \"once\"")
        + &rule_toml("bad2", &gone, &gone_dst, "stop = \"once\"");
    let config = env.write_config("once.toml", &rules);
    let mut run = spawn_ferry(dir, "run-once", &["run", "--config", &config]);
    let exit = run.wait_timeout(Duration::from_secs(120)).expect("exited");
    assert_eq!(exit.code(), Some(1), "{}", run.log_text());
    assert_eq!(list_keys(&env.dst.client(), &good_dst).await.len(), 1);
    let record = iteration_record(&env.redis, &env.ns, "good2", 1).await;
    assert_eq!(record.get("copied"), Some(&1));
}

/// A worker behind a link that is cut (a network namespace) for longer than its leases:
/// another worker takes its tasks, and when the link comes back the cut-off worker carries
/// on, fenced where it lost its leases. Counts stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_partitioned_from_redis_resumes_when_the_link_returns() {
    let net = NetNs::create();
    let redis = Redis::start_aof_on(&net.host_ip);
    let env = Env {
        redis,
        src: S3Server::garage(),
        dst: S3Server::garage(),
        dir: TempDir::new("partition"),
        ns: unique("ns"),
    };
    let (sb, db) = env.bucket_pair().await;
    let n = 1500;
    seeds(&env, &sb, n).await;
    let rules = rule_toml("r", &sb, &db, "stop = \"once\"");
    let config = env.write_config("r.toml", &rules);
    // The namespace reaches the S3 servers through proxies on the host's end of the link.
    let bind = |port| format!("{}:{port}", net.host_ip).parse().unwrap();
    let src_proxy = FaultProxy::bind(bind(free_port()), &env.src.authority())
        .await
        .unwrap();
    let dst_proxy = FaultProxy::bind(bind(free_port()), &env.dst.authority())
        .await
        .unwrap();
    let mut far = format!(
        "[redis]\nurl = \"redis://{}:{}\"\nnamespace = \"{}\"\n\n",
        net.host_ip, env.redis.port, env.ns
    );
    far += &env.src.endpoint_toml_at("src", &src_proxy.url());
    far += &env.dst.endpoint_toml_at("dst", &dst_proxy.url());
    far += &rules;
    let far_config = env.dir.path().join("far.toml");
    std::fs::write(&far_config, far).unwrap();
    let far_config = far_config.to_str().unwrap();
    let dir = env.dir.path();
    let mut coordinator = spawn_ferry(dir, "coordinator", &["coordinator", "--config", &config]);
    let args = [
        "worker",
        "--config",
        far_config,
        "--id",
        "far",
        "--concurrency",
        "8",
        "--lease",
        "3s",
    ];
    let mut far_worker = spawn_logged(
        std::path::Path::new("ip"),
        dir,
        "far",
        &net.command(ferry_bin(), &args),
    );
    wait_until(
        Duration::from_secs(120),
        "the far worker to be copying",
        || {
            let redis = &env.redis;
            let ns = env.ns.clone();
            async move {
                let r = iteration_record(redis, &ns, "r", 1).await;
                r.get("done").copied().unwrap_or(0) >= 150
            }
        },
    )
    .await;
    net.cut();
    let m = format!("127.0.0.1:{}", free_port());
    let mut near = spawn_ferry(dir, "near", &worker_args(&config, "near", &m));
    // Cut for longer than the far worker's 3 s leases.
    tokio::time::sleep(Duration::from_secs(8)).await;
    net.heal();
    exits_ok(&mut coordinator, Duration::from_secs(300));
    assert_exact(
        &iteration_record(&env.redis, &env.ns, "r", 1).await,
        n as u64,
    );
    assert!(
        alive(&mut far_worker),
        "the far worker died:\n{}",
        far_worker.log_text()
    );
    for w in [&mut far_worker, &mut near] {
        w.sigterm();
        exits_ok(w, Duration::from_secs(40));
    }
    assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await;
}

/// A storm of S3 faults on both sides (503 SlowDown, 500, resets before, in the middle of and
/// after answers), on small objects and on parts: everything is copied, nothing goes to dead
/// letters, no upload is left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_fault_storm_leaves_an_exact_copy_and_no_dead_letters() {
    let env = Env::start("storm");
    let (sb, db) = env.bucket_pair().await;
    let n = 400;
    seeds(&env, &sb, n).await;
    put_multipart(
        &env.src.client(),
        &sb,
        "big/one",
        &[5 * MIB, 5 * MIB, 2 * MIB],
        3,
    )
    .await;
    let (src_proxy, dst_proxy) = (
        FaultProxy::start(&env.src.authority()).await.unwrap(),
        FaultProxy::start(&env.dst.authority()).await.unwrap(),
    );
    let storm = |side: &str| {
        let any = Match::default;
        let method = |m: &str| Match {
            method: Some(m.into()),
            ..Match::default()
        };
        vec![
            Rule::new(
                &format!("{side}-slowdown"),
                any(),
                Action::Status {
                    status: 503,
                    code: "SlowDown".into(),
                },
            )
            .with_probability(0.08),
            Rule::new(
                &format!("{side}-500"),
                any(),
                Action::Status {
                    status: 500,
                    code: "InternalError".into(),
                },
            )
            .with_probability(0.05),
            Rule::new(&format!("{side}-reset"), any(), Action::ResetBeforeAnswer)
                .with_probability(0.03),
            Rule::new(
                &format!("{side}-cut"),
                method("GET"),
                Action::ResetMidAnswer { bytes: 5 },
            )
            .with_probability(0.03),
            Rule::new(
                &format!("{side}-lost-answer"),
                method("PUT"),
                Action::ResetAfterForward,
            )
            .with_probability(0.03),
        ]
    };
    src_proxy.set_rules(storm("src"));
    dst_proxy.set_rules(storm("dst"));
    let config = env.write_config_at(
        "storm.toml",
        &src_proxy.url(),
        &dst_proxy.url(),
        &rule_toml(
            "storm",
            &sb,
            &db,
            "stop = \"once\"\nmultipart_threshold = \"5MiB\"\nmax_attempts = 20",
        ),
    );
    env.run_to_completion(&config, &[], Duration::from_secs(300));
    let injected: u64 = [src_proxy.stats(), dst_proxy.stats()]
        .iter()
        .flat_map(|s| s.hits.values().copied().collect::<Vec<_>>())
        .sum();
    assert!(injected >= 40, "only {injected} faults injected");
    let record = iteration_record(&env.redis, &env.ns, "storm", 1).await;
    assert_eq!(record.get("copied"), Some(&(n as u64 + 1)), "{record:?}");
    assert_eq!(record.get("dead"), None, "{record:?}");
    src_proxy.clear();
    dst_proxy.clear();
    assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await;
    assert!(open_uploads(&env.dst.client(), &db).await.is_empty());
    eprintln!("storm: {injected} faults injected, {} objects exact", n + 1);
}

/// A credential provider that fails now and then (a credential process exiting 1, as IMDS
/// or STS hiccups look) is a retryable failure, not a permanent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_provider_hiccup_is_retried() {
    let env = Env::start("credentials");
    let (sb, db) = env.bucket_pair().await;
    seeds(&env, &sb, 20).await;
    let dir = env.dir.path();
    let counter = dir.join("calls");
    let script = dir.join("creds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}\n\
             if [ $((n % 3)) -ne 0 ]; then echo 'provider unavailable' >&2; exit 1; fi\n\
             printf '{{\"Version\": 1, \"AccessKeyId\": \"{k}\", \"SecretAccessKey\": \"{s}\"}}'\n",
            c = counter.display(),
            k = env.dst.access_key,
            s = env.dst.secret_key
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let aws_config = dir.join("aws-config");
    std::fs::write(
        &aws_config,
        format!(
            "[profile flaky]\ncredential_process = {}\n",
            script.display()
        ),
    )
    .unwrap();
    let mut config = format!(
        "[redis]\nurl = \"{}\"\nnamespace = \"{}\"\n\n",
        env.redis.url(),
        env.ns
    );
    config += &env.src.endpoint_toml("src");
    config += &format!(
        "[endpoints.dst]\nurl = \"{}\"\nregion = \"garage\"\npath_style = true\nprofile = \"flaky\"\n\n",
        env.dst.url()
    );
    config += &rule_toml("creds", &sb, &db, "stop = \"once\"");
    let path = dir.join("creds.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap();
    let env_vars = [
        ("AWS_CONFIG_FILE", aws_config.to_str().unwrap()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ];
    let bin = std::path::Path::new(ferry_bin());
    let mut coordinator = harness::spawn_logged_with(
        bin,
        dir,
        "coordinator",
        &["coordinator", "--config", path],
        &env_vars,
    );
    let mut worker =
        harness::spawn_logged_with(bin, dir, "worker", &["worker", "--config", path], &env_vars);
    exits_ok(&mut coordinator, Duration::from_secs(120));
    let record = iteration_record(&env.redis, &env.ns, "creds", 1).await;
    assert_eq!(record.get("copied"), Some(&20), "{record:?}");
    assert_eq!(record.get("dead"), None, "{record:?}");
    let calls: u32 = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        calls >= 6,
        "the provider failed {calls} times, both processes saw it"
    );
    worker.sigterm();
    exits_ok(&mut worker, Duration::from_secs(30));
}

/// Timeouts that fit a WAN: a 100 MiB part over a link throttled to 5 MiB/s takes 20 s, far
/// longer than a 5 s first-byte timeout, and is not cut off, since it keeps moving; an
/// upload that stops moving is cut off after the 3 s idle timeout, and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_that_keep_moving_are_never_cut_off_and_stalled_ones_are() {
    let env = Env::start("wan");
    let (sb, db) = env.bucket_pair().await;
    let big = harness::data::pattern(1, 0, 100 * MIB as usize);
    seed(
        &env.src.client(),
        &sb,
        &[
            Seed::new("wan/slow", big),
            // More than the socket buffers on both sides hold, so a stall is a stall.
            Seed::new(
                "wan/stalls",
                harness::data::pattern(2, 0, 32 * MIB as usize),
            ),
        ],
    )
    .await;
    let proxy = FaultProxy::start(&env.dst.authority()).await.unwrap();
    proxy.set_rules(vec![
        Rule::new(
            "throttle",
            Match {
                method: Some("PUT".into()),
                path_prefix: Some(format!("/{db}/wan/slow")),
                query_contains: Some("uploadId".into()),
                ..Match::default()
            },
            Action::Throttle {
                bytes_per_sec: 5 * MIB,
            },
        ),
        Rule::new(
            "stall",
            Match {
                method: Some("PUT".into()),
                path_prefix: Some(format!("/{db}/wan/stalls")),
                ..Match::default()
            },
            Action::StallRequest {
                after_bytes: MIB,
                ms: 20_000,
            },
        )
        .times(1),
    ]);
    let config = env.write_config_at(
        "wan.toml",
        &env.src.url(),
        &proxy.url(),
        &rule_toml(
            "wan",
            &sb,
            &db,
            "stop = \"once\"\nmultipart_threshold = \"50MiB\"\npart_size = \"100MiB\"",
        ),
    );
    let started = Instant::now();
    let log = env.run_to_completion_with(
        &config,
        &["--s3-first-byte-timeout", "5s", "--s3-idle-timeout", "3s"],
        &[("RUST_LOG", "info,ferry_worker=debug")],
        Duration::from_secs(300),
    );
    let seconds = started.elapsed().as_secs_f64();
    assert!(seconds >= 19.0, "the throttle did not hold: {seconds:.1}s");
    assert!(log.contains("made no progress for 3s"), "{log}");
    let record = iteration_record(&env.redis, &env.ns, "wan", 1).await;
    assert_eq!(record.get("copied"), Some(&2), "{record:?}");
    assert_eq!(record.get("dead"), None, "{record:?}");
    proxy.clear();
    assert_same_objects(&env.src.client(), &sb, &env.dst.client(), &db).await;
    eprintln!("wan: 100 MiB through 5 MiB/s in {seconds:.1}s with a 5 s first-byte timeout");
}

/// A source that takes a GetObject and never answers (a hung server, a black-holed link) is
/// cut off at the first-byte timeout and the copy retried: the lean request path keeps the
/// timeout the SDK path had. The held request is let through only after the run, so the
/// answer that then comes back to nobody changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_that_is_never_answered_is_cut_off_at_the_first_byte_timeout() {
    let env = Env::start("hung-get");
    let (sb, db) = env.bucket_pair().await;
    seeds(&env, &sb, 30).await;
    let proxy = FaultProxy::start(&env.src.authority()).await.unwrap();
    proxy.set_rules(vec![
        Rule::new(
            "hang",
            Match {
                method: Some("GET".into()),
                path_prefix: Some(format!("/{sb}/")),
                // Object reads, not listings (`?list-type=2`).
                query_lacks: Some("list-type".into()),
                ..Match::default()
            },
            Action::Hold,
        )
        .skip(3)
        .times(2),
    ]);
    let config = env.write_config_at(
        "hung.toml",
        &proxy.url(),
        &env.dst.url(),
        &rule_toml("hung", &sb, &db, "stop = \"once\""),
    );
    let started = Instant::now();
    let log = env.run_to_completion_with(
        &config,
        &["--s3-first-byte-timeout", "2s"],
        &[("RUST_LOG", "info,ferry_worker=debug")],
        Duration::from_secs(120),
    );
    assert_eq!(proxy.stats().hits.get("hang"), Some(&2));
    assert!(
        log.contains("GetObject") && log.contains("no answer within 2s"),
        "{log}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    let record = iteration_record(&env.redis, &env.ns, "hung", 1).await;
    assert_eq!(record.get("copied"), Some(&30), "{record:?}");
    assert_eq!(record.get("dead"), None, "{record:?}");
    proxy.release_held();
    assert_same_objects(&env.src.client(), &sb, &env.dst.client(), &db).await;
}

/// A task written by a newer ferry (payload version 9) is left for a worker that reads it:
/// released with a delay and no attempt counted, never buried. A registered rule this version
/// cannot decode does not stop a coordinator from starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_rules_of_a_newer_ferry_are_left_alone_not_buried() {
    use redis::AsyncCommands;
    let env = Env::start_on("upgrade", S3Server::moto(), S3Server::moto());
    let (sb, db) = env.bucket_pair().await;
    let config = env.write_config("r.toml", &rule_toml("r", &sb, &db, "stop = \"never\""));
    let mut conn = env.redis.conn().await;
    let prefix = format!("{}:{{r}}", env.ns);
    let id = "1:0:1:1796000000000";
    let _: () = conn
        .hset(
            format!("{prefix}:tasks"),
            id,
            b"\x09from a newer ferry".to_vec(),
        )
        .await
        .unwrap();
    let _: () = conn.sadd(format!("{prefix}:shards"), 0).await.unwrap();
    let _: () = conn.lpush(format!("{prefix}:q:0"), id).await.unwrap();
    let _: () = conn
        .hset(format!("{}:rules", env.ns), "future", b"\x09newer".to_vec())
        .await
        .unwrap();
    let port = free_port();
    let m = format!("127.0.0.1:{port}");
    let dir = env.dir.path();
    let mut worker = spawn_ferry(
        dir,
        "worker",
        &["worker", "--config", &config, "--metrics-listen", &m],
    );
    let mut coordinator = spawn_ferry(dir, "coordinator", &["coordinator", "--config", &config]);
    wait_until(
        Duration::from_secs(30),
        "the worker to meet the task",
        || {
            let met = worker.log_text().contains("cannot decode this task");
            async move { met }
        },
    )
    .await;
    let delayed: Vec<String> = conn
        .zrange(format!("{prefix}:delayed"), 0, -1)
        .await
        .unwrap();
    let dead: Vec<String> = conn.zrange(format!("{prefix}:dead"), 0, -1).await.unwrap();
    let attempts: Option<u32> = conn.hget(format!("{prefix}:attempts"), id).await.unwrap();
    let payload: Option<Vec<u8>> = conn.hget(format!("{prefix}:tasks"), id).await.unwrap();
    assert_eq!(delayed, vec![id.to_string()]);
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(attempts, None);
    assert_eq!(payload.as_deref(), Some(&b"\x09from a newer ferry"[..]));
    let undecodable: f64 = samples(&scrape(port), "ferry_tasks_undecodable_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(undecodable, 1.0);
    wait_until(Duration::from_secs(30), "the coordinator to start", || {
        let log = coordinator.log_text();
        async move { log.contains("leading rule") }
    })
    .await;
    assert!(alive(&mut coordinator));
    assert!(coordinator.log_text().contains("cannot be decoded"));
    for p in [&mut worker, &mut coordinator] {
        p.sigterm();
        exits_ok(p, Duration::from_secs(40));
    }
}

/// Two configs that share a namespace and a rule name but pair other buckets: the second
/// coordinator refuses to start (exit 2, saying why) unless told `--replace-rule`, which
/// forgets the old pairing's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_registered_with_other_buckets_is_refused_unless_replaced() {
    let env = Env::start_on("namespace", S3Server::moto(), S3Server::moto());
    let (s1, d1) = env.bucket_pair().await;
    let (s2, d2) = env.bucket_pair().await;
    seed(&env.src.client(), &s1, &[Seed::new("a", "a")]).await;
    seed(&env.src.client(), &s2, &[Seed::new("b", "b")]).await;
    let first = env.write_config("first.toml", &rule_toml("dr", &s1, &d1, "stop = \"once\""));
    let second = env.write_config("second.toml", &rule_toml("dr", &s2, &d2, "stop = \"once\""));
    env.run_to_completion(&first, &[], Duration::from_secs(60));
    let (code, _, err) = ferry_output(&["coordinator", "--config", &second]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rule \"dr\" is registered"), "{err}");
    assert!(err.contains("--replace-rule"), "{err}");
    assert!(err.contains(&d1) && err.contains(&d2), "{err}");
    // The first pairing's state is untouched.
    assert_eq!(history(&env.redis, &env.ns, "dr").await, vec![1]);
    let (code, _, err) = ferry_output(&["run", "--config", &second, "--replace-rule"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        history(&env.redis, &env.ns, "dr").await,
        vec![1],
        "replaced: the new pairing starts from iteration 1"
    );
    assert_eq!(list_keys(&env.dst.client(), &d2).await.len(), 1);
}

/// The CLI does not wait for an unreachable Redis: it fails at once, naming it.
#[test]
fn the_cli_fails_fast_and_clearly_when_redis_is_unreachable() {
    let dir = TempDir::new("cli-down");
    let port = free_port();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"redis://:pw@127.0.0.1:{port}\"\n\n[endpoints.a]\nurl = \"http://127.0.0.1:1\"\n\n\
             [[rules]]\nname = \"r\"\nsource = {{ endpoint = \"a\", bucket = \"src\" }}\n\
             destination = {{ endpoint = \"a\", bucket = \"dst\" }}\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (code, _, err) = ferry_output(&["status", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains(&format!("redis://***@127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("pw"), "{err}");
}
