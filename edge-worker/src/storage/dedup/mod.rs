//! Dedup on `messageId`: which events of a source were seen within the window.
//!
//! # Design
//! Every accepted event used to insert its `(source, messageId)` into the
//! `dedup` B-tree (and a by-time index) inside the ingest commit, on the
//! single writer: the largest part of the writer's time per event, and
//! with random ids (UUIDs) about a page of WAL per event (issue #2). Seen
//! ids now live at two levels, both keyed by the id's [`dedup_hash`]:
//!
//! - **recent**: each ingest commit appends one row to `dedup_log` holding
//!   the keys it saw first, and an in-memory set mirrors it;
//! - **folded**: about once a second the oldest logged keys are written
//!   to a new sorted run file, which goes live in the job that deletes
//!   their log rows ([`fold_batch`]); runs are merged off the writer and
//!   expire whole ([`runs`]).
//!
//! A key is looked up in the set, then in a Bloom filter of every key in
//! either level ([`filter`]), and only where the filter says "maybe" in
//! the runs: a new key, nearly every event, costs no read. The set only
//! changes on the writer thread, together with the transaction that
//! changes the log: a job that fails takes its keys back itself, and the
//! writer's completion hook takes back the keys of a group whose commit
//! failed, so the set never holds a key the database does not. At open the
//! set is read back from `dedup_log`, and the filter from both tables.
//!
//! A key is the first 16 bytes of SHA-256 over the source name, a zero
//! byte and the id: telling two different ids apart wrongly would need a
//! 2^64 birthday search over SHA-256. Keys are a third of the size of the
//! ids they stand for, and compare as plain bytes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

use super::StorageError;
use filter::SeenFilter;
pub(crate) use migrate::{convert_v7_keys, convert_v8_runs, register_migration_functions};
use runs::{NewRun, Runs};

mod filter;
mod migrate;
pub(crate) mod runs;

/// The key of an id: a 128-bit hash of its source and `messageId`,
/// stored as 16 big-endian bytes.
pub(crate) type DedupHash = u128;

/// Bytes of a stored key.
const KEY_LEN: usize = 16;

/// Most logged ids one fold batch takes ([`fold_batch`]).
pub(crate) const FOLD_BATCH_MAX: usize = 65_536;

/// The key of `message_id` from `source`.
pub(crate) fn dedup_hash(source: &str, message_id: &str) -> DedupHash {
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update([0u8]);
    hash.update(message_id.as_bytes());
    let digest = hash.finalize();
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&digest[..KEY_LEN]);
    u128::from_be_bytes(key)
}

/// Default budget of the filter of seen keys: 256 MiB.
pub(crate) const DEFAULT_FILTER_BYTES: usize = 256 << 20;

/// The keys in `dedup_log` (and of the commit in progress), and the filter
/// of every key dedup remembers.
pub(crate) struct RecentIds {
    state: Mutex<Recent>,
}

struct Recent {
    hashes: HashSet<DedupHash>,
    filter: SeenFilter,
}

/// Opens dedup's state (at open): the runs in `dir`, the log read back,
/// and a filter of `filter_bytes` filled from both.
pub(crate) fn open(
    conn: &Connection,
    dir: &Path,
    filter_bytes: usize,
) -> Result<(RecentIds, Runs), StorageError> {
    let now = crate::time::now_ms();
    let mut filter = SeenFilter::new(filter_bytes, now);
    let runs = Runs::open(conn, dir, |key| filter.insert(key, now))?;
    Ok((RecentIds::load(conn, filter)?, runs))
}

impl RecentIds {
    /// Reads the log back, its keys joining `filter`.
    fn load(conn: &Connection, mut filter: SeenFilter) -> Result<RecentIds, StorageError> {
        let mut hashes = HashSet::new();
        let mut stmt = conn.prepare("SELECT ids FROM dedup_log")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let blob = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            hashes.extend(decode_keys(blob)?);
        }
        let now = crate::time::now_ms();
        for &key in &hashes {
            filter.insert(key, now);
        }
        Ok(RecentIds {
            state: Mutex::new(Recent { hashes, filter }),
        })
    }

    /// Bytes the filter takes (for metrics).
    pub(crate) fn filter_bytes(&self) -> usize {
        self.state.lock().map(|s| s.filter.bytes()).unwrap_or(0)
    }

    /// Keys in memory (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.state.lock().map(|s| s.hashes.len()).unwrap_or(0)
    }

    /// In a writer job: whether each of `ids` is seen for the first time
    /// (`None`, an event of a source without dedup, always is). The new ones
    /// join the set and are logged in one row; the caller must
    /// [`forget`](Self::forget) the returned keys if its job or its group fails.
    pub(crate) fn admit(
        &self,
        conn: &Connection,
        runs: &Runs,
        ids: &[Option<DedupHash>],
        now_ms: i64,
    ) -> Result<(Vec<bool>, Vec<DedupHash>), StorageError> {
        let mut fresh = Vec::with_capacity(ids.len());
        let mut added = Vec::new();
        {
            let mut state = self.state.lock().map_err(|_| poisoned())?;
            let Recent { hashes, filter } = &mut *state;
            // 1. Keys not in memory that the filter may hold are looked up
            //    in the runs.
            let unknown: Vec<DedupHash> = ids
                .iter()
                .flatten()
                .filter(|id| !hashes.contains(id) && filter.may_contain(**id))
                .copied()
                .collect();
            let folded = runs.folded_among(&unknown)?;
            // 2. In order: the first of equal ids in a request is the new one.
            for id in ids {
                let Some(id) = id else {
                    fresh.push(true);
                    continue;
                };
                let new = !hashes.contains(id) && !folded.contains(id);
                if new {
                    hashes.insert(*id);
                    // Also when the commit fails: a key too many only costs a lookup.
                    filter.insert(*id, now_ms);
                    added.push(*id);
                }
                fresh.push(new);
            }
        }
        if !added.is_empty() {
            let logged = conn
                .prepare_cached("INSERT INTO dedup_log (seen_at_ms, ids) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![now_ms, encode_keys(&added)]));
            if let Err(e) = logged {
                self.forget(&added);
                return Err(e.into());
            }
        }
        Ok((fresh, added))
    }

    /// Takes back keys whose log row was rolled back, or that were folded.
    pub(crate) fn forget(&self, hashes: &[DedupHash]) {
        if hashes.is_empty() {
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            for h in hashes {
                state.hashes.remove(h);
            }
        }
    }

    /// Starts a new filter generation once the current one is older than
    /// the window: called with each prune's `cutoff_ms`.
    pub(crate) fn rotate_filter(&self, cutoff_ms: i64, now_ms: i64) {
        if let Ok(mut state) = self.state.lock() {
            if state.filter.rotate(cutoff_ms, now_ms) {
                tracing::debug!("Dedup filter: a new generation started.");
            }
        }
    }
}

/// The oldest logged keys, sorted, to fold into a new run.
pub(crate) struct FoldBatch {
    /// In key order, each once.
    pub keys: Vec<DedupHash>,
    /// When the oldest and the newest of them were first seen.
    pub oldest_ms: i64,
    pub newest_ms: i64,
    /// The newest log row the batch covers.
    pub last_log_id: i64,
}

/// Reads up to about [`FOLD_BATCH_MAX`] of the oldest logged keys (whole
/// log rows), sorted; `None` when the log is empty. A read: any connection.
///
/// # Design
/// The batch becomes a new run file ([`Runs::write`]), off the writer;
/// the run goes live and its log rows are deleted in one job
/// ([`seal_folded`]). A crash in between leaves a file no row lists,
/// deleted at open, and the log rows, folded again.
pub(crate) fn fold_batch(conn: &Connection) -> Result<Option<FoldBatch>, StorageError> {
    let mut select =
        conn.prepare_cached("SELECT id, seen_at_ms, ids FROM dedup_log ORDER BY id")?;
    let mut rows = select.query([])?;
    let mut keys = Vec::new();
    let (mut oldest_ms, mut newest_ms) = (i64::MAX, i64::MIN);
    let mut last_log_id = None;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let seen_at_ms: i64 = row.get(1)?;
        let blob = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
        keys.extend(decode_keys(blob)?);
        oldest_ms = oldest_ms.min(seen_at_ms);
        newest_ms = newest_ms.max(seen_at_ms);
        last_log_id = Some(id);
        if keys.len() >= FOLD_BATCH_MAX {
            break;
        }
    }
    let Some(last_log_id) = last_log_id else {
        return Ok(None);
    };
    keys.sort_unstable();
    keys.dedup();
    Ok(Some(FoldBatch {
        keys,
        oldest_ms,
        newest_ms,
        last_log_id,
    }))
}

/// In a writer job: the batch's run goes live and its log rows are deleted.
pub(crate) fn seal_folded(
    conn: &Connection,
    run: &NewRun,
    last_log_id: i64,
) -> Result<(), StorageError> {
    runs::record(conn, run)?;
    conn.prepare_cached("DELETE FROM dedup_log WHERE id <= ?1")?
        .execute([last_log_id])?;
    Ok(())
}

/// Folds one batch in one go on one connection (tests; the worker writes
/// the file off the writer and publishes the run in the job's hook).
#[cfg(test)]
pub(crate) fn fold(conn: &Connection, runs: &Runs) -> Result<Vec<DedupHash>, StorageError> {
    let Some(batch) = fold_batch(conn)? else {
        return Ok(Vec::new());
    };
    let run = runs.write(batch.keys.iter().copied(), batch.oldest_ms, batch.newest_ms)?;
    seal_folded(conn, &run, batch.last_log_id)?;
    runs.publish(run, &[]);
    Ok(batch.keys)
}

/// A log row: the keys, 16 bytes each.
fn encode_keys(keys: &[DedupHash]) -> Vec<u8> {
    keys.iter().flat_map(|key| key.to_be_bytes()).collect()
}

/// The keys of a log row (or of one stored key).
fn decode_keys(blob: &[u8]) -> Result<impl Iterator<Item = DedupHash> + '_, StorageError> {
    if blob.len() % KEY_LEN != 0 {
        return Err(StorageError::Sql(format!(
            "dedup: a stored key list is {} bytes, not a multiple of {KEY_LEN}",
            blob.len()
        )));
    }
    Ok(blob.chunks_exact(KEY_LEN).map(|key| {
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(key);
        DedupHash::from_be_bytes(bytes)
    }))
}

#[cold]
fn poisoned() -> StorageError {
    StorageError::Sql("dedup: the recent-ids lock is poisoned".to_owned())
}

#[cfg(test)]
mod tests;
