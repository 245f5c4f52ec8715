//! The syncs as the rest of the worker sees them: the configuration, the
//! state store, and a trigger that queues a run and wakes the executor.
//! The HTTP API (`/api/v1`), the CLI and schedules go through it; the
//! executor ([`super::run::execute`]) waits on its wake-up.

use std::sync::Arc;

use tokio::sync::Notify;

use super::dry_run::DryRunError;
use super::run::prepare::{lookup, sync_id};
use crate::config::Config;
use crate::storage::syncs::{ObjectId, ObjectKind};
use crate::storage::{StorageError, SyncStore};

/// Why a trigger was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TriggerError {
    /// No `[[syncs]]` entry has that name (or id).
    #[error(transparent)]
    Unknown(#[from] DryRunError),
    /// The sync is configured with `disabled = true`.
    #[error("sync `{0}` is disabled; set disabled = false in waymark.toml to run it")]
    Disabled(String),
    /// The store could not queue the run.
    #[error("queueing the run: {0}")]
    Storage(#[from] StorageError),
}

/// The configured syncs, their store and the executor's wake-up.
pub struct Syncs {
    config: Arc<Config>,
    store: Arc<dyn SyncStore>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Syncs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncs")
            .field("syncs", &self.config.syncs.len())
            .finish_non_exhaustive()
    }
}

impl Syncs {
    /// The syncs of `config`, kept in `store`.
    pub fn new(config: Arc<Config>, store: Arc<dyn SyncStore>) -> Syncs {
        Syncs {
            config,
            store,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The worker's configuration (`[[syncs]]`, `[[models]]`, ...).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration, shared.
    pub fn config_arc(&self) -> &Arc<Config> {
        &self.config
    }

    /// The sync state store.
    pub fn store(&self) -> &Arc<dyn SyncStore> {
        &self.store
    }

    /// The signal the executor waits on; notified by every trigger.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Gives every configured sync, model and destination its stable id
    /// (created on first sight). Called at start, so ids follow the
    /// configuration's order the first time.
    pub async fn register(&self) -> Result<(), StorageError> {
        let names = |kind| -> Vec<String> {
            match kind {
                ObjectKind::Sync => self.config.syncs.iter().map(|s| s.name.clone()).collect(),
                ObjectKind::Model => self.config.models.iter().map(|m| m.name.clone()).collect(),
                ObjectKind::Destination => self
                    .config
                    .destinations
                    .iter()
                    .map(|d| d.name.clone())
                    .collect(),
            }
        };
        for kind in [ObjectKind::Sync, ObjectKind::Model, ObjectKind::Destination] {
            let names = names(kind);
            if !names.is_empty() {
                self.store.object_ids(kind, names).await?;
            }
        }
        Ok(())
    }

    /// The ids of `names` of `kind`, in order (created when new).
    pub async fn ids(
        &self,
        kind: ObjectKind,
        names: Vec<String>,
    ) -> Result<Vec<ObjectId>, StorageError> {
        self.store.object_ids(kind, names).await
    }

    /// Queues a run of the sync `name` (a full resync with `full`) and
    /// wakes the executor; returns the run's id. A trigger while a run is
    /// queued returns that run; one while a run is active queues the next.
    pub async fn trigger(&self, name: &str, full: bool) -> Result<i64, TriggerError> {
        let (sync, _, _) = lookup(&self.config, name)?;
        if sync.disabled {
            return Err(TriggerError::Disabled(sync.name.clone()));
        }
        let id = sync_id(self.store.as_ref(), name).await?;
        let run = self.store.queue_run(id, full).await?;
        self.wake.notify_one();
        Ok(run)
    }
}
