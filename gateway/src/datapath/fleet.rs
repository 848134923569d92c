//! The providers one installation stores shards on: a backend per node id (providers of
//! pools applied while running join; none ever leaves, since old layouts may still name
//! it) and what placement last saw of their health.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use super::placement::HealthBoard;
use super::stripes::ShardBackend;

pub struct Fleet {
    /// This installation's tag: the start of every shard id it stores.
    installation: String,
    by_node: RwLock<Arc<HashMap<String, Arc<dyn ShardBackend>>>>,
    health: Arc<HealthBoard>,
}

impl Fleet {
    pub fn new(
        installation: &str,
        providers: &[Arc<dyn ShardBackend>],
        health: Arc<HealthBoard>,
    ) -> Self {
        Self {
            installation: installation.to_string(),
            by_node: RwLock::new(Arc::new(
                providers
                    .iter()
                    .map(|p| (p.node_id().to_string(), Arc::clone(p)))
                    .collect(),
            )),
            health,
        }
    }

    /// The same providers watched by `health` instead.
    pub fn with_health(&self, health: Arc<HealthBoard>) -> Self {
        Self {
            installation: self.installation.clone(),
            by_node: RwLock::new(self.providers()),
            health,
        }
    }

    /// This installation's tag, the start of its shard ids.
    pub fn installation(&self) -> &str {
        &self.installation
    }

    /// The shard backend of a provider, by node id.
    pub fn backend(&self, node: &str) -> Option<Arc<dyn ShardBackend>> {
        self.providers().get(node).cloned()
    }

    /// Every shard backend by node id, as of now.
    pub fn providers(&self) -> Arc<HashMap<String, Arc<dyn ShardBackend>>> {
        Arc::clone(&self.by_node.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Adds providers (a pool applied while running); ones already known are kept as they are.
    pub fn add_providers(&self, providers: Vec<Arc<dyn ShardBackend>>) {
        let mut by_node = self.by_node.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = (**by_node).clone();
        for p in providers {
            next.entry(p.node_id().to_string()).or_insert(p);
        }
        *by_node = Arc::new(next);
    }

    /// What placement knows about provider health.
    pub fn health(&self) -> &Arc<HealthBoard> {
        &self.health
    }
}
