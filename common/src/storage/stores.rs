//! One connected store per configured endpoint.

use std::collections::HashMap;
use std::sync::Arc;

use super::{ObjectStore, S3Store};
use crate::config::Config;

/// Connected stores, by endpoint name.
#[derive(Clone, Default)]
pub struct Stores {
    by_name: HashMap<String, Arc<dyn ObjectStore>>,
}

impl Stores {
    /// Connects an S3 client for every endpoint in `config`.
    pub async fn connect(config: &Config) -> Stores {
        let mut by_name: HashMap<String, Arc<dyn ObjectStore>> = HashMap::new();
        for (name, endpoint) in &config.endpoints {
            by_name.insert(name.clone(), Arc::new(S3Store::connect(endpoint).await));
        }
        Stores { by_name }
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
}
