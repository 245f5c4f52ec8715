//! The delivery queue on PostgreSQL: leases, due entries, outcomes, depth,
//! and dataset upkeep.
//!
//! # Design
//! - **Leases.** One worker at a time drains a destination: the one whose
//!   row in `leases` has not expired. It renews the lease every third of
//!   `lease_secs`; a killed worker's lease runs out and the next worker that
//!   polls takes it over (expiry is on the database's clock). This keeps the destination's order exactly as on
//!   the embedded store, and no entry is sent by two workers at once while
//!   both live. (A worker that stalls past its lease may overlap once with
//!   its successor: delivery is at least once, and vendors dedup on
//!   `messageId`.)
//! - **Append-only outcomes.** Delivered, retry and dead-letter decisions
//!   append to `outbox_status`; the newest row of an entry wins. No entry
//!   is updated or deleted one by one.
//! - **Datasets.** Entries go to the newest dataset (a partition of
//!   `outbox` and one of `outbox_status`). Every `dataset_secs` a new one
//!   starts; an older dataset whose entries are all done is dropped whole
//!   ([`super::datasets`]). Outcomes are written only for datasets still
//!   started, so one being removed takes no more rows.
//!
//! An entry's id packs its dataset and sequence number:
//! `ds << ID_SEQ_BITS | seq`, so ids grow with commit order and name their
//! partition.

use std::sync::Arc;

use super::{syncs, PgStorage};
use crate::consent::GrantedPurposes;
use crate::storage::syncs::SettledRow;
use crate::storage::{OutboxEntry, StorageError};
use crate::time::now_ms;

/// Above this many pending entries, a destination's depth is recounted
/// only every [`DEEP_RECOUNT`].
const DEEP_QUEUE: u64 = 50_000;

/// How long a deep queue's count is reused.
const DEEP_RECOUNT: std::time::Duration = std::time::Duration::from_secs(30);

/// Bits of an entry id that hold its sequence number.
const ID_SEQ_BITS: u32 = 40;

/// An entry id from its dataset and sequence number.
fn entry_id(ds: i64, seq: i64) -> i64 {
    (ds << ID_SEQ_BITS) | seq_of(seq)
}

/// The sequence number of an entry id.
fn seq_of(id: i64) -> i64 {
    id & ((1 << ID_SEQ_BITS) - 1)
}

/// Dataset and sequence number of an entry id.
pub(super) fn split_ids(ids: &[i64]) -> (Vec<i64>, Vec<i64>) {
    ids.iter()
        .map(|&id| (id >> ID_SEQ_BITS, seq_of(id)))
        .unzip()
}

/// Where the lease holder's scan of one destination's queue starts, so a
/// poll reads only what is new or not done rather than the whole dataset
/// (which made each poll cost as much as the dataset held).
///
/// Sequence numbers are drawn before commit, so a row with a lower `seq`
/// than a visible one may still appear. The floor therefore moves only up
/// to `safe_seq`: the sequence's last value read when every transaction
/// that was running then (each takes its id before drawing a number) has
/// since ended. Below the floor every row is done.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ScanFloor {
    /// Every entry of the destination with `seq <= floor` is done.
    floor: i64,
    /// Up to which `seq` every row is visible.
    safe_seq: i64,
    /// A later `safe_seq` (the sequence's last value) and the transaction
    /// id from which on it is valid: once no transaction older runs.
    candidate: Option<(i64, i64)>,
}

impl PgStorage {
    /// Advances `destination`'s scan floor as far as is safe; returns it.
    async fn scan_floor(&self, destination: &str) -> Result<i64, StorageError> {
        let mut f = self
            .floors
            .lock()
            .ok()
            .and_then(|m| m.get(destination).copied())
            .unwrap_or_default();
        let client = self.client().await?;
        let xmin = client
            .prepare_cached("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .await?;
        let xmin: i64 = client.query_one(&xmin, &[]).await?.get(0);
        let renew = match f.candidate {
            Some((seq, until)) if xmin >= until => {
                f.safe_seq = seq;
                true
            }
            Some(_) => false,
            None => true,
        };
        if renew {
            // The sequence first, then a fresh transaction id: a transaction
            // that drew a number up to `last` took its id before, so its id
            // is below `next_xid`, and once the oldest running transaction
            // is at or past `next_xid` it has ended. (The bound may not come
            // from a snapshot: its `xmax` is one past the newest *completed*
            // id, below ids still running.) One id is used per renewal.
            // Both go in one round trip, run in the order sent.
            let last = client
                .prepare_cached(
                    "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM outbox_seq",
                )
                .await?;
            let next_xid = client
                .prepare_cached("SELECT pg_current_xact_id()::text::bigint")
                .await?;
            let (last, next_xid) = tokio::join!(
                client.query_one(&last, &[]),
                client.query_one(&next_xid, &[])
            );
            f.candidate = Some((last?.get(0), next_xid?.get(0)));
        }
        if f.safe_seq > f.floor {
            let first_open = client
                .prepare_cached(
                    "SELECT min(o.seq) FROM (
                         SELECT o.ds, o.seq FROM outbox o
                         WHERE o.destination = $1 AND o.seq > $2 AND o.seq <= $3
                           AND NOT EXISTS (SELECT 1 FROM outbox_status s
                                           WHERE s.ds = o.ds AND s.seq = o.seq AND s.done)
                         ORDER BY o.seq LIMIT 1) o",
                )
                .await?;
            let first_open: Option<i64> = client
                .query_one(&first_open, &[&destination, &f.floor, &f.safe_seq])
                .await?
                .get(0);
            f.floor = match first_open {
                Some(seq) => seq - 1,
                None => f.safe_seq,
            };
        }
        if let Ok(mut m) = self.floors.lock() {
            m.insert(destination.to_owned(), f);
        }
        Ok(f.floor)
    }

    /// Whether this worker holds `destination`'s lease, taking or renewing
    /// it when it is free, expired or about to expire.
    pub(super) async fn hold_lease(
        &self,
        destination: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        let held_until = self
            .leases
            .lock()
            .ok()
            .and_then(|l| l.get(destination).copied());
        if held_until.is_some_and(|t| t - now > self.lease_ms * 2 / 3) {
            return Ok(true);
        }
        let client = self.client().await?;
        // Expiry is on the database's clock, so workers' clocks need not agree.
        let row = client
            .query_opt(
                "WITH t AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now)
                 INSERT INTO leases AS l (destination, owner, expires_at_ms)
                 SELECT $1, $2, t.now + $3 FROM t
                 ON CONFLICT (destination) DO UPDATE SET owner = excluded.owner, expires_at_ms = excluded.expires_at_ms
                 WHERE l.owner = excluded.owner
                    OR l.expires_at_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                 RETURNING owner",
                &[&destination, &self.owner, &self.lease_ms],
            )
            .await?;
        let expires = now + self.lease_ms;
        let held = row.is_some();
        if let Ok(mut leases) = self.leases.lock() {
            if held {
                if held_until.is_none() {
                    tracing::info!(destination, owner = %self.owner, "Delivery lease taken.");
                }
                leases.insert(destination.to_owned(), expires);
            } else {
                leases.remove(destination);
            }
        }
        Ok(held)
    }

    /// Renews every lease this worker holds; forgets those it lost.
    pub(super) async fn renew_leases(&self) -> Result<(), StorageError> {
        let held: Vec<String> = match self.leases.lock() {
            Ok(l) if !l.is_empty() => l.keys().cloned().collect(),
            _ => return Ok(()),
        };
        let now = now_ms();
        let expires = now + self.lease_ms;
        let client = self.client().await?;
        let rows = client
            .query(
                "UPDATE leases SET expires_at_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $1
                 WHERE owner = $2 AND destination = ANY($3)
                 RETURNING destination",
                &[&self.lease_ms, &self.owner, &held],
            )
            .await?;
        let kept: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if let Ok(mut leases) = self.leases.lock() {
            leases.retain(|d, _| kept.contains(d));
            for d in kept {
                leases.insert(d, expires);
            }
        }
        Ok(())
    }

    /// Gives up this worker's lease of `destination`, if it holds it.
    pub(super) async fn release_lease(&self, destination: &str) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM leases WHERE destination = $1 AND owner = $2",
                &[&destination, &self.owner],
            )
            .await?;
        if let Ok(mut leases) = self.leases.lock() {
            leases.remove(destination);
        }
        if let Ok(mut floors) = self.floors.lock() {
            floors.remove(destination);
        }
        Ok(())
    }

    /// Gives up every lease (shutdown, tests), so others take over at once.
    pub(super) async fn release_leases(&self) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM leases WHERE owner = $1", &[&self.owner])
            .await?;
        if let Ok(mut leases) = self.leases.lock() {
            leases.clear();
        }
        Ok(())
    }

    pub(super) async fn due(
        &self,
        destination: &str,
        now: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        if !self.hold_lease(destination, now_ms()).await? {
            if let Ok(mut m) = self.floors.lock() {
                // Another worker drains it meanwhile: start over if it returns.
                m.remove(destination);
            }
            return Ok(Vec::new());
        }
        let floor = self.scan_floor(destination).await?;
        // Ordered by `seq` alone (unique, drawn in commit order), so each
        // partition's `(destination, seq)` index yields rows in order and
        // the merge of them stops at the limit; ordered by `(ds, seq)` the
        // planner sorted every row above the floor, each poll.
        let start = floor.max(seq_of(after_id));
        let client = self.client().await?;
        let due = client
            .prepare_cached(
                "SELECT o.ds, o.seq, o.source, o.message_id, o.event, o.enqueued_at_ms,
                        coalesce(s.attempts, 0), o.granted
                 FROM outbox o
                 LEFT JOIN LATERAL (
                     SELECT done, attempts, next_attempt_ms FROM outbox_status s
                     WHERE s.ds = o.ds AND s.seq = o.seq ORDER BY s.id DESC LIMIT 1
                 ) s ON true
                 WHERE o.destination = $1 AND o.seq > $2
                   AND (s.done IS NULL OR (NOT s.done AND s.next_attempt_ms <= $3))
                 ORDER BY o.seq
                 LIMIT $4",
            )
            .await?;
        let rows = client
            .query(&due, &[&destination, &start, &now, &(limit as i64)])
            .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxEntry {
                id: entry_id(r.get(0), r.get(1)),
                source: r.get(2),
                message_id: r.get(3),
                granted: GrantedPurposes::from_stored(r.get::<_, &str>(7)),
                json: Arc::from(r.get::<_, &str>(4)),
                enqueued_at_ms: r.get(5),
                attempts: r.get::<_, i32>(6).max(0) as u32,
            })
            .collect())
    }

    /// Marks entries done. Without sync rows this is one statement, as
    /// the ingest-to-deliver hot path needs; with them, a transaction that
    /// also moves their key state (issue #18).
    pub(super) async fn mark_done(
        &self,
        ids: &[i64],
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError> {
        const MARK_DONE: &str =
            "INSERT INTO outbox_status (ds, seq, done, attempts, next_attempt_ms)
             SELECT ds, seq, true, 0, 0 FROM unnest($1::bigint[], $2::bigint[]) AS u(ds, seq)
             WHERE u.ds IN (SELECT ds FROM datasets)";
        if ids.is_empty() {
            return Ok(());
        }
        let (ds, seq) = split_ids(ids);
        let mut client = self.client().await?;
        if rows.is_empty() {
            let mark = client.prepare_cached(MARK_DONE).await?;
            client.execute(&mark, &[&ds, &seq]).await?;
            return Ok(());
        }
        let tx = client.transaction().await?;
        let outcomes = syncs::still_waiting(&tx, ids, rows).await?;
        tx.execute(MARK_DONE, &[&ds, &seq]).await?;
        syncs::record_outcomes(&tx, &outcomes).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn retry(
        &self,
        ids: &[i64],
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (ds, seq) = split_ids(ids);
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO outbox_status (ds, seq, done, attempts, next_attempt_ms, error)
                 SELECT u.ds, u.seq, false,
                        coalesce((SELECT s.attempts FROM outbox_status s
                                  WHERE s.ds = u.ds AND s.seq = u.seq ORDER BY s.id DESC LIMIT 1), 0) + 1,
                        $3::bigint, $4::text
                 FROM unnest($1::bigint[], $2::bigint[]) AS u(ds, seq)
                 WHERE u.ds IN (SELECT ds FROM datasets)",
                &[&ds, &seq, &next_attempt_ms, &error],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn dead_letter(
        &self,
        ids: &[i64],
        reason: &str,
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (ds, seq) = split_ids(ids);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Sync rows move their key state in this same transaction (issue #18).
        let outcomes = syncs::still_waiting(&tx, ids, rows).await?;
        tx.execute(
            "INSERT INTO dead_letters
               (destination, source, message_id, event, enqueued_at_ms, failed_at_ms, attempts, reason, granted)
             SELECT o.destination, o.source, o.message_id, o.event, o.enqueued_at_ms, $3::bigint,
                    coalesce((SELECT s.attempts FROM outbox_status s
                              WHERE s.ds = o.ds AND s.seq = o.seq ORDER BY s.id DESC LIMIT 1), 0) + 1,
                    $4::text, o.granted
             FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS u(ds, seq, n)
             JOIN outbox o ON o.ds = u.ds AND o.seq = u.seq
             WHERE NOT EXISTS (SELECT 1 FROM outbox_status s WHERE s.ds = o.ds AND s.seq = o.seq AND s.done)
             ORDER BY u.n",
            &[&ds, &seq, &now_ms(), &reason],
        )
        .await?;
        tx.execute(
            "INSERT INTO outbox_status (ds, seq, done, attempts, next_attempt_ms, error)
             SELECT ds, seq, true, 0, 0, $3::text FROM unnest($1::bigint[], $2::bigint[]) AS u(ds, seq)
             WHERE u.ds IN (SELECT ds FROM datasets)",
            &[&ds, &seq, &reason],
        )
        .await?;
        syncs::record_outcomes(&tx, &outcomes).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn depth(&self, destination: &str) -> Result<u64, StorageError> {
        // A deep queue is recounted only every `DEEP_RECOUNT`: counting costs
        // a read of every pending row, and the gauge is read every few seconds.
        let cached = self
            .depths
            .lock()
            .ok()
            .and_then(|d| d.get(destination).copied());
        if let Some((n, at)) = cached {
            if n > DEEP_QUEUE && at.elapsed() < DEEP_RECOUNT {
                return Ok(n);
            }
        }
        // Below the scan floor every entry is done: count only above it, so
        // the gauge costs what is pending, not what the dataset holds.
        let floor = self.scan_floor(destination).await?;
        // Each entry's outcome is looked up by its index (a subplan per
        // row): as `NOT EXISTS` the planner hashed every outcome of the
        // dataset instead, a scan of the whole partition each time.
        let client = self.client().await?;
        let count = client
            .prepare_cached(
                "SELECT count(*) FROM outbox o WHERE o.destination = $1 AND o.seq > $2
                 AND NOT coalesce((SELECT true FROM outbox_status s
                                   WHERE s.ds = o.ds AND s.seq = o.seq AND s.done LIMIT 1), false)",
            )
            .await?;
        let n: i64 = client
            .query_one(&count, &[&destination, &floor])
            .await?
            .get(0);
        if let Ok(mut d) = self.depths.lock() {
            d.insert(
                destination.to_owned(),
                (n as u64, std::time::Instant::now()),
            );
        }
        Ok(n as u64)
    }
}
