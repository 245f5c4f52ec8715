//! Cold tables on PostgreSQL: the quarantine, dead letters and consent
//! holds. They are small and change rarely, so they are ordinary tables
//! with ordinary deletes.

use std::sync::Arc;

use super::ingest::{insert_outbox, OutboxRows};
use super::PgStorage;
use crate::storage::syncs::SettledRow;
use crate::storage::{
    DeadLetter, HeldEvent, HoldCommit, HoldOutcome, QuarantineEntry, RuleQuarantine, StorageError,
};
use crate::time::now_ms;

fn quarantine_entry(r: &tokio_postgres::Row) -> QuarantineEntry {
    QuarantineEntry {
        id: r.get(0),
        source: r.get(1),
        received_at_ms: r.get(2),
        reason: r.get(3),
        detail: r.get(4),
        raw: r.get(5),
        destination: r.get(6),
        rule: r.get(7),
        message_id: r.get(8),
    }
}

pub(super) async fn quarantine_list(
    store: &Arc<PgStorage>,
    limit: usize,
) -> Result<Vec<QuarantineEntry>, StorageError> {
    let client = store.client().await?;
    let rows = client
        .query(
            "SELECT id, source, received_at_ms, reason, detail, raw, destination, rule, message_id FROM quarantine
             ORDER BY id DESC LIMIT $1",
            &[&(limit as i64)],
        )
        .await?;
    Ok(rows.iter().map(quarantine_entry).collect())
}

pub(super) async fn quarantine_get(
    store: &Arc<PgStorage>,
    ids: Vec<i64>,
) -> Result<Vec<QuarantineEntry>, StorageError> {
    let client = store.client().await?;
    let rows = client
        .query(
            "SELECT q.id, q.source, q.received_at_ms, q.reason, q.detail, q.raw, q.destination, q.rule, q.message_id
             FROM unnest($1::bigint[]) WITH ORDINALITY AS u(id, n) JOIN quarantine q ON q.id = u.id
             ORDER BY u.n",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(quarantine_entry).collect())
}

pub(super) async fn quarantine_remove(
    store: &Arc<PgStorage>,
    ids: Vec<i64>,
) -> Result<(), StorageError> {
    let client = store.client().await?;
    client
        .execute("DELETE FROM quarantine WHERE id = ANY($1)", &[&ids])
        .await?;
    Ok(())
}

/// Moves outbox entries a destination's rules quarantined to the
/// quarantine, with the rule and its reason, and marks them done, in one
/// transaction.
pub(super) async fn outbox_quarantine(
    store: &Arc<PgStorage>,
    entries: Vec<RuleQuarantine>,
    rows: Vec<SettledRow>,
) -> Result<(), StorageError> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
    let (ds, seq) = super::queue::split_ids(&ids);
    let rules: Vec<Option<&str>> = entries.iter().map(|e| e.rule.as_deref()).collect();
    let reasons: Vec<&str> = entries.iter().map(|e| e.reason.as_str()).collect();
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    // Sync rows move their key state in this same transaction (issue #18).
    let outcomes = super::syncs::still_waiting(&tx, &ids, rows).await?;
    tx.execute(
        "INSERT INTO quarantine (source, received_at_ms, reason, detail, raw, destination, rule, message_id, granted)
         SELECT o.source, o.enqueued_at_ms, 'rule', u.reason, o.event, o.destination, u.rule, o.message_id, o.granted
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY AS u(ds, seq, rule, reason, n)
         JOIN outbox o ON o.ds = u.ds AND o.seq = u.seq
         WHERE NOT EXISTS (SELECT 1 FROM outbox_status s WHERE s.ds = o.ds AND s.seq = o.seq AND s.done)
         ORDER BY u.n",
        &[&ds, &seq, &rules, &reasons],
    )
    .await?;
    tx.execute(
        "INSERT INTO outbox_status (ds, seq, done, attempts, next_attempt_ms, error)
         SELECT ds, seq, true, 0, 0, 'quarantined' FROM unnest($1::bigint[], $2::bigint[]) AS u(ds, seq)
         WHERE u.ds IN (SELECT ds FROM datasets)",
        &[&ds, &seq],
    )
    .await?;
    super::syncs::record_outcomes(&tx, &outcomes).await?;
    tx.commit().await?;
    Ok(())
}

/// Moves quarantined events a destination's rules put there back to that
/// destination's outbox with a fresh age; returns the ids moved.
pub(super) async fn quarantine_requeue(
    store: &Arc<PgStorage>,
    ids: Vec<i64>,
) -> Result<Vec<i64>, StorageError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "DELETE FROM quarantine WHERE id = ANY($1) AND destination IS NOT NULL
             RETURNING id, destination, source, coalesce(message_id, ''), raw, granted",
            &[&ids],
        )
        .await?;
    let mut moved: Vec<(i64, String, String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    moved.sort_by_key(|m| m.0);
    let destinations: Vec<&str> = moved.iter().map(|m| m.1.as_str()).collect();
    let sources: Vec<&str> = moved.iter().map(|m| m.2.as_str()).collect();
    let message_ids: Vec<&str> = moved.iter().map(|m| m.3.as_str()).collect();
    let events: Vec<&str> = moved.iter().map(|m| m.4.as_str()).collect();
    let granted: Vec<&str> = moved.iter().map(|m| m.5.as_str()).collect();
    let rows = OutboxRows {
        destinations: &destinations,
        sources: &sources,
        message_ids: &message_ids,
        events: &events,
        granted: &granted,
    };
    insert_outbox(&tx, &rows, now_ms()).await?;
    tx.commit().await?;
    Ok(moved.iter().map(|m| m.0).collect())
}

pub(super) async fn dead_letters(
    store: &Arc<PgStorage>,
    destination: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, StorageError> {
    let client = store.client().await?;
    let rows = client
        .query(
            "SELECT id, destination, source, message_id, enqueued_at_ms, failed_at_ms, attempts, reason, event
             FROM dead_letters WHERE destination = $1 ORDER BY id LIMIT $2",
            &[&destination, &(limit as i64)],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let event: String = r.get(8);
        let event = serde_json::value::RawValue::from_string(event)
            .or_else(|_| serde_json::value::RawValue::from_string("null".into()))
            .map_err(|e| StorageError::Sql(e.to_string()))?;
        out.push(DeadLetter {
            id: r.get(0),
            destination: r.get(1),
            source: r.get(2),
            message_id: r.get(3),
            enqueued_at_ms: r.get(4),
            failed_at_ms: r.get(5),
            attempts: r.get::<_, i32>(6).max(0) as u32,
            reason: r.get(7),
            event,
        });
    }
    Ok(out)
}

pub(super) async fn replay_dead_letters(
    store: &Arc<PgStorage>,
    destination: &str,
    ids: Option<Vec<i64>>,
) -> Result<u64, StorageError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    // Taken under a row lock, so two workers replaying at once move each letter once.
    let rows = tx
        .query(
            "DELETE FROM dead_letters
             WHERE id IN (SELECT id FROM dead_letters
                          WHERE destination = $1 AND ($2::bigint[] IS NULL OR id = ANY($2))
                          ORDER BY id FOR UPDATE)
             RETURNING id, source, message_id, event, granted",
            &[&destination, &ids],
        )
        .await?;
    let mut rows: Vec<(i64, String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    rows.sort_by_key(|r| r.0);
    if !rows.is_empty() {
        let destinations: Vec<&str> = rows.iter().map(|_| destination).collect();
        let sources: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        let ids: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        let events: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
        let granted: Vec<&str> = rows.iter().map(|r| r.4.as_str()).collect();
        let outbox = OutboxRows {
            destinations: &destinations,
            sources: &sources,
            message_ids: &ids,
            events: &events,
            granted: &granted,
        };
        insert_outbox(&tx, &outbox, now_ms()).await?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

fn bump(list: &mut Vec<(Arc<str>, usize)>, destination: &Arc<str>, n: usize) {
    if n == 0 {
        return;
    }
    match list.iter_mut().find(|(d, _)| d == destination) {
        Some((_, c)) => *c += n,
        None => list.push((Arc::clone(destination), n)),
    }
}

pub(super) async fn commit_holds(
    store: &Arc<PgStorage>,
    commit: HoldCommit,
) -> Result<HoldOutcome, StorageError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let outcome = write_holds(&tx, commit.held.iter(), &commit, now_ms()).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Writes `held` (holds of `commit`) and applies `commit`'s decisions in
/// the caller's transaction (the ingest commit's, or one of its own).
pub(super) async fn write_holds<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    held: impl Iterator<Item = &'a HeldEvent>,
    commit: &HoldCommit,
    now: i64,
) -> Result<HoldOutcome, StorageError> {
    let mut outcome = HoldOutcome::default();
    // 1. New holds.
    let insert = tx
        .prepare(
            "INSERT INTO consent_holds (destination, source, visitor, message_id, event, held_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (destination, message_id) DO NOTHING",
        )
        .await?;
    for h in held {
        let expires = commit
            .expires_at_ms
            .get(&h.destination)
            .copied()
            .unwrap_or(now);
        let n = tx
            .execute(
                &insert,
                &[
                    &&*h.destination,
                    &&*h.source,
                    &h.visitor,
                    &h.message_id,
                    &h.json,
                    &now,
                    &expires,
                ],
            )
            .await?;
        bump(&mut outcome.held, &h.destination, n as usize);
    }
    // 2. Decisions. The holds are deleted and returned in one statement, so
    //    when two workers settle the same visitor at once each hold is
    //    released (or dropped) by exactly one of them.
    for s in &commit.settled {
        let rows = tx
            .query(
                "DELETE FROM consent_holds WHERE destination = $1 AND visitor = $2
                 RETURNING id, source, message_id, event",
                &[&&*s.destination, &s.visitor],
            )
            .await?;
        let n = rows.len();
        match &s.granted {
            Some(decision) => {
                let mut held: Vec<(i64, String, String, String)> = rows
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get::<_, &str>(3).to_owned()))
                    .collect();
                held.sort_by_key(|h| h.0);
                if !held.is_empty() {
                    // Released with the deciding event's decision; the
                    // held event's JSON is not edited.
                    let destinations: Vec<&str> = held.iter().map(|_| &*s.destination).collect();
                    let sources: Vec<&str> = held.iter().map(|h| h.1.as_str()).collect();
                    let ids: Vec<&str> = held.iter().map(|h| h.2.as_str()).collect();
                    let events: Vec<&str> = held.iter().map(|h| h.3.as_str()).collect();
                    let granted: Vec<&str> = held.iter().map(|_| decision.as_str()).collect();
                    let rows = OutboxRows {
                        destinations: &destinations,
                        sources: &sources,
                        message_ids: &ids,
                        events: &events,
                        granted: &granted,
                    };
                    insert_outbox(tx, &rows, now).await?;
                }
                bump(&mut outcome.released, &s.destination, n);
            }
            None => bump(&mut outcome.dropped, &s.destination, n),
        }
    }
    Ok(outcome)
}

pub(super) async fn expire_holds(
    store: &Arc<PgStorage>,
    destination: &str,
    now_ms: i64,
) -> Result<u64, StorageError> {
    let client = store.client().await?;
    Ok(client
        .execute(
            "DELETE FROM consent_holds WHERE destination = $1 AND expires_at_ms <= $2",
            &[&destination, &now_ms],
        )
        .await?)
}

/// Rows of `table` that belong to `destination`.
pub(super) async fn count_for(
    store: &Arc<PgStorage>,
    table: &'static str,
    destination: &str,
) -> Result<u64, StorageError> {
    let client = store.client().await?;
    let n: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE destination = $1"),
            &[&destination],
        )
        .await?
        .get(0);
    Ok(n as u64)
}
