//! The one place Redis round trips go through: counted, and, for a process that must stay up,
//! retried through outages of any length.
//!
//! A worker or coordinator rides Redis out: a command that fails because Redis is unreachable
//! (refused, reset, timed out, loading its AOF after a restart, a replica promoted) is sent
//! again with backoff until it gets through or the process gives up on shutdown. The outage is
//! logged once when it starts and once when it ends, and its length is added to
//! `ferry_redis_disconnected_seconds`. The CLI fails fast instead, with the error.
//!
//! Resending is safe because every script is written to be: the task scripts check the lease
//! they fence on, `plan.lua` and `begin.lua` compare and set, and plain writes are idempotent.
//! A reply lost in the outage (the command ran, the answer never came) therefore never counts
//! or enqueues anything twice.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RetryMethod, TlsCertificates, Value,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use ferry_core::retry::RetryPolicy;
use ferry_core::telemetry::Metric;

/// What a queue does when Redis cannot be reached.
#[derive(Clone, Debug)]
pub enum Persistence {
    /// Fail the call with the error (the CLI: tell the user at once).
    FailFast,
    /// Retry until Redis answers, or until the token is cancelled (a process shutting down).
    RideOut(CancellationToken),
}

/// Backoff between attempts while Redis is unreachable.
const OUTAGE_RETRY: RetryPolicy = RetryPolicy {
    base: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

/// Whether Redis is reachable, as this process last found it.
#[derive(Debug)]
pub(crate) struct Health {
    url: String,
    persistence: Persistence,
    down_since: Mutex<Option<Instant>>,
}

impl Health {
    pub(crate) fn new(url: String, persistence: Persistence) -> Arc<Health> {
        Metric::RedisUp.gauge(&[]).set(1.0);
        Arc::new(Health {
            url,
            persistence,
            down_since: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // Only ever a single assignment under the lock: a poisoned value is still valid.
        self.down_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn up(&self) {
        let Some(since) = self.lock().take() else {
            return;
        };
        let seconds = since.elapsed().as_secs_f64();
        Metric::RedisUp.gauge(&[]).set(1.0);
        Metric::RedisDisconnectedSeconds
            .gauge(&[])
            .increment(seconds);
        info!(redis = %self.url, seconds, "redis is reachable again");
    }

    fn down(&self, error: &RedisError) {
        let mut since = self.lock();
        if since.is_none() {
            *since = Some(Instant::now());
            Metric::RedisUp.gauge(&[]).set(0.0);
            warn!(redis = %self.url, error = %error, "redis is unreachable; retrying until it is back");
        }
    }

    /// The token that ends retrying, when this queue rides outages out.
    fn ride_out(&self) -> Option<&CancellationToken> {
        match &self.persistence {
            Persistence::FailFast => None,
            Persistence::RideOut(stop) => Some(stop),
        }
    }

    /// Waits before the next attempt; false when the process gives up instead.
    async fn wait(&self, attempt: u32) -> bool {
        let Some(stop) = self.ride_out() else {
            return false;
        };
        tokio::select! {
            _ = tokio::time::sleep(OUTAGE_RETRY.delay(attempt).max(Duration::from_millis(20))) => true,
            _ = stop.cancelled() => false,
        }
    }
}

/// The error codes with which Redis turns a client away: no waiting makes them pass.
const REFUSALS: [&str; 4] = ["DENIED", "NOAUTH", "WRONGPASS", "NOPERM"];

/// Why Redis refused this client, when it did: a protected-mode server reached from afar
/// (`DENIED`), a missing or wrong password (`NOAUTH`, `WRONGPASS`), an ACL user without a
/// command or key it needs (`NOPERM`), or a TLS handshake that failed (an untrusted or
/// mismatched certificate). Each is a configuration error, never an outage to ride out.
pub(crate) fn refusal(e: &RedisError) -> Option<String> {
    if let Some(tls) = tls_failure(e) {
        return Some(tls);
    }
    let text = e.to_string();
    // The code as Redis sends it (the client spells some its own way: `NoPerm`), or, for a
    // refusal it does not know, the first word of its text that is one.
    let code = e
        .code()
        .map(str::to_ascii_uppercase)
        .filter(|c| REFUSALS.contains(&c.as_str()))
        .or_else(|| {
            text.split_whitespace()
                .take(8)
                .map(|w| {
                    w.trim_matches(|c: char| !c.is_ascii_alphabetic())
                        .to_ascii_uppercase()
                })
                .find(|w| REFUSALS.contains(&w.as_str()))
        });
    match code {
        Some(code) => Some(format!("Redis answered {code}")),
        None if matches!(
            e.kind(),
            ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig
        ) =>
        {
            Some("Redis refused ferry's connection".to_string())
        }
        None => None,
    }
}

/// A TLS handshake failure somewhere in the error's causes.
fn tls_failure(e: &RedisError) -> Option<String> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let said = |tls: &rustls::Error| Some(format!("the TLS handshake failed: {tls}"));
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        // The client keeps its causes behind an `Arc`, and an I/O error keeps rustls's inside.
        let inner: &(dyn std::error::Error + 'static) = match c.downcast_ref::<Shared>() {
            Some(shared) => shared.as_ref(),
            None => c,
        };
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return said(tls);
        }
        if let Some(tls) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return said(tls);
        }
        cause = c.source();
    }
    None
}

/// Whether an error means Redis could not be reached (or not served yet), as opposed to a
/// command that Redis refused.
pub(crate) fn unreachable(e: &RedisError) -> bool {
    if refusal(e).is_some() {
        return false;
    }
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect
                | RetryMethod::WaitAndRetry
                | RetryMethod::RetryImmediately
                | RetryMethod::ReconnectFromInitialConnections
                | RetryMethod::RefreshSlotsAndRetry
        )
}

/// A reply Redis gave instead of serving the command, because it cannot serve yet (LOADING
/// its data after a restart; a cluster re-forming: TRYAGAIN, CLUSTERDOWN, MASTERDOWN).
/// Replies arrive as values, not errors, so without this a LOADING answer reached the caller
/// as a failed command (a coordinator exited with it) instead of being waited out.
trait Served: Sized {
    fn not_served(&self) -> Option<RedisError>;
}

impl Served for Value {
    fn not_served(&self) -> Option<RedisError> {
        match self {
            Value::ServerError(refusal) => {
                let e = RedisError::from(refusal.clone());
                unreachable(&e).then_some(e)
            }
            _ => None,
        }
    }
}

impl Served for Vec<Value> {
    /// A pipeline: any of its commands refused. Sending the whole pipeline again is safe for
    /// the same reason as after a lost reply (see the module's documentation).
    fn not_served(&self) -> Option<RedisError> {
        self.iter().find_map(Value::not_served)
    }
}

/// `reply`, or the error of a command Redis did not serve yet.
fn served<T: Served>(reply: T) -> redis::RedisResult<T> {
    match reply.not_served() {
        Some(e) => Err(e),
        None => Ok(reply),
    }
}

/// What a queue talks to: a Redis server, a Redis Cluster, or the embedded store in this
/// process.
#[derive(Clone)]
pub(crate) enum Link {
    Redis(ConnectionManager),
    Cluster(ClusterConnection),
    Embedded(super::embedded::Embedded),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Redis(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
            Link::Embedded(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Redis(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Embedded(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Redis(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
            Link::Embedded(c) => c.get_db(),
        }
    }
}

/// A connection whose every round trip is counted and, when its queue rides outages out,
/// resent until Redis answers.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) inner: Link,
    pub(crate) health: Arc<Health>,
}

/// Sends `$send` (an expression on `$conn`, the inner connection) until it gets through, or
/// fails for a reason other than an unreachable Redis, or the process gives up.
macro_rules! retrying {
    ($self:ident, $conn:ident => $send:expr) => {{
        let mut attempt = 0;
        loop {
            Metric::RedisRequests.counter(&[]).increment(1);
            let $conn = &mut $self.inner;
            match $send.await.and_then(served) {
                Ok(v) => {
                    $self.health.up();
                    return Ok(v);
                }
                Err(e) if unreachable(&e) && $self.health.ride_out().is_some() => {
                    $self.health.down(&e);
                    attempt += 1;
                    if !$self.health.wait(attempt).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }};
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { retrying!(self, conn => conn.req_packed_command(cmd)) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            // Nothing to send (an empty pipeline): no round trip.
            if count == 0 {
                return Ok(Vec::new());
            }
            retrying!(self, conn => conn.req_packed_commands(pipeline, offset, count))
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// How long a server's unprompted first words (a refusal) are waited for.
const GREETING_WAIT: Duration = Duration::from_millis(500);

/// What a plain-TCP node says, unasked, on a new connection: an error line (`-DENIED ...`)
/// from a server that refuses this client, or nothing from one that serves it.
async fn greeting(nodes: &[ConnectionInfo]) -> Option<String> {
    for node in nodes {
        if let Some(said) = exchange(node, &[], GREETING_WAIT).await {
            return Some(said);
        }
    }
    None
}

/// What the first plain-TCP node answers to AUTH with the configured credentials: Redis's
/// reason for refusing them (`WRONGPASS ...`, `ERR ...`), with the password redacted.
async fn auth_answer(nodes: &[ConnectionInfo]) -> Option<String> {
    let node = nodes.first()?;
    let settings = node.redis_settings();
    let password = settings.password()?;
    let mut auth = redis::cmd("AUTH");
    if let Some(user) = settings.username() {
        auth.arg(user);
    }
    auth.arg(password);
    let said = exchange(node, &auth.get_packed_command(), RESPONSE_TIMEOUT).await?;
    Some(said.replace(password, "***"))
}

/// Connects to `node` over plain TCP, sends `request` (nothing: only listens) and returns the
/// error line it answers within `wait`, if it answers one.
async fn exchange(node: &ConnectionInfo, request: &[u8], wait: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ConnectionAddr::Tcp(host, port) = node.addr() else {
        return None;
    };
    let mut stream = tokio::time::timeout(
        CONNECTION_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), *port)),
    )
    .await
    .ok()?
    .ok()?;
    if !request.is_empty() {
        stream.write_all(request).await.ok()?;
    }
    let mut said = vec![0u8; 4096];
    let n = tokio::time::timeout(wait, stream.read(&mut said))
        .await
        .ok()?
        .ok()?;
    if n < 2 || said[0] != b'-' {
        return None;
    }
    let line = String::from_utf8_lossy(&said[1..n]);
    Some(line.lines().next().unwrap_or_default().trim().to_string())
}

/// How long a connection attempt to one node may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command may wait for its answer (a long script on a big rule included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects, riding out a Redis that is not there yet when the queue rides outages out.
pub(crate) async fn connect(
    client: &redis::Client,
    health: &Health,
) -> redis::RedisResult<ConnectionManager> {
    let mut config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    if health.ride_out().is_none() {
        // The CLI: one try, then tell the user.
        config = config.set_number_of_retries(0);
    }
    let nodes = [client.get_connection_info().clone()];
    if health.ride_out().is_some() {
        // The connection manager retries a first connection that fails, for seconds, before
        // ferry sees why: one plain attempt first says at once whether Redis refuses ferry.
        let once = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        if let Err(e) = client
            .get_multiplexed_async_connection_with_config(&once)
            .await
        {
            let e = explained(e, &nodes).await;
            if refusal(&e).is_some() {
                return Err(e);
            }
        }
    }
    connect_with(health, &nodes, || {
        client.get_connection_manager_with_config(config.clone())
    })
    .await
}

/// Connects to a Redis Cluster through its seed nodes `urls`, riding out a cluster that is
/// not up yet when the queue rides outages out. The client follows the cluster from there:
/// `MOVED` and `ASK` redirect it, and a failover refreshes its slot map.
pub(crate) async fn connect_cluster(
    urls: &[String],
    roots: Option<TlsCertificates>,
    health: &Health,
) -> redis::RedisResult<ClusterConnection> {
    let mut builder = redis::cluster::ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(CONNECTION_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT);
    if let Some(roots) = roots {
        builder = builder.certs(roots);
    }
    if health.ride_out().is_none() {
        builder = builder.retries(1);
    }
    let client = builder.build()?;
    let nodes: Vec<ConnectionInfo> = urls
        .iter()
        .filter_map(|u| u.as_str().into_connection_info().ok())
        .collect();
    connect_with(health, &nodes, || client.get_async_connection()).await
}

async fn connect_with<C, F: Future<Output = redis::RedisResult<C>>>(
    health: &Health,
    nodes: &[ConnectionInfo],
    mut open: impl FnMut() -> F,
) -> redis::RedisResult<C> {
    let mut attempt = 0;
    loop {
        // A process told to stop is not kept waiting by a connection attempt in flight (the
        // connection manager's own retries take tens of seconds against a closed port).
        let opened = match health.ride_out() {
            Some(stop) => tokio::select! {
                opened = open() => opened,
                _ = stop.cancelled() => Err(RedisError::from((
                    ErrorKind::Io,
                    "stopped while connecting to Redis",
                ))),
            },
            None => open().await,
        };
        match opened {
            Ok(conn) => {
                health.up();
                return Ok(conn);
            }
            Err(e) => {
                let e = explained(e, nodes).await;
                if !unreachable(&e) || health.ride_out().is_none() {
                    return Err(e);
                }
                health.down(&e);
                attempt += 1;
                if !health.wait(attempt).await {
                    return Err(e);
                }
            }
        }
    }
}

/// `e`, with what Redis said when the client lost it: the client drops Redis's own words on a
/// refused AUTH, so they are asked for again; and a server that turns a client away says why,
/// then closes, so the client, writing its first command, sees only a reset: what the server
/// says unasked is read.
async fn explained(e: RedisError, nodes: &[ConnectionInfo]) -> RedisError {
    if e.kind() == ErrorKind::AuthenticationFailed {
        return match auth_answer(nodes).await {
            Some(said) => RedisError::from((
                ErrorKind::AuthenticationFailed,
                "Redis refused the credentials",
                said,
            )),
            None => e,
        };
    }
    if refusal(&e).is_none()
        && (e.is_io_error() || e.is_connection_dropped())
        && let Some(said) = greeting(nodes).await
    {
        return RedisError::from((
            ErrorKind::InvalidClientConfig,
            "Redis refused the connection",
            said,
        ));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_outages() {
        let said = |kind, detail: &str| RedisError::from((kind, "refused", detail.to_string()));
        for (e, code) in [
            (
                said(
                    ErrorKind::InvalidClientConfig,
                    "DENIED Redis is running in protected mode",
                ),
                "Redis answered DENIED",
            ),
            (
                said(
                    ErrorKind::AuthenticationFailed,
                    "WRONGPASS invalid username-password pair",
                ),
                "Redis answered WRONGPASS",
            ),
            (
                match redis::parse_redis_value(b"-NOPERM this user has no permissions\r\n") {
                    Ok(Value::ServerError(e)) => RedisError::from(e),
                    other => panic!("{other:?}"),
                },
                "Redis answered NOPERM",
            ),
        ] {
            assert_eq!(refusal(&e).as_deref(), Some(code), "{e}");
            assert!(!unreachable(&e), "{e}");
        }
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(refusal(&reset), None);
        assert!(unreachable(&reset));
        let tls = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert!(
            refusal(&tls).is_some_and(|t| t.starts_with("the TLS handshake failed")),
            "{tls}"
        );
    }
}
