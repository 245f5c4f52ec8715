//! What delivery needs from the store beyond the outbox: the dead-letter
//! store's list and replay, and consent holds (events waiting for a
//! visitor's decision before they may reach a destination).
//!
//! The [`Storage`](super::Storage) methods of the SQLite store delegate to
//! the functions here, so delivery's SQL sits in one file (issue #5).

pub(crate) mod person;

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::outbox::{self, PackMeta};
use super::sqlite::{self, SqliteStorage};
use super::syncs::SettledRow;
use super::StorageError;
use crate::time::now_ms;

/// The `delivery` module's migrations, applied by `SqliteStorage::open`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: consent holds.
    r#"
    CREATE TABLE consent_holds (
        id              INTEGER PRIMARY KEY,
        destination     TEXT NOT NULL,
        source          TEXT NOT NULL,
        visitor         TEXT NOT NULL,
        message_id      TEXT NOT NULL,
        event           TEXT NOT NULL,
        held_at_ms      INTEGER NOT NULL,
        expires_at_ms   INTEGER NOT NULL,
        UNIQUE (destination, message_id)
    );
    CREATE INDEX consent_holds_visitor ON consent_holds (destination, visitor);
    CREATE INDEX consent_holds_expiry ON consent_holds (destination, expires_at_ms);
    "#,
    // 2: a destination's rules quarantine events too (issue #14): the
    //    quarantine names the destination, the rule and the `messageId`
    //    (NULL for events quarantined at ingest).
    r#"
    ALTER TABLE quarantine ADD COLUMN destination TEXT;
    ALTER TABLE quarantine ADD COLUMN rule TEXT;
    ALTER TABLE quarantine ADD COLUMN message_id TEXT;
    "#,
    // 3: a dead letter, and an event a destination's rules quarantined,
    //    keep the purposes the edge granted the event, so a replay delivers
    //    it under the same decision.
    r#"
    ALTER TABLE dead_letters ADD COLUMN granted TEXT NOT NULL DEFAULT '';
    ALTER TABLE quarantine ADD COLUMN granted TEXT NOT NULL DEFAULT '';
    "#,
];

/// An outbox entry a destination's rule chain quarantined.
#[derive(Debug, Clone)]
pub struct RuleQuarantine {
    /// The outbox entry's id.
    pub id: i64,
    /// The rule that decided, when the reason names it (`rule <name>: …`).
    pub rule: Option<String>,
    /// The rule's reason, for people.
    pub reason: String,
}

/// Ids of outbox entries quarantined for one (rule, reason).
type QuarantineGroup = ((Option<String>, String), Vec<i64>);

pub(crate) async fn outbox_quarantine(
    store: &Arc<SqliteStorage>,
    entries: Vec<RuleQuarantine>,
    rows: Vec<SettledRow>,
) -> Result<Vec<i64>, StorageError> {
    store
        .write(move |conn| {
            // Sync rows move their key state in this same job (issue #18).
            let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
            let outcomes = sqlite::syncs::still_waiting(conn, &ids, rows)?;
            // One removal per (rule, reason): `remove` returns events by pack.
            let mut groups: Vec<QuarantineGroup> = Vec::new();
            for e in entries {
                let key = (e.rule, e.reason);
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, ids)) => ids.push(e.id),
                    None => groups.push((key, vec![e.id])),
                }
            }
            let mut insert = conn.prepare_cached(
                "INSERT INTO quarantine (source, received_at_ms, reason, detail, raw, destination, rule, message_id, granted)
                 VALUES (?1, ?2, 'rule', ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut emptied = Vec::new();
            for ((rule, reason), ids) in groups {
                let removed = outbox::remove(conn, &ids, true)?;
                for t in removed.taken {
                    insert.execute(params![
                        t.source,
                        t.enqueued_at_ms,
                        reason,
                        t.json,
                        t.destination,
                        rule,
                        t.message_id,
                        t.granted
                    ])?;
                }
                emptied.extend(removed.emptied);
            }
            sqlite::syncs::record_outcomes(conn, &outcomes)?;
            Ok(emptied)
        })
        .await
}

pub(crate) async fn quarantine_requeue(
    store: &Arc<SqliteStorage>,
    ids: Vec<i64>,
) -> Result<Vec<i64>, StorageError> {
    store
        .write(move |conn| {
            let now = now_ms();
            let mut select = conn.prepare_cached(
                "SELECT destination, source, message_id, raw, granted FROM quarantine
                 WHERE id = ?1 AND destination IS NOT NULL",
            )?;
            let mut delete = conn.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?;
            let mut moved = Vec::new();
            for id in ids {
                let row = select.query_row([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                });
                let (destination, source, message_id, raw, granted) = match row {
                    Ok(row) => row,
                    Err(rusqlite::Error::QueryReturnedNoRows) => continue,
                    Err(e) => return Err(e.into()),
                };
                // Requeued events start afresh: new age, no attempts.
                let meta = PackMeta::new(&destination, &source, now);
                let message_id = message_id.unwrap_or_default();
                let entry = (message_id.as_str(), granted.as_str(), raw.as_str());
                outbox::enqueue(conn, &meta, &[entry])?;
                delete.execute([id])?;
                moved.push(id);
            }
            Ok(moved)
        })
        .await
}

/// A dead-lettered event, as listed by the CLI and the admin API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Row id; pass it to replay one event.
    pub id: i64,
    /// The destination it failed for.
    pub destination: String,
    /// Source name.
    pub source: String,
    /// The event's `messageId`.
    pub message_id: String,
    /// When it was first committed, in Unix milliseconds.
    pub enqueued_at_ms: i64,
    /// When it was dead-lettered, in Unix milliseconds.
    pub failed_at_ms: i64,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The last error (vendor status and body excerpt, or `max age`).
    pub reason: String,
    /// The event as JSON.
    pub event: Box<serde_json::value::RawValue>,
}

/// An event held for a destination until its visitor decides on consent.
#[derive(Debug, Clone)]
pub struct HeldEvent {
    /// The destination that waits.
    pub destination: Arc<str>,
    /// Source name.
    pub source: Arc<str>,
    /// The visitor whose later events release or drop it.
    pub visitor: String,
    /// The event's `messageId`.
    pub message_id: String,
    /// The event as JSON.
    pub json: String,
}

/// A later event's consent decision for one visitor and destination.
#[derive(Debug, Clone)]
pub struct ConsentSettled {
    /// The destination that waits.
    pub destination: Arc<str>,
    /// The visitor.
    pub visitor: String,
    /// `Some(purposes)`: granted, release each held event to the outbox
    /// carrying these purposes (the deciding event's granted purposes) as
    /// its consent decision; `None`: denied, drop. The event's JSON is
    /// never edited.
    pub granted: Option<crate::consent::GrantedPurposes>,
}

/// Holds to add and decisions to apply, in one durable write.
#[derive(Debug, Clone, Default)]
pub struct HoldCommit {
    /// New holds.
    pub held: Vec<HeldEvent>,
    /// Decisions that release or drop earlier holds.
    pub settled: Vec<ConsentSettled>,
    /// When the new holds expire, in Unix milliseconds, per destination.
    pub expires_at_ms: HashMap<Arc<str>, i64>,
}

/// What a [`HoldCommit`] did, per destination.
#[derive(Debug, Clone, Default)]
pub struct HoldOutcome {
    /// Newly held events (duplicates of a held `messageId` are not counted).
    pub held: Vec<(Arc<str>, usize)>,
    /// Events moved to the outbox because consent was granted.
    pub released: Vec<(Arc<str>, usize)>,
    /// Events dropped because consent was denied.
    pub dropped: Vec<(Arc<str>, usize)>,
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

pub(crate) async fn dead_letters(
    store: &Arc<SqliteStorage>,
    destination: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, StorageError> {
    let destination = destination.to_owned();
    store
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, destination, source, message_id, enqueued_at_ms, failed_at_ms, attempts, reason, event
                 FROM dead_letters WHERE destination = ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![destination, limit as i64], |r| {
                let event: String = r.get(8)?;
                Ok((
                    DeadLetter {
                        id: r.get(0)?,
                        destination: r.get(1)?,
                        source: r.get(2)?,
                        message_id: r.get(3)?,
                        enqueued_at_ms: r.get(4)?,
                        failed_at_ms: r.get(5)?,
                        attempts: r.get(6)?,
                        reason: r.get(7)?,
                        event: serde_json::value::RawValue::from_string("null".into())
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                    },
                    event,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mut letter, event) = row?;
                if let Ok(raw) = serde_json::value::RawValue::from_string(event) {
                    letter.event = raw;
                }
                out.push(letter);
            }
            Ok(out)
        })
        .await
}

pub(crate) async fn replay_dead_letters(
    store: &Arc<SqliteStorage>,
    destination: &str,
    ids: Option<Vec<i64>>,
) -> Result<u64, StorageError> {
    let destination = destination.to_owned();
    store
        .write(move |conn| {
            let now = now_ms();
            // Replayed events start afresh: new age, no attempts.
            let mut select = conn.prepare_cached(
                "SELECT id, source, message_id, event, granted FROM dead_letters
                 WHERE destination = ?1 AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))
                 ORDER BY id",
            )?;
            let wanted = ids.map(|ids| serde_json::to_string(&ids).unwrap_or_default());
            let rows = select
                .query_map(params![destination, wanted], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut delete = conn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?;
            for (id, source, message_id, event, granted) in &rows {
                let meta = PackMeta::new(&destination, source, now);
                let entry = (message_id.as_str(), granted.as_str(), event.as_str());
                outbox::enqueue(conn, &meta, &[entry])?;
                delete.execute([id])?;
            }
            let moved = rows.len();
            Ok(moved as u64)
        })
        .await
}

pub(crate) async fn commit_holds(
    store: &Arc<SqliteStorage>,
    commit: HoldCommit,
) -> Result<HoldOutcome, StorageError> {
    store
        .write(move |conn| write_holds(conn, commit.held.iter(), &commit, now_ms()))
        .await
}

/// Writes `held` (holds of `commit`) and applies `commit`'s decisions, in
/// the caller's transaction (the ingest commit's, or one of its own).
pub(crate) fn write_holds<'a>(
    conn: &Connection,
    held: impl Iterator<Item = &'a HeldEvent>,
    commit: &HoldCommit,
    now: i64,
) -> Result<HoldOutcome, StorageError> {
    let mut outcome = HoldOutcome::default();
    // 1. New holds.
    let mut insert = conn.prepare_cached(
        "INSERT INTO consent_holds (destination, source, visitor, message_id, event, held_at_ms, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (destination, message_id) DO NOTHING",
    )?;
    for h in held {
        let expires = commit
            .expires_at_ms
            .get(&h.destination)
            .copied()
            .unwrap_or(now);
        let n = insert.execute(params![
            &*h.destination,
            &*h.source,
            h.visitor,
            h.message_id,
            h.json,
            now,
            expires
        ])?;
        bump(&mut outcome.held, &h.destination, n);
    }
    // 2. Decisions: a request that holds and then grants releases its own holds too.
    for s in &commit.settled {
        let n = settle(conn, s, now)?;
        match s.granted {
            Some(_) => bump(&mut outcome.released, &s.destination, n),
            None => bump(&mut outcome.dropped, &s.destination, n),
        }
    }
    Ok(outcome)
}

/// Releases (to the outbox) or drops one visitor's holds for one destination.
fn settle(conn: &Connection, s: &ConsentSettled, now: i64) -> Result<usize, StorageError> {
    if let Some(granted) = &s.granted {
        let mut select = conn.prepare_cached(
            "SELECT source, message_id, event FROM consent_holds
             WHERE destination = ?1 AND visitor = ?2 ORDER BY id",
        )?;
        let rows = select
            .query_map(params![&*s.destination, s.visitor], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (source, message_id, event) in &rows {
            let meta = PackMeta::new(&s.destination, source, now);
            let entry = (message_id.as_str(), granted.as_str(), event.as_str());
            outbox::enqueue(conn, &meta, &[entry])?;
        }
    }
    let n = conn.execute(
        "DELETE FROM consent_holds WHERE destination = ?1 AND visitor = ?2",
        params![&*s.destination, s.visitor],
    )?;
    Ok(n)
}

pub(crate) async fn expire_holds(
    store: &Arc<SqliteStorage>,
    destination: &str,
    now_ms: i64,
) -> Result<u64, StorageError> {
    let d = destination.to_owned();
    // A read first: the common case (nothing expired) costs no commit.
    let any = store
        .read({
            let d = d.clone();
            move |conn| {
                Ok(conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM consent_holds WHERE destination = ?1 AND expires_at_ms <= ?2)",
                    params![d, now_ms],
                    |r| r.get::<_, bool>(0),
                )?)
            }
        })
        .await?;
    if !any {
        return Ok(0);
    }
    store
        .write(move |conn| {
            Ok(conn.execute(
                "DELETE FROM consent_holds WHERE destination = ?1 AND expires_at_ms <= ?2",
                params![d, now_ms],
            )? as u64)
        })
        .await
}

pub(crate) async fn held_count(
    store: &Arc<SqliteStorage>,
    destination: &str,
) -> Result<u64, StorageError> {
    count_for(store, "consent_holds", destination).await
}

pub(crate) async fn dead_letter_count(
    store: &Arc<SqliteStorage>,
    destination: &str,
) -> Result<u64, StorageError> {
    count_for(store, "dead_letters", destination).await
}

/// Rows of `table` that belong to `destination`.
async fn count_for(
    store: &Arc<SqliteStorage>,
    table: &'static str,
    destination: &str,
) -> Result<u64, StorageError> {
    let d = destination.to_owned();
    store
        .read(move |conn| {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE destination = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([d], |r| r.get::<_, i64>(0))? as u64)
        })
        .await
}
