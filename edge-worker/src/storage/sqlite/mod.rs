//! The embedded store: SQLite in WAL mode under the data directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags};

pub(crate) mod identity;
mod ingest;
pub(crate) mod syncs;

use super::dedup::{self, RecentIds};
use super::identity::IdentityStore;
use super::outbox;
use super::pack_cache::PackCache;
use super::syncs::SettledRow;
use super::writer::WriteQueue;
use super::{
    schema, DeliveryQueue, IngestCommit, IngestStore, OutboxEntry, QuarantineEntry, ReplayStore,
    Storage, StorageError,
};
use crate::time::now_ms;

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "waymark.db";

/// Read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 4;

/// Page cache of the writer connection, in KiB (32 MiB): it keeps the
/// outbox's and the dedup index's hot pages out of `pread`. Measured with
/// `cargo xtask bench ingest`: 64 MiB cost a quarter more CPU per event,
/// 8 MiB the same as 32.
const WRITER_CACHE_KIB: i64 = 32 << 10;
/// Page cache of each read connection, in KiB (8 MiB). Readers are many
/// (up to one per blocking thread) and mostly scan pages once (a sync's
/// state, listings); the kernel's page cache serves their repeats.
const READER_CACHE_KIB: i64 = 8 << 10;

/// Event text the outbox's pack cache holds at most, in bytes (32 MiB).
const PACK_CACHE_BYTES: usize = 32 << 20;

/// SQLite storage: one writer thread with group commit, pooled readers.
pub struct SqliteStorage {
    path: PathBuf,
    writer: WriteQueue,
    readers: Mutex<Vec<Connection>>,
    /// Packs just committed, so delivery need not read their events back.
    packs: PackCache,
    /// Dedup ids logged but not folded yet.
    recent: Arc<RecentIds>,
    /// Folded dedup ids: the live run files.
    runs: Arc<dedup::runs::Runs>,
    /// Whether the runs' merges are running.
    merging: std::sync::atomic::AtomicBool,
    /// The longest time a merged run of dedup keys may span.
    merge_span_ms: i64,
}

impl SqliteStorage {
    /// Opens (creating when missing) `<data_dir>/waymark.db`, applies
    /// migrations and starts the writer. `max_group` caps jobs per commit.
    pub fn open(data_dir: &Path, max_group: usize) -> Result<Arc<SqliteStorage>, StorageError> {
        Self::open_sized(
            data_dir,
            max_group,
            dedup::DEFAULT_FILTER_BYTES,
            crate::config::LimitsConfig::default().dedup_window_secs,
        )
    }

    /// [`open`](Self::open) with a dedup filter of `dedup_filter_bytes`
    /// (`[storage] dedup_filter_mib`; `0` turns it off) and the dedup window,
    /// which bounds the time a merged run of keys spans.
    pub fn open_sized(
        data_dir: &Path,
        max_group: usize,
        dedup_filter_bytes: usize,
        dedup_window_secs: u64,
    ) -> Result<Arc<SqliteStorage>, StorageError> {
        let path = data_dir.join(DATABASE_FILE);
        let open_error = |reason: String| StorageError::Open {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| open_error(e.to_string()))?;
        let mut conn =
            open_connection(&path, WRITER_CACHE_KIB).map_err(|e| open_error(e.to_string()))?;
        schema::migrate_all(&mut conn).map_err(|e| open_error(e.to_string()))?;
        let (recent, runs) = dedup::open(
            &conn,
            &data_dir.join(dedup::runs::RUNS_DIR),
            dedup_filter_bytes,
        )
        .map_err(|e| open_error(e.to_string()))?;
        let writer = WriteQueue::start(conn, max_group).map_err(|e| open_error(e.to_string()))?;
        Ok(Arc::new(SqliteStorage {
            path,
            writer,
            readers: Mutex::new(Vec::new()),
            packs: PackCache::new(PACK_CACHE_BYTES),
            recent: Arc::new(recent),
            runs: Arc::new(runs),
            merging: std::sync::atomic::AtomicBool::new(false),
            merge_span_ms: dedup_window_secs as i64 * 1_000 / 4,
        }))
    }

    /// Drops every pack the outbox cache holds, so event text removed from
    /// the store (a privacy deletion) does not stay in memory.
    pub(crate) fn forget_cached_packs(&self) {
        self.packs.clear();
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `job` in the next group commit (see [`WriteQueue::write`]).
    pub(crate) async fn write<R, F>(&self, job: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        self.writer.write(job).await
    }

    /// Like [`write`](Self::write), running `after` on a successful job's
    /// result on the writer thread once its group is decided, `true` when
    /// it committed (see [`WriteQueue::write_then`]).
    pub(crate) async fn write_then<R, F, A>(&self, job: F, after: A) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        A: FnOnce(&mut R, bool) + Send + 'static,
    {
        self.writer.write_then(job, after).await
    }

    /// Runs a read on a pooled connection off the async threads.
    pub(crate) async fn read<R, F>(self: &Arc<Self>, job: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let pooled = this.readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&this.path, READER_CACHE_KIB)?,
            };
            let result = job(&conn);
            if let Ok(mut pool) = this.readers.lock() {
                if pool.len() < MAX_IDLE_READERS {
                    pool.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|_| StorageError::Closed)?
    }
}

/// Deletes quarantined events whose raw text matches `filter` (a SQL
/// condition over `raw`, for a privacy delete); returns how many.
pub(crate) fn delete_quarantined(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<usize, StorageError> {
    Ok(conn.execute(&format!("DELETE FROM quarantine WHERE {filter}"), args)?)
}

/// Opens a connection with Waymark's pragmas and a page cache of
/// `cache_kib` KiB.
fn open_connection(path: &Path, cache_kib: i64) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // WAL: readers never block the writer; FULL: a commit survives power
    // loss, affordable because commits are grouped.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoint journals and sorts stay in memory; a negative cache_size
    // is in KiB.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    // Checkpoint every ~40 MiB of WAL instead of 4 MiB: outbox pages are
    // written and freed again within seconds, so a rarer checkpoint copies
    // far fewer of them into the database file.
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    // The same plan whatever the bound values: without this, a bound
    // `LIMIT ?` makes SQLite re-prepare the statement on every run.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    // Room for every statement shape the stages use, the chunked deletes included.
    conn.set_prepared_statement_cache_capacity(256);
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

#[async_trait::async_trait]
impl IngestStore for Arc<SqliteStorage> {
    async fn commit_ingest(
        &self,
        commit: IngestCommit,
    ) -> Result<super::IngestOutcome, StorageError> {
        ingest::commit_ingest(self, commit).await
    }

    async fn prune_dedup(&self, cutoff_ms: i64) -> Result<u64, StorageError> {
        self.recent.rotate_filter(cutoff_ms, crate::time::now_ms());
        let runs = Arc::clone(&self.runs);
        let (_, keys) = self
            .write_then(
                move |conn| dedup::runs::expire(conn, cutoff_ms),
                move |(expired, _), committed| {
                    if committed {
                        runs.retire(expired);
                    }
                },
            )
            .await?;
        Ok(keys)
    }

    async fn fold_dedup(&self) -> Result<usize, StorageError> {
        ingest::fold_dedup(self).await
    }

    async fn check_writable(&self) -> Result<(), StorageError> {
        self.write(|conn| {
            conn.execute(
                "INSERT INTO health (id, checked_at_ms) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET checked_at_ms = excluded.checked_at_ms",
                [now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn commit_holds(
        &self,
        commit: super::HoldCommit,
    ) -> Result<super::HoldOutcome, StorageError> {
        super::delivery::commit_holds(self, commit).await
    }
}

#[async_trait::async_trait]
impl DeliveryQueue for Arc<SqliteStorage> {
    async fn outbox_due(
        &self,
        destination: &str,
        now_ms: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        let destination = destination.to_owned();
        let this = Arc::clone(self);
        self.read(move |conn| outbox::due(conn, &this.packs, &destination, now_ms, after_id, limit))
            .await
    }

    async fn outbox_delivered(
        &self,
        ids: Vec<i64>,
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError> {
        let removed = self
            .write(move |conn| {
                // Sync rows move their key state in this same job (issue #18).
                let outcomes = syncs::still_waiting(conn, &ids, rows)?;
                let removed = outbox::remove(conn, &ids, false)?;
                syncs::record_outcomes(conn, &outcomes)?;
                Ok(removed)
            })
            .await?;
        self.packs.forget(&removed.emptied);
        Ok(())
    }

    async fn outbox_retry(
        &self,
        ids: Vec<i64>,
        next_attempt_ms: i64,
        error: String,
    ) -> Result<(), StorageError> {
        self.write(move |conn| outbox::retry(conn, &ids, next_attempt_ms, &error))
            .await
    }

    async fn outbox_dead_letter(
        &self,
        ids: Vec<i64>,
        reason: String,
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError> {
        let emptied = self
            .write(move |conn| {
                let now = now_ms();
                let outcomes = syncs::still_waiting(conn, &ids, rows)?;
                let mut insert = conn.prepare_cached(
                    "INSERT INTO dead_letters
                       (destination, source, message_id, event, enqueued_at_ms, failed_at_ms, attempts, reason, granted)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                let removed = outbox::remove(conn, &ids, true)?;
                for t in removed.taken {
                    insert.execute(params![
                        t.destination,
                        t.source,
                        t.message_id,
                        t.json,
                        t.enqueued_at_ms,
                        now,
                        t.attempts + 1,
                        reason,
                        t.granted
                    ])?;
                }
                syncs::record_outcomes(conn, &outcomes)?;
                Ok(removed.emptied)
            })
            .await?;
        self.packs.forget(&emptied);
        Ok(())
    }

    async fn outbox_depth(&self, destination: &str) -> Result<u64, StorageError> {
        let destination = destination.to_owned();
        self.read(move |conn| outbox::depth(conn, &destination))
            .await
    }

    async fn outbox_quarantine(
        &self,
        entries: Vec<super::RuleQuarantine>,
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError> {
        let emptied = super::delivery::outbox_quarantine(self, entries, rows).await?;
        self.packs.forget(&emptied);
        Ok(())
    }

    async fn expire_holds(&self, destination: &str, now_ms: i64) -> Result<u64, StorageError> {
        super::delivery::expire_holds(self, destination, now_ms).await
    }

    async fn held_count(&self, destination: &str) -> Result<u64, StorageError> {
        super::delivery::held_count(self, destination).await
    }

    async fn outbox_destinations(&self) -> Result<Vec<String>, StorageError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&super::destinations_waiting_sql("outbox_packs"))?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(names)
        })
        .await
    }
}

#[async_trait::async_trait]
impl ReplayStore for Arc<SqliteStorage> {
    async fn quarantine_list(&self, limit: usize) -> Result<Vec<QuarantineEntry>, StorageError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, source, received_at_ms, reason, detail, raw, destination, rule, message_id
                 FROM quarantine ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok(QuarantineEntry {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    received_at_ms: r.get(2)?,
                    reason: r.get(3)?,
                    detail: r.get(4)?,
                    raw: r.get(5)?,
                    destination: r.get(6)?,
                    rule: r.get(7)?,
                    message_id: r.get(8)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn quarantine_get(&self, ids: Vec<i64>) -> Result<Vec<QuarantineEntry>, StorageError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, source, received_at_ms, reason, detail, raw, destination, rule, message_id
                 FROM quarantine WHERE id = ?1",
            )?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let row = stmt.query_row([id], |r| {
                    Ok(QuarantineEntry {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        received_at_ms: r.get(2)?,
                        reason: r.get(3)?,
                        detail: r.get(4)?,
                        raw: r.get(5)?,
                        destination: r.get(6)?,
                        rule: r.get(7)?,
                        message_id: r.get(8)?,
                    })
                });
                match row {
                    Ok(entry) => out.push(entry),
                    Err(rusqlite::Error::QueryReturnedNoRows) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn quarantine_remove(&self, ids: Vec<i64>) -> Result<(), StorageError> {
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?;
            for id in ids {
                stmt.execute([id])?;
            }
            Ok(())
        })
        .await
    }

    async fn quarantine_requeue(&self, ids: Vec<i64>) -> Result<Vec<i64>, StorageError> {
        super::delivery::quarantine_requeue(self, ids).await
    }

    async fn dead_letters(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<super::DeadLetter>, StorageError> {
        super::delivery::dead_letters(self, destination, limit).await
    }

    async fn replay_dead_letters(
        &self,
        destination: &str,
        ids: Option<Vec<i64>>,
    ) -> Result<u64, StorageError> {
        super::delivery::replay_dead_letters(self, destination, ids).await
    }

    async fn dead_letter_count(&self, destination: &str) -> Result<u64, StorageError> {
        super::delivery::dead_letter_count(self, destination).await
    }
}

impl Storage for Arc<SqliteStorage> {
    fn identity_store(&self) -> Arc<dyn IdentityStore> {
        Arc::new(identity::SqliteIdentity(Arc::clone(self)))
    }

    fn sync_store(&self) -> Arc<dyn super::SyncStore> {
        Arc::new(syncs::SqliteSyncs(Arc::clone(self)))
    }
}

#[cfg(test)]
mod tests;
