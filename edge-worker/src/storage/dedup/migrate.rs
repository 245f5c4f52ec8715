//! The dedup steps of migrations that run code: 7 (ids become keys),
//! 8 (the key table becomes a run) and 9 (runs move from tables to files).

use std::path::PathBuf;

use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection};

use super::runs::file::{run_path, RunWriter};
use super::runs::RUNS_DIR;
use super::{decode_keys, dedup_hash, encode_keys, DedupHash};
use crate::storage::StorageError;

/// Keys in a block of the run tables of migration 8.
const V8_BLOCK_KEYS: usize = 240;

/// Migration 8's step in code: the keys of `dedup_keys` (migration 7)
/// become one live run, and the table goes.
pub(crate) fn convert_v7_keys(conn: &Connection) -> Result<(), StorageError> {
    let mut keys: Vec<DedupHash> = Vec::new();
    let (oldest, newest): (Option<i64>, Option<i64>) = conn.query_row(
        "SELECT min(seen_at_ms), max(seen_at_ms) FROM dedup_keys",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    {
        let mut stmt = conn.prepare("SELECT key FROM dedup_keys ORDER BY key")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let blob = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            keys.extend(decode_keys(blob)?);
        }
    }
    if let (Some(oldest), Some(newest)) = (oldest, newest) {
        keys.dedup();
        conn.execute(
            "INSERT INTO dedup_runs (state, keys, oldest_ms, newest_ms) VALUES (1, ?1, ?2, ?3)",
            params![keys.len() as i64, oldest, newest],
        )?;
        let run = conn.last_insert_rowid();
        let mut insert =
            conn.prepare("INSERT INTO dedup_blocks (run, first_key, keys) VALUES (?1, ?2, ?3)")?;
        for block in keys.chunks(V8_BLOCK_KEYS) {
            insert.execute(params![run, block[0].to_be_bytes(), encode_keys(block)])?;
        }
    }
    conn.execute_batch("DROP TABLE dedup_keys")?;
    Ok(())
}

/// Migration 9's step in code: each live run of `dedup_runs` (migration
/// 8) is written to its file in the runs folder beside the database and
/// listed in `dedup_run_files`, and the two tables go.
pub(crate) fn convert_v8_runs(conn: &Connection) -> Result<(), StorageError> {
    let runs: Vec<(i64, i64, i64)> = conn
        .prepare("SELECT run, oldest_ms, newest_ms FROM dedup_runs WHERE state = 1 ORDER BY run")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    if !runs.is_empty() {
        let dir = runs_dir_of(conn)?;
        std::fs::create_dir_all(&dir).map_err(|e| {
            StorageError::Sql(format!("dedup: creating {} failed: {e}", dir.display()))
        })?;
        let mut blocks =
            conn.prepare("SELECT keys FROM dedup_blocks WHERE run = ?1 ORDER BY first_key")?;
        let mut list = conn.prepare(
            "INSERT INTO dedup_run_files (run, keys, oldest_ms, newest_ms) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (run, oldest, newest) in runs {
            let mut writer = RunWriter::create(run_path(&dir, run))?;
            let mut rows = blocks.query([run])?;
            while let Some(row) = rows.next()? {
                let blob = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
                for key in decode_keys(blob)? {
                    writer.push(key)?;
                }
            }
            let file = writer.finish()?;
            list.execute(params![run, file.keys() as i64, oldest, newest])?;
        }
    }
    conn.execute_batch("DROP TABLE dedup_blocks; DROP TABLE dedup_runs;")?;
    Ok(())
}

/// The runs folder beside the database file of `conn`.
pub(crate) fn runs_dir_of(conn: &Connection) -> Result<PathBuf, StorageError> {
    let db = conn.path().filter(|p| !p.is_empty()).ok_or_else(|| {
        StorageError::Sql("dedup: runs need a database file, not an in-memory one".to_owned())
    })?;
    let parent = std::path::Path::new(db)
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    Ok(parent.join(RUNS_DIR))
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
pub(super) fn decode_v6_log(mut blob: &[u8]) -> Result<Vec<(&str, &str)>, StorageError> {
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
