//! Dedup on `messageId`: which events of a source were seen within the window.
//!
//! # Design
//! Every accepted event used to insert its `(source, messageId)` into the
//! `dedup` B-tree (and a by-time index) inside the ingest commit, on the
//! single writer: the largest part of the writer's time per event, and
//! with random ids (UUIDs) about a page of WAL per event (issue #2). Seen
//! ids now live at two levels:
//!
//! - **recent**: each ingest commit appends one row to `dedup_log` holding
//!   the ids it saw first, and an in-memory set of their hashes mirrors it;
//! - **folded**: about once a second the oldest logged ids are moved into
//!   `dedup` as one sorted batch, so neighbouring ids share pages, and
//!   their log rows are deleted ([`fold_batch`]).
//!
//! An id is looked up in the set, then in `dedup`. The set only changes on
//! the writer thread, together with the transaction that changes the log:
//! a job that fails takes its ids back itself, and the writer's completion
//! hook takes back the ids of a group whose commit failed, so the set never
//! holds an id the database does not. At open the set is read back from
//! `dedup_log`.
//!
//! The set holds the first 16 bytes of SHA-256 over the source name, a zero
//! byte and the id: telling two different ids apart wrongly would need a
//! 2^64 birthday search over SHA-256. `dedup` and the log keep the ids.

use std::collections::HashSet;
use std::sync::Mutex;

use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

use super::StorageError;

/// The in-memory key of an id: a 128-bit hash of its source and `messageId`.
pub(crate) type DedupHash = u128;

/// One event's dedup identity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeenId<'a> {
    /// [`dedup_hash`] of the two below.
    pub hash: DedupHash,
    pub source: &'a str,
    pub message_id: &'a str,
}

/// Most logged ids one fold batch takes ([`fold_batch`]).
pub(crate) const FOLD_BATCH_MAX: usize = 65_536;

/// Ids one writer job of a fold inserts: bounds the time ingest commits
/// wait behind a fold (a few milliseconds), and so the ingest tail latency.
pub(crate) const FOLD_STEP: usize = 2_048;

/// Deleted per statement when pruning, so a prune never holds the writer long.
const PRUNE_CHUNK: i64 = 10_000;

/// The in-memory key of `message_id` from `source`.
pub(crate) fn dedup_hash(source: &str, message_id: &str) -> DedupHash {
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update([0u8]);
    hash.update(message_id.as_bytes());
    let digest = hash.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(key)
}

/// Hashes of the ids in `dedup_log` (and of the commit in progress).
pub(crate) struct RecentIds {
    hashes: Mutex<HashSet<DedupHash>>,
}

impl RecentIds {
    /// Reads the log back (at open).
    pub(crate) fn load(conn: &Connection) -> Result<RecentIds, StorageError> {
        let mut hashes = HashSet::new();
        let mut stmt = conn.prepare("SELECT ids FROM dedup_log")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let blob: Vec<u8> = row.get(0)?;
            for (source, message_id) in decode_ids(&blob)? {
                hashes.insert(dedup_hash(source, message_id));
            }
        }
        Ok(RecentIds {
            hashes: Mutex::new(hashes),
        })
    }

    /// Hashes in memory (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.hashes.lock().map(|k| k.len()).unwrap_or(0)
    }

    /// In a writer job: whether each of `ids` is seen for the first time
    /// (`None`, an event of a source without dedup, always is). The new ones
    /// join the set and are logged in one row; the caller must
    /// [`forget`](Self::forget) the returned hashes if its job or its group fails.
    pub(crate) fn admit(
        &self,
        conn: &Connection,
        ids: &[Option<SeenId<'_>>],
        now_ms: i64,
    ) -> Result<(Vec<bool>, Vec<DedupHash>), StorageError> {
        let mut fresh = Vec::with_capacity(ids.len());
        let mut added = Vec::new();
        let mut log = Vec::new();
        {
            let mut recent = self.hashes.lock().map_err(|_| poisoned())?;
            // 1. Ids not in memory are looked up in `dedup`, a few per statement.
            let unknown: Vec<SeenId<'_>> = ids
                .iter()
                .flatten()
                .filter(|id| !recent.contains(&id.hash))
                .copied()
                .collect();
            let folded = folded_among(conn, &unknown)?;
            // 2. In order: the first of equal ids in a request is the new one.
            for id in ids {
                let Some(id) = id else {
                    fresh.push(true);
                    continue;
                };
                let new =
                    !recent.contains(&id.hash) && !folded.contains(&(id.source, id.message_id));
                if new {
                    recent.insert(id.hash);
                    added.push(id.hash);
                    encode_id(&mut log, id.source, id.message_id);
                }
                fresh.push(new);
            }
        }
        if !added.is_empty() {
            let logged = conn
                .prepare_cached("INSERT INTO dedup_log (seen_at_ms, ids) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![now_ms, log]));
            if let Err(e) = logged {
                self.forget(&added);
                return Err(e.into());
            }
        }
        Ok((fresh, added))
    }

    /// Takes back hashes whose log row was rolled back, or that were folded.
    pub(crate) fn forget(&self, hashes: &[DedupHash]) {
        if hashes.is_empty() {
            return;
        }
        if let Ok(mut recent) = self.hashes.lock() {
            for h in hashes {
                recent.remove(h);
            }
        }
    }
}

/// Ids looked up per statement.
const IDS_PER_STATEMENT: usize = 32;

/// Which of `ids` are in `dedup`.
fn folded_among<'a>(
    conn: &Connection,
    ids: &[SeenId<'a>],
) -> Result<HashSet<(&'a str, &'a str)>, StorageError> {
    let mut found = HashSet::new();
    let mut rest = ids;
    while let Some(first) = rest.first() {
        // One source per statement (a request has one), at most a chunk of ids.
        let n = rest
            .iter()
            .take(IDS_PER_STATEMENT)
            .take_while(|id| id.source == first.source)
            .count();
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let sql = format!(
            "SELECT message_id FROM dedup WHERE source = ?1 AND message_id IN ({})",
            placeholders(n, 1, 2)
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let args = std::iter::once(first.source).chain(chunk.iter().map(|id| id.message_id));
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            let message_id = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            if let Some(id) = chunk.iter().find(|id| id.message_id == message_id) {
                found.insert((first.source, id.message_id));
            }
        }
    }
    Ok(found)
}

/// `n` groups of `width` SQL placeholders numbered from `from`:
/// `placeholders(2, 1, 2)` is `?2,?3`, `placeholders(2, 3, 1)` is `(?1,?2,?3),(?4,?5,?6)`.
fn placeholders(n: usize, width: usize, from: usize) -> String {
    let mut sql = String::new();
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        if width > 1 {
            sql.push('(');
        }
        for j in 0..width {
            if j > 0 {
                sql.push(',');
            }
            sql.push('?');
            sql.push_str(&(from + i * width + j).to_string());
        }
        if width > 1 {
            sql.push(')');
        }
    }
    sql
}

/// The oldest logged ids, sorted, to fold into `dedup`.
pub(crate) struct FoldBatch {
    /// `(source, messageId, first seen)`, in key order.
    pub ids: Vec<(String, String, i64)>,
    /// The newest log row the batch covers.
    pub last_log_id: i64,
}

impl FoldBatch {
    /// The batch's in-memory keys, to [`RecentIds::forget`] once folded.
    pub(crate) fn hashes(&self) -> Vec<DedupHash> {
        self.ids.iter().map(|(s, m, _)| dedup_hash(s, m)).collect()
    }
}

/// Reads up to about [`FOLD_BATCH_MAX`] of the oldest logged ids (whole log
/// rows), sorted; `None` when the log is empty. A read: any connection.
///
/// # Design
/// Folding works in two steps so that it keeps both the locality of a
/// large sorted batch (neighbouring ids share `dedup` pages, so each page
/// is written once per batch, not once per id) and short writer jobs: the
/// batch is inserted by [`insert_folded`] in steps of [`FOLD_STEP`] ids,
/// each its own job between ingest commits, and its log rows are deleted by
/// [`drop_folded_log`] after the last step. A crash in between folds the
/// same rows again, which changes nothing.
pub(crate) fn fold_batch(conn: &Connection) -> Result<Option<FoldBatch>, StorageError> {
    let mut select =
        conn.prepare_cached("SELECT id, seen_at_ms, ids FROM dedup_log ORDER BY id")?;
    let mut rows = select.query([])?;
    let mut ids = Vec::new();
    let mut last_log_id = None;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let seen_at_ms: i64 = row.get(1)?;
        let blob = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
        ids.extend(
            decode_ids(blob)?
                .into_iter()
                .map(|(s, m)| (s.to_owned(), m.to_owned(), seen_at_ms)),
        );
        last_log_id = Some(id);
        if ids.len() >= FOLD_BATCH_MAX {
            break;
        }
    }
    let Some(last_log_id) = last_log_id else {
        return Ok(None);
    };
    ids.sort_unstable();
    Ok(Some(FoldBatch { ids, last_log_id }))
}

/// In a writer job: inserts one step of a sorted [`FoldBatch`] into `dedup`.
pub(crate) fn insert_folded(
    conn: &Connection,
    ids: &[(String, String, i64)],
) -> Result<(), StorageError> {
    // NOTE: one row per statement: a multi-row VALUES insert measured twice as slow.
    let mut insert = conn.prepare_cached(
        "INSERT INTO dedup (source, message_id, seen_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (source, message_id) DO NOTHING",
    )?;
    for (source, message_id, seen_at_ms) in ids {
        insert.execute(params![source, message_id, seen_at_ms])?;
    }
    Ok(())
}

/// In a writer job: deletes the log rows of a folded batch.
pub(crate) fn drop_folded_log(conn: &Connection, last_log_id: i64) -> Result<(), StorageError> {
    conn.prepare_cached("DELETE FROM dedup_log WHERE id <= ?1")?
        .execute([last_log_id])?;
    Ok(())
}

/// Folds the whole log in one go (tests; the worker folds in steps).
#[cfg(test)]
pub(crate) fn fold(conn: &Connection) -> Result<Vec<DedupHash>, StorageError> {
    let Some(batch) = fold_batch(conn)? else {
        return Ok(Vec::new());
    };
    for step in batch.ids.chunks(FOLD_STEP) {
        insert_folded(conn, step)?;
    }
    drop_folded_log(conn, batch.last_log_id)?;
    Ok(batch.hashes())
}

/// In a writer job: forgets folded ids first seen before `cutoff_ms`, at
/// most [`PRUNE_CHUNK`] of them. Returns how many were deleted.
pub(crate) fn prune(conn: &Connection, cutoff_ms: i64) -> Result<u64, StorageError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM dedup WHERE (source, message_id) IN
               (SELECT source, message_id FROM dedup INDEXED BY dedup_seen
                WHERE seen_at_ms < ?1 ORDER BY seen_at_ms LIMIT ?2)",
        )?
        .execute(params![cutoff_ms, PRUNE_CHUNK])?;
    Ok(deleted as u64)
}

/// Whether a prune deleted a full chunk (call it again).
pub(crate) fn prune_again(deleted: u64) -> bool {
    deleted >= PRUNE_CHUNK as u64
}

/// Appends `source` and `message_id` to a log row: each as a 4-byte
/// little-endian length and its bytes.
fn encode_id(log: &mut Vec<u8>, source: &str, message_id: &str) {
    for part in [source, message_id] {
        log.extend_from_slice(&(part.len() as u32).to_le_bytes());
        log.extend_from_slice(part.as_bytes());
    }
}

/// The `(source, messageId)` pairs of a log row.
fn decode_ids(mut blob: &[u8]) -> Result<Vec<(&str, &str)>, StorageError> {
    fn part<'b>(blob: &mut &'b [u8]) -> Option<&'b str> {
        let (len, rest) = blob.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let text = rest.get(..len)?;
        *blob = rest.get(len..)?;
        std::str::from_utf8(text).ok()
    }
    let mut ids = Vec::new();
    while !blob.is_empty() {
        match (part(&mut blob), part(&mut blob)) {
            (Some(source), Some(message_id)) => ids.push((source, message_id)),
            _ => {
                return Err(StorageError::Sql(
                    "dedup: a log row is not valid".to_owned(),
                ))
            }
        }
    }
    Ok(ids)
}

#[cold]
fn poisoned() -> StorageError {
    StorageError::Sql("dedup: the recent-ids lock is poisoned".to_owned())
}

#[cfg(test)]
mod tests;
