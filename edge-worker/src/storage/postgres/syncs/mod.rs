//! Sync state on PostgreSQL (issue #18), shared by a fleet's workers.
//!
//! The same tables as on SQLite, with the same partial unique indexes (one
//! queued and one active run per sync), so two workers triggering or
//! starting a run at once still end with one. [`record_outcomes`] works on
//! an open transaction so the outbox can call it in its own.

use deadpool_postgres::{Object, Pool, PoolError};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use crate::storage::syncs::{
    InvalidRow, KeyStatus, ObjectId, ObjectKind, RowCounts, RowHash, RowOutcome, RunFilter,
    RunPlan, RunStatus, SyncRun, TrackedKey,
};
use crate::storage::{StorageError, SyncStore};
use crate::time::now_ms;

mod outcomes;

pub(crate) use outcomes::record_outcomes;

/// Migrations of the `syncs` module on PostgreSQL; step N is version N.
/// Released steps never change.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: ids, per-key state (keys sort bytewise, as on SQLite), runs and
    //    their invalid rows.
    r#"
    CREATE TABLE sync_objects (
        id             bigserial PRIMARY KEY,
        kind           text NOT NULL,
        name           text NOT NULL,
        created_at_ms  bigint NOT NULL,
        UNIQUE (kind, name)
    );

    CREATE TABLE sync_state (
        sync_id     bigint NOT NULL,
        key         text COLLATE "C" NOT NULL,
        hash        bytea NOT NULL,
        status      integer NOT NULL,
        attempts    integer NOT NULL,
        last_error  text,
        run_id      bigint NOT NULL,
        PRIMARY KEY (sync_id, key)
    );

    CREATE TABLE sync_runs (
        id                  bigserial PRIMARY KEY,
        sync_id             bigint NOT NULL,
        status              text NOT NULL,
        full_resync         boolean NOT NULL,
        created_at_ms       bigint NOT NULL,
        started_at_ms       bigint,
        finished_at_ms      bigint,
        query_size          bigint,
        planned_added       bigint NOT NULL DEFAULT 0,
        planned_changed     bigint NOT NULL DEFAULT 0,
        planned_removed     bigint NOT NULL DEFAULT 0,
        successful_added    bigint NOT NULL DEFAULT 0,
        successful_changed  bigint NOT NULL DEFAULT 0,
        successful_removed  bigint NOT NULL DEFAULT 0,
        failed_added        bigint NOT NULL DEFAULT 0,
        failed_changed      bigint NOT NULL DEFAULT 0,
        failed_removed      bigint NOT NULL DEFAULT 0,
        invalid             bigint NOT NULL DEFAULT 0,
        error               text
    );
    CREATE INDEX sync_runs_sync ON sync_runs (sync_id, id);
    CREATE UNIQUE INDEX sync_runs_one_queued ON sync_runs (sync_id) WHERE status = 'queued';
    CREATE UNIQUE INDEX sync_runs_one_active ON sync_runs (sync_id)
        WHERE status IN ('querying', 'processing', 'reporting');

    CREATE TABLE sync_invalid_rows (
        run_id  bigint NOT NULL,
        n       integer NOT NULL,
        key     text NOT NULL,
        reason  text NOT NULL,
        PRIMARY KEY (run_id, n)
    );
    "#,
    // 2: a heartbeat per active run, so a run whose worker stopped is told
    //    apart from one still going.
    r#"
    ALTER TABLE sync_runs ADD COLUMN heartbeat_ms bigint;
    "#,
];

/// The sync state store over the fleet's pool.
pub(crate) struct PgSyncs {
    pool: Pool,
}

const RUN_COLUMNS: &str = "id, sync_id, status, full_resync, created_at_ms, started_at_ms, finished_at_ms, query_size,
     planned_added, planned_changed, planned_removed, successful_added, successful_changed, successful_removed,
     failed_added, failed_changed, failed_removed, invalid, error";

fn run_of(r: &Row) -> SyncRun {
    let count = |at: usize| r.get::<_, i64>(at).max(0) as u64;
    let counts = |at: usize| RowCounts {
        added: count(at),
        changed: count(at + 1),
        removed: count(at + 2),
    };
    SyncRun {
        id: r.get(0),
        sync: r.get(1),
        // An unknown status (written by a newer binary) reads as failed.
        status: RunStatus::parse(r.get(2)).unwrap_or(RunStatus::Failed),
        full_resync: r.get(3),
        created_at_ms: r.get(4),
        started_at_ms: r.get(5),
        finished_at_ms: r.get(6),
        query_size: r.get::<_, Option<i64>>(7).map(|n| n.max(0) as u64),
        planned: counts(8),
        successful: counts(11),
        failed: counts(14),
        invalid: count(17),
        error: r.get(18),
    }
}

fn tracked_of(r: &Row) -> TrackedKey {
    TrackedKey {
        key: r.get(0),
        hash: RowHash::from_slice(r.get(1)).unwrap_or_default(),
        status: KeyStatus::from_code(r.get::<_, i32>(2) as i64),
        attempts: r.get::<_, i32>(3).max(0) as u32,
        last_error: r.get(4),
        run: r.get(5),
    }
}

impl PgSyncs {
    /// The sync store over `pool`, whose database has [`MIGRATIONS`] applied.
    pub(crate) fn new(pool: Pool) -> PgSyncs {
        PgSyncs { pool }
    }

    async fn client(&self) -> Result<Object, StorageError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => StorageError::from(e),
            other => StorageError::Unavailable(other.to_string()),
        })
    }
}

#[async_trait::async_trait]
impl SyncStore for PgSyncs {
    async fn object_ids(
        &self,
        kind: ObjectKind,
        names: Vec<String>,
    ) -> Result<Vec<ObjectId>, StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO sync_objects (kind, name, created_at_ms)
                 SELECT $1, n, $3 FROM unnest($2::text[]) AS u(n)
                 ON CONFLICT (kind, name) DO NOTHING",
                &[&kind.as_str(), &names, &now_ms()],
            )
            .await?;
        let rows = client
            .query(
                "SELECT name, id, created_at_ms FROM sync_objects WHERE kind = $1 AND name = ANY($2)",
                &[&kind.as_str(), &names],
            )
            .await?;
        let found: std::collections::HashMap<String, (i64, i64)> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        names
            .into_iter()
            .map(|name| {
                let (id, created_at_ms) = *found.get(&name).ok_or_else(|| {
                    StorageError::Sql(format!("sync object `{name}` vanished after insert"))
                })?;
                Ok(ObjectId {
                    id,
                    name,
                    created_at_ms,
                })
            })
            .collect()
    }

    async fn state_page(
        &self,
        sync: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<TrackedKey>, StorageError> {
        let client = self.client().await?;
        // Keys are never empty (the planner refuses them), so `> ''` starts
        // at the first; a plain range keeps the primary key index.
        let after = after.unwrap_or_default();
        let rows = client
            .query(
                "SELECT key, hash, status, attempts, last_error, run_id FROM sync_state
                 WHERE sync_id = $1 AND key > $2 ORDER BY key LIMIT $3",
                &[&sync, &after, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(tracked_of).collect())
    }

    async fn failed_keys(&self, sync: i64, limit: usize) -> Result<Vec<TrackedKey>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT key, hash, status, attempts, last_error, run_id FROM sync_state
                 WHERE sync_id = $1 AND status <> 0 ORDER BY key LIMIT $2",
                &[&sync, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(tracked_of).collect())
    }

    async fn queue_run(&self, sync: i64, full_resync: bool) -> Result<i64, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO sync_runs (sync_id, status, full_resync, created_at_ms)
                 VALUES ($1, 'queued', $2, $3)
                 ON CONFLICT (sync_id) WHERE status = 'queued'
                 DO UPDATE SET full_resync = sync_runs.full_resync OR excluded.full_resync
                 RETURNING id",
                &[&sync, &full_resync, &now_ms()],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn start_run(&self, sync: i64) -> Result<Option<SyncRun>, StorageError> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE sync_runs SET status = 'querying', started_at_ms = $2, heartbeat_ms = $2
             WHERE id = (SELECT id FROM sync_runs WHERE sync_id = $1 AND status = 'queued'
                         ORDER BY id LIMIT 1)
               AND status = 'queued'
               AND NOT EXISTS (SELECT 1 FROM sync_runs WHERE sync_id = $1
                               AND status IN ('querying', 'processing', 'reporting'))
             RETURNING {RUN_COLUMNS}"
        );
        match client.query_opt(&sql, &[&sync, &now_ms()]).await {
            Ok(row) => Ok(row.as_ref().map(run_of)),
            // Another worker started a run of this sync at the same moment.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn set_run_status(&self, run: i64, status: RunStatus) -> Result<bool, StorageError> {
        if !status.is_active() {
            return Err(StorageError::Sql(format!(
                "set_run_status takes an active status, not {}; use finish_run",
                status.as_str()
            )));
        }
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE sync_runs SET status = $2, heartbeat_ms = $3
                 WHERE id = $1 AND status IN ('querying', 'processing', 'reporting')",
                &[&run, &status.as_str(), &now_ms()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn record_plan(&self, run: i64, plan: RunPlan) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "UPDATE sync_runs SET query_size = $2, planned_added = $3, planned_changed = $4,
                 planned_removed = $5, invalid = $6
             WHERE id = $1",
            &[
                &run,
                &(plan.query_size as i64),
                &(plan.planned.added as i64),
                &(plan.planned.changed as i64),
                &(plan.planned.removed as i64),
                &(plan.invalid as i64),
            ],
        )
        .await?;
        if !plan.invalid_rows.is_empty() {
            let n: Vec<i32> = (0..plan.invalid_rows.len() as i32).collect();
            let keys: Vec<&str> = plan.invalid_rows.iter().map(|r| r.key.as_str()).collect();
            let reasons: Vec<&str> = plan
                .invalid_rows
                .iter()
                .map(|r| r.reason.as_str())
                .collect();
            tx.execute(
                "INSERT INTO sync_invalid_rows (run_id, n, key, reason)
                 SELECT $1, n, k, r FROM unnest($2::integer[], $3::text[], $4::text[]) AS u(n, k, r)
                 ON CONFLICT (run_id, n) DO UPDATE SET key = excluded.key, reason = excluded.reason",
                &[&run, &n, &keys, &reasons],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_baseline(
        &self,
        sync: i64,
        run: i64,
        keys: Vec<(String, RowHash)>,
    ) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        let hashes: Vec<&[u8]> = keys.iter().map(|(_, h)| &h.0[..]).collect();
        client
            .execute(
                "INSERT INTO sync_state (sync_id, key, hash, status, attempts, last_error, run_id)
                 SELECT $1, k, h, 0, 0, NULL, $2 FROM unnest($3::text[], $4::bytea[]) AS u(k, h)
                 ON CONFLICT (sync_id, key) DO NOTHING",
                &[&sync, &run, &names, &hashes],
            )
            .await?;
        Ok(())
    }

    async fn record_outcomes(&self, outcomes: Vec<RowOutcome>) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        record_outcomes(&tx, &outcomes).await?;
        tx.commit().await?;
        Ok(())
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
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE sync_runs SET status = $2, error = $3, finished_at_ms = $4
                 WHERE id = $1 AND status IN ('queued', 'querying', 'processing', 'reporting')",
                &[&run, &status.as_str(), &error, &now_ms()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn keep_run(&self, run: i64) -> Result<bool, StorageError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE sync_runs SET heartbeat_ms = $2
                 WHERE id = $1 AND status IN ('querying', 'processing', 'reporting')",
                &[&run, &now_ms()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn interrupt_runs(&self, stale_before_ms: i64) -> Result<u64, StorageError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE sync_runs SET status = 'interrupted', finished_at_ms = $1,
                     error = 'the worker stopped during the run; the next run sends what it missed'
                 WHERE status IN ('querying', 'processing', 'reporting')
                   AND coalesce(heartbeat_ms, started_at_ms, 0) < $2",
                &[&now_ms(), &stale_before_ms],
            )
            .await?;
        Ok(n)
    }

    async fn runs(&self, sync: i64, filter: RunFilter) -> Result<Vec<SyncRun>, StorageError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs
             WHERE sync_id = $1 AND ($2::bigint IS NULL OR id = $2)
               AND ($3::bigint IS NULL OR created_at_ms > $3) AND ($4::bigint IS NULL OR created_at_ms < $4)
             ORDER BY id DESC LIMIT $5 OFFSET $6"
        );
        let rows = client
            .query(
                &sql,
                &[
                    &sync,
                    &filter.run,
                    &filter.after_ms,
                    &filter.before_ms,
                    &filter.effective_limit(),
                    &(filter.offset as i64),
                ],
            )
            .await?;
        Ok(rows.iter().map(run_of).collect())
    }

    async fn run(&self, run: i64) -> Result<Option<SyncRun>, StorageError> {
        let client = self.client().await?;
        let sql = format!("SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = $1");
        Ok(client.query_opt(&sql, &[&run]).await?.as_ref().map(run_of))
    }

    async fn invalid_rows(&self, run: i64, limit: usize) -> Result<Vec<InvalidRow>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT key, reason FROM sync_invalid_rows WHERE run_id = $1 ORDER BY n LIMIT $2",
                &[&run, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| InvalidRow {
                key: r.get(0),
                reason: r.get(1),
            })
            .collect())
    }
}
