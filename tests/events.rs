//! Event-driven replication: S3 notifications through moto's own SQS, SNS HTTP subscriptions
//! and direct webhook posts become copies within seconds, with no iteration in between; bad
//! input enqueues nothing; deletes follow `delete`; iterations count what events missed; and
//! a coordinator killed holding received events loses none of them.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use ferry_testkit::proxy::{Action, FaultProxy, Match, Rule as ProxyRule};
use harness::data::{bytes, list_keys, put};
use harness::webhook::{event, notify_through_sns, post, tally};
use harness::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn sqs(server: &S3Server) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(server.url())
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// Creates an SQS queue on moto (messages visible again `visibility` seconds after a receive)
/// and has `bucket` notify it of creations and removals; returns the queue's URL.
async fn notify_sqs(server: &S3Server, bucket: &str, visibility: u32) -> String {
    let client = sqs(server);
    let url = client
        .create_queue()
        .queue_name(unique("events"))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility.to_string(),
        )
        .send()
        .await
        .expect("creating the queue")
        .queue_url
        .expect("a queue url");
    let arn = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("reading the queue's arn")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("a queue arn");
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    server
        .client()
        .put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::S3ObjectCreated)
                        .events(Event::S3ObjectRemoved)
                        .build()
                        .expect("a queue configuration"),
                )
                .build(),
        )
        .send()
        .await
        .expect("configuring notifications");
    url
}

/// Messages in the queue, visible or in flight.
async fn queued_messages(server: &S3Server, url: &str) -> u64 {
    let attrs = sqs(server)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("reading the queue's depth")
        .attributes
        .unwrap_or_default();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|k| {
        attrs
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    })
    .sum()
}

/// `ferry run` on `config` with the events listener and metrics on free ports (and `vars`
/// in its environment), once every rule of `rules` has finished its first iteration.
struct Running {
    proc: Proc,
    port: u16,
    metrics: u16,
}

impl Running {
    async fn start(env: &Env, config: &str, rules: &[&str], vars: &[(&str, &str)]) -> Running {
        let (port, metrics) = (free_port(), free_port());
        let (listen, serve) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{metrics}"));
        let proc = spawn_logged_with(
            std::path::Path::new(ferry_bin()),
            env.dir.path(),
            "run",
            &[
                "run",
                "--config",
                config,
                "--events-listen",
                &listen,
                "--metrics-listen",
                &serve,
            ],
            vars,
        );
        wait_for_port(port, RUN_TIMEOUT, "the events listener");
        for rule in rules {
            wait_until(RUN_TIMEOUT, "the first iteration", || async {
                history(&env.redis, &env.ns, rule).await.len() == 1
            })
            .await;
        }
        Running {
            proc,
            port,
            metrics,
        }
    }

    fn stop(mut self) {
        self.proc.sigterm();
        self.proc
            .wait_timeout(RUN_TIMEOUT)
            .expect("ferry run stops");
    }
}

async fn events_record(env: &Env, rule: &str) -> std::collections::HashMap<String, u64> {
    iteration_record(&env.redis, &env.ns, rule, 0).await
}

async fn has(env: &Env, bucket: &str, key: &str, body: &[u8]) -> bool {
    list_keys(&env.dst.client(), bucket)
        .await
        .iter()
        .any(|k| k.0 == key)
        && bytes(&env.dst.client(), bucket, key).await == body
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_events_are_copied_with_no_iteration_between_on_moto() {
    let env = Env::start_on("ev-sqs", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let queue = notify_sqs(&env.src, &src, 2).await;
    // A poison message: counted as invalid, logged once, deleted after 3 deliveries.
    sqs(&env.src)
        .send_message()
        .queue_url(&queue)
        .message_body("this is not an event")
        .send()
        .await
        .expect("sending a poison message");
    let events = format!("interval = \"1h\"\nevents = {{ sqs = \"{queue}\" }}");
    let config = env.write_config("ferry.toml", &rule_toml("ev", &src, &dst, &events));
    let run = Running::start(&env, &config, &["ev"], &[]).await;
    let client = env.src.client();
    let keys: Vec<String> = (0..20).map(|i| format!("photos/{i:02} a+b%.txt")).collect();
    for key in &keys {
        put(&client, &src, key, key.as_bytes()).await;
    }
    wait_until(RUN_TIMEOUT, "every event's copy", || async {
        list_keys(&env.dst.client(), &dst).await.len() == keys.len()
    })
    .await;
    for key in &keys {
        assert_eq!(bytes(&env.dst.client(), &dst, key).await, key.as_bytes());
    }
    // Copied by events alone: still the one iteration of the start.
    assert_eq!(history(&env.redis, &env.ns, "ev").await, vec![1]);
    let record = events_record(&env, "ev").await;
    assert_eq!(record.get("copied"), Some(&20), "{record:?}");
    assert_eq!(record.get("planned"), record.get("done"), "{record:?}");
    wait_until(RUN_TIMEOUT, "every message deleted", || async {
        queued_messages(&env.src, &queue).await == 0
    })
    .await;
    let text = scrape(run.metrics);
    let enqueued: f64 = samples(&text, "ferry_events_total")
        .iter()
        .filter(|(l, _)| l.contains("outcome=\"enqueued\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(enqueued, 20.0, "{text}");
    let invalid: Vec<_> = samples(&text, "ferry_events_total")
        .into_iter()
        .filter(|(l, _)| l.contains("outcome=\"invalid\""))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(invalid, vec![1.0], "{text}");
    assert_eq!(
        run.proc
            .log_text()
            .matches("an SQS message that is not an S3 event")
            .count(),
        1
    );
    let lags = samples(&text, "ferry_event_lag_seconds_count");
    assert_eq!(lags.iter().map(|(_, v)| v).sum::<f64>(), 20.0, "{text}");
    let (code, out, _) = ferry_output(&["status", "--config", &config]);
    assert_eq!(code, 0);
    assert!(
        out.contains("events: 20 tasks, 20 done, 20 copied"),
        "{out}"
    );
    run.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_posts_direct_sns_tokens_keys_stale_and_duplicates_on_moto() {
    let env = Env::start_on("ev-hook", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let events = "interval = \"1h\"\nevents = { webhook = true }\n\
                  events_token_env = \"FERRY_TEST_EVENTS_TOKEN\"";
    let config = env.write_config("ferry.toml", &rule_toml("hook", &src, &dst, events));
    let token = "s3cr3t-token";
    let run = Running::start(
        &env,
        &config,
        &["hook"],
        &[("FERRY_TEST_EVENTS_TOKEN", token)],
    )
    .await;
    let port = run.port;
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let client = env.src.client();
    let key = "dir/a b+c.txt";
    put(&client, &src, key, b"one").await;
    let body = event("ObjectCreated:Put", &src, "dir/a+b%2Bc.txt", "0A");

    // Refused: nothing enqueued.
    assert_eq!(post(port, "/events/hook", &[], body.as_bytes()).0, 401);
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(post(port, "/events/hook", &wrong, body.as_bytes()).0, 401);
    let (code, why) = post(port, "/events/nosuch", &auth, body.as_bytes());
    assert_eq!(code, 404, "{why}");
    let (code, why) = post(port, "/events/hook", &auth, b"{\"hello\": 1}");
    assert_eq!(code, 400);
    assert!(why.contains("neither S3 event records"), "{why}");
    let big = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(post(port, "/events/hook", &auth, &big).0, 413);
    assert_eq!(events_record(&env, "hook").await.get("planned"), None);
    assert!(list_keys(&env.dst.client(), &dst).await.is_empty());

    // A direct post: the URL-encoded key, decoded, is copied.
    let (code, out) = post(port, "/events/hook", &auth, body.as_bytes());
    assert_eq!(code, 200, "{out}");
    assert_eq!(tally(&out)["enqueued"], 1, "{out}");
    wait_until(RUN_TIMEOUT, "the direct event's copy", || {
        has(&env, &dst, key, b"one")
    })
    .await;
    // The same again: a duplicate, dropped.
    let (code, out) = post(port, "/events/hook", &auth, body.as_bytes());
    assert_eq!(
        (code, tally(&out)["stale"].as_u64()),
        (200, Some(1)),
        "{out}"
    );

    // An older sequencer after a newer one: ignored, the replica stays at what it was.
    put(&client, &src, key, b"two").await;
    let older = event("ObjectCreated:Put", &src, "dir/a+b%2Bc.txt", "09FF");
    let (_, out) = post(port, "/events/hook", &auth, older.as_bytes());
    assert_eq!(tally(&out)["stale"], 1, "{out}");
    assert_eq!(tally(&out)["enqueued"], 0, "{out}");
    let newer = event("ObjectCreated:Put", &src, "dir/a+b%2Bc.txt", "0A01");
    let (_, out) = post(port, "/events/hook", &auth, newer.as_bytes());
    assert_eq!(tally(&out)["enqueued"], 1, "{out}");
    wait_until(RUN_TIMEOUT, "the newer event's copy", || {
        has(&env, &dst, key, b"two")
    })
    .await;

    // Another bucket's event is counted and dropped.
    let other = event("ObjectCreated:Put", "another-bucket", "x", "01");
    let (_, out) = post(port, "/events/hook", &auth, other.as_bytes());
    assert_eq!(tally(&out)["ignored"], 1, "{out}");

    // Wrapped in an SNS envelope, with the token as Basic auth's password (as SNS sends a
    // URL's user:password).
    put(&client, &src, "sns/k", b"wrapped").await;
    let inner = event("ObjectCreated:Put", &src, "sns/k", "01");
    let wrapped = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
    let basic = format!(
        "Basic {}",
        ferry_testkit::tls::base64(format!("sns:{token}").as_bytes())
    );
    let (code, out) = post(
        port,
        "/events/hook",
        &[("Authorization", basic.as_str())],
        wrapped.as_bytes(),
    );
    assert_eq!(
        (code, tally(&out)["enqueued"].as_u64()),
        (200, Some(1)),
        "{out}"
    );
    wait_until(RUN_TIMEOUT, "the SNS event's copy", || {
        has(&env, &dst, "sns/k", b"wrapped")
    })
    .await;

    // A real SNS HTTP subscription from moto: the bucket notifies a topic, the topic posts a
    // signed notification. Its certificate is on sns.us-east-1.amazonaws.com, which moto
    // stands in for but this process reaches for real: the signature cannot be checked, so
    // the message is refused, whatever token it carries (tests/security.rs has it accepted
    // once the certificate is reachable under a trusted authority).
    let endpoint = format!("http://sns:{token}@127.0.0.1:{port}/events/hook");
    notify_through_sns(&env, &src, &endpoint).await;
    put(&client, &src, "via-sns/real", b"real").await;
    wait_until(RUN_TIMEOUT, "moto's SNS message refused", || async {
        samples(&scrape(run.metrics), "ferry_events_total")
            .iter()
            .any(|(labels, n)| labels.contains("outcome=\"refused\"") && *n >= 1.0)
    })
    .await;
    assert!(!has(&env, &dst, "via-sns/real", b"real").await);

    let record = events_record(&env, "hook").await;
    assert_eq!(record.get("copied"), Some(&3), "{record:?}");
    assert_eq!(history(&env.redis, &env.ns, "hook").await, vec![1]);
    run.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_events_remove_only_managed_objects_and_only_with_delete_to_garage() {
    let env = Env::start_on("ev-del", S3Server::moto(), S3Server::garage());
    let (src_a, dst_a) = env.bucket_pair().await;
    let (src_b, dst_b) = env.bucket_pair().await;
    let events = |delete: bool| {
        format!("interval = \"1h\"\ndelete = {delete}\nevents = {{ webhook = true }}")
    };
    let config = env.write_config(
        "ferry.toml",
        &(rule_toml("deleting", &src_a, &dst_a, &events(true))
            + &rule_toml("keeping", &src_b, &dst_b, &events(false))),
    );
    let run = Running::start(&env, &config, &["deleting", "keeping"], &[]).await;
    let port = run.port;
    let (src, dst) = (env.src.client(), env.dst.client());
    for (rule, s, d) in [("deleting", &src_a, &dst_a), ("keeping", &src_b, &dst_b)] {
        put(&src, s, "managed", b"m").await;
        let created = event("ObjectCreated:Put", s, "managed", "01");
        let path = format!("/events/{rule}");
        assert_eq!(post(port, &path, &[], created.as_bytes()).0, 200);
        wait_until(RUN_TIMEOUT, "the copy", || async {
            list_keys(&dst, d).await.iter().any(|k| k.0 == "managed")
        })
        .await;
        // Someone else's object at the destination, never ferry's.
        put(&dst, d, "unmanaged", b"u").await;
        src.delete_object()
            .bucket(s)
            .key("managed")
            .send()
            .await
            .unwrap();
        // A batch delete: one body, a record per key.
        let records: Vec<serde_json::Value> = ["managed", "unmanaged"]
            .iter()
            .map(|key| {
                let one: serde_json::Value =
                    serde_json::from_str(&event("ObjectRemoved:Delete", s, key, "02")).unwrap();
                one["Records"][0].clone()
            })
            .collect();
        let removed = serde_json::json!({ "Records": records }).to_string();
        let (code, out) = post(port, &path, &[], removed.as_bytes());
        assert_eq!(code, 200, "{out}");
        assert_eq!(tally(&out)["received"], 2, "{out}");
    }
    wait_until(RUN_TIMEOUT, "the managed replica deleted", || async {
        list_keys(&dst, &dst_a)
            .await
            .iter()
            .all(|k| k.0 != "managed")
    })
    .await;
    let names = |v: Vec<(String, String, i64)>| v.into_iter().map(|k| k.0).collect::<Vec<_>>();
    assert_eq!(names(list_keys(&dst, &dst_a).await), vec!["unmanaged"]);
    let record = events_record(&env, "keeping").await;
    wait_until(RUN_TIMEOUT, "the keeping rule's events settled", || async {
        let r = events_record(&env, "keeping").await;
        r.get("planned") == r.get("done")
    })
    .await;
    assert_eq!(
        names(list_keys(&dst, &dst_b).await),
        vec!["managed", "unmanaged"],
        "{record:?}"
    );
    assert_eq!(
        events_record(&env, "deleting").await.get("deleted"),
        Some(&1)
    );
    assert_eq!(events_record(&env, "keeping").await.get("deleted"), None);
    run.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missed_event_is_caught_by_the_next_iteration_and_counted_on_moto() {
    let env = Env::start_on("ev-miss", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let events = "interval = \"14s\"\nevents = { webhook = true }";
    let config = env.write_config("ferry.toml", &rule_toml("miss", &src, &dst, events));
    let run = Running::start(&env, &config, &["miss"], &[]).await;
    let port = run.port;
    let client = env.src.client();
    // One change announced, one not.
    put(&client, &src, "announced", b"a").await;
    let created = event("ObjectCreated:Put", &src, "announced", "01");
    assert_eq!(post(port, "/events/miss", &[], created.as_bytes()).0, 200);
    put(&client, &src, "unannounced", b"u").await;
    wait_until(RUN_TIMEOUT, "the announced copy", || {
        has(&env, &dst, "announced", b"a")
    })
    .await;
    wait_until(Duration::from_secs(90), "the second iteration", || async {
        history(&env.redis, &env.ns, "miss").await.len() >= 2
    })
    .await;
    assert!(has(&env, &dst, "unannounced", b"u").await);
    let second = iteration_record(&env.redis, &env.ns, "miss", 2).await;
    assert_eq!(second.get("missed"), Some(&1), "{second:?}");
    assert_eq!(second.get("copied"), Some(&1), "{second:?}");
    let (code, out, _) = ferry_output(&["status", "--config", &config]);
    assert_eq!(code, 0);
    assert!(
        out.contains("missed events: 1 found by the last iteration"),
        "{out}"
    );
    run.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_holding_received_events_loses_none_on_moto() {
    let env = Env::start_on("ev-kill", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let queue = notify_sqs(&env.src, &src, 3).await;
    // The coordinator reaches the source through a proxy that holds its HEADs: it has
    // received the events and not enqueued them when it is killed.
    let proxy = FaultProxy::start(&env.src.authority()).await.unwrap();
    proxy.set_rules(vec![ProxyRule::new(
        "hold-heads",
        Match {
            method: Some("HEAD".into()),
            ..Match::default()
        },
        Action::Hold,
    )]);
    let events = format!("interval = \"1h\"\nevents = {{ sqs = \"{queue}\" }}");
    let rule = rule_toml("kill", &src, &dst, &events);
    let config = env.write_config_at(
        "ferry.toml",
        &format!("http://{}", proxy.addr()),
        &env.dst.url(),
        &rule,
    );
    let mut worker = spawn_ferry(env.dir.path(), "worker", &["worker", "--config", &config]);
    let mut coordinator = spawn_ferry(
        env.dir.path(),
        "coordinator-1",
        &["coordinator", "--config", &config],
    );
    wait_until(RUN_TIMEOUT, "the first iteration", || async {
        history(&env.redis, &env.ns, "kill").await.len() == 1
    })
    .await;
    let client = env.src.client();
    let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    for key in &keys {
        put(&client, &src, key, key.as_bytes()).await;
    }
    wait_until(RUN_TIMEOUT, "the coordinator deciding an event", || async {
        proxy.events().iter().any(|e| e.method == "HEAD")
    })
    .await;
    coordinator.kill9();
    assert!(list_keys(&env.dst.client(), &dst).await.is_empty());
    assert_eq!(events_record(&env, "kill").await.get("planned"), None);
    // The dead coordinator's HEADs go on (and nowhere), and nothing is held any more.
    proxy.clear();
    proxy.release_held();
    let mut coordinator = spawn_ferry(
        env.dir.path(),
        "coordinator-2",
        &["coordinator", "--config", &config],
    );
    wait_until(
        RUN_TIMEOUT,
        "every event redelivered and copied",
        || async { list_keys(&env.dst.client(), &dst).await.len() == keys.len() },
    )
    .await;
    for key in &keys {
        assert_eq!(bytes(&env.dst.client(), &dst, key).await, key.as_bytes());
    }
    wait_until(RUN_TIMEOUT, "every message deleted", || async {
        queued_messages(&env.src, &queue).await == 0
    })
    .await;
    let record = events_record(&env, "kill").await;
    assert_eq!(record.get("copied"), Some(&5), "{record:?}");
    assert_eq!(history(&env.redis, &env.ns, "kill").await, vec![1]);
    coordinator.sigterm();
    worker.sigterm();
    coordinator
        .wait_timeout(RUN_TIMEOUT)
        .expect("the coordinator stops");
    worker.wait_timeout(RUN_TIMEOUT).expect("the worker stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_answers_only_once_its_tasks_are_in_redis_on_moto() {
    let env = Env::start_on("ev-stop", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let events = "interval = \"1h\"\nevents = { webhook = true }";
    let config = env.write_config("ferry.toml", &rule_toml("frozen", &src, &dst, events));
    let run = Running::start(&env, &config, &["frozen"], &[]).await;
    put(&env.src.client(), &src, "k", b"v").await;
    // Redis frozen: the event cannot be enqueued, so it is not acknowledged.
    env.redis.signal("STOP");
    let (tx, rx) = std::sync::mpsc::channel();
    let port = run.port;
    let body = event("ObjectCreated:Put", &src, "k", "01");
    std::thread::spawn(move || {
        tx.send(post(port, "/events/frozen", &[], body.as_bytes()))
            .ok(); // unread once the test moved on
    });
    let early = rx.recv_timeout(Duration::from_secs(3));
    env.redis.signal("CONT");
    assert!(early.is_err(), "answered while Redis was frozen: {early:?}");
    let (code, out) = rx
        .recv_timeout(RUN_TIMEOUT)
        .expect("an answer once Redis is back");
    assert_eq!(
        (code, tally(&out)["enqueued"].as_u64()),
        (200, Some(1)),
        "{out}"
    );
    wait_until(RUN_TIMEOUT, "the copy", || has(&env, &dst, "k", b"v")).await;
    run.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_followed_on_one_machine_without_redis_on_moto() {
    let env = Env::start_on("ev-solo", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let config = env.dir.path().join("solo.toml");
    let text = env.src.endpoint_toml("src")
        + &env.dst.endpoint_toml("dst")
        + &rule_toml(
            "solo",
            &src,
            &dst,
            "interval = \"1h\"\nevents = { webhook = true }",
        );
    std::fs::write(&config, text).unwrap();
    let (state, port) = (env.dir.path().join("state"), free_port());
    let mut run = spawn_ferry(
        env.dir.path(),
        "run",
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--events-listen",
            &format!("127.0.0.1:{port}"),
        ],
    );
    wait_for_port(port, RUN_TIMEOUT, "the events listener");
    put(&env.src.client(), &src, "solo/k", b"embedded").await;
    let body = event("ObjectCreated:Put", &src, "solo/k", "01");
    let (code, out) = post(port, "/events/solo", &[], body.as_bytes());
    assert_eq!(
        (code, tally(&out)["enqueued"].as_u64()),
        (200, Some(1)),
        "{out}"
    );
    wait_until(RUN_TIMEOUT, "the copy", || {
        has(&env, &dst, "solo/k", b"embedded")
    })
    .await;
    let (_, out) = post(port, "/events/solo", &[], body.as_bytes());
    assert_eq!(tally(&out)["stale"], 1, "{out}");
    run.sigterm();
    run.wait_timeout(RUN_TIMEOUT).expect("ferry run stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_event_never_undoes_a_newer_copy_by_an_iteration_on_moto() {
    let env = Env::start_on("ev-late", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let events = "interval = \"2s\"\nevents = { webhook = true }";
    let config = env.write_config("ferry.toml", &rule_toml("late", &src, &dst, events));
    let run = Running::start(&env, &config, &["late"], &[]).await;
    let client = env.src.client();
    put(&client, &src, "k", b"version 1").await;
    // moto sends no sequencers: neither does this event, which is delivered late.
    let late = event("ObjectCreated:Put", &src, "k", "");
    put(&client, &src, "k", b"version 2").await;
    wait_until(RUN_TIMEOUT, "an iteration copying version 2", || {
        has(&env, &dst, "k", b"version 2")
    })
    .await;
    let (code, out) = post(run.port, "/events/late", &[], late.as_bytes());
    assert_eq!(code, 200, "{out}");
    assert_eq!(tally(&out)["skipped"], 1, "{out}");
    assert_eq!(tally(&out)["enqueued"], 0, "{out}");
    assert!(has(&env, &dst, "k", b"version 2").await);
    assert_eq!(events_record(&env, "late").await.get("planned"), None);
    // The same record twice in one body (no sequencer to tell them apart): decided once.
    let one: serde_json::Value = serde_json::from_str(&late).unwrap();
    let twice = serde_json::json!({"Records": [one["Records"][0], one["Records"][0]]});
    let (code, out) = post(run.port, "/events/late", &[], twice.to_string().as_bytes());
    assert_eq!(code, 200, "{out}");
    assert_eq!(
        (
            tally(&out)["skipped"].as_u64(),
            tally(&out)["stale"].as_u64()
        ),
        (Some(1), Some(1)),
        "{out}"
    );
    run.stop();
}
