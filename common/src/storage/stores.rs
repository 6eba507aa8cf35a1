//! One connected store per configured endpoint, and what each destination bucket can do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::{Capabilities, ObjectStore, S3Store, StorageError, Timeouts, probe};
use crate::config::Config;

type CapabilityCells = HashMap<(String, String), Arc<OnceCell<Capabilities>>>;

/// Connected stores, by endpoint name.
#[derive(Clone, Default)]
pub struct Stores {
    by_name: HashMap<String, Arc<dyn ObjectStore>>,
    capabilities: Arc<Mutex<CapabilityCells>>,
}

impl Stores {
    /// Connects an S3 client for every endpoint in `config`.
    pub async fn connect(config: &Config, timeouts: Timeouts) -> Stores {
        let mut by_name: HashMap<String, Arc<dyn ObjectStore>> = HashMap::new();
        for (name, endpoint) in &config.endpoints {
            by_name.insert(
                name.clone(),
                Arc::new(S3Store::connect(endpoint, timeouts).await),
            );
        }
        Stores {
            by_name,
            capabilities: Arc::default(),
        }
    }

    /// Stores from already-built clients (for tests and tools).
    pub fn from_stores(stores: impl IntoIterator<Item = (String, Arc<dyn ObjectStore>)>) -> Self {
        Stores {
            by_name: stores.into_iter().collect(),
            capabilities: Arc::default(),
        }
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
    /// for the life of the process. A probe that fails is tried again next time.
    pub async fn capabilities(
        &self,
        name: &str,
        bucket: &str,
    ) -> Result<Capabilities, StorageError> {
        let cell = {
            let mut cells = self.capabilities.lock().unwrap_or_else(|p| p.into_inner());
            cells
                .entry((name.to_string(), bucket.to_string()))
                .or_default()
                .clone()
        };
        cell.get_or_try_init(|| async {
            let found = probe(self.get(name).as_ref(), bucket).await?;
            tracing::info!(
                endpoint = name,
                bucket,
                conditional_writes = found.conditional_writes,
                etags_are_md5 = found.etags_are_md5,
                "probed the destination bucket"
            );
            Ok(found)
        })
        .await
        .copied()
    }
}
