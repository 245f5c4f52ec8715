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
//! - **folded**: about once a second the oldest logged keys are moved into
//!   `dedup_keys` as one sorted batch, so neighbouring keys share index
//!   pages, and their log rows are deleted ([`fold_batch`]).
//!
//! A key is looked up in the set, then in `dedup_keys`. The set only
//! changes on the writer thread, together with the transaction that
//! changes the log: a job that fails takes its keys back itself, and the
//! writer's completion hook takes back the keys of a group whose commit
//! failed, so the set never holds a key the database does not. At open the
//! set is read back from `dedup_log`.
//!
//! `dedup_keys` is a rowid table: rows are appended in fold order (first
//! seen order, to within a batch), so the table itself only grows at its
//! end and pruning deletes from its start; the one index is on the key.
//!
//! A key is the first 16 bytes of SHA-256 over the source name, a zero
//! byte and the id: telling two different ids apart wrongly would need a
//! 2^64 birthday search over SHA-256. Keys are a third of the size of the
//! ids they stand for, and compare as plain bytes.

use std::collections::HashSet;
use std::sync::Mutex;

use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

use super::StorageError;

/// The key of an id: a 128-bit hash of its source and `messageId`,
/// stored as 16 big-endian bytes.
pub(crate) type DedupHash = u128;

/// Bytes of a stored key.
const KEY_LEN: usize = 16;

/// Most logged ids one fold batch takes ([`fold_batch`]).
pub(crate) const FOLD_BATCH_MAX: usize = 65_536;

/// Ids one writer job of a fold inserts: bounds the time ingest commits
/// wait behind a fold (a few milliseconds), and so the ingest tail latency.
pub(crate) const FOLD_STEP: usize = 2_048;

/// Deleted per statement when pruning, so a prune never holds the writer long.
const PRUNE_CHUNK: i64 = 10_000;

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

/// The keys in `dedup_log` (and of the commit in progress).
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
            let blob = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            hashes.extend(decode_keys(blob)?);
        }
        Ok(RecentIds {
            hashes: Mutex::new(hashes),
        })
    }

    /// Keys in memory (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.hashes.lock().map(|k| k.len()).unwrap_or(0)
    }

    /// In a writer job: whether each of `ids` is seen for the first time
    /// (`None`, an event of a source without dedup, always is). The new ones
    /// join the set and are logged in one row; the caller must
    /// [`forget`](Self::forget) the returned keys if its job or its group fails.
    pub(crate) fn admit(
        &self,
        conn: &Connection,
        ids: &[Option<DedupHash>],
        now_ms: i64,
    ) -> Result<(Vec<bool>, Vec<DedupHash>), StorageError> {
        let mut fresh = Vec::with_capacity(ids.len());
        let mut added = Vec::new();
        {
            let mut recent = self.hashes.lock().map_err(|_| poisoned())?;
            // 1. Keys not in memory are looked up in `dedup_keys`, a few per statement.
            let unknown: Vec<DedupHash> = ids
                .iter()
                .flatten()
                .filter(|id| !recent.contains(id))
                .copied()
                .collect();
            let folded = folded_among(conn, &unknown)?;
            // 2. In order: the first of equal ids in a request is the new one.
            for id in ids {
                let Some(id) = id else {
                    fresh.push(true);
                    continue;
                };
                let new = !recent.contains(id) && !folded.contains(id);
                if new {
                    recent.insert(*id);
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
        if let Ok(mut recent) = self.hashes.lock() {
            for h in hashes {
                recent.remove(h);
            }
        }
    }
}

/// Keys looked up per statement.
const IDS_PER_STATEMENT: usize = 32;

/// Which of `keys` are in `dedup_keys`.
fn folded_among(conn: &Connection, keys: &[DedupHash]) -> Result<HashSet<DedupHash>, StorageError> {
    let mut found = HashSet::new();
    for chunk in keys.chunks(IDS_PER_STATEMENT) {
        let sql = format!(
            "SELECT key FROM dedup_keys WHERE key IN ({})",
            placeholders(chunk.len())
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let args: Vec<[u8; KEY_LEN]> = chunk.iter().map(|k| k.to_be_bytes()).collect();
        let mut rows = stmt.query(rusqlite::params_from_iter(&args))?;
        while let Some(row) = rows.next()? {
            let key = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            found.extend(decode_keys(key)?);
        }
    }
    Ok(found)
}

/// `n` SQL placeholders: `placeholders(3)` is `?1,?2,?3`.
fn placeholders(n: usize) -> String {
    let mut sql = String::new();
    for i in 1..=n {
        if i > 1 {
            sql.push(',');
        }
        sql.push('?');
        sql.push_str(&i.to_string());
    }
    sql
}

/// The oldest logged keys, sorted, to fold into `dedup_keys`.
pub(crate) struct FoldBatch {
    /// `(key, first seen)`, in key order.
    pub keys: Vec<(DedupHash, i64)>,
    /// The newest log row the batch covers.
    pub last_log_id: i64,
}

impl FoldBatch {
    /// The batch's keys, to [`RecentIds::forget`] once folded.
    pub(crate) fn hashes(&self) -> Vec<DedupHash> {
        self.keys.iter().map(|(key, _)| *key).collect()
    }
}

/// Reads up to about [`FOLD_BATCH_MAX`] of the oldest logged keys (whole
/// log rows), sorted; `None` when the log is empty. A read: any connection.
///
/// # Design
/// Folding works in two steps so that it keeps both the locality of a
/// large sorted batch (neighbouring keys share index pages, so each page
/// is written once per batch, not once per key) and short writer jobs: the
/// batch is inserted by [`insert_folded`] in steps of [`FOLD_STEP`] keys,
/// each its own job between ingest commits, and its log rows are deleted by
/// [`drop_folded_log`] after the last step. A crash in between folds the
/// same rows again, which changes nothing.
pub(crate) fn fold_batch(conn: &Connection) -> Result<Option<FoldBatch>, StorageError> {
    let mut select =
        conn.prepare_cached("SELECT id, seen_at_ms, ids FROM dedup_log ORDER BY id")?;
    let mut rows = select.query([])?;
    let mut keys = Vec::new();
    let mut last_log_id = None;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let seen_at_ms: i64 = row.get(1)?;
        let blob = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
        keys.extend(decode_keys(blob)?.map(|key| (key, seen_at_ms)));
        last_log_id = Some(id);
        if keys.len() >= FOLD_BATCH_MAX {
            break;
        }
    }
    let Some(last_log_id) = last_log_id else {
        return Ok(None);
    };
    keys.sort_unstable();
    Ok(Some(FoldBatch { keys, last_log_id }))
}

/// In a writer job: inserts one step of a sorted [`FoldBatch`] into `dedup_keys`.
pub(crate) fn insert_folded(
    conn: &Connection,
    keys: &[(DedupHash, i64)],
) -> Result<(), StorageError> {
    // NOTE: one row per statement: a multi-row VALUES insert measured twice as slow.
    let mut insert = conn.prepare_cached(
        "INSERT INTO dedup_keys (key, seen_at_ms) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
    )?;
    for (key, seen_at_ms) in keys {
        insert.execute(params![key.to_be_bytes(), seen_at_ms])?;
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
    for step in batch.keys.chunks(FOLD_STEP) {
        insert_folded(conn, step)?;
    }
    drop_folded_log(conn, batch.last_log_id)?;
    Ok(batch.hashes())
}

/// In a writer job: forgets folded keys first seen before `cutoff_ms`,
/// looking at most [`PRUNE_CHUNK`] of the oldest rows. Returns how many
/// were deleted.
///
/// Rows are in first-seen order to within a fold batch (a second or two),
/// so the old ones are at the start; a younger row folded among them only
/// delays the next ones until the following prune.
pub(crate) fn prune(conn: &Connection, cutoff_ms: i64) -> Result<u64, StorageError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM dedup_keys WHERE seen_at_ms < ?1 AND id IN
               (SELECT id FROM dedup_keys ORDER BY id LIMIT ?2)",
        )?
        .execute(params![cutoff_ms, PRUNE_CHUNK])?;
    Ok(deleted as u64)
}

/// Whether a prune deleted a full chunk (call it again).
pub(crate) fn prune_again(deleted: u64) -> bool {
    deleted >= PRUNE_CHUNK as u64
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

/// SQL functions migration 7 uses to turn stored ids into keys:
/// `waymark_dedup_key(source, message_id)` and
/// `waymark_dedup_log_keys(ids)` for a log row of the id format before it
/// (each id a 4-byte little-endian length and its bytes, source then id).
pub(crate) fn register_migration_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("waymark_dedup_key", 2, flags, |ctx| {
        let source = ctx.get_raw(0).as_str().map_err(rusqlite::Error::from)?;
        let message_id = ctx.get_raw(1).as_str().map_err(rusqlite::Error::from)?;
        Ok(dedup_hash(source, message_id).to_be_bytes().to_vec())
    })?;
    conn.create_scalar_function("waymark_dedup_log_keys", 1, flags, |ctx| {
        let blob = ctx.get_raw(0).as_blob().map_err(rusqlite::Error::from)?;
        let ids = decode_v6_log(blob)
            .map_err(|e| rusqlite::Error::UserFunctionError(e.to_string().into()))?;
        let keys: Vec<DedupHash> = ids.into_iter().map(|(s, m)| dedup_hash(s, m)).collect();
        Ok(encode_keys(&keys))
    })
}

/// The `(source, messageId)` pairs of a log row written before migration 7.
fn decode_v6_log(mut blob: &[u8]) -> Result<Vec<(&str, &str)>, StorageError> {
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
