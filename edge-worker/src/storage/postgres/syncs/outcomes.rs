//! The delivery hook on PostgreSQL: row outcomes move key state and run
//! counters, inside the caller's transaction (the outbox's own).

use std::collections::HashSet;

use tokio_postgres::Transaction;

use crate::storage::syncs::{Change, Delivery, KeyStatus, OutcomeBatch, RowOutcome, SettledRow};
use crate::storage::StorageError;

/// The outcomes among `rows` whose entry is among `ids` and not done yet,
/// read in the caller's transaction before it marks those entries done,
/// so an entry already settled (or never there) records nothing. Free
/// when `rows` is empty, as it is for every entry that is not a sync's row.
///
/// # Design
/// Each row's entry is locked first (a transaction-scoped advisory lock on
/// its id, taken in id order), and the check that follows is a statement
/// of its own, so it reads with a snapshot taken after the lock: two
/// workers settling the same entry at once (a lease overlap) record its
/// row once, the second seeing the first's status rows.
pub(crate) async fn still_waiting(
    tx: &Transaction<'_>,
    ids: &[i64],
    rows: Vec<SettledRow>,
) -> Result<Vec<RowOutcome>, StorageError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: HashSet<i64> = ids.iter().copied().collect();
    let rows: Vec<SettledRow> = rows
        .into_iter()
        .filter(|r| ids.contains(&r.entry))
        .collect();
    let mut entries: Vec<i64> = rows.iter().map(|r| r.entry).collect();
    entries.sort_unstable();
    entries.dedup();
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    tx.execute(
        "SELECT pg_advisory_xact_lock(u.id) FROM unnest($1::bigint[]) AS u(id)",
        &[&entries],
    )
    .await?;
    let (ds, seq) = super::super::queue::split_ids(&entries);
    let open: HashSet<i64> = tx
        .query(
            "SELECT u.id FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, ds, seq)
             JOIN outbox o ON o.ds = u.ds AND o.seq = u.seq
             WHERE NOT EXISTS (SELECT 1 FROM outbox_status s WHERE s.ds = o.ds AND s.seq = o.seq AND s.done)",
            &[&entries, &ds, &seq],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(rows
        .into_iter()
        .filter(|r| open.contains(&r.entry))
        .map(|r| r.outcome)
        .collect())
}

/// Applies row outcomes to key state and run counters inside the caller's
/// transaction. The outbox calls this in the transaction that marks the
/// entries carrying these rows done (a pooled `deadpool_postgres`
/// transaction derefs to this type).
pub(crate) async fn record_outcomes(
    client: &Transaction<'_>,
    outcomes: &[RowOutcome],
) -> Result<(), StorageError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let batch = OutcomeBatch::of(outcomes);
    #[derive(Default)]
    struct Columns<'a> {
        sync: Vec<i64>,
        key: Vec<&'a str>,
        hash: Vec<&'a [u8]>,
        status: Vec<i32>,
        error: Vec<&'a str>,
        run: Vec<i64>,
    }
    impl<'a> Columns<'a> {
        fn push(&mut self, o: &'a RowOutcome, status: i32, error: &'a str) {
            self.sync.push(o.sync);
            self.key.push(&o.key);
            self.hash.push(&o.hash.0);
            self.status.push(status);
            self.error.push(error);
            self.run.push(o.run);
        }
    }
    let (mut synced, mut forgotten, mut failed, mut failed_removal) = (
        Columns::default(),
        Columns::default(),
        Columns::default(),
        Columns::default(),
    );
    for o in &batch.latest {
        match (&o.delivery, o.change) {
            (Delivery::Delivered, Change::Removed) => forgotten.push(o, 0, ""),
            (Delivery::Delivered, _) => synced.push(o, 0, ""),
            (Delivery::DeadLettered { reason }, Change::Removed) => {
                failed_removal.push(o, 0, reason)
            }
            (Delivery::DeadLettered { reason }, change) => {
                let status = if change == Change::Added {
                    KeyStatus::FailedNew
                } else {
                    KeyStatus::Failed
                };
                failed.push(o, status.code(), reason)
            }
        }
    }
    if !synced.key.is_empty() {
        client
            .execute(
                "INSERT INTO sync_state (sync_id, key, hash, status, attempts, last_error, run_id)
                 SELECT s, k, h, 0, 0, NULL, r
                 FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bigint[]) AS u(s, k, h, r)
                 ON CONFLICT (sync_id, key) DO UPDATE SET
                     hash = excluded.hash, status = 0, attempts = 0, last_error = NULL,
                     run_id = excluded.run_id
                 WHERE sync_state.run_id <= excluded.run_id",
                &[&synced.sync, &synced.key, &synced.hash, &synced.run],
            )
            .await?;
    }
    if !forgotten.key.is_empty() {
        client
            .execute(
                "DELETE FROM sync_state d
                 USING unnest($1::bigint[], $2::text[], $3::bigint[]) AS u(s, k, r)
                 WHERE d.sync_id = u.s AND d.key = u.k AND d.run_id <= u.r",
                &[&forgotten.sync, &forgotten.key, &forgotten.run],
            )
            .await?;
    }
    if !failed.key.is_empty() {
        client
            .execute(
                "INSERT INTO sync_state (sync_id, key, hash, status, attempts, last_error, run_id)
                 SELECT s, k, h, st, 1, e, r
                 FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::integer[], $5::text[], $6::bigint[])
                      AS u(s, k, h, st, e, r)
                 ON CONFLICT (sync_id, key) DO UPDATE SET
                     hash = excluded.hash,
                     status = CASE WHEN sync_state.status = 2 THEN 2 ELSE 1 END,
                     attempts = sync_state.attempts + 1,
                     last_error = excluded.last_error,
                     run_id = excluded.run_id
                 WHERE sync_state.run_id <= excluded.run_id",
                &[
                    &failed.sync,
                    &failed.key,
                    &failed.hash,
                    &failed.status,
                    &failed.error,
                    &failed.run,
                ],
            )
            .await?;
    }
    if !failed_removal.key.is_empty() {
        client
            .execute(
                "UPDATE sync_state d SET status = CASE WHEN d.status = 2 THEN 2 ELSE 1 END,
                     attempts = d.attempts + 1, last_error = u.e, run_id = u.r
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS u(s, k, e, r)
                 WHERE d.sync_id = u.s AND d.key = u.k AND d.run_id <= u.r",
                &[
                    &failed_removal.sync,
                    &failed_removal.key,
                    &failed_removal.error,
                    &failed_removal.run,
                ],
            )
            .await?;
    }
    for (run, ok, bad) in &batch.counters {
        client
            .execute(
                "UPDATE sync_runs SET
                     successful_added = successful_added + $2, successful_changed = successful_changed + $3,
                     successful_removed = successful_removed + $4, failed_added = failed_added + $5,
                     failed_changed = failed_changed + $6, failed_removed = failed_removed + $7
                 WHERE id = $1",
                &[
                    run,
                    &(ok.added as i64),
                    &(ok.changed as i64),
                    &(ok.removed as i64),
                    &(bad.added as i64),
                    &(bad.changed as i64),
                    &(bad.removed as i64),
                ],
            )
            .await?;
    }
    Ok(())
}
