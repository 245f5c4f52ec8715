//! The ingest commit on PostgreSQL: dedup admission, outbox rows, the
//! quarantine, consent holds and decisions in one transaction, and dedup
//! partitions by day.
//!
//! # Design
//! Dedup keys live in `dedup`, partitioned by UTC day (`bucket`). A key is
//! new when no partition inside the window has it and the insert into the
//! current day's partition does not conflict. Two workers admitting the same
//! key at once conflict on the primary key: the second waits for the first
//! to commit and then sees a duplicate. Within a minute of midnight a key is
//! inserted into both days' partitions, so two workers whose clocks differ
//! by less than that still meet on one. Keys are inserted sorted, so two
//! commits never wait on each other in opposite orders.

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Transaction;

use super::{partition, PgStorage};
use crate::storage::{HoldOutcome, IngestCommit, IngestOutcome, StorageError, Stored};
use crate::time::now_ms;

/// How close to a day's boundary a key goes into both days' partitions.
const BOUNDARY_GRACE_MS: i64 = 60_000;

/// Inserts the keys into day `$1` unless a day in `[$4, $5)` has them;
/// returns those inserted.
const ADMIT: &str = "INSERT INTO dedup (bucket, source, message_id)
     SELECT $1::integer, u.source, u.message_id
     FROM unnest($2::text[], $3::text[]) AS u(source, message_id)
     WHERE NOT EXISTS (SELECT 1 FROM dedup d
                       WHERE d.bucket >= $4::integer AND d.bucket < $5::integer
                         AND d.source = u.source AND d.message_id = u.message_id)
     ON CONFLICT DO NOTHING
     RETURNING source, message_id";

/// Appends outbox rows to the current dataset, in array order.
const INSERT_OUTBOX: &str =
    "INSERT INTO outbox (ds, destination, source, message_id, event, enqueued_at_ms, granted)
     SELECT (SELECT max(ds) FROM datasets), destination, source, message_id, event, $1::bigint, granted
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
          WITH ORDINALITY AS u(destination, source, message_id, event, granted, n)
     ORDER BY n";

pub(super) async fn commit_ingest(
    store: &Arc<PgStorage>,
    commit: IngestCommit,
) -> Result<IngestOutcome, StorageError> {
    let now = now_ms();
    let buckets = store.buckets_at(now);
    for &b in &buckets {
        store.ensure_bucket(b).await?;
    }
    let oldest = ((now - store.dedup_window_ms) / store.bucket_ms) as i32;
    let mut stored = vec![Stored::Enqueued; commit.accepted.len()];
    // 1. Keys to admit, first occurrence in the request wins.
    let mut candidates: Vec<(&str, &str, usize)> = Vec::new();
    {
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        for (i, e) in commit.accepted.iter().enumerate() {
            if !e.dedup {
                continue;
            }
            if seen.insert((&*e.source, e.message_id.as_str())) {
                candidates.push((&*e.source, e.message_id.as_str(), i));
            } else {
                stored[i] = Stored::Duplicate;
            }
        }
    }
    candidates.sort_unstable();
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    if !candidates.is_empty() {
        // 2. Admitted into the current day (and its neighbour near
        //    midnight) unless an earlier day of the window has it: a key
        //    not inserted is a duplicate, seen earlier or just now by
        //    another commit.
        let first = buckets.first().copied().unwrap_or(oldest);
        let sources: Vec<&str> = candidates.iter().map(|c| c.0).collect();
        let ids: Vec<&str> = candidates.iter().map(|c| c.1).collect();
        let admit = tx.prepare_cached(ADMIT).await?;
        let mut known: HashSet<(&str, &str)> = HashSet::new();
        for b in &buckets {
            let rows = tx
                .query(&admit, &[b, &sources, &ids, &oldest, &first])
                .await?;
            let inserted: HashSet<(&str, &str)> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            for c in &candidates {
                if !inserted.contains(&(c.0, c.1)) {
                    known.insert((c.0, c.1));
                }
            }
        }
        for c in &candidates {
            if known.contains(&(c.0, c.1)) {
                stored[c.2] = Stored::Duplicate;
            }
        }
    }
    // 4. Outbox rows for the new events, in request order.
    let mut destinations: Vec<&str> = Vec::new();
    let mut sources: Vec<&str> = Vec::new();
    let mut ids: Vec<&str> = Vec::new();
    let mut events: Vec<&str> = Vec::new();
    let mut granted: Vec<&str> = Vec::new();
    for (e, s) in commit.accepted.iter().zip(&stored) {
        if *s != Stored::Enqueued {
            continue;
        }
        for d in &e.destinations {
            destinations.push(d);
            sources.push(&e.source);
            ids.push(&e.message_id);
            events.push(&e.json);
            granted.push(e.granted.as_str());
        }
    }
    if !destinations.is_empty() {
        let rows = OutboxRows {
            destinations: &destinations,
            sources: &sources,
            message_ids: &ids,
            events: &events,
            granted: &granted,
        };
        insert_outbox(&tx, &rows, now).await?;
    }
    // 5. The quarantine.
    if !commit.quarantined.is_empty() {
        let sources: Vec<&str> = commit.quarantined.iter().map(|q| &*q.source).collect();
        let reasons: Vec<&str> = commit.quarantined.iter().map(|q| q.reason).collect();
        let details: Vec<&str> = commit
            .quarantined
            .iter()
            .map(|q| q.detail.as_str())
            .collect();
        let raws: Vec<&str> = commit.quarantined.iter().map(|q| q.raw.as_str()).collect();
        tx.execute(
            "INSERT INTO quarantine (source, received_at_ms, reason, detail, raw)
             SELECT source, $1::bigint, reason, detail, raw
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(source, reason, detail, raw)",
            &[&now, &sources, &reasons, &details, &raws],
        )
        .await?;
    }
    // 6. Holds of the new events, and the request's consent decisions.
    let holds = if commit.holds.is_empty() {
        HoldOutcome::default()
    } else {
        let fresh: Vec<bool> = stored.iter().map(|s| *s == Stored::Enqueued).collect();
        let held = commit.holds.of_fresh(&commit.accepted, &fresh);
        super::holds::write_holds(&tx, held.into_iter(), &commit.holds, now).await?
    };
    tx.commit().await?;
    Ok(IngestOutcome { stored, holds })
}

/// Outbox rows to append, one per index of each (equally long) column.
pub(super) struct OutboxRows<'a> {
    pub destinations: &'a [&'a str],
    pub sources: &'a [&'a str],
    pub message_ids: &'a [&'a str],
    pub events: &'a [&'a str],
    /// Each event's granted purposes ([`crate::consent::GrantedPurposes`]'s stored form).
    pub granted: &'a [&'a str],
}

/// Appends outbox rows to the current dataset, in array order.
pub(super) async fn insert_outbox(
    tx: &Transaction<'_>,
    rows: &OutboxRows<'_>,
    now: i64,
) -> Result<(), StorageError> {
    let xact = tx.prepare_cached("SELECT pg_current_xact_id()").await?;
    let insert = tx.prepare_cached(INSERT_OUTBOX).await?;
    // The transaction takes its id before it draws sequence numbers, so a
    // scan floor (queue.rs) that waits for older transactions waits for it.
    // Both statements go in one round trip, run in the order sent.
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &now,
        &rows.destinations,
        &rows.sources,
        &rows.message_ids,
        &rows.events,
        &rows.granted,
    ];
    let (xact, inserted) = tokio::join!(tx.execute(&xact, &[]), tx.execute(&insert, &params));
    xact?;
    inserted?;
    Ok(())
}

/// Drops the dedup partitions that end before `cutoff_ms`; returns how many
/// keys went with them.
pub(super) async fn prune_dedup(
    store: &Arc<PgStorage>,
    cutoff_ms: i64,
) -> Result<u64, StorageError> {
    let mut client = store.client().await?;
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'dedup'::regclass",
            &[],
        )
        .await?;
    let mut pruned = 0u64;
    for row in rows {
        let name: String = row.get(0);
        let Some(bucket) = name
            .strip_prefix("dedup_ds")
            .and_then(|b| b.parse::<i64>().ok())
        else {
            continue;
        };
        if (bucket + 1) * store.bucket_ms > cutoff_ms {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL lock_timeout = '200ms'").await?;
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await?
            .get(0);
        tx.batch_execute(&format!("DROP TABLE {name}")).await?;
        tx.commit().await?;
        pruned += n as u64;
        if let Ok(mut known) = store.dedup_buckets.lock() {
            known.retain(|&b| b as i64 != bucket);
        }
    }
    Ok(pruned)
}

impl PgStorage {
    /// The dedup partitions a key admitted at `now` goes into: its day, and
    /// the neighbouring day within [`BOUNDARY_GRACE_MS`] of midnight.
    fn buckets_at(&self, now: i64) -> Vec<i32> {
        let day = now / self.bucket_ms;
        let mut out = vec![day as i32];
        let into = now - day * self.bucket_ms;
        if into < BOUNDARY_GRACE_MS {
            out.insert(0, day as i32 - 1);
        } else if self.bucket_ms - into < BOUNDARY_GRACE_MS {
            out.push(day as i32 + 1);
        }
        out
    }

    /// Creates the dedup partition for `bucket` unless known to exist.
    pub(super) async fn ensure_bucket(&self, bucket: i32) -> Result<(), StorageError> {
        if self
            .dedup_buckets
            .lock()
            .map(|k| k.contains(&bucket))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let client = self.client().await?;
        let name = partition("dedup", bucket as i64);
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF dedup FOR VALUES IN ({bucket})"
        );
        if let Err(e) = client.batch_execute(&sql).await {
            // Another worker created it at the same moment.
            let raced = e.code().is_some_and(|c| {
                *c == tokio_postgres::error::SqlState::DUPLICATE_TABLE
                    || *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            });
            if !raced {
                return Err(e.into());
            }
        }
        if let Ok(mut known) = self.dedup_buckets.lock() {
            known.push(bucket);
        }
        Ok(())
    }
}
