//! Every door ferry opens, tried as an attacker would: the events webhook (forged SNS
//! confirmations aimed at local addresses, messages signed by a stranger's key, a listener
//! left open beyond loopback), Redis turning ferry away (protected mode, passwords, ACLs, an
//! untrusted TLS certificate), and the files that hold secrets.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use ferry_coordinator::events::{Listener, SnsCheck};
use ferry_core::config::Config;
use ferry_queue::{Persistence, Queue};
use ferry_storage::{Stores, Timeouts, Trust};
use ferry_testkit::sns::{FakeSns, SNS_HOST};
use ferry_testkit::tls::PrivateCa;
use harness::data::{list_keys, put};
use harness::webhook::{event, notify_through_sns, post, tally};
use harness::*;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process that must stop at once (a configuration error) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `ferry ARGS` with `vars`, expecting it to exit within `timeout`: its status and log.
fn ferry_exits(
    dir: &std::path::Path,
    args: &[&str],
    vars: &[(&str, &str)],
    timeout: Duration,
) -> (ExitStatus, String) {
    let name = unique("ferry");
    let mut p = spawn_logged_with(std::path::Path::new(ferry_bin()), dir, &name, args, vars);
    let status = p.wait_timeout(timeout);
    let log = p.log_text();
    let status =
        status.unwrap_or_else(|| panic!("ferry {args:?} still runs after {timeout:?}:\n{log}"));
    (status, log)
}

/// `ferry run` on `config` (`FERRY_TEST_TOKEN` set), its webhook and metrics on free loopback
/// ports: the process and the two ports.
fn run_with_webhook(env: &Env, config: &str) -> (Proc, u16, u16) {
    let (port, metrics) = (free_port(), free_port());
    let (listen, serve) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{metrics}"));
    let proc = spawn_logged_with(
        std::path::Path::new(ferry_bin()),
        env.dir.path(),
        &unique("run"),
        &[
            "run",
            "--config",
            config,
            "--events-listen",
            &listen,
            "--metrics-listen",
            &serve,
        ],
        &[("FERRY_TEST_TOKEN", "t0ken-for-tests")],
    );
    wait_for_port(port, RUN_TIMEOUT, "the events listener");
    (proc, port, metrics)
}

async fn first_iteration(env: &Env, rule: &str) {
    wait_until(RUN_TIMEOUT, "the first iteration", || async {
        history(&env.redis, &env.ns, rule).await.len() == 1
    })
    .await;
}

/// A plain-HTTP listener that counts the connections made to it: where a forged
/// `SubscribeURL` or `SigningCertURL` points.
struct Recorder {
    listener: std::net::TcpListener,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
        listener.set_nonblocking(true).expect("non-blocking");
        Recorder { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// Connections made so far (each is accepted and dropped).
    fn connections(&self) -> usize {
        std::iter::from_fn(|| self.listener.accept().ok()).count()
    }
}

/// An SNS message of `kind` from `topic`, unsigned.
fn sns_message(kind: &str, topic: &str, fields: &[(&str, &str)]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Type".into(), kind.into());
    m.insert("MessageId".into(), unique("msg").into());
    m.insert("TopicArn".into(), topic.into());
    m.insert("Timestamp".into(), "2026-12-07T10:00:00.000Z".into());
    for (k, v) in fields {
        m.insert(k.to_string(), (*v).into());
    }
    m
}

fn confirmation(topic: &str, subscribe_url: &str) -> Map<String, Value> {
    sns_message(
        "SubscriptionConfirmation",
        topic,
        &[
            ("Token", "abc"),
            ("Message", "You have chosen to subscribe"),
            ("SubscribeURL", subscribe_url),
        ],
    )
}

/// The keys in `bucket` on `server`.
async fn keys(server: &S3Server, bucket: &str) -> Vec<String> {
    list_keys(&server.client(), bucket)
        .await
        .into_iter()
        .map(|(key, _, _)| key)
        .collect()
}

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:photos";

#[tokio::test(flavor = "multi_thread")]
async fn forged_sns_confirmations_and_foreign_certificates_make_the_coordinator_fetch_nothing_on_moto()
 {
    let env = Env::start_on("sec-ssrf", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let (src_open, dst_open) = env.bucket_pair().await;
    let rules = rule_toml(
        "guarded",
        &src,
        &dst,
        "interval = \"1h\"\nevents = { webhook = true }\nevents_token_env = \"FERRY_TEST_TOKEN\"",
    ) + &rule_toml(
        "open",
        &src_open,
        &dst_open,
        "interval = \"1h\"\nevents = { webhook = true }",
    );
    let config = env.write_config("ferry.toml", &rules);
    let (mut run, port, metrics) = run_with_webhook(&env, &config);
    first_iteration(&env, "guarded").await;
    let auth = [("Authorization", "Bearer t0ken-for-tests")];

    // Where the forged URLs point: a plain HTTP server (a stand-in for 169.254.169.254 or an
    // internal admin API), and a stranger's HTTPS server holding a certificate whose key
    // really signed the message.
    let recorder = Recorder::start();
    let stranger_ca = PrivateCa::new("stranger");
    let stranger = FakeSns::start(&stranger_ca).await;
    let metadata = format!(
        "http://127.0.0.1:{}/latest/meta-data/iam/security-credentials/",
        recorder.port()
    );
    let stranger_cert = format!("https://{}/cert.pem", stranger.addr());
    let mut attacks: Vec<(&str, Map<String, Value>, &str)> = Vec::new();
    attacks.push((
        "an unsigned confirmation",
        confirmation(TOPIC, &metadata),
        "unsigned subscription confirmation",
    ));
    let mut signed_elsewhere = confirmation(TOPIC, &metadata);
    stranger.sign(&mut signed_elsewhere, 2, &stranger_cert);
    attacks.push((
        "a confirmation signed by a key whose certificate is off SNS",
        signed_elsewhere,
        "does not hold: SigningCertURL \"https://127.0.0.1",
    ));
    let mut cert_over_http = confirmation(TOPIC, &metadata);
    stranger.sign(
        &mut cert_over_http,
        1,
        &format!("http://127.0.0.1:{}/cert.pem", recorder.port()),
    );
    attacks.push((
        "a certificate URL over plain HTTP",
        cert_over_http,
        "is not https",
    ));
    let mut cert_on_metadata = confirmation(TOPIC, &metadata);
    stranger.sign(
        &mut cert_on_metadata,
        2,
        "https://169.254.169.254/latest/meta-data/cert.pem",
    );
    attacks.push((
        "a certificate URL on the metadata service",
        cert_on_metadata,
        "is not on an SNS host",
    ));
    let body = event("ObjectCreated:Put", &src_open, "forged", "01");
    let mut notification = sns_message("Notification", TOPIC, &[("Message", &body)]);
    stranger.sign(&mut notification, 1, &stranger_cert);
    attacks.push((
        "a notification signed by a stranger",
        notification,
        "does not hold: SigningCertURL \"https://127.0.0.1",
    ));

    let mut refused = 0;
    for (what, message, why) in &attacks {
        let body = Value::Object(message.clone()).to_string();
        for (path, headers) in [("/events/guarded", &auth[..]), ("/events/open", &[][..])] {
            let (code, answer) = post(port, path, headers, body.as_bytes());
            assert_eq!(code, 403, "{what} on {path}: {answer}");
            assert!(answer.contains(why), "{what} on {path}: {answer}");
            refused += 1;
        }
    }
    // An unsigned notification vouched for by nothing (the open rule has no token).
    put(&env.src.client(), &src_open, "forged", b"x").await;
    let unsigned = Value::Object(sns_message(
        "Notification",
        TOPIC,
        &[(
            "Message",
            &event("ObjectCreated:Put", &src_open, "forged", "01"),
        )],
    ))
    .to_string();
    let (code, answer) = post(port, "/events/open", &[], unsigned.as_bytes());
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("taken only with a token"), "{answer}");
    refused += 1;

    // Nothing was fetched, nothing copied, and each refusal was counted.
    assert_eq!(recorder.connections(), 0, "a forged URL was fetched");
    assert_eq!(stranger.requests(), Vec::<String>::new());
    assert!(list_keys(&env.dst.client(), &dst_open).await.is_empty());
    let counted: f64 = samples(&scrape(metrics), "ferry_events_total")
        .iter()
        .filter(|(labels, _)| labels.contains("outcome=\"refused\""))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(counted, refused as f64);
    // The token never reached the log.
    run.sigterm();
    run.wait_timeout(RUN_TIMEOUT).expect("ferry run stops");
    assert!(!run.log_text().contains("t0ken-for-tests"));
}

/// The in-process webhook of `env`'s config, its SNS messages checked by `sns`: its port.
async fn serve_webhook(config: &str, sns: SnsCheck, cancel: &CancellationToken) -> u16 {
    let config = Arc::new(Config::load(std::path::Path::new(config)).expect("config"));
    let redis = config.redis.as_ref().expect("[redis]");
    let queue = Queue::connect(redis, Persistence::FailFast)
        .await
        .expect("redis");
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(30),
        idle: Duration::from_secs(30),
    };
    let stores = Stores::connect(&config, timeouts, &Trust::system()).await;
    let ctx = ferry_coordinator::Context {
        config,
        stores,
        queue: Arc::new(queue),
        cancel: cancel.clone(),
        id: unique("c"),
        leader_lease: Duration::from_secs(30),
        max_outstanding: 50_000,
    };
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), sns)
        .await
        .expect("binding");
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(ferry_coordinator::events::serve(ctx, listener));
    port
}

/// What an SNS check trusting `ca` (besides the system's authorities, as `AWS_CA_BUNDLE`
/// would make it) sees when it reaches [`SNS_HOST`] at `at`.
fn trusting(ca: Option<&PrivateCa>, dir: &std::path::Path, at: SocketAddr) -> SnsCheck {
    let trust = match ca {
        Some(ca) => {
            let path = dir.join(unique("ca") + ".pem");
            ca.write_ca_pem(&path);
            Trust::with_bundle(&path).expect("the test CA")
        }
        None => Trust::system(),
    };
    SnsCheck::new(trust.rustls_config()).resolving(SNS_HOST, at)
}

#[tokio::test(flavor = "multi_thread")]
async fn sns_messages_are_believed_only_when_signed_under_a_trusted_authority_on_moto() {
    let env = Env::start_on("sec-sns", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let (src_picky, dst_picky) = env.bucket_pair().await;
    let rules = rule_toml(
        "hook",
        &src,
        &dst,
        "interval = \"1h\"\nevents = { webhook = true }",
    ) + &rule_toml(
        "picky",
        &src_picky,
        &dst_picky,
        "interval = \"1h\"\nevents = { webhook = true, sns_topics = [\"arn:aws:sns:us-east-1:123456789012:other\"] }",
    );
    let config = env.write_config("ferry.toml", &rules);
    // The workers, and the rules registered, come from the real binary.
    let (mut run, _, _) = run_with_webhook(&env, &config);
    first_iteration(&env, "hook").await;

    // SNS's HTTPS side under a test authority: it signs with its own throwaway key, answers
    // confirmations, and serves the certificates of the messages moto's SNS signs (for real:
    // SignatureVersion 2, with moto's key).
    let ca = PrivateCa::for_names("sns", &[SNS_HOST]);
    let fake = FakeSns::start_before(&ca, Some(env.src.authority())).await;
    let cancel = CancellationToken::new();
    let dir = env.dir.path();
    let trusted = serve_webhook(&config, trusting(Some(&ca), dir, fake.addr()), &cancel).await;
    let untrusted = serve_webhook(&config, trusting(None, dir, fake.addr()), &cancel).await;
    let cert_url = format!("https://{SNS_HOST}/cert.pem");
    let client = env.src.client();

    // A notification signed with SignatureVersion 1 under the trusted authority: copied.
    put(&client, &src, "v1/a", b"one").await;
    let mut v1 = sns_message(
        "Notification",
        TOPIC,
        &[
            ("Message", &event("ObjectCreated:Put", &src, "v1/a", "01")),
            ("Subject", "Amazon S3 Notification"),
        ],
    );
    fake.sign(&mut v1, 1, &cert_url);
    let body = Value::Object(v1.clone()).to_string();
    // The same message where the certificate's authority is not trusted: refused.
    let (code, answer) = post(untrusted, "/events/hook", &[], body.as_bytes());
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("UnknownIssuer"), "{answer}");
    let (code, answer) = post(trusted, "/events/hook", &[], body.as_bytes());
    assert_eq!(code, 200, "{answer}");
    assert_eq!(tally(&answer)["enqueued"], 1, "{answer}");
    wait_until(RUN_TIMEOUT, "the signed notification's copy", || async {
        keys(&env.dst, &dst).await == ["v1/a"]
    })
    .await;

    // Tampered after signing: refused.
    let mut tampered = v1.clone();
    tampered.insert(
        "Message".into(),
        event("ObjectCreated:Put", &src, "v1/other", "02").into(),
    );
    let (code, answer) = post(
        trusted,
        "/events/hook",
        &[],
        Value::Object(tampered).to_string().as_bytes(),
    );
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("does not match"), "{answer}");

    // A topic the rule does not name: refused before anything is fetched.
    let before = fake.requests().len();
    let (code, answer) = post(trusted, "/events/picky", &[], body.as_bytes());
    assert_eq!(code, 403, "{answer}");
    assert!(
        answer.contains("is not one of rule picky's sns_topics"),
        "{answer}"
    );
    assert_eq!(fake.requests().len(), before);

    // A signed confirmation whose SubscribeURL is SNS's: fetched, and only that.
    let subscribe =
        format!("https://{SNS_HOST}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=abc");
    let mut confirm = confirmation(TOPIC, &subscribe);
    fake.sign(&mut confirm, 2, &cert_url);
    let (code, answer) = post(
        trusted,
        "/events/hook",
        &[],
        Value::Object(confirm).to_string().as_bytes(),
    );
    assert_eq!(code, 200, "{answer}");
    let confirmations: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("/?Action=ConfirmSubscription"))
        .collect();
    assert_eq!(confirmations.len(), 1, "{:?}", fake.requests());
    // The signing certificate was fetched once, then kept.
    let fetched = fake.requests().iter().filter(|r| *r == "/cert.pem").count();
    assert_eq!(fetched, 1, "{:?}", fake.requests());

    // Moto's own SNS delivery (SignatureVersion 2, moto's key and certificate): copied.
    notify_through_sns(
        &env,
        &src,
        &format!("http://127.0.0.1:{trusted}/events/hook"),
    )
    .await;
    put(&client, &src, "via-sns/real", b"real").await;
    wait_until(RUN_TIMEOUT, "moto's SNS notification's copy", || async {
        keys(&env.dst, &dst)
            .await
            .iter()
            .any(|k| k == "via-sns/real")
    })
    .await;
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("/SimpleNotificationService-")),
        "{:?}",
        fake.requests()
    );

    cancel.cancel();
    run.sigterm();
    run.wait_timeout(RUN_TIMEOUT).expect("ferry run stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_beyond_loopback_without_a_token_refuses_to_start_on_moto() {
    let env = Env::start_on("sec-open", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let config = env.write_config(
        "ferry.toml",
        &rule_toml("open-hook", &src, &dst, "events = { webhook = true }"),
    );
    let port = free_port();
    let everywhere = format!("0.0.0.0:{port}");
    let (status, log) = ferry_exits(
        env.dir.path(),
        &["run", "--config", &config, "--events-listen", &everywhere],
        &[],
        STOP_TIMEOUT,
    );
    assert_eq!(status.code(), Some(2), "{log}");
    for needle in [
        "rule open-hook",
        "events_token_env",
        "--events-insecure-no-token",
        &everywhere,
    ] {
        assert!(log.contains(needle), "{needle:?} missing:\n{log}");
    }
    // Nothing was registered: the check comes before Redis.
    assert!(history(&env.redis, &env.ns, "open-hook").await.is_empty());

    // Said on purpose, it runs.
    let mut run = spawn_logged(
        std::path::Path::new(ferry_bin()),
        env.dir.path(),
        "insecure",
        &[
            "run",
            "--config",
            &config,
            "--events-listen",
            &everywhere,
            "--events-insecure-no-token",
        ],
    );
    wait_for_port(port, RUN_TIMEOUT, "the open events listener");
    run.sigterm();
    run.wait_timeout(RUN_TIMEOUT).expect("ferry run stops");
}

/// A config whose `[redis]` is `redis` (its other keys, a password, `ca_file`...), with
/// endpoints that are never reached.
fn redis_only_config(dir: &std::path::Path, redis: &str) -> String {
    let text = format!(
        "[redis]\n{redis}\nnamespace = \"{}\"\n\n\
         [endpoints.a]\nurl = \"http://127.0.0.1:9\"\nregion = \"us-east-1\"\n\
         access_key_id = \"k\"\nsecret_access_key = \"never-used-key\"\n\n\
         [[rules]]\nname = \"r\"\nsource = {{ endpoint = \"a\", bucket = \"src-b\" }}\n\
         destination = {{ endpoint = \"a\", bucket = \"dst-b\" }}\n",
        unique("ns")
    );
    let path = dir.join(unique("redis") + ".toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The machine's address toward the outside: not loopback, so Redis's protected mode
/// applies to clients coming from it.
fn outward_ip() -> String {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .connect("192.0.2.254:9")
        .or_else(|_| socket.connect("8.8.8.8:53"))
        .expect("a route off this machine, for an address that is not loopback");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "{ip} is loopback");
    ip.to_string()
}

/// `ferry coordinator` (which rides Redis outages out) on `config`: it must stop at once with
/// exit 2, its log holding each of `said`, none of `never`, and no sign of waiting.
fn refused_at_once(dir: &std::path::Path, config: &str, said: &[&str], never: &[&str]) {
    let (status, log) = ferry_exits(dir, &["coordinator", "--config", config], &[], STOP_TIMEOUT);
    assert_eq!(status.code(), Some(2), "{log}");
    for s in said {
        assert!(log.contains(s), "{s:?} missing:\n{log}");
    }
    for n in never {
        assert!(!log.contains(n), "{n:?} shown:\n{log}");
    }
    assert!(!log.contains("retrying until it is back"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_turning_ferry_away_stops_it_with_exit_2_and_redis_own_words() {
    let dir = TempDir::new("sec-redis");
    let d = dir.path();

    // Protected mode, reached from an address that is not loopback: DENIED.
    let ip = outward_ip();
    let protected = Redis::start_protected_on(&ip);
    let config = redis_only_config(d, &format!("url = \"redis://{ip}:{}\"", protected.port));
    refused_at_once(d, &config, &["DENIED", "protected mode"], &[]);

    // A password required, none given: NOAUTH. A wrong one: WRONGPASS, the password unsaid.
    let locked = Redis::start_with_password("the-right-pass");
    let config = redis_only_config(d, &format!("url = \"redis://127.0.0.1:{}\"", locked.port));
    refused_at_once(d, &config, &["NOAUTH"], &[]);
    let config = redis_only_config(
        d,
        &format!("url = \"redis://:wr0ng-pass-77@127.0.0.1:{}\"", locked.port),
    );
    refused_at_once(
        d,
        &config,
        &["WRONGPASS"],
        &["wr0ng-pass-77", "the-right-pass"],
    );

    // An ACL user that may not run scripts, and one that may not touch ferry's keys: NOPERM.
    let mut admin =
        redis::Client::open(format!("redis://:the-right-pass@127.0.0.1:{}", locked.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
    for (user, rules) in [
        ("noscripts", vec!["~*", "+@all", "-@scripting"]),
        ("otherkeys", vec!["~other:*", "+@all"]),
    ] {
        let mut setuser = redis::cmd("ACL");
        setuser
            .arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(">acl-pass-99");
        for r in rules {
            setuser.arg(r);
        }
        setuser.query_async::<()>(&mut admin).await.unwrap();
        let config = redis_only_config(
            d,
            &format!(
                "url = \"redis://{user}:acl-pass-99@127.0.0.1:{}\"",
                locked.port
            ),
        );
        refused_at_once(d, &config, &["NOPERM"], &["acl-pass-99"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_trusts_the_system_roots_plus_aws_ca_bundle_or_ca_file_and_refuses_the_rest_on_moto()
{
    let env = Env::start_on("sec-tls", S3Server::moto(), S3Server::moto());
    let (src, dst) = env.bucket_pair().await;
    let ca = PrivateCa::new("redis");
    let redis = Redis::start_tls(&ca);
    let ca_file = env.dir.path().join("redis-ca.pem");
    ca.write_ca_pem(&ca_file);
    let ca_path = ca_file.to_str().unwrap();
    let write = |name: &str, extra: &str| {
        let mut text = format!(
            "[redis]\nurl = \"{}\"\nnamespace = \"{}\"\n{extra}\n\n",
            redis.url(),
            env.ns
        );
        text += &env.src.endpoint_toml("src");
        text += &env.dst.endpoint_toml("dst");
        text += &rule_toml("tls", &src, &dst, "stop = \"once\"");
        let path = env.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let plain = write("plain.toml", "");
    let with_ca_file = write("ca-file.toml", &format!("ca_file = \"{ca_path}\""));
    let no_bundle = [("AWS_CA_BUNDLE", "")];

    // Not trusted: stopped at once, the handshake's failure said, for the CLI and for a
    // process that rides outages out.
    let (status, log) = ferry_exits(
        env.dir.path(),
        &["status", "--config", &plain],
        &no_bundle,
        STOP_TIMEOUT,
    );
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("UnknownIssuer"), "{log}");
    refused_at_once(env.dir.path(), &plain, &["TLS handshake failed"], &[]);

    // Trusted through AWS_CA_BUNDLE (the variable the S3 clients read), or ca_file.
    let (status, log) = ferry_exits(
        env.dir.path(),
        &["status", "--config", &plain],
        &[("AWS_CA_BUNDLE", ca_path)],
        STOP_TIMEOUT,
    );
    assert!(status.success(), "{log}");
    put(&env.src.client(), &src, "over-tls", b"through rediss").await;
    env.run_to_completion_with(&with_ca_file, &[], &no_bundle, RUN_TIMEOUT);
    assert_eq!(keys(&env.dst, &dst).await, ["over-tls"]);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_state_dir_is_private_and_a_config_others_can_read_with_a_secret_is_named_on_moto() {
    use std::os::unix::fs::PermissionsExt;
    let src = S3Server::moto();
    let dst = S3Server::moto();
    let dir = TempDir::new("sec-files");
    let (sb, db) = (unique("src"), unique("dst"));
    src.create_bucket(&sb).await;
    dst.create_bucket(&db).await;
    put(&src.client(), &sb, "k", b"v").await;
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        src.endpoint_toml("src") + &dst.endpoint_toml("dst"),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A state dir left world-readable (by hand, or an older ferry) is made private.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config_path = config.to_str().unwrap();
    let state_path = state.to_str().unwrap();
    let sync = |vars: &[(&str, &str)]| {
        ferry_exits(
            dir.path(),
            &[
                "sync",
                &format!("src:{sb}"),
                &format!("dst:{db}"),
                "--config",
                config_path,
                "--state-dir",
                state_path,
                "--no-progress",
            ],
            vars,
            RUN_TIMEOUT,
        )
    };
    let (status, log) = sync(&[]);
    assert!(status.success(), "{log}");
    assert!(
        log.contains("holds secrets and every user of this machine can read it"),
        "{log}"
    );
    assert!(log.contains(config_path), "{log}");
    assert!(log.contains("endpoints.src.secret_access_key"), "{log}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    // Everything in it, the reports too (they name every key): files 0600, directories 0700.
    let mut files = Vec::new();
    let mut dirs = vec![state.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("state.redb")), "{files:?}");
    assert!(
        files.iter().any(|f| f.ends_with("manifest.json")),
        "{files:?}"
    );
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }

    // Made private, the config is not warned about.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (status, log) = sync(&[]);
    assert!(status.success(), "{log}");
    assert!(!log.contains("holds secrets"), "{log}");
}
