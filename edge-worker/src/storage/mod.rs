//! The narrow storage boundary, and its embedded SQLite implementation.
//!
//! [`Storage`] is what the pipeline, delivery and the admin API need from a
//! store, said in their words (commit an ingest batch, claim due outbox
//! entries, dead-letter them), so a shared backend for several workers is a
//! new module implementing it, not a rewrite. [`SqliteStorage`] is the
//! embedded default: WAL mode, one writer thread with group commit
//! ([`writer`]), and a small pool of read connections. [`PgStorage`] is
//! the shared store of a fleet of workers (issue #12); [`open`] picks one
//! from `[storage] backend`, the only place that does.

mod boundary;
pub(crate) mod dedup;
pub(crate) mod delivery;
pub mod identity;
#[cfg(test)]
mod identity_conformance;
pub(crate) mod outbox;
pub(crate) mod pack_cache;
mod postgres;
pub(crate) mod schema;
mod sqlite;
pub mod syncs;
#[cfg(test)]
mod syncs_conformance;
#[cfg(test)]
pub(crate) mod syncs_hook_conformance;
pub(crate) mod writer;

#[cfg(test)]
pub(crate) mod conformance;

use std::sync::Arc;

use boundary::abandon_through_due;
pub use boundary::{DeliveryQueue, IngestStore, ReplayStore, Storage, SyncStore};
pub use delivery::{
    ConsentSettled, DeadLetter, HeldEvent, HoldCommit, HoldOutcome, RuleQuarantine,
};
/// PostgreSQL's own message for an error, for error texts (the warehouse
/// reader shares it).
pub(crate) use postgres::describe as pg_error_message;
pub use postgres::PgStorage;
pub use sqlite::SqliteStorage;

/// Throwaway PostgreSQL databases for tests (`tests/pg.rs`), for modules
/// outside `storage/` that test against PostgreSQL (the sync warehouses).
#[cfg(test)]
pub(crate) use postgres::test_db;

/// A fresh temporary directory, for tests.
#[cfg(test)]
pub(crate) fn conformance_tempdir() -> std::path::PathBuf {
    conformance::tempdir()
}

use crate::config::{StorageBackend, StorageConfig};

/// The destinations with entries in the outbox table `outbox` or with
/// consent holds, in SQL both backends run. The outbox part is a loose scan
/// of its `(destination, …)` index: one probe per destination, not a read of
/// every entry.
fn destinations_waiting_sql(outbox: &str) -> String {
    format!(
        "WITH RECURSIVE d(name) AS (
             SELECT min(destination) FROM {outbox}
             UNION ALL
             SELECT (SELECT min(destination) FROM {outbox} WHERE destination > d.name)
             FROM d WHERE d.name IS NOT NULL)
         SELECT name FROM d WHERE name IS NOT NULL
         UNION
         SELECT DISTINCT destination FROM consent_holds"
    )
}

/// Opens the store `[storage] backend` names. `dedup_window_secs` is
/// `[limits] dedup_window_secs` (the PostgreSQL store probes that far back).
pub fn open(
    config: &StorageConfig,
    dedup_window_secs: u64,
) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(match config.backend {
        StorageBackend::Sqlite => Arc::new(SqliteStorage::open_sized(
            &config.data_dir,
            config.max_commit_events,
            config.dedup_filter_mib << 20,
            dedup_window_secs,
        )?),
        StorageBackend::Postgres => Arc::new(PgStorage::open(config, dedup_window_secs)?),
    })
}

/// What `waymark check` verifies of `[storage]`: for PostgreSQL, that the
/// server answers, accepts the credentials, lets the role create tables,
/// and holds no schema newer than this binary. Nothing for SQLite.
pub async fn check(config: &StorageConfig) -> Result<(), StorageError> {
    match config.backend {
        StorageBackend::Sqlite => Ok(()),
        StorageBackend::Postgres => postgres::check(config).await,
    }
}

/// A storage failure. The store is unusable or a statement failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database could not be opened or migrated.
    #[error(
        "storage: cannot open {path}: {reason}; check the data directory exists and is writable"
    )]
    Open {
        /// The database file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A statement failed.
    #[error("storage: {0}")]
    Sql(String),
    /// A group commit failed; none of its writes happened.
    #[error("storage: commit failed: {0}")]
    Commit(String),
    /// The writer thread is gone (shutting down or crashed).
    #[error("storage: the writer has stopped")]
    Closed,
    /// The shared store cannot be reached now; retry later (ingest answers 503).
    #[error("storage: {0}")]
    Unavailable(String),
    /// PostgreSQL refused the credentials.
    #[error("storage: {0}")]
    Auth(String),
    /// The database role lacks a privilege Waymark needs.
    #[error("storage: {0}")]
    Privileges(String),
    /// The database was migrated by a newer Waymark.
    #[error(
        "storage: the database schema of {module} is at version {found} but this waymark knows only {known}; \
         upgrade this binary to the version the rest of the fleet runs"
    )]
    SchemaTooNew {
        /// The module whose tables are newer.
        module: String,
        /// The version found in the database.
        found: i32,
        /// The newest version this binary knows.
        known: i32,
    },
}

impl From<rusqlite::Error> for StorageError {
    #[cold]
    fn from(e: rusqlite::Error) -> Self {
        StorageError::Sql(e.to_string())
    }
}

/// One event accepted by the pipeline, with the destinations it is routed to.
#[derive(Debug, Clone)]
pub struct AcceptedEvent {
    /// Source name.
    pub source: Arc<str>,
    /// The event's `messageId`.
    pub message_id: String,
    /// Whether this source dedups on `messageId`.
    pub dedup: bool,
    /// The purposes the edge granted the event (stored with it, read by
    /// destinations instead of the event's own consent fields).
    pub granted: crate::consent::GrantedPurposes,
    /// The event as JSON, shared by the packs of every destination.
    pub json: Arc<str>,
    /// Destinations the event goes to (may be empty: it is still deduped).
    pub destinations: Vec<Arc<str>>,
}

/// One event that failed validation, kept with its reason.
#[derive(Debug, Clone)]
pub struct QuarantinedEvent {
    /// Source name (empty when the write key was unknown).
    pub source: Arc<str>,
    /// A stable reason code, such as `missing_field`.
    pub reason: &'static str,
    /// The field at fault and what is wrong, for people.
    pub detail: String,
    /// The event as received (JSON text, or lossy text when not JSON).
    pub raw: String,
}

/// Everything one ingest request writes, committed together before the ack.
///
/// # Design
/// Consent holds and settlements are part of the same commit as the
/// outbox and dedup (issue 12): were they a second write, a failure
/// between the two would answer 503 after the dedup ids were durable, and
/// the client's retry would be dropped as a duplicate with its holds never
/// written.
#[derive(Debug, Default)]
pub struct IngestCommit {
    /// Events to route, in request order.
    pub accepted: Vec<AcceptedEvent>,
    /// Events to quarantine.
    pub quarantined: Vec<QuarantinedEvent>,
    /// Consent holds of accepted events (written only for those that are
    /// not duplicates) and the request's consent decisions on earlier
    /// holds, in the same transaction as the outbox rows.
    pub holds: HoldCommit,
}

/// What an ingest commit did.
#[derive(Debug, Default)]
pub struct IngestOutcome {
    /// Per accepted event, in order: enqueued or a duplicate.
    pub stored: Vec<Stored>,
    /// What its holds and decisions did.
    pub holds: HoldOutcome,
}

impl HoldCommit {
    /// Nothing to hold and nothing decided.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.settled.is_empty()
    }

    /// The holds whose events `stored` says are new: a duplicate's holds
    /// were written with its first copy.
    pub(crate) fn of_fresh(&self, accepted: &[AcceptedEvent], fresh: &[bool]) -> Vec<&HeldEvent> {
        self.held
            .iter()
            .filter(|h| {
                accepted
                    .iter()
                    .zip(fresh)
                    .any(|(e, &new)| new && e.message_id == h.message_id && e.source == h.source)
            })
            .collect()
    }
}

/// What the commit did with each accepted event, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// New: written to the outbox of every routed destination.
    Enqueued,
    /// Seen before within the dedup window: nothing written.
    Duplicate,
}

/// An outbox entry waiting for delivery.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// The event's key: its pack's row id and its index in the pack
    /// ([`outbox::key`]). Stable until delivered or dead-lettered, and
    /// increasing with commit order within a destination.
    pub id: i64,
    /// Source name.
    pub source: String,
    /// The event's `messageId`.
    pub message_id: String,
    /// The purposes the edge granted the event, as decided at ingest (or,
    /// for an event released from a consent hold, by the event that
    /// released it). Destinations read this, never the event's own fields.
    pub granted: crate::consent::GrantedPurposes,
    /// The event as JSON (shared with the outbox's pack cache).
    pub json: Arc<str>,
    /// When it was committed, in Unix milliseconds.
    pub enqueued_at_ms: i64,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// A quarantined event, as listed by the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantineEntry {
    /// Row id.
    pub id: i64,
    /// Source name.
    pub source: String,
    /// When it was received, in Unix milliseconds.
    pub received_at_ms: i64,
    /// Reason code.
    pub reason: String,
    /// What is wrong.
    pub detail: String,
    /// The raw event.
    pub raw: String,
    /// The destination whose rules quarantined it; `None` when it was
    /// quarantined at ingest. A replay sends it back to this destination.
    pub destination: Option<String>,
    /// The rule that quarantined it, when known.
    pub rule: Option<String>,
    /// The event's `messageId`, for events quarantined by a destination's rules.
    pub message_id: Option<String>,
}
