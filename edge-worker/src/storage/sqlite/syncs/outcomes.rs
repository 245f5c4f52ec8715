//! The delivery hook on SQLite: row outcomes move key state and run
//! counters, inside the caller's transaction (the outbox's write job).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension};

use crate::storage::outbox;
use crate::storage::syncs::{Change, Delivery, KeyStatus, OutcomeBatch, RowOutcome, SettledRow};
use crate::storage::StorageError;

/// The outcomes among `rows` whose entry is among `ids` and still in the
/// outbox, to record once the caller's job settles those entries. Called
/// in the same write job, before the entries are removed, so an entry
/// already settled (or never there) records nothing. Free when `rows` is
/// empty, as it is for every entry that is not a sync's row.
pub(crate) fn still_waiting(
    conn: &Connection,
    ids: &[i64],
    rows: Vec<SettledRow>,
) -> Result<Vec<RowOutcome>, StorageError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: HashSet<i64> = ids.iter().copied().collect();
    let mut select = conn.prepare_cached("SELECT indices FROM outbox_packs WHERE id = ?1")?;
    // Per pack, the indices still in it (`None`: the pack is gone).
    let mut packs: HashMap<i64, Option<Vec<u32>>> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if !ids.contains(&row.entry) {
            continue;
        }
        let pack = outbox::pack_of(row.entry);
        if let Entry::Vacant(slot) = packs.entry(pack) {
            let text: Option<String> = select.query_row([pack], |r| r.get(0)).optional()?;
            let indices = text.map(|t| {
                let mut indices = outbox::parse_indices(&t);
                indices.sort_unstable();
                indices
            });
            slot.insert(indices);
        }
        let index = outbox::index_of(row.entry);
        let waiting = packs
            .get(&pack)
            .and_then(Option::as_ref)
            .is_some_and(|indices| indices.binary_search(&index).is_ok());
        if waiting {
            out.push(row.outcome);
        }
    }
    Ok(out)
}

/// Applies row outcomes to key state and run counters on `conn`, inside
/// the caller's transaction. The outbox calls this in the write job that
/// removes or dead-letters the entries carrying these rows.
pub(crate) fn record_outcomes(
    conn: &Connection,
    outcomes: &[RowOutcome],
) -> Result<(), StorageError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let batch = OutcomeBatch::of(outcomes);
    let mut synced = conn.prepare_cached(
        "INSERT INTO sync_state (sync_id, key, hash, status, attempts, last_error, run_id)
         VALUES (?1, ?2, ?3, 0, 0, NULL, ?4)
         ON CONFLICT (sync_id, key) DO UPDATE SET
             hash = excluded.hash, status = 0, attempts = 0, last_error = NULL, run_id = excluded.run_id
         WHERE sync_state.run_id <= excluded.run_id",
    )?;
    let mut forgotten = conn.prepare_cached(
        "DELETE FROM sync_state WHERE sync_id = ?1 AND key = ?2 AND run_id <= ?3",
    )?;
    let mut failed = conn.prepare_cached(
        "INSERT INTO sync_state (sync_id, key, hash, status, attempts, last_error, run_id)
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6)
         ON CONFLICT (sync_id, key) DO UPDATE SET
             hash = excluded.hash,
             status = CASE WHEN sync_state.status = 2 THEN 2 ELSE 1 END,
             attempts = sync_state.attempts + 1,
             last_error = excluded.last_error,
             run_id = excluded.run_id
         WHERE sync_state.run_id <= excluded.run_id",
    )?;
    let mut failed_removal = conn.prepare_cached(
        "UPDATE sync_state SET status = CASE WHEN status = 2 THEN 2 ELSE 1 END,
             attempts = attempts + 1, last_error = ?3, run_id = ?4
         WHERE sync_id = ?1 AND key = ?2 AND run_id <= ?4",
    )?;
    for o in &batch.latest {
        match (&o.delivery, o.change) {
            (Delivery::Delivered, Change::Removed) => {
                forgotten.execute(params![o.sync, o.key, o.run])?;
            }
            (Delivery::Delivered, _) => {
                synced.execute(params![o.sync, o.key, &o.hash.0[..], o.run])?;
            }
            (Delivery::DeadLettered { reason }, Change::Removed) => {
                failed_removal.execute(params![o.sync, o.key, reason, o.run])?;
            }
            (Delivery::DeadLettered { reason }, change) => {
                let status = if change == Change::Added {
                    KeyStatus::FailedNew
                } else {
                    KeyStatus::Failed
                };
                failed.execute(params![
                    o.sync,
                    o.key,
                    &o.hash.0[..],
                    status.code(),
                    reason,
                    o.run
                ])?;
            }
        }
    }
    let mut counters = conn.prepare_cached(
        "UPDATE sync_runs SET
             successful_added = successful_added + ?2, successful_changed = successful_changed + ?3,
             successful_removed = successful_removed + ?4, failed_added = failed_added + ?5,
             failed_changed = failed_changed + ?6, failed_removed = failed_removed + ?7
         WHERE id = ?1",
    )?;
    for (run, ok, bad) in &batch.counters {
        counters.execute(params![
            run,
            ok.added as i64,
            ok.changed as i64,
            ok.removed as i64,
            bad.added as i64,
            bad.changed as i64,
            bad.removed as i64
        ])?;
    }
    Ok(())
}
