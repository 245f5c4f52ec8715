//! Dataset upkeep: the outbox partitions are made ahead, started, and
//! removed whole once drained, without stalling ingest or delivery.
//!
//! # Design
//! Every statement of ingest and delivery reads or writes the partitioned
//! parents `outbox` and `outbox_status`, all the time. So no step here asks
//! for a lock on a parent that conflicts with theirs:
//! - **Made ahead.** The partition of the next dataset is created as a
//!   standalone table and attached with `ATTACH PARTITION` (a `SHARE UPDATE
//!   EXCLUSIVE` lock on the parent, which reads and inserts do not wait
//!   for; `CREATE TABLE … PARTITION OF` needs `ACCESS EXCLUSIVE`). It takes
//!   no entries until a row in `datasets` starts it: ingest writes to the
//!   newest started dataset.
//! - **Drain check, incremental.** An older dataset is walked in `seq`
//!   order up to its first entry not done; the cursor remembers how far
//!   every entry is done, so each pass reads only what was done since the
//!   last.
//! - **Confirmed, then detached.** Once the walk finds nothing pending, a
//!   transaction takes a `SHARE` lock on the dataset's partitions (it waits
//!   for commits writing to them and holds new ones back), checks again
//!   and deletes the `datasets` row, so outcomes for it are no longer
//!   written. Then `DETACH PARTITION … CONCURRENTLY` removes it from the
//!   parents without blocking them, and the detached tables are checked a
//!   last time under `ACCESS EXCLUSIVE` (nothing else reads them now) and
//!   dropped. An entry that a statement from before the confirmation
//!   still wrote puts the dataset back instead.
//! - **Resumable.** A worker killed half-way leaves a detach pending or a
//!   detached table; the next pass, on any worker, finishes it.
//!
//! One worker at a time runs a pass (a session advisory lock); the others
//! skip it.

use std::collections::HashMap;

use catalogue::{partition_tables, Attached, PartitionTable};
use tokio_postgres::GenericClient;

use super::{partition, PgStorage};
use crate::storage::StorageError;
use crate::time::now_ms;

mod catalogue;

/// The session advisory lock an upkeep pass holds.
const UPKEEP_LOCK: i64 = 1_465_470_276;

/// The two partitioned parents a dataset has a partition of.
const PARENTS: [&str; 2] = ["outbox", "outbox_status"];

/// Per older dataset: up to which `seq` every entry is known done.
pub(super) type DrainCursors = HashMap<i64, i64>;

impl PgStorage {
    /// One upkeep pass: the dedup partitions of today and tomorrow, the
    /// next dataset made ahead and started when due, drained datasets
    /// removed.
    pub(super) async fn maintain(&self) -> Result<(), StorageError> {
        let now = now_ms();
        let today = (now / self.bucket_ms) as i32;
        self.ensure_bucket(today).await?;
        self.ensure_bucket(today + 1).await?;
        // Held on one connection for the whole pass, so two workers never
        // remove the same dataset at once.
        let lock = self.client().await?;
        let locked: bool = lock
            .query_one("SELECT pg_try_advisory_lock($1)", &[&UPKEEP_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok(());
        }
        let pass = self.upkeep_pass(now).await;
        let unlocked = lock
            .execute("SELECT pg_advisory_unlock($1)", &[&UPKEEP_LOCK])
            .await;
        pass?;
        unlocked?;
        Ok(())
    }

    /// [`Self::maintain`]'s steps, under the upkeep lock.
    async fn upkeep_pass(&self, now: i64) -> Result<(), StorageError> {
        let client = self.client().await?;
        let started = started_datasets(&**client).await?;
        let Some(&(current, started_at)) = started.last() else {
            return Ok(());
        };
        let tables = partition_tables(&**client).await?;
        make_ahead(&**client, current + 1, &tables).await?;
        if now - started_at >= self.dataset_ms {
            // Started only if nobody started one meanwhile.
            let n = client
                .execute(
                    "INSERT INTO datasets (ds, started_at_ms)
                     SELECT $1, $2 WHERE (SELECT max(ds) FROM datasets) = $3",
                    &[&(current + 1), &now, &current],
                )
                .await?;
            if n > 0 {
                tracing::debug!(dataset = current + 1, "Outbox dataset started.");
            }
        }
        drop(client);
        self.finish_removals(&tables, &started).await?;
        for &(ds, _) in started.iter().filter(|(ds, _)| *ds < current) {
            if self.walk_drained(ds).await? {
                self.remove_dataset(ds).await?;
            }
        }
        Ok(())
    }

    /// Walks dataset `ds` from its cursor to its first entry not done;
    /// whether there is none.
    async fn walk_drained(&self, ds: i64) -> Result<bool, StorageError> {
        let cursor = self
            .drain_cursors
            .lock()
            .ok()
            .and_then(|c| c.get(&ds).copied())
            .unwrap_or(0);
        let client = self.client().await?;
        let (outbox, status) = (partition("outbox", ds), partition("outbox_status", ds));
        // In key order, stopping at the first entry not done: each done
        // entry is read once over the dataset's life, not once a pass.
        let first_open: Option<i64> = client
            .query_opt(
                &format!(
                    "SELECT o.seq FROM {outbox} o
                     WHERE o.ds = {ds} AND o.seq > $1
                       AND NOT EXISTS (SELECT 1 FROM {status} s WHERE s.seq = o.seq AND s.done)
                     ORDER BY o.ds, o.seq LIMIT 1"
                ),
                &[&cursor],
            )
            .await?
            .map(|r| r.get(0));
        let cursor = match first_open {
            Some(seq) => seq - 1,
            None => client
                .query_one(&format!("SELECT coalesce(max(seq), 0) FROM {outbox}"), &[])
                .await?
                .get(0),
        };
        if let Ok(mut c) = self.drain_cursors.lock() {
            c.insert(ds, cursor);
        }
        Ok(first_open.is_none())
    }

    /// Confirms dataset `ds` drained, detaches and drops it.
    async fn remove_dataset(&self, ds: i64) -> Result<(), StorageError> {
        let (outbox, status) = (partition("outbox", ds), partition("outbox_status", ds));
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL lock_timeout = '2s'").await?;
        // Commits writing to it end first; later ones wait for this one.
        if let Err(error) = tx
            .batch_execute(&format!("LOCK TABLE {outbox}, {status} IN SHARE MODE"))
            .await
        {
            tracing::debug!(dataset = ds, error = %error, "Dataset busy; removal waits.");
            return Ok(());
        }
        if pending(&*tx, ds).await? > 0 {
            // A commit that began before the dataset's successor wrote here.
            if let Ok(mut c) = self.drain_cursors.lock() {
                c.insert(ds, 0);
            }
            return Ok(());
        }
        let started: Option<i64> = tx
            .query_opt(
                "DELETE FROM datasets WHERE ds = $1 RETURNING started_at_ms",
                &[&ds],
            )
            .await?
            .map(|r| r.get(0));
        tx.commit().await?;
        for parent in PARENTS {
            detach(&**client, parent, ds, false).await?;
        }
        drop(client);
        self.drop_detached(ds, started.unwrap_or_else(now_ms)).await
    }

    /// The last check of a detached dataset, then its tables are dropped;
    /// put back when an entry turned up.
    async fn drop_detached(&self, ds: i64, started_at_ms: i64) -> Result<(), StorageError> {
        let (outbox, status) = (partition("outbox", ds), partition("outbox_status", ds));
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "LOCK TABLE {outbox}, {status} IN ACCESS EXCLUSIVE MODE"
        ))
        .await?;
        let left = pending(&*tx, ds).await?;
        if left == 0 {
            tx.batch_execute(&format!("DROP TABLE {outbox}, {status}"))
                .await?;
            tx.commit().await?;
            if let Ok(mut c) = self.drain_cursors.lock() {
                c.remove(&ds);
            }
            tracing::debug!(dataset = ds, "Drained outbox dataset dropped.");
            return Ok(());
        }
        tracing::warn!(
            dataset = ds,
            pending = left,
            "A commit wrote to an outbox dataset being removed; it is put back."
        );
        for parent in PARENTS {
            tx.batch_execute(&format!(
                "ALTER TABLE {parent} ATTACH PARTITION {} FOR VALUES IN ({ds})",
                partition(parent, ds)
            ))
            .await?;
        }
        tx.execute(
            "INSERT INTO datasets (ds, started_at_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&ds, &started_at_ms],
        )
        .await?;
        tx.commit().await?;
        if let Ok(mut c) = self.drain_cursors.lock() {
            c.insert(ds, 0);
        }
        Ok(())
    }

    /// Finishes what a killed pass left: a pending detach, or detached
    /// tables not yet dropped, of datasets no longer started.
    async fn finish_removals(
        &self,
        tables: &[PartitionTable],
        started: &[(i64, i64)],
    ) -> Result<(), StorageError> {
        let newest = started.last().map_or(0, |d| d.0);
        let is_started = |ds: i64| started.iter().any(|d| d.0 == ds);
        let mut left: Vec<i64> = Vec::new();
        for t in tables {
            if t.ds > newest || is_started(t.ds) {
                continue;
            }
            if let Some(attached) = t.attached {
                let client = self.client().await?;
                let finalize = attached == Attached::DetachPending;
                detach(&**client, t.parent, t.ds, finalize).await?;
            }
            if !left.contains(&t.ds) {
                left.push(t.ds);
            }
        }
        for ds in left {
            self.drop_detached(ds, now_ms()).await?;
        }
        Ok(())
    }
}

/// Makes the partitions of dataset `ds` ahead of its start.
async fn make_ahead(
    client: &impl GenericClient,
    ds: i64,
    tables: &[PartitionTable],
) -> Result<(), StorageError> {
    for parent in PARENTS {
        let name = partition(parent, ds);
        match tables.iter().find(|t| t.parent == parent && t.ds == ds) {
            Some(t) if t.attached == Some(Attached::Yes) => continue,
            Some(_) => {}
            None => {
                client
                    .batch_execute(&format!(
                    "CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ))
                    .await?;
            }
        }
        client
            .batch_execute(&format!(
                "ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES IN ({ds})"
            ))
            .await?;
    }
    Ok(())
}

/// `DETACH PARTITION … CONCURRENTLY` (or `FINALIZE` of one that stopped
/// half-way); a partition already detached is left as it is.
async fn detach(
    client: &impl GenericClient,
    parent: &str,
    ds: i64,
    finalize: bool,
) -> Result<(), StorageError> {
    let how = if finalize { "FINALIZE" } else { "CONCURRENTLY" };
    let sql = format!(
        "ALTER TABLE {parent} DETACH PARTITION {} {how}",
        partition(parent, ds)
    );
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // Another pass detached it meanwhile.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Entries of dataset `ds` not done, read from its own tables.
async fn pending(client: &impl GenericClient, ds: i64) -> Result<i64, StorageError> {
    let (outbox, status) = (partition("outbox", ds), partition("outbox_status", ds));
    Ok(client
        .query_one(
            &format!(
                "SELECT count(*) FROM {outbox} o WHERE NOT EXISTS
                 (SELECT 1 FROM {status} s WHERE s.seq = o.seq AND s.done)"
            ),
            &[],
        )
        .await?
        .get(0))
}

/// The started datasets, oldest first, with their start times.
async fn started_datasets(client: &impl GenericClient) -> Result<Vec<(i64, i64)>, StorageError> {
    Ok(client
        .query("SELECT ds, started_at_ms FROM datasets ORDER BY ds", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
