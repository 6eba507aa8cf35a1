//! One connected store per configured endpoint, and what each destination bucket can do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::{
    Capabilities, LimitedStore, ObjectStore, S3Store, StorageError, Timeouts, Trust,
    probe_patiently,
};
use ferry_core::config::{Config, Rule};
use ferry_core::fleet::{BudgetKind, Fleet};

type CapabilityCells = HashMap<(String, String), Arc<OnceCell<(Instant, Capabilities)>>>;

/// How long a probe's answer is trusted before the bucket is probed again: a store can be
/// upgraded, or a bucket's settings changed, under a process that runs for months.
pub const PROBE_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// How long a probe disturbed by transient errors is trusted.
const DISTURBED_PROBE_LIFETIME: Duration = Duration::from_secs(300);
/// A rule's source and destination stores, in that order.
type StorePair = (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>);

/// Connected stores, by endpoint name, and each limited rule's view of its two stores.
#[derive(Clone, Default)]
pub struct Stores {
    by_name: HashMap<String, Arc<dyn ObjectStore>>,
    /// The certificate authorities the S3 clients trust (SQS clients use the same).
    trust: Option<Trust>,
    capabilities: Arc<Mutex<CapabilityCells>>,
    /// Rule name -> (source, destination) under the rule's budgets.
    limited: HashMap<String, StorePair>,
    /// Where probes are shared with the rest of the fleet.
    fleet: Option<Arc<dyn Fleet>>,
}

impl Stores {
    /// Connects an S3 client for every endpoint in `config`, each trusting `trust`'s
    /// certificate authorities.
    pub async fn connect(config: &Config, timeouts: Timeouts, trust: &Trust) -> Stores {
        let mut by_name: HashMap<String, Arc<dyn ObjectStore>> = HashMap::new();
        for (name, endpoint) in &config.endpoints {
            by_name.insert(
                name.clone(),
                Arc::new(S3Store::connect(endpoint, timeouts, trust).await),
            );
        }
        Stores {
            by_name,
            trust: Some(trust.clone()),
            capabilities: Arc::default(),
            limited: HashMap::new(),
            fleet: None,
        }
    }

    /// Stores from already-built clients (for tests and tools).
    pub fn from_stores(stores: impl IntoIterator<Item = (String, Arc<dyn ObjectStore>)>) -> Self {
        Stores {
            by_name: stores.into_iter().collect(),
            trust: None,
            capabilities: Arc::default(),
            limited: HashMap::new(),
            fleet: None,
        }
    }

    /// Puts every rule with `max_requests_per_second` or `max_bandwidth` under budgets
    /// shared by every process of the `fleet` (the queue), and shares the buckets' probes
    /// through it too.
    pub fn with_limits(mut self, config: &Config, fleet: Arc<dyn Fleet>) -> Stores {
        for rule in &config.rules {
            let budget = |kind, rate: u64| (rate > 0).then(|| fleet.budget(&rule.name, kind, rate));
            let requests = budget(BudgetKind::Requests, rule.max_requests_per_second);
            let bytes = budget(BudgetKind::Bytes, rule.max_bandwidth.0);
            if requests.is_none() && bytes.is_none() {
                continue;
            }
            let side = |endpoint: &str| -> Arc<dyn ObjectStore> {
                Arc::new(LimitedStore::new(
                    self.get(endpoint),
                    requests.clone(),
                    bytes.clone(),
                ))
            };
            let pair = (
                side(&rule.source.endpoint),
                side(&rule.destination.endpoint),
            );
            self.limited.insert(rule.name.clone(), pair);
        }
        self.fleet = Some(fleet);
        self
    }

    /// The store `rule` reads from, under the rule's budgets.
    pub fn source(&self, rule: &Rule) -> Arc<dyn ObjectStore> {
        match self.limited.get(&rule.name) {
            Some((source, _)) => source.clone(),
            None => self.get(&rule.source.endpoint),
        }
    }

    /// The store `rule` writes to, under the rule's budgets.
    pub fn destination(&self, rule: &Rule) -> Arc<dyn ObjectStore> {
        match self.limited.get(&rule.name) {
            Some((_, destination)) => destination.clone(),
            None => self.get(&rule.destination.endpoint),
        }
    }

    /// The certificate authorities the stores trust, for other AWS clients of the same
    /// endpoints (SQS); the system's alone for stores built with [`Stores::from_stores`].
    pub fn trust(&self) -> Trust {
        self.trust.clone().unwrap_or_else(Trust::system)
    }

    /// The store of endpoint `name`. Config validation guarantees every rule's endpoints exist,
    /// so a miss is a bug in the caller.
    pub fn get(&self, name: &str) -> Arc<dyn ObjectStore> {
        match self.by_name.get(name) {
            Some(s) => s.clone(),
            None => panic!(
                "endpoint {name:?} is not connected; config validation should have caught this"
            ),
        }
    }

    /// What `bucket` on endpoint `name` does with writes, probed on first use and remembered
    /// for [`PROBE_LIFETIME`]: by this process, and by the fleet through the queue (Redis,
    /// or the state dir), so one process probes a bucket for all of them. A probe that fails
    /// is tried again next time; a fleet whose queue cannot be read probes for itself.
    pub async fn capabilities(
        &self,
        name: &str,
        bucket: &str,
    ) -> Result<Capabilities, StorageError> {
        let cell = {
            let mut cells = self.capabilities.lock().unwrap_or_else(|p| p.into_inner());
            let cell = cells
                .entry((name.to_string(), bucket.to_string()))
                .or_default();
            if cell
                .get()
                .is_some_and(|(at, _)| at.elapsed() >= PROBE_LIFETIME)
            {
                *cell = Arc::default();
            }
            cell.clone()
        };
        cell.get_or_try_init(|| async {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if let Some(shared) = self.fleets_probe(name, bucket, now_ms).await {
                return Ok(shared);
            }
            let (found, disturbed) = probe_patiently(self.get(name).as_ref(), bucket).await?;
            tracing::info!(
                endpoint = name,
                bucket,
                conditional_writes = found.conditional_writes(),
                conditional_completes = found.complete.honoured(),
                if_match = ?found.put.if_match,
                etags_are_md5 = found.etags_are_md5,
                tags_on_multipart = found.tags_on_multipart,
                tags_on_copy = found.tags_on_copy,
                complete_etag = found.complete_etag,
                checksum_trailer = found.checksum_trailer,
                "probed the destination bucket"
            );
            // A probe some of whose requests had to be retried is trusted by this process
            // alone, and for minutes: the next one, likely undisturbed, replaces it.
            if disturbed {
                tracing::info!(
                    endpoint = name,
                    bucket,
                    "the probe was disturbed by transient errors; probing again in a few minutes"
                );
                let aged = PROBE_LIFETIME.saturating_sub(DISTURBED_PROBE_LIFETIME);
                return Ok((
                    Instant::now()
                        .checked_sub(aged)
                        .unwrap_or_else(Instant::now),
                    found,
                ));
            }
            if let Some(fleet) = &self.fleet
                && let Err(e) = fleet.share_probe(name, bucket, now_ms, &found).await
            {
                tracing::warn!(endpoint = name, bucket, error = %e, "cannot share the probe");
            }
            Ok((Instant::now(), found))
        })
        .await
        .map(|(_, c)| *c)
    }

    /// The fleet's probe of `bucket` on endpoint `name`, when one is there and younger than
    /// [`PROBE_LIFETIME`], dated by when it was made.
    /// What a probe of `bucket` on endpoint `name` found, where this process or the fleet
    /// knows it (within [`PROBE_LIFETIME`]); never probes (`ferry estimate` writes nothing).
    pub async fn known_capabilities(&self, name: &str, bucket: &str) -> Option<Capabilities> {
        let cell = {
            let cells = self.capabilities.lock().unwrap_or_else(|p| p.into_inner());
            cells.get(&(name.to_string(), bucket.to_string())).cloned()
        };
        if let Some((at, found)) = cell.as_ref().and_then(|c| c.get())
            && at.elapsed() < PROBE_LIFETIME
        {
            return Some(*found);
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.fleets_probe(name, bucket, now_ms)
            .await
            .map(|(_, found)| found)
    }

    async fn fleets_probe(
        &self,
        name: &str,
        bucket: &str,
        now_ms: u64,
    ) -> Option<(Instant, Capabilities)> {
        let fleet = self.fleet.as_ref()?;
        match fleet.probed(name, bucket).await {
            Ok(Some((at_ms, found)))
                if now_ms.saturating_sub(at_ms) < PROBE_LIFETIME.as_millis() as u64 =>
            {
                let age = Duration::from_millis(now_ms.saturating_sub(at_ms));
                tracing::debug!(endpoint = name, bucket, ?age, "using the fleet's probe");
                Some((
                    Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                    found,
                ))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(endpoint = name, bucket, error = %e,
                    "cannot read the fleet's probe; probing");
                None
            }
        }
    }
}
