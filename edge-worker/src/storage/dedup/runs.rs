//! Folded dedup keys as immutable sorted runs, merged in the background.
//!
//! # Design
//! Folding a batch of new keys into one key-ordered B-tree dirties about
//! one leaf page per key once the tree is large (random keys land on
//! different pages): about 4 KB of WAL per event, and growing with the
//! tree (issue #17). So each fold writes a new **run** instead: its keys
//! sorted into blocks of [`BLOCK_KEYS`] (one page each), about 16 bytes of
//! WAL per key. A key is looked up in each live run (one index seek per
//! run); the filter in front ([`super::filter`]) keeps those lookups rare.
//!
//! Runs are merged four at a time with others of their size class (size-
//! tiered, as LSM trees do), in steps of [`MERGE_STEP`] keys, each its own
//! writer job between ingest commits, so a key is rewritten about
//! log4(keys / batch) times and the number of live runs stays logarithmic.
//! A merge never spans more than a quarter of the dedup window, so a run
//! expires whole, soon after its newest key leaves the window.
//!
//! A run is `FILLING` while written (not looked up), `LIVE`, then
//! `DROPPING` once merged into another or expired, and its blocks are
//! deleted in chunks. The switch from inputs to output is one job. A run
//! left filling by a crash is dropped at open.

use std::collections::{HashSet, VecDeque};

use rusqlite::{params, Connection, OptionalExtension};

use super::{decode_keys, encode_keys, DedupHash, KEY_LEN};
use crate::storage::StorageError;

/// Keys in a block: 3 840 bytes, so a block and its row fit one 4 KiB page.
pub(crate) const BLOCK_KEYS: usize = 240;

/// Keys a merge step writes, a whole number of blocks: bounds the time an
/// ingest commit waits behind it.
pub(crate) const MERGE_STEP: usize = 8 * BLOCK_KEYS;

/// Runs merged into one.
const MERGE_WIDTH: usize = 4;

/// Blocks deleted per job when dropping runs.
const DROP_CHUNK: i64 = 256;

const FILLING: i64 = 0;
const LIVE: i64 = 1;
const DROPPING: i64 = 2;

/// Which of `keys` are in a live run.
pub(crate) fn folded_among(
    conn: &Connection,
    keys: &[DedupHash],
) -> Result<HashSet<DedupHash>, StorageError> {
    let mut found = HashSet::new();
    if keys.is_empty() {
        return Ok(found);
    }
    // The one block of each live run that could hold the key.
    let mut stmt = conn.prepare_cached(
        "SELECT (SELECT b.keys FROM dedup_blocks b
                 WHERE b.run = r.run AND b.first_key <= ?1
                 ORDER BY b.first_key DESC LIMIT 1)
         FROM dedup_runs r WHERE r.state = 1",
    )?;
    for &key in keys {
        let mut rows = stmt.query([key.to_be_bytes()])?;
        while let Some(row) = rows.next()? {
            let Some(blob) = row
                .get_ref(0)?
                .as_blob_or_null()
                .map_err(rusqlite::Error::from)?
            else {
                continue;
            };
            if block_contains(blob, key)? {
                found.insert(key);
                break;
            }
        }
    }
    Ok(found)
}

/// Binary search of a block's sorted keys.
fn block_contains(blob: &[u8], key: DedupHash) -> Result<bool, StorageError> {
    let n = blob.len() / KEY_LEN;
    if blob.len() % KEY_LEN != 0 {
        return Err(StorageError::Sql(format!(
            "dedup: a block is {} bytes, not a multiple of {KEY_LEN}",
            blob.len()
        )));
    }
    let at = |i: usize| {
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&blob[i * KEY_LEN..(i + 1) * KEY_LEN]);
        DedupHash::from_be_bytes(bytes)
    };
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match at(mid).cmp(&key) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(true),
        }
    }
    Ok(false)
}

/// In a writer job: a new run, filling, for keys first seen between
/// `oldest_ms` and `newest_ms`.
pub(crate) fn start_run(
    conn: &Connection,
    keys: usize,
    oldest_ms: i64,
    newest_ms: i64,
) -> Result<i64, StorageError> {
    conn.prepare_cached(
        "INSERT INTO dedup_runs (state, keys, oldest_ms, newest_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![FILLING, keys as i64, oldest_ms, newest_ms])?;
    Ok(conn.last_insert_rowid())
}

/// In a writer job: appends sorted `keys` to a filling run, in blocks of
/// [`BLOCK_KEYS`] (the last one shorter).
pub(crate) fn write_blocks(
    conn: &Connection,
    run: i64,
    keys: &[DedupHash],
) -> Result<(), StorageError> {
    let mut insert =
        conn.prepare_cached("INSERT INTO dedup_blocks (run, first_key, keys) VALUES (?1, ?2, ?3)")?;
    for block in keys.chunks(BLOCK_KEYS) {
        insert.execute(params![run, block[0].to_be_bytes(), encode_keys(block)])?;
    }
    Ok(())
}

/// In a writer job: a filled run becomes live.
pub(crate) fn seal_run(conn: &Connection, run: i64) -> Result<(), StorageError> {
    set_state(conn, run, LIVE)
}

/// In a writer job: run `run` moves to `state`.
fn set_state(conn: &Connection, run: i64, state: i64) -> Result<(), StorageError> {
    conn.prepare_cached("UPDATE dedup_runs SET state = ?2 WHERE run = ?1")?
        .execute(params![run, state])?;
    Ok(())
}

/// Whether run `run` is live.
fn is_live(conn: &Connection, run: i64) -> Result<bool, StorageError> {
    let state: Option<i64> = conn
        .prepare_cached("SELECT state FROM dedup_runs WHERE run = ?1")?
        .query_row([run], |r| r.get(0))
        .optional()?;
    Ok(state == Some(LIVE))
}

/// At open: runs a crash left filling are dropped.
pub(crate) fn drop_unfinished(conn: &Connection) -> Result<(), StorageError> {
    conn.execute(
        "UPDATE dedup_runs SET state = ?1 WHERE state = ?2",
        params![DROPPING, FILLING],
    )?;
    Ok(())
}

/// Every key of every live run (at open, for the filter).
pub(crate) fn for_each_live_key(
    conn: &Connection,
    mut each: impl FnMut(DedupHash),
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare(
        "SELECT b.keys FROM dedup_blocks b JOIN dedup_runs r ON r.run = b.run WHERE r.state = 1",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let blob = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
        decode_keys(blob)?.for_each(&mut each);
    }
    Ok(())
}

/// In a writer job: live runs whose newest key was first seen before
/// `cutoff_ms` start dropping. Returns how many keys they held.
pub(crate) fn expire(conn: &Connection, cutoff_ms: i64) -> Result<u64, StorageError> {
    let keys: i64 = conn.query_row(
        "SELECT coalesce(sum(keys), 0) FROM dedup_runs WHERE state = ?1 AND newest_ms < ?2",
        params![LIVE, cutoff_ms],
        |r| r.get(0),
    )?;
    conn.execute(
        "UPDATE dedup_runs SET state = ?1 WHERE state = ?2 AND newest_ms < ?3",
        params![DROPPING, LIVE, cutoff_ms],
    )?;
    Ok(keys as u64)
}

/// In a writer job: deletes up to [`DROP_CHUNK`] blocks of dropping runs,
/// and the runs left without blocks. Whether there is more to delete.
pub(crate) fn drop_some(conn: &Connection) -> Result<bool, StorageError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM dedup_blocks WHERE id IN (
               SELECT b.id FROM dedup_runs r JOIN dedup_blocks b ON b.run = r.run
               WHERE r.state = ?1 LIMIT ?2)",
        )?
        .execute(params![DROPPING, DROP_CHUNK])?;
    if (deleted as i64) < DROP_CHUNK {
        conn.prepare_cached(
            "DELETE FROM dedup_runs WHERE state = ?1
             AND NOT EXISTS (SELECT 1 FROM dedup_blocks b WHERE b.run = dedup_runs.run)",
        )?
        .execute([DROPPING])?;
        return Ok(false);
    }
    Ok(true)
}

/// A run as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunInfo {
    run: i64,
    keys: i64,
    oldest_ms: i64,
    newest_ms: i64,
}

/// Size class: runs within a factor of four of each other merge.
fn class(keys: i64) -> u32 {
    (i64::BITS - 1 - keys.max(1).leading_zeros()) / 2
}

/// The inputs of the next merge: the oldest [`MERGE_WIDTH`] live runs of
/// the smallest class that has that many and spans at most `max_span_ms`.
fn plan(runs: &[RunInfo], max_span_ms: i64) -> Option<Vec<RunInfo>> {
    let mut classes: Vec<u32> = runs.iter().map(|r| class(r.keys)).collect();
    classes.sort_unstable();
    classes.dedup();
    classes.into_iter().find_map(|c| {
        let mut same: Vec<RunInfo> = runs
            .iter()
            .filter(|r| class(r.keys) == c)
            .copied()
            .collect();
        same.sort_by_key(|r| (r.oldest_ms, r.run));
        same.windows(MERGE_WIDTH)
            .find(|w| {
                let oldest = w.iter().map(|r| r.oldest_ms).min().unwrap_or(0);
                let newest = w.iter().map(|r| r.newest_ms).max().unwrap_or(0);
                newest - oldest <= max_span_ms
            })
            .map(<[RunInfo]>::to_vec)
    })
}

/// A merge in progress: the inputs read a block at a time, merged into the
/// output run.
pub(crate) struct Merge {
    inputs: Vec<Input>,
    output: i64,
    /// Output keys not yet a whole block.
    pending: Vec<DedupHash>,
    last: Option<DedupHash>,
}

struct Input {
    run: i64,
    /// First key of the last block read; `None` before the first.
    after: Option<[u8; KEY_LEN]>,
    buffer: VecDeque<DedupHash>,
    exhausted: bool,
}

impl Input {
    /// Reads the next block when the buffer is empty; the head key.
    fn head(&mut self, conn: &Connection) -> Result<Option<DedupHash>, StorageError> {
        if self.buffer.is_empty() && !self.exhausted {
            let mut stmt = conn.prepare_cached(
                "SELECT first_key, keys FROM dedup_blocks WHERE run = ?1 AND first_key > ?2
                 ORDER BY first_key LIMIT 1",
            )?;
            let after: &[u8] = self.after.as_ref().map_or(&[], |a| a.as_slice());
            let block: Option<(Vec<u8>, Vec<u8>)> = stmt
                .query_row(params![self.run, after], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match block {
                Some((first, keys)) => {
                    let mut a = [0u8; KEY_LEN];
                    if first.len() == KEY_LEN {
                        a.copy_from_slice(&first);
                    }
                    self.after = Some(a);
                    self.buffer.extend(decode_keys(&keys)?);
                }
                None => self.exhausted = true,
            }
        }
        Ok(self.buffer.front().copied())
    }
}

impl Merge {
    /// Plans the next merge among the live runs and starts its output run
    /// (a writer job); `None` when nothing is due.
    pub(crate) fn start(
        conn: &Connection,
        max_span_ms: i64,
    ) -> Result<Option<Merge>, StorageError> {
        let mut stmt = conn.prepare_cached(
            "SELECT run, keys, oldest_ms, newest_ms FROM dedup_runs WHERE state = ?1",
        )?;
        let runs = stmt
            .query_map([LIVE], |r| {
                Ok(RunInfo {
                    run: r.get(0)?,
                    keys: r.get(1)?,
                    oldest_ms: r.get(2)?,
                    newest_ms: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let Some(inputs) = plan(&runs, max_span_ms) else {
            return Ok(None);
        };
        let keys = inputs.iter().map(|r| r.keys).sum::<i64>() as usize;
        let oldest = inputs.iter().map(|r| r.oldest_ms).min().unwrap_or(0);
        let newest = inputs.iter().map(|r| r.newest_ms).max().unwrap_or(0);
        let output = start_run(conn, keys, oldest, newest)?;
        Ok(Some(Merge {
            inputs: inputs
                .iter()
                .map(|r| Input {
                    run: r.run,
                    after: None,
                    buffer: VecDeque::new(),
                    exhausted: false,
                })
                .collect(),
            output,
            pending: Vec::with_capacity(BLOCK_KEYS),
            last: None,
        }))
    }

    /// In a writer job: merges up to [`MERGE_STEP`] keys; when the inputs
    /// run out, the output goes live and the inputs drop, in this job.
    /// Whether the merge is finished.
    pub(crate) fn step(&mut self, conn: &Connection) -> Result<bool, StorageError> {
        let mut written = 0;
        while written < MERGE_STEP {
            let mut min: Option<(usize, DedupHash)> = None;
            for (i, input) in self.inputs.iter_mut().enumerate() {
                if let Some(k) = input.head(conn)? {
                    if min.is_none_or(|(_, m)| k < m) {
                        min = Some((i, k));
                    }
                }
            }
            let Some((i, key)) = min else {
                return self.finish(conn);
            };
            self.inputs[i].buffer.pop_front();
            // Equal keys in two runs (a batch folded twice) are kept once.
            if self.last == Some(key) {
                continue;
            }
            self.last = Some(key);
            self.pending.push(key);
            if self.pending.len() == BLOCK_KEYS {
                write_blocks(conn, self.output, &self.pending)?;
                self.pending.clear();
                written += BLOCK_KEYS;
            }
        }
        Ok(false)
    }

    fn finish(&mut self, conn: &Connection) -> Result<bool, StorageError> {
        if !self.pending.is_empty() {
            write_blocks(conn, self.output, &self.pending)?;
            self.pending.clear();
        }
        let mut all_live = true;
        for input in &self.inputs {
            all_live &= is_live(conn, input.run)?;
        }
        if all_live {
            seal_run(conn, self.output)?;
            for input in &self.inputs {
                set_state(conn, input.run, DROPPING)?;
            }
        } else {
            // An input expired meanwhile: the output would bring it back.
            set_state(conn, self.output, DROPPING)?;
        }
        Ok(true)
    }

    /// The output run, to [`abandon`] when a step fails.
    pub(crate) fn output(&self) -> i64 {
        self.output
    }
}

/// In a writer job: a merge output that will not be finished drops.
pub(crate) fn abandon(conn: &Connection, output: i64) -> Result<(), StorageError> {
    conn.prepare_cached("UPDATE dedup_runs SET state = ?2 WHERE run = ?1 AND state = ?3")?
        .execute(params![output, DROPPING, FILLING])?;
    Ok(())
}

#[cfg(test)]
mod tests;
