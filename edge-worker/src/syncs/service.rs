//! The syncs as the rest of the worker sees them: the configuration, the
//! state store, and a trigger that queues a run and wakes the executor.
//! The HTTP API (`/api/v1`), the CLI and schedules go through it; the
//! executor ([`super::run::execute`]) waits on its wake-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::dry_run::DryRunError;
use super::run::execute::{execute, RunContext, RUN_LEASE};
use super::run::prepare::{lookup, sync_id};
use super::schedule::Scheduler;
use crate::config::{Config, Schedule, SyncConfig};
use crate::stages::Pipeline;
use crate::storage::syncs::{ObjectId, ObjectKind, RunFilter, RunStatus, SyncRun};
use crate::storage::{StorageError, SyncStore};
use crate::time::now_ms;

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

    /// The sync state store.
    pub fn store(&self) -> &Arc<dyn SyncStore> {
        &self.store
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

/// How often the executor looks for queued and scheduled runs when no
/// trigger wakes it.
const EXECUTOR_TICK: Duration = Duration::from_secs(1);
/// How often the executor looks for runs whose worker stopped.
const STALE_SWEEP: Duration = Duration::from_secs(10);

impl Syncs {
    /// The enabled syncs, with their ids.
    async fn enabled(&self) -> Result<Vec<(SyncConfig, i64)>, StorageError> {
        let syncs: Vec<&SyncConfig> = self.config.syncs.iter().filter(|s| !s.disabled).collect();
        if syncs.is_empty() {
            return Ok(Vec::new());
        }
        let names = syncs.iter().map(|s| s.name.clone()).collect();
        let ids = self.store.object_ids(ObjectKind::Sync, names).await?;
        Ok(syncs
            .into_iter()
            .cloned()
            .zip(ids.into_iter().map(|o| o.id))
            .collect())
    }

    /// Marks runs whose heartbeat is older than [`RUN_LEASE`] interrupted.
    async fn sweep_stale(&self) {
        let stale_before = now_ms() - RUN_LEASE.as_millis() as i64;
        match self.store.interrupt_runs(stale_before).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(runs = n, "Sync runs whose worker stopped are marked interrupted; their next runs send what was missed."),
            Err(error) => tracing::warn!(%error, "Could not look for interrupted sync runs."),
        }
    }

    /// Whether the sync's newest run is queued (a sync has at most one
    /// queued run, and it is the newest).
    async fn has_queued(&self, sync: i64) -> bool {
        let newest = RunFilter {
            limit: 1,
            ..RunFilter::default()
        };
        match self.store.runs(sync, newest).await {
            Ok(runs) => runs.first().is_some_and(|r| r.status == RunStatus::Queued),
            Err(error) => {
                tracing::warn!(sync, %error, "Cannot read the sync's runs; trying again in a second.");
                false
            }
        }
    }

    fn context<'a>(
        &'a self,
        pipeline: &'a Pipeline,
        shutdown: watch::Receiver<bool>,
    ) -> RunContext<'a> {
        RunContext {
            config: &self.config,
            store: self.store.as_ref(),
            pipeline,
            shutdown,
        }
    }

    /// The executor: starts queued runs (one active per sync, syncs side
    /// by side) and queues scheduled ones as they fall due, until
    /// `shutdown`. A run cut off by the shutdown ends `interrupted`.
    pub async fn run_executor(
        self: Arc<Self>,
        pipeline: Arc<Pipeline>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let syncs = loop {
            match self.enabled().await {
                Ok(syncs) => break syncs,
                Err(error) => {
                    tracing::warn!(%error, "Cannot read the syncs' ids; trying again in a second.");
                    tokio::select! {
                        _ = tokio::time::sleep(EXECUTOR_TICK) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        if syncs.is_empty() {
            return;
        }
        let scheduled: Vec<(String, i64, Schedule)> = syncs
            .iter()
            .filter_map(|(s, id)| Some((s.name.clone(), *id, s.schedule.clone()?)))
            .collect();
        let mut scheduler = Scheduler::default();
        let mut active: HashMap<i64, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut swept: Option<std::time::Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if swept.is_none_or(|t| t.elapsed() >= STALE_SWEEP) {
                self.sweep_stale().await;
                swept = Some(std::time::Instant::now());
            }
            for id in scheduler
                .due(self.store.as_ref(), &scheduled, now_ms())
                .await
            {
                if let Err(error) = self.store.queue_run(id, false).await {
                    tracing::warn!(sync = id, %error, "Cannot queue a scheduled run; trying again in a second.");
                }
            }
            active.retain(|_, task| !task.is_finished());
            for (sync, id) in &syncs {
                if active.contains_key(id) {
                    continue;
                }
                // A read first: starting is a write, and nothing is queued
                // most of the time.
                if !self.has_queued(*id).await {
                    continue;
                }
                let run = match self.store.start_run(*id).await {
                    Ok(Some(run)) => run,
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::warn!(sync = %sync.name, %error, "Cannot start the sync's queued run; trying again in a second.");
                        continue;
                    }
                };
                let this = Arc::clone(&self);
                let pipeline = Arc::clone(&pipeline);
                let sync = sync.clone();
                let stop = shutdown.clone();
                active.insert(
                    *id,
                    tokio::spawn(async move {
                        execute(this.context(&pipeline, stop), &sync, run).await;
                    }),
                );
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(EXECUTOR_TICK) => {}
                _ = shutdown.changed() => {}
            }
        }
        for (_, task) in active {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Runs the sync `name` now, in this process, to its end: queues a run
    /// (or takes the queued one), starts it and executes it. `None` when a
    /// run of the sync is active elsewhere (a run left by a stopped worker
    /// counts as active until its heartbeat is [`RUN_LEASE`] old). For
    /// `waymark sync run`.
    pub async fn run_now(
        &self,
        pipeline: &Pipeline,
        name: &str,
        full: bool,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Option<SyncRun>, TriggerError> {
        let (sync, _, _) = lookup(&self.config, name)?;
        if sync.disabled {
            return Err(TriggerError::Disabled(sync.name.clone()));
        }
        let id = sync_id(self.store.as_ref(), name).await?;
        self.sweep_stale().await;
        self.store.queue_run(id, full).await?;
        let Some(run) = self.store.start_run(id).await? else {
            return Ok(None);
        };
        Ok(execute(self.context(pipeline, shutdown), sync, run).await)
    }
}
