//! Folded dedup keys as immutable sorted run files, merged off the writer.
//!
//! # Design
//! Folding a batch of new keys into one key-ordered B-tree dirties about
//! one leaf page per key once the tree is large (random keys land on
//! different pages): about 4 KB of WAL per event, and growing with the
//! tree (issue #17). Keeping runs as blocks in SQLite tables fixed the
//! WAL, but left every lookup an index seek per run and every merge step a
//! job on the single writer, and under sustained load the merges fell
//! behind and lookups across ~95 runs took the writer. So a **run** is now
//! a file of sorted keys ([`file`]), written and synced off the writer;
//! the writer only commits its row in `dedup_run_files` (which makes it
//! live) in the job that deletes the log rows it folded.
//!
//! A lookup binary-searches the run's first key of each page, kept in
//! memory (about 0.06 bytes a key), and reads that one 4 KiB page: one
//! `pread` per live run, and only for keys the filter in front
//! ([`super::filter`]) is unsure of.
//!
//! Runs are merged four at a time with others of their size class (size-
//! tiered, as LSM trees do), sequentially and off the writer; the swap
//! (the output's row in, the inputs' rows out) is one small writer job,
//! so a key is rewritten about log4(keys / batch) times and the number of
//! live runs stays logarithmic. A merge never spans more than a quarter of
//! the dedup window, so a run expires whole, soon after its newest key
//! leaves the window.
//!
//! The set of live runs in memory changes only in a writer job's
//! completion hook, once its commit is durable, so it never holds a run
//! the database does not list; a run file is deleted once no row lists
//! it. Files no row lists (a crash between writing a file and committing
//! its row, or before deleting a merged input) are deleted at open.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use rusqlite::{params, Connection};

use super::DedupHash;
use crate::storage::StorageError;
use file::{run_of, run_path, RunFile, RunWriter};

pub(crate) mod file;

/// Runs merged into one.
const MERGE_WIDTH: usize = 4;

/// The folder of run files beside the database.
pub(crate) const RUNS_DIR: &str = "dedup";

/// A run's place in the set: what the planner and expiry need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunInfo {
    pub run: i64,
    pub keys: i64,
    /// When its oldest and newest keys were first seen.
    pub oldest_ms: i64,
    pub newest_ms: i64,
}

/// A live run, or one written and waiting for its row to commit.
pub(crate) struct Run {
    info: RunInfo,
    file: RunFile,
}

/// A run file written but not live yet: [`record`] it in a writer job, then
/// [`Runs::publish`] it once committed, or [`Runs::discard`] it.
#[derive(Clone)]
pub(crate) struct NewRun(Arc<Run>);

impl NewRun {
    pub(crate) fn info(&self) -> RunInfo {
        self.0.info
    }
}

/// The live runs of one store.
pub(crate) struct Runs {
    dir: PathBuf,
    live: RwLock<Vec<Arc<Run>>>,
    next: AtomicI64,
}

impl Runs {
    /// Opens the runs `dedup_run_files` lists in `dir`, passing every key
    /// to `each` (for the filter), and deletes run files no row lists. A
    /// listed file that is missing or damaged is reported and its row
    /// deleted: its keys are no longer deduplicated, nothing else is lost.
    pub(crate) fn open(
        conn: &Connection,
        dir: &Path,
        mut each: impl FnMut(DedupHash),
    ) -> Result<Runs, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Sql(format!("dedup: creating {} failed: {e}", dir.display()))
        })?;
        let rows = conn
            .prepare("SELECT run, keys, oldest_ms, newest_ms FROM dedup_run_files ORDER BY run")?
            .query_map([], |r| {
                Ok(RunInfo {
                    run: r.get(0)?,
                    keys: r.get(1)?,
                    oldest_ms: r.get(2)?,
                    newest_ms: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut live = Vec::with_capacity(rows.len());
        let mut next = 0;
        for info in rows {
            next = next.max(info.run);
            let opened = RunFile::open(run_path(dir, info.run), &mut each).and_then(|file| {
                if file.keys() == info.keys as u64 {
                    Ok(file)
                } else {
                    Err(StorageError::Sql(format!(
                        "dedup: run file {} holds {} keys, its row says {}",
                        file.path().display(),
                        file.keys(),
                        info.keys
                    )))
                }
            });
            match opened {
                Ok(file) => live.push(Arc::new(Run { info, file })),
                Err(error) => {
                    tracing::error!(
                        error = %error,
                        run = info.run,
                        "A dedup run is unreadable and is dropped: ids it held may be delivered again."
                    );
                    conn.execute("DELETE FROM dedup_run_files WHERE run = ?1", [info.run])?;
                }
            }
        }
        let listed: HashSet<i64> = live.iter().map(|r| r.info.run).collect();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            StorageError::Sql(format!("dedup: listing {} failed: {e}", dir.display()))
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(run) = name.to_str().and_then(run_of) else {
                continue;
            };
            next = next.max(run);
            if !listed.contains(&run) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Runs {
            dir: dir.to_owned(),
            live: RwLock::new(live),
            next: AtomicI64::new(next + 1),
        })
    }

    fn live(&self) -> Vec<Arc<Run>> {
        self.live.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// The live runs (for tests and metrics).
    pub(crate) fn infos(&self) -> Vec<RunInfo> {
        self.live().iter().map(|r| r.info).collect()
    }

    /// Which of `keys` are in a live run.
    pub(crate) fn folded_among(
        &self,
        keys: &[DedupHash],
    ) -> Result<HashSet<DedupHash>, StorageError> {
        let mut found = HashSet::new();
        if keys.is_empty() {
            return Ok(found);
        }
        let live = self.live.read().map_err(|_| poisoned())?;
        for &key in keys {
            for run in live.iter() {
                if run.file.contains(key)? {
                    found.insert(key);
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Writes sorted keys first seen between `oldest_ms` and `newest_ms` to
    /// a new run file (blocking: call off the async threads).
    pub(crate) fn write(
        &self,
        keys: impl IntoIterator<Item = DedupHash>,
        oldest_ms: i64,
        newest_ms: i64,
    ) -> Result<NewRun, StorageError> {
        self.create(oldest_ms, newest_ms, |writer| {
            keys.into_iter().try_for_each(|key| writer.push(key))
        })
    }

    /// A new run file that `fill` writes; removed again when it fails.
    fn create(
        &self,
        oldest_ms: i64,
        newest_ms: i64,
        fill: impl FnOnce(&mut RunWriter) -> Result<(), StorageError>,
    ) -> Result<NewRun, StorageError> {
        let run = self.next.fetch_add(1, Ordering::Relaxed);
        let path = run_path(&self.dir, run);
        let mut writer = RunWriter::create(path.clone())?;
        let file = fill(&mut writer).and_then(|()| writer.finish());
        let file = file.inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })?;
        Ok(NewRun(Arc::new(Run {
            info: RunInfo {
                run,
                keys: file.keys() as i64,
                oldest_ms,
                newest_ms,
            },
            file,
        })))
    }

    /// The inputs of the next merge ([`plan`]), `None` when none is due.
    pub(crate) fn plan_merge(&self, max_span_ms: i64) -> Option<Vec<RunInfo>> {
        plan(&self.infos(), max_span_ms)
    }

    /// Merges the live runs `inputs` into a new run file, each key once
    /// (blocking: call off the async threads). `None` when one of them is
    /// no longer live.
    pub(crate) fn merge(&self, inputs: &[RunInfo]) -> Result<Option<NewRun>, StorageError> {
        let live = self.live();
        let runs: Option<Vec<Arc<Run>>> = inputs
            .iter()
            .map(|i| live.iter().find(|r| r.info.run == i.run).cloned())
            .collect();
        let Some(runs) = runs else {
            return Ok(None);
        };
        let oldest = inputs.iter().map(|r| r.oldest_ms).min().unwrap_or(0);
        let newest = inputs.iter().map(|r| r.newest_ms).max().unwrap_or(0);
        let merged = self.create(oldest, newest, |writer| {
            let read_failed =
                |e| StorageError::Sql(format!("dedup: reading a run to merge failed: {e}"));
            let mut readers: Vec<_> = runs.iter().map(|r| r.file.iter()).collect();
            let mut heads = readers
                .iter_mut()
                .map(|r| r.next().transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_failed)?;
            // The smallest head each time; the writer keeps equal keys once.
            while let Some((i, key)) = heads
                .iter()
                .enumerate()
                .filter_map(|(i, head)| head.map(|k| (i, k)))
                .min_by_key(|&(_, k)| k)
            {
                writer.push(key)?;
                heads[i] = readers[i].next().transpose().map_err(read_failed)?;
            }
            Ok(())
        })?;
        Ok(Some(merged))
    }

    /// After the commit of its row: `new` goes live and the runs it
    /// replaces (a merge's inputs) leave the set and the disk.
    pub(crate) fn publish(&self, new: NewRun, replaces: &[i64]) {
        if let Ok(mut live) = self.live.write() {
            live.retain(|r| !replaces.contains(&r.info.run));
            live.push(new.0);
        }
        self.delete_files(replaces);
    }

    /// After the commit that deleted their rows: `runs` leave the set and
    /// the disk.
    pub(crate) fn retire(&self, runs: &[i64]) {
        if let Ok(mut live) = self.live.write() {
            live.retain(|r| !runs.contains(&r.info.run));
        }
        self.delete_files(runs);
    }

    /// A run that will not go live: its file is deleted.
    pub(crate) fn discard(&self, new: NewRun) {
        let _ = std::fs::remove_file(new.0.file.path());
    }

    fn delete_files(&self, runs: &[i64]) {
        for &run in runs {
            // An open lookup keeps reading the unlinked file.
            let _ = std::fs::remove_file(run_path(&self.dir, run));
        }
    }
}

/// In a writer job: a written run becomes live once this commits.
pub(crate) fn record(conn: &Connection, new: &NewRun) -> Result<(), StorageError> {
    let i = new.info();
    conn.prepare_cached(
        "INSERT INTO dedup_run_files (run, keys, oldest_ms, newest_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![i.run, i.keys, i.oldest_ms, i.newest_ms])?;
    Ok(())
}

/// In a writer job: a merge's output replaces its inputs, if they are all
/// still live (one may have expired meanwhile: the output would bring it
/// back). Whether it did.
pub(crate) fn record_merge(
    conn: &Connection,
    inputs: &[RunInfo],
    new: &NewRun,
) -> Result<bool, StorageError> {
    let mut listed = conn.prepare_cached("SELECT 1 FROM dedup_run_files WHERE run = ?1")?;
    for input in inputs {
        if !listed.exists([input.run])? {
            return Ok(false);
        }
    }
    let mut delete = conn.prepare_cached("DELETE FROM dedup_run_files WHERE run = ?1")?;
    for input in inputs {
        delete.execute([input.run])?;
    }
    record(conn, new)?;
    Ok(true)
}

/// In a writer job: the rows of runs whose newest key was first seen
/// before `cutoff_ms` go; returns those runs and how many keys they held,
/// to [`Runs::retire`] once committed.
pub(crate) fn expire(conn: &Connection, cutoff_ms: i64) -> Result<(Vec<i64>, u64), StorageError> {
    let expired = conn
        .prepare_cached("DELETE FROM dedup_run_files WHERE newest_ms < ?1 RETURNING run, keys")?
        .query_map([cutoff_ms], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let keys = expired.iter().map(|(_, k)| *k as u64).sum();
    Ok((expired.into_iter().map(|(run, _)| run).collect(), keys))
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

#[cold]
fn poisoned() -> StorageError {
    StorageError::Sql("dedup: the runs lock is poisoned".to_owned())
}

#[cfg(test)]
mod tests;
