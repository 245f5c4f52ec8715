//! One run on disk: an immutable file of sorted keys.
//!
//! # Format
//! The keys, 16 big-endian bytes each, in ascending order, each once,
//! then a trailer of 16 bytes: the key count (little-endian `u64`) and
//! [`MAGIC`]. Keys start at offset 0, so each page of [`PAGE_KEYS`] keys
//! is one 4 KiB page of the file. A file is written whole and synced
//! (and its directory) before the row that makes it live commits, and is
//! never changed after.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::super::{DedupHash, KEY_LEN};
use crate::storage::StorageError;

/// Keys in a page: one 4 KiB page of the file, read whole by a lookup.
pub(crate) const PAGE_KEYS: usize = 256;

const PAGE_BYTES: usize = PAGE_KEYS * KEY_LEN;

/// Keys written between two syncs of a file being written (8 MiB): a
/// large merge's pages reach the disk in small flushes, not one `fsync`
/// of hundreds of MiB that would hold up the WAL's.
const SYNC_EVERY_KEYS: u64 = (8 << 20) / KEY_LEN as u64;

/// The trailer's last eight bytes.
const MAGIC: &[u8; 8] = b"WMDEDUP1";

const TRAILER: usize = 16;

/// A run file opened for lookups: its first key of each page in memory,
/// so a lookup reads one page.
pub(crate) struct RunFile {
    path: PathBuf,
    file: File,
    keys: u64,
    /// The first key of each page.
    fences: Vec<DedupHash>,
}

/// Path of run `run` in `dir`.
pub(crate) fn run_path(dir: &Path, run: i64) -> PathBuf {
    dir.join(format!("run-{run}.keys"))
}

/// The run number of a file name written by [`run_path`].
pub(crate) fn run_of(name: &str) -> Option<i64> {
    name.strip_prefix("run-")?
        .strip_suffix(".keys")?
        .parse()
        .ok()
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> StorageError {
    StorageError::Sql(format!(
        "dedup: {what} {} failed: {e}; check the data directory's disk and permissions",
        path.display()
    ))
}

fn damaged(path: &Path, why: &str) -> StorageError {
    StorageError::Sql(format!(
        "dedup: run file {} is damaged: {why}",
        path.display()
    ))
}

/// Writes sorted, distinct keys to a new run file, in pages.
pub(crate) struct RunWriter {
    path: PathBuf,
    out: BufWriter<File>,
    keys: u64,
    fences: Vec<DedupHash>,
    last: Option<DedupHash>,
}

impl RunWriter {
    /// Creates `path` (replacing a leftover of a crash).
    pub(crate) fn create(path: PathBuf) -> Result<RunWriter, StorageError> {
        let file = File::create(&path).map_err(|e| io_error(&path, "creating", e))?;
        Ok(RunWriter {
            out: BufWriter::with_capacity(64 << 10, file),
            path,
            keys: 0,
            fences: Vec::new(),
            last: None,
        })
    }

    /// Appends `key`, which must be above the last one; an equal key is
    /// kept once.
    pub(crate) fn push(&mut self, key: DedupHash) -> Result<(), StorageError> {
        if let Some(last) = self.last {
            if key == last {
                return Ok(());
            }
            debug_assert!(key > last, "run keys out of order");
        }
        if self.keys % PAGE_KEYS as u64 == 0 {
            self.fences.push(key);
        }
        self.out
            .write_all(&key.to_be_bytes())
            .map_err(|e| io_error(&self.path, "writing", e))?;
        self.keys += 1;
        self.last = Some(key);
        if self.keys % SYNC_EVERY_KEYS == 0 {
            self.out
                .flush()
                .and_then(|()| self.out.get_ref().sync_data())
                .map_err(|e| io_error(&self.path, "syncing", e))?;
        }
        Ok(())
    }

    /// Writes the trailer, syncs the file and its directory, and opens it
    /// for lookups.
    pub(crate) fn finish(mut self) -> Result<RunFile, StorageError> {
        let path = self.path.clone();
        let fail = |e| io_error(&path, "syncing", e);
        self.out.write_all(&self.keys.to_le_bytes()).map_err(fail)?;
        self.out.write_all(MAGIC).map_err(fail)?;
        let file = self.out.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
        }
        drop(file);
        let file = File::open(&path).map_err(|e| io_error(&path, "opening", e))?;
        Ok(RunFile {
            path,
            file,
            keys: self.keys,
            fences: self.fences,
        })
    }
}

impl RunFile {
    /// Opens an existing run file, checking its trailer and order, and
    /// passes every key to `each` (at open, for the filter).
    pub(crate) fn open(
        path: PathBuf,
        mut each: impl FnMut(DedupHash),
    ) -> Result<RunFile, StorageError> {
        let file = File::open(&path).map_err(|e| io_error(&path, "opening", e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error(&path, "reading", e))?
            .len();
        let body = len
            .checked_sub(TRAILER as u64)
            .ok_or_else(|| damaged(&path, "shorter than its trailer"))?;
        let mut trailer = [0u8; TRAILER];
        file.read_exact_at(&mut trailer, body)
            .map_err(|e| io_error(&path, "reading", e))?;
        let (count, magic) = trailer.split_at(8);
        if magic != MAGIC {
            return Err(damaged(&path, "no trailer"));
        }
        let mut count_bytes = [0u8; 8];
        count_bytes.copy_from_slice(count);
        let keys = u64::from_le_bytes(count_bytes);
        if keys.checked_mul(KEY_LEN as u64) != Some(body) {
            return Err(damaged(&path, "its length does not match its key count"));
        }
        let mut fences = Vec::with_capacity(keys.div_ceil(PAGE_KEYS as u64) as usize);
        let mut last = None;
        for (i, key) in KeyReader::new(&file, keys).enumerate() {
            let key = key.map_err(|e| io_error(&path, "reading", e))?;
            if last.is_some_and(|l| key <= l) {
                return Err(damaged(&path, "keys out of order"));
            }
            if i % PAGE_KEYS == 0 {
                fences.push(key);
            }
            each(key);
            last = Some(key);
        }
        Ok(RunFile {
            path,
            file,
            keys,
            fences,
        })
    }

    /// Keys in the run.
    pub(crate) fn keys(&self) -> u64 {
        self.keys
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the run holds `key`: one page read.
    pub(crate) fn contains(&self, key: DedupHash) -> Result<bool, StorageError> {
        // The last page whose first key is at most `key`.
        let page = match self.fences.partition_point(|f| *f <= key) {
            0 => return Ok(false),
            n => n - 1,
        };
        let first = page * PAGE_KEYS;
        let n = (self.keys as usize - first).min(PAGE_KEYS);
        let mut buf = [0u8; PAGE_BYTES];
        let buf = &mut buf[..n * KEY_LEN];
        self.file
            .read_exact_at(buf, (first * KEY_LEN) as u64)
            .map_err(|e| io_error(&self.path, "reading", e))?;
        let at = |i: usize| {
            let mut bytes = [0u8; KEY_LEN];
            bytes.copy_from_slice(&buf[i * KEY_LEN..(i + 1) * KEY_LEN]);
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

    /// The keys in order, read sequentially (for a merge).
    pub(crate) fn iter(&self) -> KeyReader<'_> {
        KeyReader::new(&self.file, self.keys)
    }
}

/// Reads a run's keys in order through a buffer.
pub(crate) struct KeyReader<'f> {
    input: BufReader<FileAt<'f>>,
    left: u64,
}

impl<'f> KeyReader<'f> {
    fn new(file: &'f File, keys: u64) -> KeyReader<'f> {
        KeyReader {
            input: BufReader::with_capacity(64 << 10, FileAt { file, at: 0 }),
            left: keys,
        }
    }
}

impl Iterator for KeyReader<'_> {
    type Item = std::io::Result<DedupHash>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut bytes = [0u8; KEY_LEN];
        Some(
            self.input
                .read_exact(&mut bytes)
                .map(|()| DedupHash::from_be_bytes(bytes)),
        )
    }
}

/// A reader over a shared file by position, so lookups (`pread`) and a
/// merge's sequential reads never move each other's offset.
struct FileAt<'f> {
    file: &'f File,
    at: u64,
}

impl Read for FileAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}
