//! The identity tables on the embedded store: [`IdentityTx`] over one
//! SQLite connection (the writer's, inside its group commit, or a pooled
//! reader), and [`SqliteIdentity`], which runs jobs on them.
//!
//! # Design
//! The graph lives on disk so resident memory does not grow with the number
//! of profiles (issue #4). Per-node rows carry everything that must follow a
//! node through merges and splits (its profile, event counts, first and last
//! seen, traits), so merging two profiles rewrites only `profile_id`, and a
//! split only moves nodes: a profile's counts and traits are always derived
//! from its nodes.

mod graph;
mod privacy;

use std::sync::Arc;

use super::SqliteStorage;
use crate::storage::identity::{IdentityStore, Job, JobOutput};
use crate::storage::StorageError;

/// Migrations of the `identity` module, applied by `SqliteStorage::open`
/// through `schema::migrate_module`. Released entries never change.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: graph, profiles, traits, sessions, merge log, privacy.
    r#"
    CREATE TABLE identity_profiles (
        id           TEXT PRIMARY KEY,
        created_ms   INTEGER NOT NULL,
        merged_into  TEXT
    ) WITHOUT ROWID;
    CREATE INDEX identity_profiles_merged ON identity_profiles (merged_into)
        WHERE merged_into IS NOT NULL;

    CREATE TABLE identity_nodes (
        key            TEXT PRIMARY KEY,
        profile_id     TEXT NOT NULL,
        created_ms     INTEGER NOT NULL,
        first_seen_ms  INTEGER,
        last_seen_ms   INTEGER,
        n_track        INTEGER NOT NULL DEFAULT 0,
        n_page         INTEGER NOT NULL DEFAULT 0,
        n_screen       INTEGER NOT NULL DEFAULT 0,
        n_identify     INTEGER NOT NULL DEFAULT 0,
        n_group        INTEGER NOT NULL DEFAULT 0,
        n_alias        INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX identity_nodes_profile ON identity_nodes (profile_id, key);

    CREATE TABLE identity_links (
        id          INTEGER PRIMARY KEY,
        a           TEXT NOT NULL,
        b           TEXT NOT NULL,
        cause       TEXT NOT NULL,
        message_id  TEXT,
        created_ms  INTEGER NOT NULL,
        active      INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX identity_links_a ON identity_links (a);
    CREATE INDEX identity_links_b ON identity_links (b);

    CREATE TABLE identity_merges (
        id             INTEGER PRIMARY KEY,
        at_ms          INTEGER NOT NULL,
        survivor       TEXT NOT NULL,
        absorbed       TEXT NOT NULL,
        cause          TEXT NOT NULL,
        message_id     TEXT,
        identifiers    TEXT NOT NULL,
        link_id        INTEGER,
        absorbed_node  TEXT,
        actor          TEXT,
        split_at_ms    INTEGER
    );
    CREATE INDEX identity_merges_survivor ON identity_merges (survivor);
    CREATE INDEX identity_merges_absorbed ON identity_merges (absorbed);

    CREATE TABLE identity_refusals (
        id           INTEGER PRIMARY KEY,
        at_ms        INTEGER NOT NULL,
        message_id   TEXT,
        kept         TEXT NOT NULL,
        refused      TEXT NOT NULL,
        identifiers  TEXT NOT NULL,
        reason       TEXT NOT NULL
    );
    CREATE INDEX identity_refusals_kept ON identity_refusals (kept);
    CREATE INDEX identity_refusals_refused ON identity_refusals (refused);

    CREATE TABLE identity_blocks (
        x  TEXT NOT NULL,
        y  TEXT NOT NULL,
        merge_id  INTEGER,
        PRIMARY KEY (x, y)
    ) WITHOUT ROWID;

    CREATE TABLE identity_traits (
        node        TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        updated_ms  INTEGER NOT NULL,
        PRIMARY KEY (node, key)
    ) WITHOUT ROWID;

    CREATE TABLE identity_sessions (
        key               TEXT PRIMARY KEY,
        session_id        INTEGER NOT NULL,
        count             INTEGER NOT NULL,
        last_activity_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE identity_suppressions (
        hash        TEXT PRIMARY KEY,
        created_ms  INTEGER NOT NULL,
        audit_id    INTEGER
    ) WITHOUT ROWID;

    CREATE TABLE identity_audit (
        id      INTEGER PRIMARY KEY,
        at_ms   INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        target  TEXT NOT NULL,
        detail  TEXT NOT NULL
    );
    "#,
];

/// The identity store on the embedded SQLite database: jobs run on the
/// single writer thread (group-committed), reads on pooled connections.
pub(crate) struct SqliteIdentity(pub(crate) Arc<SqliteStorage>);

#[async_trait::async_trait]
impl IdentityStore for SqliteIdentity {
    fn shared(&self) -> bool {
        false
    }

    async fn run_write(&self, mut job: Job) -> Result<JobOutput, StorageError> {
        self.0.write(move |conn| job(conn)).await
    }

    async fn run_read(&self, mut job: Job) -> Result<JobOutput, StorageError> {
        self.0.read(move |conn| job(conn)).await
    }

    fn forget_cached_events(&self) {
        self.0.forget_cached_packs();
    }
}
