//! The identity store boundary: what `identity/` persists, said in its words.
//!
//! The graph's logic (guards, merges, splits, privacy) lives once, in
//! `crate::identity`; a backend provides the statements it runs
//! ([`IdentityTx`]) and the transactions it runs them in ([`IdentityStore`]).
//! Every method of one job sees that job's earlier writes, and a job either
//! commits whole or not at all.
//!
//! # Design
//! A job is a closure over one transaction. On the embedded SQLite store
//! jobs run one at a time on the writer thread, so a job's reads and its
//! writes can never interleave with another's. A backend shared by several
//! workers ([`IdentityStore::shared`]) must give the same guarantee by
//! isolation (PostgreSQL: `SERIALIZABLE`) and run a job again when the
//! database reports a conflict, so a job must be safe to run more than once:
//! it may touch nothing but the transaction and state it rebuilds per run.
//!
//! # Caches
//! The identity module keeps in-memory state beside the graph
//! (`identity::state::GraphState`). Which parts a shared backend may use:
//! - the node → profile LRU and the session LRU: **single writer only**
//!   (another worker may merge, split or delete a profile behind them);
//! - the counts of suppressions and split barriers that let guard lookups be
//!   skipped: **single writer only** (a delete on another worker must
//!   suppress here at once);
//! - the write-behind of sessions: **single writer only** (sessions must be
//!   seen by every worker), so shared backends advance a session under a
//!   row lock ([`IdentityTx::lock_sessions`]) before the ack;
//! - the write-behind of node counters: allowed, because counts add up in
//!   any order ([`IdentityTx::bump_nodes`] adds, it never sets);
//! - the cached link path that acks from memory alone: **single writer
//!   only**, as it depends on the node cache.
//!
//! `GraphState` switches the single-writer ones off when the store says it is
//! shared.

mod known;

use std::any::Any;

pub(crate) use known::move_known_in;
pub use known::{KnownQuery, KnownRows, SessionStep};

use crate::storage::StorageError;

/// Event counts and times to add to one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Per call type, in `EventType::ALL` order.
    pub counts: [i64; 6],
    /// Earliest event time, Unix milliseconds.
    pub first_seen_ms: i64,
    /// Latest event time, Unix milliseconds.
    pub last_seen_ms: i64,
}

/// A visitor's session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRow {
    /// Start of the current session, in Unix milliseconds; doubles as its id.
    pub session_id: i64,
    /// Sessions so far, this one included.
    pub count: i64,
    /// Latest activity seen, in Unix milliseconds.
    pub last_activity_ms: i64,
}

/// One merge-log entry to write.
pub struct MergeRecord<'a> {
    pub survivor: &'a str,
    pub absorbed: &'a str,
    pub cause: &'a str,
    pub message_id: Option<&'a str>,
    /// JSON array of the node keys involved.
    pub identifiers: &'a str,
    pub link_id: Option<i64>,
    pub absorbed_node: Option<&'a str>,
    pub actor: Option<&'a str>,
}

/// One merge-log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeEntry {
    pub id: i64,
    pub at_ms: i64,
    pub survivor: String,
    pub absorbed: String,
    pub cause: String,
    pub message_id: Option<String>,
    /// JSON array of node keys.
    pub identifiers: String,
    pub link_id: Option<i64>,
    pub absorbed_node: Option<String>,
    pub actor: Option<String>,
    pub split_at_ms: Option<i64>,
}

/// One refused link as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalEntry {
    pub id: i64,
    pub at_ms: i64,
    pub message_id: Option<String>,
    pub kept: String,
    pub refused: String,
    /// JSON array of node keys.
    pub identifiers: String,
    pub reason: String,
}

/// One node of a profile with its activity, for the profile view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub key: String,
    pub first_seen_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    /// Per call type, in `EventType::ALL` order.
    pub counts: [i64; 6],
}

/// One stored trait value of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraitRow {
    pub node: String,
    pub key: String,
    /// JSON text.
    pub value: String,
    pub updated_ms: i64,
}

/// One audit-log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// JSON text.
    pub detail: String,
}

/// The ids a person's stored events may carry, for privacy export and
/// delete: an event is the person's when its `context.waymark.profileId`,
/// `userId`, `anonymousId` or `context.waymark.visitorId` is among them.
#[derive(Debug, Clone, Default)]
pub struct PersonMatch {
    pub profile_ids: Vec<String>,
    pub user_ids: Vec<String>,
    pub anonymous_ids: Vec<String>,
    pub visitor_ids: Vec<String>,
}

/// One stored event of a person (outbox, consent hold or dead letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonEvent {
    pub destination: String,
    /// When it was enqueued, held or dead-lettered, Unix milliseconds.
    pub at_ms: i64,
    /// The event's JSON text.
    pub event: String,
}

/// A person's events waiting anywhere in the store.
#[derive(Debug, Clone, Default)]
pub struct PersonEvents {
    /// Not yet delivered, one per destination.
    pub undelivered: Vec<PersonEvent>,
    /// Held until consent is known.
    pub held: Vec<PersonEvent>,
    /// In the dead-letter store.
    pub dead_letters: Vec<PersonEvent>,
}

/// How many of a person's events a delete removed, per place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletedEvents {
    pub outbox: usize,
    pub held: usize,
    pub dead_letters: usize,
    pub quarantined: usize,
}

/// The statements of one identity job, inside one transaction.
///
/// Methods take `&self` so graph code can pass the transaction around
/// freely; backends that need `&mut` use interior mutability.
pub trait IdentityTx {
    // The graph.

    /// The profile a node belongs to.
    fn node_profile(&self, key: &str) -> Result<Option<String>, StorageError>;
    /// The profiles of those of `keys` that are nodes, as `(key, profile)`,
    /// read at one moment (a backend may do it in one statement).
    fn node_profiles(&self, keys: &[String]) -> Result<Vec<(String, String)>, StorageError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(profile) = self.node_profile(key)? {
                out.push((key.clone(), profile));
            }
        }
        Ok(out)
    }
    /// When a profile was created (`i64::MAX` when unknown), for the merge's survivor.
    fn profile_created(&self, id: &str) -> Result<i64, StorageError>;
    /// Creates a profile.
    fn insert_profile(&self, id: &str, now_ms: i64) -> Result<(), StorageError>;
    /// Creates a node in `profile`. Fails when the node exists.
    fn insert_node(&self, key: &str, profile: &str, now_ms: i64) -> Result<(), StorageError>;
    /// Records a link between two nodes; returns its id.
    fn insert_link(
        &self,
        a: &str,
        b: &str,
        cause: &str,
        message_id: Option<&str>,
        now_ms: i64,
    ) -> Result<i64, StorageError>;
    /// Whether a profile holds a `user:` node (the merge guard's question).
    fn has_user(&self, profile: &str) -> Result<bool, StorageError>;
    /// Whether an admin split put a barrier between the two profiles (or
    /// any profile merged into either).
    fn is_blocked(&self, p: &str, q: &str) -> Result<bool, StorageError>;
    /// Whether an identifier hash is suppressed (its person was deleted).
    fn is_suppressed(&self, hash: &str) -> Result<bool, StorageError>;
    /// Those of `hashes` that are suppressed (a backend may ask in one statement).
    fn suppressed_among(&self, hashes: &[String]) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        for hash in hashes {
            if self.is_suppressed(hash)? {
                out.push(hash.clone());
            }
        }
        Ok(out)
    }
    /// How many suppressions and split barriers exist.
    fn guard_counts(&self) -> Result<(u64, u64), StorageError>;
    /// Node keys of a profile, in key order.
    fn profile_nodes(&self, profile: &str) -> Result<Vec<String>, StorageError>;
    /// A profile id and every id merged into it, oldest first.
    fn profile_ids(&self, profile: &str) -> Result<Vec<String>, StorageError>;
    /// Follows a merged profile id to the profile that absorbed it. `None`
    /// for an unknown (or deleted) id.
    fn current_profile(&self, id: &str) -> Result<Option<String>, StorageError>;
    /// Moves every node of `absorbed` into `survivor` and points `absorbed`
    /// (and every id already merged into it) at `survivor`.
    fn merge_profiles(&self, survivor: &str, absorbed: &str) -> Result<(), StorageError>;
    /// Appends to the merge log; returns the entry's id.
    fn insert_merge(&self, m: &MergeRecord<'_>, now_ms: i64) -> Result<i64, StorageError>;
    /// Logs a link the guards refused.
    #[allow(clippy::too_many_arguments)]
    fn insert_refusal(
        &self,
        message_id: Option<&str>,
        kept: &str,
        refused: &str,
        identifiers: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StorageError>;

    // Activity and traits.

    /// Adds a request's counts to a node.
    fn bump_node(&self, key: &str, s: &NodeStats) -> Result<(), StorageError>;
    /// Adds counts to several nodes, each key once, in key order (a
    /// backend may do it in one statement).
    fn bump_nodes(&self, stats: &[(String, NodeStats)]) -> Result<(), StorageError> {
        for (key, s) in stats {
            self.bump_node(key, s)?;
        }
        Ok(())
    }
    /// Sets a trait on a node unless a newer value is already there.
    fn upsert_trait(
        &self,
        node: &str,
        key: &str,
        value: &str,
        updated_ms: i64,
    ) -> Result<(), StorageError>;
    /// The stored session of a visitor.
    fn session(&self, key: &str) -> Result<Option<SessionRow>, StorageError>;
    /// Stores a visitor's session.
    fn put_session(&self, key: &str, s: &SessionRow) -> Result<(), StorageError>;
    /// Stores several visitors' sessions, each key once, in key order (a
    /// backend may do it in one statement).
    fn put_sessions(&self, rows: &[(String, SessionRow)]) -> Result<(), StorageError> {
        for (key, row) in rows {
            self.put_session(key, row)?;
        }
        Ok(())
    }
    /// The stored sessions of `keys` (in key order, each once), held against
    /// every other job's session writes until this job ends: a shared store
    /// locks the rows; the single writer needs no lock.
    fn lock_sessions(&self, keys: &[String]) -> Result<Vec<(String, SessionRow)>, StorageError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(row) = self.session(key)? {
                out.push((key.clone(), row));
            }
        }
        Ok(out)
    }
    /// Stores sessions after [`IdentityTx::lock_sessions`]: `moved` were
    /// returned by it, `created` were not. A created session that another
    /// job stored meanwhile fails this job as a conflict, so it runs again
    /// on the other job's row.
    fn store_sessions(
        &self,
        moved: &[(String, SessionRow)],
        created: &[(String, SessionRow)],
    ) -> Result<(), StorageError> {
        for (key, row) in moved.iter().chain(created) {
            self.put_session(key, row)?;
        }
        Ok(())
    }

    // Profiles as the admin API reads them.

    /// Whether `id` is a profile that was not merged into another.
    fn profile_is_current(&self, id: &str) -> Result<bool, StorageError>;
    /// A profile's nodes with their activity, oldest first.
    fn profile_node_rows(&self, id: &str) -> Result<Vec<NodeRow>, StorageError>;
    /// A profile's traits: per trait key, the value with the latest time, in key order.
    fn profile_traits(&self, id: &str) -> Result<Vec<(String, String)>, StorageError>;
    /// Merge-log entries with `id` as survivor or absorbed.
    fn merges_of(&self, id: &str) -> Result<Vec<MergeEntry>, StorageError>;
    /// The latest 100 refusals with `id` kept or refused, newest first.
    fn refusals_of(&self, id: &str) -> Result<Vec<RefusalEntry>, StorageError>;
    /// The first node of a profile (by creation, then key).
    fn first_node(&self, profile: &str) -> Result<Option<String>, StorageError>;

    // Repairs.

    /// One merge-log entry.
    fn merge_entry(&self, id: i64) -> Result<Option<MergeEntry>, StorageError>;
    /// Active links from nodes of `profile`, but `except_link`, as `(a, b)`.
    fn active_links(
        &self,
        profile: &str,
        except_link: i64,
    ) -> Result<Vec<(String, String)>, StorageError>;
    /// Deactivates a link and marks its merge split at `now_ms`.
    fn undo_merge(&self, link_id: i64, merge_id: i64, now_ms: i64) -> Result<(), StorageError>;
    /// Points a profile id at `into`, or makes it current again with `None`.
    fn set_merged_into(&self, id: &str, into: Option<&str>) -> Result<(), StorageError>;
    /// Moves one node into `profile`.
    fn move_node(&self, key: &str, profile: &str) -> Result<(), StorageError>;
    /// The absorbed-side node of the latest merge that absorbed `profile`.
    fn last_absorbed_node(&self, profile: &str) -> Result<Option<String>, StorageError>;
    /// Puts a barrier between two profile ids (after a split).
    fn insert_block(&self, x: &str, y: &str, merge_id: i64) -> Result<(), StorageError>;

    // Privacy.

    /// Every stored trait value of these nodes, by node then key.
    fn node_traits(&self, nodes: &[String]) -> Result<Vec<TraitRow>, StorageError>;
    /// Every stored session of these nodes, by key.
    fn node_sessions(&self, nodes: &[String]) -> Result<Vec<(String, SessionRow)>, StorageError>;
    /// A person's events waiting in the outbox, consent holds and dead letters.
    fn person_events(&self, person: &PersonMatch) -> Result<PersonEvents, StorageError>;
    /// Deletes a person's events from the outbox, consent holds, dead
    /// letters and quarantine.
    fn delete_person_events(&self, person: &PersonMatch) -> Result<DeletedEvents, StorageError>;
    /// Deletes the graph rows of a person: traits, sessions, links, merge
    /// log, refusals, barriers, nodes and profiles.
    fn delete_graph(&self, profile_ids: &[String], nodes: &[String]) -> Result<(), StorageError>;
    /// Holds off, until this job ends, every job begun by
    /// [`IdentityStore::run_new`] on a store several workers write, and
    /// waits for those running to end. A privacy delete calls it as its
    /// first statement, so it sees every node such a job created and no such
    /// job misses its suppressions. The single writer needs nothing.
    fn exclude_new_links(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Suppresses identifier hashes (kept when already there).
    fn suppress(&self, hashes: &[String], now_ms: i64, audit_id: i64) -> Result<(), StorageError>;
    /// Appends to the audit log; returns the entry's id.
    fn insert_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<i64, StorageError>;
    /// The most recent audit entries, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRow>, StorageError>;
}

/// A job's result, boxed to cross the object-safe boundary.
pub type JobOutput = Box<dyn Any + Send>;

/// A job over one transaction. It may be run more than once (see the module docs).
pub type Job = Box<dyn FnMut(&dyn IdentityTx) -> Result<JobOutput, StorageError> + Send>;

/// Where the identity graph is kept, and how its jobs run.
#[async_trait::async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// Whether several workers write this store, so the in-memory caches of
    /// the module docs must not be used.
    fn shared(&self) -> bool;

    /// Runs a write job in one transaction and resolves once it is durable.
    /// An error means nothing of the job was written.
    async fn run_write(&self, job: Job) -> Result<JobOutput, StorageError>;

    /// Runs a write job that expects every node and session it names to be
    /// new (a first-time visitor). A store several workers write may run it
    /// under less isolation than [`IdentityStore::run_write`], provided it
    /// runs the job again as a write job when any of them exists by then;
    /// the result is the same. The single writer runs it as a write job.
    async fn run_new(&self, job: Job) -> Result<JobOutput, StorageError> {
        self.run_write(job).await
    }

    /// Runs a job that reads the graph but writes only activity (sessions
    /// under [`IdentityTx::lock_sessions`], additive counters), so it needs
    /// no more isolation than each statement's own: PostgreSQL runs it at
    /// `READ COMMITTED` and commits it asynchronously. It is durable once
    /// any later transaction commits durably, so a caller must not ack on it
    /// alone: the ingest commit that follows a link is that durable commit.
    /// The single writer runs it as [`IdentityStore::run_write`].
    async fn run_activity(&self, job: Job) -> Result<JobOutput, StorageError> {
        self.run_write(job).await
    }

    /// Answers the light job of a request that changes nothing in the
    /// graph ([`KnownQuery`]): its sessions locked and its nodes read, and
    /// its sessions moved on when those show it is known. An activity job
    /// (see [`IdentityStore::run_activity`]): the caller must not ack on it
    /// alone. PostgreSQL answers it in one statement.
    async fn move_known(&self, query: KnownQuery) -> Result<KnownRows, StorageError> {
        let query = std::sync::Arc::new(query);
        let out = self
            .run_activity(Box::new(move |tx: &dyn IdentityTx| {
                move_known_in(tx, &query).map(|r| Box::new(r) as JobOutput)
            }))
            .await?;
        downcast(out)
    }

    /// Runs a read-only job.
    async fn run_read(&self, job: Job) -> Result<JobOutput, StorageError>;

    /// Called after a privacy delete: forget any event text held in memory.
    fn forget_cached_events(&self) {}
}

impl dyn IdentityStore {
    /// Runs a typed write job (see [`IdentityStore::run_write`]).
    pub async fn write<R, F>(&self, mut job: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnMut(&dyn IdentityTx) -> Result<R, StorageError> + Send + 'static,
    {
        let out = self
            .run_write(Box::new(move |tx: &dyn IdentityTx| {
                job(tx).map(|r| Box::new(r) as JobOutput)
            }))
            .await?;
        downcast(out)
    }

    /// Runs a typed job over new identifiers (see [`IdentityStore::run_new`]).
    pub async fn write_new<R, F>(&self, mut job: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnMut(&dyn IdentityTx) -> Result<R, StorageError> + Send + 'static,
    {
        let out = self
            .run_new(Box::new(move |tx: &dyn IdentityTx| {
                job(tx).map(|r| Box::new(r) as JobOutput)
            }))
            .await?;
        downcast(out)
    }

    /// Runs a typed activity job (see [`IdentityStore::run_activity`]).
    pub async fn activity<R, F>(&self, mut job: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnMut(&dyn IdentityTx) -> Result<R, StorageError> + Send + 'static,
    {
        let out = self
            .run_activity(Box::new(move |tx: &dyn IdentityTx| {
                job(tx).map(|r| Box::new(r) as JobOutput)
            }))
            .await?;
        downcast(out)
    }

    /// Runs a typed read job (see [`IdentityStore::run_read`]).
    pub async fn read<R, F>(&self, mut job: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnMut(&dyn IdentityTx) -> Result<R, StorageError> + Send + 'static,
    {
        let out = self
            .run_read(Box::new(move |tx: &dyn IdentityTx| {
                job(tx).map(|r| Box::new(r) as JobOutput)
            }))
            .await?;
        downcast(out)
    }
}

fn downcast<R: 'static>(out: JobOutput) -> Result<R, StorageError> {
    out.downcast::<R>()
        .map(|r| *r)
        .map_err(|_| StorageError::Sql("identity: a job returned the wrong type".into()))
}
