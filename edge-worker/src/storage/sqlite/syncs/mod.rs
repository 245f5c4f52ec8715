//! Sync state on SQLite (issue #18): ids, per-key state and runs.
//!
//! Writes go through the store's writer (one group commit); reads use the
//! pooled readers. [`record_outcomes`] is also the function the outbox
//! calls inside its own write job, so a row's state moves in the same
//! transaction as the outbox entry that carried it.

use std::sync::Arc;

use rusqlite::{params, OptionalExtension};

use super::SqliteStorage;
use crate::storage::syncs::{
    InvalidRow, KeyStatus, ObjectId, ObjectKind, RowCounts, RowHash, RowOutcome, RunFilter,
    RunPlan, RunStatus, SyncRun, TrackedKey,
};
use crate::storage::{StorageError, SyncStore};
use crate::time::now_ms;

mod outcomes;

pub(crate) use outcomes::record_outcomes;

/// Migrations of the `syncs` module; step N is version N. Released steps
/// never change.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: ids, per-key state, runs and their invalid rows. At most one run
    //    per sync is queued and one active, enforced by partial indexes.
    r#"
    CREATE TABLE sync_objects (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        kind           TEXT NOT NULL,
        name           TEXT NOT NULL,
        created_at_ms  INTEGER NOT NULL,
        UNIQUE (kind, name)
    );

    CREATE TABLE sync_state (
        sync_id     INTEGER NOT NULL,
        key         TEXT NOT NULL,
        hash        BLOB NOT NULL,
        status      INTEGER NOT NULL,
        attempts    INTEGER NOT NULL,
        last_error  TEXT,
        run_id      INTEGER NOT NULL,
        PRIMARY KEY (sync_id, key)
    ) WITHOUT ROWID;

    CREATE TABLE sync_runs (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        sync_id             INTEGER NOT NULL,
        status              TEXT NOT NULL,
        full_resync         INTEGER NOT NULL,
        created_at_ms       INTEGER NOT NULL,
        started_at_ms       INTEGER,
        finished_at_ms      INTEGER,
        query_size          INTEGER,
        planned_added       INTEGER NOT NULL DEFAULT 0,
        planned_changed     INTEGER NOT NULL DEFAULT 0,
        planned_removed     INTEGER NOT NULL DEFAULT 0,
        successful_added    INTEGER NOT NULL DEFAULT 0,
        successful_changed  INTEGER NOT NULL DEFAULT 0,
        successful_removed  INTEGER NOT NULL DEFAULT 0,
        failed_added        INTEGER NOT NULL DEFAULT 0,
        failed_changed      INTEGER NOT NULL DEFAULT 0,
        failed_removed      INTEGER NOT NULL DEFAULT 0,
        invalid             INTEGER NOT NULL DEFAULT 0,
        error               TEXT
    );
    CREATE INDEX sync_runs_sync ON sync_runs (sync_id, id);
    CREATE UNIQUE INDEX sync_runs_one_queued ON sync_runs (sync_id) WHERE status = 'queued';
    CREATE UNIQUE INDEX sync_runs_one_active ON sync_runs (sync_id)
        WHERE status IN ('querying', 'processing', 'reporting');

    CREATE TABLE sync_invalid_rows (
        run_id  INTEGER NOT NULL,
        n       INTEGER NOT NULL,
        key     TEXT NOT NULL,
        reason  TEXT NOT NULL,
        PRIMARY KEY (run_id, n)
    ) WITHOUT ROWID;
    "#,
    // 2: a heartbeat per active run, so a run whose worker stopped is told
    //    apart from one still going.
    r#"
    ALTER TABLE sync_runs ADD COLUMN heartbeat_ms INTEGER;
    "#,
];

/// The sync state store over the embedded database.
pub(crate) struct SqliteSyncs(pub Arc<SqliteStorage>);

const RUN_COLUMNS: &str = "id, sync_id, status, full_resync, created_at_ms, started_at_ms, finished_at_ms, query_size,
     planned_added, planned_changed, planned_removed, successful_added, successful_changed, successful_removed,
     failed_added, failed_changed, failed_removed, invalid, error";

fn run_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<SyncRun> {
    let status: String = r.get(2)?;
    let counts = |at: usize| -> rusqlite::Result<RowCounts> {
        Ok(RowCounts {
            added: r.get::<_, i64>(at)?.max(0) as u64,
            changed: r.get::<_, i64>(at + 1)?.max(0) as u64,
            removed: r.get::<_, i64>(at + 2)?.max(0) as u64,
        })
    };
    Ok(SyncRun {
        id: r.get(0)?,
        sync: r.get(1)?,
        // An unknown status (written by a newer binary) reads as failed.
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        full_resync: r.get::<_, i64>(3)? != 0,
        created_at_ms: r.get(4)?,
        started_at_ms: r.get(5)?,
        finished_at_ms: r.get(6)?,
        query_size: r.get::<_, Option<i64>>(7)?.map(|n| n.max(0) as u64),
        planned: counts(8)?,
        successful: counts(11)?,
        failed: counts(14)?,
        invalid: r.get::<_, i64>(17)?.max(0) as u64,
        error: r.get(18)?,
    })
}

fn tracked_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<TrackedKey> {
    let hash: Vec<u8> = r.get(1)?;
    Ok(TrackedKey {
        key: r.get(0)?,
        hash: RowHash::from_slice(&hash).unwrap_or_default(),
        status: KeyStatus::from_code(r.get(2)?),
        attempts: r.get::<_, i64>(3)?.clamp(0, u32::MAX as i64) as u32,
        last_error: r.get(4)?,
        run: r.get(5)?,
    })
}

#[async_trait::async_trait]
impl SyncStore for SqliteSyncs {
    async fn object_ids(
        &self,
        kind: ObjectKind,
        names: Vec<String>,
    ) -> Result<Vec<ObjectId>, StorageError> {
        self.0
            .write(move |conn| {
                let now = now_ms();
                let mut insert = conn.prepare_cached(
                    "INSERT INTO sync_objects (kind, name, created_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (kind, name) DO NOTHING",
                )?;
                let mut select = conn.prepare_cached(
                    "SELECT id, created_at_ms FROM sync_objects WHERE kind = ?1 AND name = ?2",
                )?;
                let mut out = Vec::with_capacity(names.len());
                for name in names {
                    insert.execute(params![kind.as_str(), name, now])?;
                    let (id, created_at_ms) = select
                        .query_row(params![kind.as_str(), name], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    out.push(ObjectId {
                        id,
                        name,
                        created_at_ms,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn state_page(
        &self,
        sync: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<TrackedKey>, StorageError> {
        self.0
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT key, hash, status, attempts, last_error, run_id FROM sync_state
                     WHERE sync_id = ?1 AND key > ?2 ORDER BY key LIMIT ?3",
                )?;
                // Keys are never empty (the planner refuses empty keys), so
                // `> ''` starts at the first; a plain range keeps the index.
                let after = after.unwrap_or_default();
                let rows = stmt.query_map(params![sync, after, limit as i64], tracked_of)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn failed_keys(&self, sync: i64, limit: usize) -> Result<Vec<TrackedKey>, StorageError> {
        self.0
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT key, hash, status, attempts, last_error, run_id FROM sync_state
                     WHERE sync_id = ?1 AND status <> 0 ORDER BY key LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![sync, limit as i64], tracked_of)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn queue_run(&self, sync: i64, full_resync: bool) -> Result<i64, StorageError> {
        self.0
            .write(move |conn| {
                Ok(conn.query_row(
                    "INSERT INTO sync_runs (sync_id, status, full_resync, created_at_ms)
                     VALUES (?1, 'queued', ?2, ?3)
                     ON CONFLICT (sync_id) WHERE status = 'queued'
                     DO UPDATE SET full_resync = max(full_resync, excluded.full_resync)
                     RETURNING id",
                    params![sync, full_resync as i64, now_ms()],
                    |r| r.get(0),
                )?)
            })
            .await
    }

    async fn start_run(&self, sync: i64) -> Result<Option<SyncRun>, StorageError> {
        self.0
            .write(move |conn| {
                let active: Option<i64> = conn
                    .query_row(
                        "SELECT id FROM sync_runs WHERE sync_id = ?1
                           AND status IN ('querying', 'processing', 'reporting')",
                        [sync],
                        |r| r.get(0),
                    )
                    .optional()?;
                if active.is_some() {
                    return Ok(None);
                }
                let sql = format!(
                    "UPDATE sync_runs SET status = 'querying', started_at_ms = ?2, heartbeat_ms = ?2
                     WHERE id = (SELECT id FROM sync_runs WHERE sync_id = ?1 AND status = 'queued'
                                 ORDER BY id LIMIT 1)
                     RETURNING {RUN_COLUMNS}"
                );
                Ok(conn
                    .query_row(&sql, params![sync, now_ms()], run_of)
                    .optional()?)
            })
            .await
    }

    async fn set_run_status(&self, run: i64, status: RunStatus) -> Result<bool, StorageError> {
        if !status.is_active() {
            return Err(StorageError::Sql(format!(
                "set_run_status takes an active status, not {}; use finish_run",
                status.as_str()
            )));
        }
        self.0
            .write(move |conn| {
                let n = conn.execute(
                    "UPDATE sync_runs SET status = ?2, heartbeat_ms = ?3
                     WHERE id = ?1 AND status IN ('querying', 'processing', 'reporting')",
                    params![run, status.as_str(), now_ms()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn record_plan(&self, run: i64, plan: RunPlan) -> Result<(), StorageError> {
        self.0
            .write(move |conn| {
                conn.execute(
                    "UPDATE sync_runs SET query_size = ?2, planned_added = ?3, planned_changed = ?4,
                         planned_removed = ?5, invalid = ?6
                     WHERE id = ?1",
                    params![
                        run,
                        plan.query_size as i64,
                        plan.planned.added as i64,
                        plan.planned.changed as i64,
                        plan.planned.removed as i64,
                        plan.invalid as i64
                    ],
                )?;
                let mut insert = conn.prepare_cached(
                    "INSERT OR REPLACE INTO sync_invalid_rows (run_id, n, key, reason) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (n, row) in plan.invalid_rows.iter().enumerate() {
                    insert.execute(params![run, n as i64, row.key, row.reason])?;
                }
                Ok(())
            })
            .await
    }

    async fn record_baseline(
        &self,
        sync: i64,
        run: i64,
        keys: Vec<(String, RowHash)>,
    ) -> Result<(), StorageError> {
        self.0
            .write(move |conn| {
                let mut insert = conn.prepare_cached(
                    "INSERT INTO sync_state (sync_id, key, hash, status, attempts, last_error, run_id)
                     VALUES (?1, ?2, ?3, 0, 0, NULL, ?4)
                     ON CONFLICT (sync_id, key) DO NOTHING",
                )?;
                for (key, hash) in &keys {
                    insert.execute(params![sync, key, &hash.0[..], run])?;
                }
                Ok(())
            })
            .await
    }

    async fn record_outcomes(&self, outcomes: Vec<RowOutcome>) -> Result<(), StorageError> {
        self.0
            .write(move |conn| record_outcomes(conn, &outcomes))
            .await
    }

    async fn finish_run(
        &self,
        run: i64,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<bool, StorageError> {
        if !status.is_finished() {
            return Err(StorageError::Sql(format!(
                "finish_run takes a final status, not {}",
                status.as_str()
            )));
        }
        self.0
            .write(move |conn| {
                let n = conn.execute(
                    "UPDATE sync_runs SET status = ?2, error = ?3, finished_at_ms = ?4
                     WHERE id = ?1 AND status IN ('queued', 'querying', 'processing', 'reporting')",
                    params![run, status.as_str(), error, now_ms()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn keep_run(&self, run: i64) -> Result<bool, StorageError> {
        self.0
            .write(move |conn| {
                let n = conn.execute(
                    "UPDATE sync_runs SET heartbeat_ms = ?2
                     WHERE id = ?1 AND status IN ('querying', 'processing', 'reporting')",
                    params![run, now_ms()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn interrupt_runs(&self, stale_before_ms: i64) -> Result<u64, StorageError> {
        self.0
            .write(move |conn| {
                let n = conn.execute(
                    "UPDATE sync_runs SET status = 'interrupted', finished_at_ms = ?1,
                         error = 'the worker stopped during the run; the next run sends what it missed'
                     WHERE status IN ('querying', 'processing', 'reporting')
                       AND coalesce(heartbeat_ms, started_at_ms, 0) < ?2",
                    params![now_ms(), stale_before_ms],
                )?;
                Ok(n as u64)
            })
            .await
    }

    async fn runs(&self, sync: i64, filter: RunFilter) -> Result<Vec<SyncRun>, StorageError> {
        self.0
            .read(move |conn| {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM sync_runs
                     WHERE sync_id = ?1 AND (?2 IS NULL OR id = ?2)
                       AND (?3 IS NULL OR created_at_ms > ?3) AND (?4 IS NULL OR created_at_ms < ?4)
                     ORDER BY id DESC LIMIT ?5 OFFSET ?6"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(
                    params![
                        sync,
                        filter.run,
                        filter.after_ms,
                        filter.before_ms,
                        filter.effective_limit(),
                        filter.offset as i64
                    ],
                    run_of,
                )?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn run(&self, run: i64) -> Result<Option<SyncRun>, StorageError> {
        self.0
            .read(move |conn| {
                let sql = format!("SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = ?1");
                Ok(conn.query_row(&sql, [run], run_of).optional()?)
            })
            .await
    }

    async fn invalid_rows(&self, run: i64, limit: usize) -> Result<Vec<InvalidRow>, StorageError> {
        self.0
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT key, reason FROM sync_invalid_rows WHERE run_id = ?1 ORDER BY n LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![run, limit as i64], |r| {
                    Ok(InvalidRow {
                        key: r.get(0)?,
                        reason: r.get(1)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }
}
