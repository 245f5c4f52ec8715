//! The delivery hook on SQLite: row outcomes move key state and run
//! counters, inside the caller's transaction (the outbox's write job).

use rusqlite::{params, Connection};

use crate::storage::syncs::{Change, Delivery, KeyStatus, OutcomeBatch, RowOutcome};
use crate::storage::StorageError;

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
