//! Visitor stitching and profiles (DESIGN.md §4, issue #4).
//!
//! Identifiers (`cookie:`, `anon:`, `user:` and configured trait keys such
//! as a hashed email) are nodes of a graph kept in the store, behind the
//! identity boundary ([`crate::storage::identity`]: embedded SQLite, or
//! PostgreSQL shared by a fleet); this module holds the graph's logic once. An
//! event that carries several of them links them, and linked identifiers
//! form one profile with a stable id. The principal types:
//!
//! - [`Identity`], the handle the pipeline and the admin API share. Its
//!   [`Identity::link`] runs one request's events through [`graph`] (from
//!   memory, or in one group-committed write job), and its admin operations explain,
//!   split, force-merge, export and delete profiles.
//! - [`graph::EventIds`], one event's identity facts, extracted by the
//!   identify stage; [`graph::Linked`], what became of the event.
//! - [`profile::ProfileView`], a profile as the admin API shows it.
//!
//! Guards (after PostHog): two profiles that each hold a `userId` never merge
//! automatically; junk ids never link ([`key`]); `alias` merges explicitly
//! under the same guards; only an admin can force a merge. Every merge is
//! logged with its cause, and a split re-derives the graph without the
//! merge's link. Privacy deletion leaves only hashed identifiers behind, in
//! a suppression list that drops the person's later events at ingest.

pub(crate) mod activity;
pub(crate) mod graph;
pub(crate) mod key;
pub(crate) mod merge;
pub(crate) mod privacy;
pub(crate) mod profile;
pub(crate) mod repair;
pub(crate) mod session;
pub(crate) mod state;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{ConfigError, IdentityConfig};
use crate::storage::identity::{IdentityStore, IdentityTx, KnownQuery};
use crate::storage::{Storage, StorageError};

/// How often a request on a shared store tries the light job before its
/// graph job runs to the end (see `Identity::link_shared`).
const LIGHT_TRIES: usize = 3;
use crate::telemetry::identity::{IdentityLinked, IdentityStateReset};
use crate::time::now_ms;
use graph::{BatchContext, EventIds, Linked};
use key::KeyRules;
use state::{GraphState, MAX_PENDING};

pub use profile::{Lookup, ProfileView};

/// Why an admin identity operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No profile has that id or identifier.
    #[error("identity: no profile for {0}")]
    NotFound(String),
    /// The request cannot be carried out as asked; the text says why and what to do.
    #[error("identity: {0}")]
    Invalid(String),
    /// The store failed; nothing was changed.
    #[error("identity: {0}")]
    Storage(#[from] StorageError),
}

/// The identity graph, profiles, sessions and privacy operations.
///
/// # Design
/// Linking a request that changes the graph is one write job of the
/// identity store (on SQLite, on the single writer thread, group-committed
/// with other requests' jobs; on PostgreSQL, one serializable transaction,
/// run again on a conflict), awaited before the outbox commit: the event must carry its
/// `profileId` when it is stored, and graph decisions must be serialised
/// with graph writes. A request whose identifiers are all cached nodes of
/// one profile changes nothing and is linked from memory under the same
/// lock. Hot lookups come from a bounded LRU, so memory stays flat however
/// many profiles the store holds (issue #4); counters and sessions are
/// written behind ([`state::Pending`]). A store with several writers
/// ([`IdentityStore::shared`]) gets none of these caches: a request that
/// changes nothing in the graph is then one light job
/// ([`activity::link_known`]: its nodes read at once, its sessions moved on
/// under a row lock, its counters written behind), and any other is a graph
/// job on a fresh [`GraphState::shared`] that writes its activity at once.
#[derive(Clone)]
pub struct Identity {
    store: Arc<dyn IdentityStore>,
    state: Arc<Mutex<GraphState>>,
    rules: Arc<KeyRules>,
    session_timeout_ms: i64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("session_timeout_ms", &self.session_timeout_ms)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Builds the identity stage over the store's identity boundary.
    pub fn build(
        config: &IdentityConfig,
        storage: &Arc<dyn Storage>,
    ) -> Result<Identity, ConfigError> {
        Ok(Identity::over(config, storage.identity_store()))
    }

    /// Builds the identity stage over an opened store.
    pub fn with_store<S: Storage>(config: &IdentityConfig, storage: S) -> Identity {
        Identity::over(config, storage.identity_store())
    }

    /// Builds the identity stage over an identity store.
    pub(crate) fn over(config: &IdentityConfig, store: Arc<dyn IdentityStore>) -> Identity {
        let state = if store.shared() {
            GraphState::shared()
        } else {
            GraphState::new(config.cache_entries)
        };
        Identity {
            store,
            state: Arc::new(Mutex::new(state)),
            rules: Arc::new(KeyRules::from_config(config)),
            session_timeout_ms: i64::try_from(config.session_timeout_secs)
                .unwrap_or(i64::MAX / 1_000)
                .saturating_mul(1_000),
        }
    }

    pub(crate) fn rules(&self) -> &KeyRules {
        &self.rules
    }

    /// Links one request's events; returns, per event in order, what became of it.
    ///
    /// Resolves once the links are written: at once when the graph already
    /// holds them all ([`activity::link_cached`]), else after a job (on a
    /// shared store, one that the caller's ingest commit makes durable). On
    /// an error nothing was linked and the caller answers 503, as for a
    /// failed outbox commit.
    pub(crate) async fn link(&self, events: Vec<EventIds>) -> Result<Vec<Linked>, StorageError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let cx = BatchContext {
            now_ms: now_ms(),
            session_timeout_ms: self.session_timeout_ms,
        };
        let cached = activity::link_cached(&mut lock(&self.state), &events, cx);
        let result = match cached {
            Some(done) => Ok(done),
            None if self.store.shared() => self.link_shared(events, cx).await,
            None => self
                .link_on_writer(Arc::new(events), cx, None, false)
                .await
                .and_then(|linked| {
                    linked.ok_or_else(|| {
                        StorageError::Sql("identity: a graph job yielded unasked".into())
                    })
                }),
        };
        match result {
            Ok((linked, report)) => {
                IdentityLinked {
                    events: linked.len(),
                    report: &report,
                    duration: started.elapsed(),
                }
                .emit();
                Ok(linked)
            }
            Err(error) => {
                // NOTE: a failed group commit rolls back jobs that succeeded
                // on their own, so the cache may hold their rows: forget it.
                // A job of the next group may run before this line; the
                // cost is at most links to a profile row that was rolled
                // back, which the next lookup of those nodes repairs.
                self.reset_state();
                Err(error)
            }
        }
    }

    /// Writes the pending activity (node counters, sessions); see
    /// [`state::Pending`]. Returns how many entries were written.
    pub async fn flush(&self) -> Result<usize, StorageError> {
        let state = Arc::clone(&self.state);
        let job = move |conn: &dyn IdentityTx| {
            // Taken when the job runs, so it is ordered with every other
            // graph job (a delete drops its person's activity first);
            // written without the lock, so linking goes on meanwhile.
            let taken = lock(&state).take_pending();
            taken.write(conn).inspect_err(|_| {
                lock(&state).restore_pending(taken);
            })
        };
        if self.store.shared() {
            // Only counters wait on a shared store, and they add up: no
            // serializable snapshot needed (nor one to conflict with).
            if lock(&self.state).pending.len() == 0 {
                return Ok(0);
            }
            return self.store.activity(job).await;
        }
        self.store.write(job).await
    }

    /// Flushes the pending activity every `every` until `shutdown`, and once more then.
    pub async fn run_flusher(
        self,
        every: std::time::Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = shutdown.changed() => true,
            };
            if lock(&self.state).pending.len() > 0 {
                if let Err(error) = self.flush().await {
                    tracing::warn!(error = %error, "Writing identity activity failed; it is kept for the next try.");
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// Links a request on a store several workers share: a light job when
    /// the request changes nothing in the graph ([`activity::link_known`]),
    /// else a graph job.
    ///
    /// # Design
    /// When several requests bring the same new visitors at once, one graph
    /// job creates them and the others conflict with it. Run again, they
    /// would each write sessions that the light jobs of later requests keep
    /// moving on, and conflict again and again; so a graph job that finds
    /// the request known by then writes nothing, and the request takes the
    /// light job instead (a few times at most, then the graph job runs).
    async fn link_shared(
        &self,
        events: Vec<EventIds>,
        cx: BatchContext,
    ) -> Result<(Vec<Linked>, graph::BatchReport), StorageError> {
        if lock(&self.state).pending.len() >= MAX_PENDING {
            self.flush().await?;
        }
        let events = Arc::new(events);
        let query = activity::known_query(&events, cx).map(Arc::new);
        for _ in 0..LIGHT_TRIES {
            let Some(query) = &query else { break };
            let rows = self.store.move_known(KnownQuery::clone(query)).await?;
            // None of its nodes and sessions exists: a first-time visitor,
            // whose graph job may take the store's lighter path.
            let new = rows.nodes.is_empty() && rows.sessions.is_empty();
            if let Some(known) = activity::link_known(&events, rows, cx)? {
                // Committed: only now may its counts wait for the flush.
                let mut state = lock(&self.state);
                for (key, s) in known.stats {
                    state.record_stats(&key, s);
                }
                return Ok((known.linked, known.report));
            }
            if let Some(linked) = self
                .link_on_writer(Arc::clone(&events), cx, Some(Arc::clone(query)), new)
                .await?
            {
                return Ok(linked);
            }
        }
        match self.link_on_writer(events, cx, None, false).await? {
            Some(linked) => Ok(linked),
            None => Err(StorageError::Sql(
                "identity: a graph job yielded without a light job to yield to".into(),
            )),
        }
    }

    /// Runs the graph job of a request; `None` when `known` is given and
    /// the job found the request known by then (nothing written). `new`:
    /// none of its nodes and sessions existed a moment ago, so the job is
    /// run as one over new identifiers ([`IdentityStore::run_new`]).
    async fn link_on_writer(
        &self,
        events: Arc<Vec<EventIds>>,
        cx: BatchContext,
        known: Option<Arc<KnownQuery>>,
        new: bool,
    ) -> Result<Option<(Vec<Linked>, graph::BatchReport)>, StorageError> {
        let state = Arc::clone(&self.state);
        let shared = self.store.shared();
        let job = move |conn: &dyn IdentityTx| {
            if shared {
                // Nothing is kept between jobs: no lock to hold meanwhile.
                // The job's reads answer whether the request is known
                // by now too.
                let (node_keys, session_keys) = graph::named_keys(&events);
                let mut scratch = GraphState::job(node_keys.len() + session_keys.len());
                scratch.prefetch(conn, node_keys, session_keys, true)?;
                if let Some(query) = &known {
                    let known = match scratch.known_from_reads(query) {
                        Some(known) => known,
                        None => query.is_known_in(conn)?,
                    };
                    if known {
                        return Ok(None);
                    }
                }
                return graph::link_batch(conn, &mut scratch, &events, cx).map(Some);
            }
            let mut guard = lock(&state);
            let result = graph::link_batch(conn, &mut guard, &events, cx);
            if result.is_err() {
                // The job's savepoint is rolled back: so must the cache be.
                guard.clear();
            }
            result.map(Some)
        };
        if new {
            self.store.write_new(job).await
        } else {
            self.store.write(job).await
        }
    }

    fn reset_state(&self) {
        lock(&self.state).clear();
        IdentityStateReset.emit();
    }

    /// Runs an admin job on the writer with the graph state, after the
    /// pending activity is written (so counts and sessions are exact).
    ///
    /// The job must decide every domain error (`NotFound`, `Invalid`)
    /// before its first write: only a storage error rolls the job back.
    async fn admin_write<R, F>(&self, job: F) -> Result<R, IdentityError>
    where
        R: Send + 'static,
        F: FnMut(&dyn IdentityTx, &mut GraphState) -> Result<R, IdentityError> + Send + 'static,
    {
        self.flush().await?;
        let state = Arc::clone(&self.state);
        let shared = self.store.shared();
        let mut job = job;
        let result = self
            .store
            .write(move |conn: &dyn IdentityTx| {
                let (mut scratch, mut guard);
                let state: &mut GraphState = if shared {
                    scratch = GraphState::shared();
                    &mut scratch
                } else {
                    guard = lock(&state);
                    &mut guard
                };
                match job(conn, state) {
                    Ok(r) => Ok(Ok(r)),
                    Err(IdentityError::Storage(e)) => {
                        state.clear();
                        Err(e)
                    }
                    Err(domain) => Ok(Err(domain)),
                }
            })
            .await;
        match result {
            Ok(inner) => inner,
            Err(e) => {
                self.reset_state();
                Err(IdentityError::Storage(e))
            }
        }
    }

    /// Runs a read on a pooled connection, after the pending activity is written.
    async fn admin_read<R, F>(&self, job: F) -> Result<R, IdentityError>
    where
        R: Send + 'static,
        F: FnMut(&dyn IdentityTx) -> Result<R, IdentityError> + Send + 'static,
    {
        self.flush().await?;
        let mut job = job;
        self.store
            .read(move |conn: &dyn IdentityTx| Ok(job(conn)))
            .await
            .map_err(IdentityError::Storage)?
    }
}

/// Locks the graph state. A panic in a job cannot leave it half-updated in
/// a way that matters (it is a cache), so a poisoned lock is cleared and reused.
fn lock(state: &Mutex<GraphState>) -> MutexGuard<'_, GraphState> {
    match state.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            let mut guard = poisoned.into_inner();
            guard.clear();
            guard
        }
    }
}
