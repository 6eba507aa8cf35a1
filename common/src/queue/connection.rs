//! The one place Redis round trips go through: counted, and, for a process that must stay up,
//! retried through outages of any length.
//!
//! A worker or coordinator rides Redis out: a command that fails because Redis is unreachable
//! (refused, reset, timed out, loading its AOF after a restart, a replica promoted) is sent
//! again with backoff until it gets through or the process gives up on shutdown. The outage is
//! logged once when it starts and once when it ends, and its length is added to
//! [`telemetry::REDIS_DISCONNECTED_SECONDS`]. The CLI fails fast instead, with the error.
//!
//! Resending is safe because every script is written to be: the task scripts check the lease
//! they fence on, `plan.lua` and `begin.lua` compare and set, and plain writes are idempotent.
//! A reply lost in the outage (the command ran, the answer never came) therefore never counts
//! or enqueues anything twice.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RetryMethod, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::retry::RetryPolicy;
use crate::telemetry;

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
        metrics::gauge!(telemetry::REDIS_UP).set(1.0);
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
        metrics::gauge!(telemetry::REDIS_UP).set(1.0);
        metrics::gauge!(telemetry::REDIS_DISCONNECTED_SECONDS).increment(seconds);
        info!(redis = %self.url, seconds, "redis is reachable again");
    }

    fn down(&self, error: &RedisError) {
        let mut since = self.lock();
        if since.is_none() {
            *since = Some(Instant::now());
            metrics::gauge!(telemetry::REDIS_UP).set(0.0);
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

/// Whether an error means Redis could not be reached (or not served yet), as opposed to a
/// command that Redis refused.
pub(crate) fn unreachable(e: &RedisError) -> bool {
    if matches!(
        e.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig
    ) {
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
            metrics::counter!(telemetry::REDIS_REQUESTS).increment(1);
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
    connect_with(health, || {
        client.get_connection_manager_with_config(config.clone())
    })
    .await
}

/// Connects to a Redis Cluster through its seed nodes `urls`, riding out a cluster that is
/// not up yet when the queue rides outages out. The client follows the cluster from there:
/// `MOVED` and `ASK` redirect it, and a failover refreshes its slot map.
pub(crate) async fn connect_cluster(
    urls: &[String],
    health: &Health,
) -> redis::RedisResult<ClusterConnection> {
    let mut builder = redis::cluster::ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(CONNECTION_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT);
    if health.ride_out().is_none() {
        builder = builder.retries(1);
    }
    let client = builder.build()?;
    connect_with(health, || client.get_async_connection()).await
}

async fn connect_with<C, F: Future<Output = redis::RedisResult<C>>>(
    health: &Health,
    mut open: impl FnMut() -> F,
) -> redis::RedisResult<C> {
    let mut attempt = 0;
    loop {
        match open().await {
            Ok(conn) => {
                health.up();
                return Ok(conn);
            }
            Err(e) if unreachable(&e) && health.ride_out().is_some() => {
                health.down(&e);
                attempt += 1;
                if !health.wait(attempt).await {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}
