//! Leading a rule: the leader lease, the token that fences every coordinator write, and the
//! rule's recorded state.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::{Queue, QueueError, reply};

/// A rule's leader lease as one coordinator holds it: `coordinator-id#epoch`. Every
/// coordinator write carries it, and Redis refuses it once the lease has passed to another
/// acquisition, even if the same coordinator leads again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderToken(pub(super) String);

impl LeaderToken {
    /// A token that is not fenced (tools and tests that write without leading).
    pub fn unfenced() -> LeaderToken {
        LeaderToken(String::new())
    }

    /// The coordinator id part.
    pub fn coordinator(&self) -> &str {
        self.0.split_once('#').map_or(&self.0, |(id, _)| id)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaderToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A rule's state, for `ferry status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleState {
    /// An iteration is under way.
    Running,
    /// Between iterations (`interval`).
    Waiting,
    /// Its stop condition held.
    Stopped,
    /// Its last iteration failed (the reason says why); it is tried again at its interval.
    Failed,
}

impl RuleState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleState::Running => "running",
            RuleState::Waiting => "waiting",
            RuleState::Stopped => "stopped",
            RuleState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<RuleState> {
        [
            RuleState::Running,
            RuleState::Waiting,
            RuleState::Stopped,
            RuleState::Failed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// What Redis holds of a rule's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleRecord {
    /// The state, as its leader last recorded it.
    pub state: Option<RuleState>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Since when it is in this state (ms, Redis clock).
    pub since_ms: u64,
    /// When it last met its stop condition (ms, Redis clock).
    pub stopped_ms: Option<u64>,
}

impl Queue {
    /// Takes the leader lease of `rule` for coordinator `id` if it is free (or already
    /// `id`'s): the token to fence writes with, or `None` while another coordinator leads.
    pub async fn acquire_leader(
        &self,
        rule: &str,
        id: &str,
        lease: Duration,
    ) -> Result<Option<LeaderToken>, QueueError> {
        let rk = self.keys.rule(rule);
        let mut inv = self.scripts.leader.prepare_invoke();
        inv.key(rk.leader())
            .key(rk.leader_epoch())
            .arg("acquire")
            .arg(id)
            .arg(lease.as_millis() as u64);
        let answer: redis::Value = self.invoke(inv).await?;
        reply::acquired(answer)
    }

    /// Extends the lease, if `token` still holds it.
    pub async fn renew_leader(
        &self,
        rule: &str,
        token: &LeaderToken,
        lease: Duration,
    ) -> Result<bool, QueueError> {
        self.leader_op(rule, "renew", token, lease).await
    }

    /// Gives the lease up, if `token` still holds it.
    pub async fn release_leader(
        &self,
        rule: &str,
        token: &LeaderToken,
    ) -> Result<bool, QueueError> {
        self.leader_op(rule, "release", token, Duration::ZERO).await
    }

    async fn leader_op(
        &self,
        rule: &str,
        op: &str,
        token: &LeaderToken,
        lease: Duration,
    ) -> Result<bool, QueueError> {
        let rk = self.keys.rule(rule);
        let mut inv = self.scripts.leader.prepare_invoke();
        inv.key(rk.leader())
            .key(rk.leader_epoch())
            .arg(op)
            .arg(token.as_str())
            .arg(lease.as_millis() as u64);
        let held: i64 = self.invoke(inv).await?;
        reply::still_ours(held)
    }

    /// Which coordinator leads `rule` now, if any.
    pub async fn leader_of(&self, rule: &str) -> Result<Option<String>, QueueError> {
        let token: Option<String> = self
            .query(redis::cmd("GET").arg(self.keys.rule(rule).leader()))
            .await?;
        Ok(token.map(|t| LeaderToken(t).coordinator().to_string()))
    }

    /// Records the rule's state (and, for `Failed`, why), fenced by the lease. `finished`
    /// says the rule met its stop condition: no coordinator iterates it again in this run.
    pub async fn set_rule_state(
        &self,
        rule: &str,
        token: &LeaderToken,
        state: RuleState,
        reason: Option<&str>,
        finished: bool,
    ) -> Result<(), QueueError> {
        let rk = self.keys.rule(rule);
        let mut inv = self.scripts.rule.prepare_invoke();
        inv.key(rk.leader())
            .key(rk.state())
            .arg(token.as_str())
            .arg(state.as_str())
            .arg(reason.unwrap_or(""))
            .arg(if finished { "1" } else { "0" });
        self.fenced(rule, self.invoke::<i64>(inv).await).map(drop)
    }

    /// The rule's state as its leader last recorded it.
    pub async fn rule_record(&self, rule: &str) -> Result<RuleRecord, QueueError> {
        let fields: HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(self.keys.rule(rule).state()))
            .await?;
        let n = |k: &str| fields.get(k).and_then(|v| v.parse().ok());
        Ok(RuleRecord {
            state: fields.get("state").and_then(|s| RuleState::parse(s)),
            reason: fields.get("reason").cloned(),
            since_ms: n("since_ms").unwrap_or(0),
            stopped_ms: n("stopped_ms"),
        })
    }

    /// Maps a script's FENCED refusal to [`QueueError::Fenced`].
    pub(crate) fn fenced<T>(
        &self,
        rule: &str,
        result: Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        match result {
            Err(QueueError::Redis { cause, .. }) if cause.code() == Some("FENCED") => {
                Err(QueueError::Fenced {
                    rule: rule.to_string(),
                })
            }
            Err(QueueError::Redis { cause, .. }) if cause.code() == Some("STALE") => {
                Err(QueueError::Stale {
                    rule: rule.to_string(),
                    detail: cause.detail().unwrap_or("stale").to_string(),
                })
            }
            other => other,
        }
    }
}
