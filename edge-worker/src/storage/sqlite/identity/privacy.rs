//! Privacy statements on the embedded store: a person's traits, sessions
//! and stored events, and the delete of their graph rows. Events are asked
//! of the modules that own their tables (outbox, delivery, quarantine).

use rusqlite::Connection;

use crate::storage::delivery::person;
use crate::storage::identity::{
    DeletedEvents, PersonEvent, PersonEvents, PersonMatch, SessionRow, TraitRow,
};
use crate::storage::outbox;
use crate::storage::StorageError;

fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(super) fn node_traits(
    conn: &Connection,
    nodes: &[String],
) -> Result<Vec<TraitRow>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT node, key, value, updated_ms FROM identity_traits
         WHERE node IN (SELECT value FROM json_each(?1)) ORDER BY node, key",
    )?;
    let rows = stmt.query_map([json(nodes)], |r| {
        Ok(TraitRow {
            node: r.get(0)?,
            key: r.get(1)?,
            value: r.get(2)?,
            updated_ms: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn node_sessions(
    conn: &Connection,
    nodes: &[String],
) -> Result<Vec<(String, SessionRow)>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT key, session_id, count, last_activity_ms FROM identity_sessions
         WHERE key IN (SELECT value FROM json_each(?1)) ORDER BY key",
    )?;
    let rows = stmt.query_map([json(nodes)], |r| {
        Ok((
            r.get(0)?,
            SessionRow {
                session_id: r.get(1)?,
                count: r.get(2)?,
                last_activity_ms: r.get(3)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn person_events(
    conn: &Connection,
    p: &PersonMatch,
) -> Result<PersonEvents, StorageError> {
    let undelivered = outbox::matching(conn, &person::filter(outbox::EVENT_SQL), person::args(p))?
        .into_iter()
        .map(|(_, destination, at_ms, event)| PersonEvent {
            destination,
            at_ms,
            event,
        })
        .collect();
    Ok(PersonEvents {
        undelivered,
        held: person::held(conn, p)?,
        dead_letters: person::dead_letters(conn, p)?,
    })
}

pub(super) fn delete_person_events(
    conn: &Connection,
    p: &PersonMatch,
) -> Result<DeletedEvents, StorageError> {
    let waiting: Vec<i64> =
        outbox::matching(conn, &person::filter(outbox::EVENT_SQL), person::args(p))?
            .into_iter()
            .map(|(key, ..)| key)
            .collect();
    let outbox = outbox::remove(conn, &waiting, true)?.taken.len();
    let (held, dead_letters) = person::delete(conn, p)?;
    let quarantined =
        super::super::delete_quarantined(conn, &person::filter("raw"), person::args(p))?;
    Ok(DeletedEvents {
        outbox,
        held,
        dead_letters,
        quarantined,
    })
}

pub(super) fn delete_graph(
    conn: &Connection,
    profile_ids: &[String],
    nodes: &[String],
) -> Result<(), StorageError> {
    let ids = json(profile_ids);
    let nodes = json(nodes);
    for (sql, arg) in [
        (
            "DELETE FROM identity_traits WHERE node IN (SELECT value FROM json_each(?1))",
            &nodes,
        ),
        (
            "DELETE FROM identity_sessions WHERE key IN (SELECT value FROM json_each(?1))",
            &nodes,
        ),
        (
            "DELETE FROM identity_links WHERE a IN (SELECT value FROM json_each(?1))
               OR b IN (SELECT value FROM json_each(?1))",
            &nodes,
        ),
        (
            "DELETE FROM identity_merges WHERE survivor IN (SELECT value FROM json_each(?1))
               OR absorbed IN (SELECT value FROM json_each(?1))",
            &ids,
        ),
        (
            "DELETE FROM identity_refusals WHERE kept IN (SELECT value FROM json_each(?1))
               OR refused IN (SELECT value FROM json_each(?1))",
            &ids,
        ),
        (
            "DELETE FROM identity_blocks WHERE x IN (SELECT value FROM json_each(?1))
               OR y IN (SELECT value FROM json_each(?1))",
            &ids,
        ),
        (
            "DELETE FROM identity_nodes WHERE key IN (SELECT value FROM json_each(?1))",
            &nodes,
        ),
        (
            "DELETE FROM identity_profiles WHERE id IN (SELECT value FROM json_each(?1))",
            &ids,
        ),
    ] {
        conn.execute(sql, [arg])?;
    }
    Ok(())
}
