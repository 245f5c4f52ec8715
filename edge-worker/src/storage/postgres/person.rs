//! One person's events in the PostgreSQL delivery tables (outbox, consent
//! holds, dead letters, quarantine), for privacy export and delete. The
//! identity store calls these inside its job's transaction, so a delete
//! removes the graph and the waiting events at once.
//!
//! Privacy requests are rare, so these scan: no index serves a JSON match
//! on every event. The outbox row itself is deleted (not marked done), so
//! the person's data leaves at once rather than when its dataset is dropped.

use crate::storage::identity::{DeletedEvents, PersonEvent, PersonEvents, PersonMatch};
use crate::storage::postgres::identity::{PersonEventTables, PgConn};
use crate::storage::StorageError;

/// The delivery tables of the shared store.
pub(crate) struct PgPersonEvents;

/// SQL matching the text column `column` against a person's ids (`$1`
/// profile ids, `$2` user ids, `$3` anonymous ids, `$4` visitor ids).
/// Text that is not JSON (a quarantined raw body) matches nothing.
fn filter(column: &str) -> String {
    format!(
        "(WITH j AS (SELECT waymark_try_jsonb({column}) AS j)
          SELECT coalesce(
                 j->'context'->'waymark'->>'profileId' = ANY($1)
              OR j->>'userId' = ANY($2)
              OR j->>'anonymousId' = ANY($3)
              OR j->'context'->'waymark'->>'visitorId' = ANY($4), false)
          FROM j)"
    )
}

/// Not done: no status row of the entry says it is.
const WAITING: &str =
    "NOT EXISTS (SELECT 1 FROM outbox_status s WHERE s.ds = o.ds AND s.seq = o.seq AND s.done)";

fn rows(conn: &PgConn<'_>, sql: &str, p: &PersonMatch) -> Result<Vec<PersonEvent>, StorageError> {
    Ok(conn
        .query(
            sql,
            &[
                &p.profile_ids,
                &p.user_ids,
                &p.anonymous_ids,
                &p.visitor_ids,
            ],
        )?
        .iter()
        .map(|r| PersonEvent {
            destination: r.get(0),
            at_ms: r.get(1),
            event: r.get(2),
        })
        .collect())
}

impl PersonEventTables for PgPersonEvents {
    fn person_events(
        &self,
        conn: &PgConn<'_>,
        p: &PersonMatch,
    ) -> Result<PersonEvents, StorageError> {
        Ok(PersonEvents {
            undelivered: rows(
                conn,
                &format!(
                    "SELECT o.destination, o.enqueued_at_ms, o.event FROM outbox o
                     WHERE {WAITING} AND {} ORDER BY o.ds, o.seq",
                    filter("o.event")
                ),
                p,
            )?,
            held: rows(
                conn,
                &format!(
                    "SELECT destination, held_at_ms, event FROM consent_holds WHERE {} ORDER BY id",
                    filter("event")
                ),
                p,
            )?,
            dead_letters: rows(
                conn,
                &format!(
                    "SELECT destination, failed_at_ms, event FROM dead_letters WHERE {} ORDER BY id",
                    filter("event")
                ),
                p,
            )?,
        })
    }

    fn delete_person_events(
        &self,
        conn: &PgConn<'_>,
        p: &PersonMatch,
    ) -> Result<DeletedEvents, StorageError> {
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
            &p.profile_ids,
            &p.user_ids,
            &p.anonymous_ids,
            &p.visitor_ids,
        ];
        let outbox = conn.execute(
            &format!(
                "DELETE FROM outbox o WHERE {WAITING} AND {}",
                filter("o.event")
            ),
            &args,
        )?;
        // Delivered rows of the person go too: the dataset may live on.
        conn.execute(
            &format!("DELETE FROM outbox o WHERE {}", filter("o.event")),
            &args,
        )?;
        let delete = |table: &str, column: &str| {
            conn.execute(
                &format!("DELETE FROM {table} WHERE {}", filter(column)),
                &args,
            )
        };
        Ok(DeletedEvents {
            outbox: outbox as usize,
            held: delete("consent_holds", "event")? as usize,
            dead_letters: delete("dead_letters", "event")? as usize,
            quarantined: delete("quarantine", "raw")? as usize,
        })
    }
}
