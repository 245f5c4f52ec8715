//! One person's events in the delivery tables (consent holds, dead letters),
//! for privacy export and delete (`storage::identity::IdentityTx`). Also the
//! SQL condition that says whether a stored event is the person's, shared
//! with the outbox and quarantine.

use rusqlite::Connection;

use crate::storage::identity::{PersonEvent, PersonMatch};
use crate::storage::StorageError;

/// SQL matching an event column against a person's ids (`?1` profile
/// ids, `?2` user ids, `?3` anonymous ids, `?4` visitor ids, as JSON arrays;
/// see [`args`]).
pub(crate) fn filter(column: &str) -> String {
    format!(
        "json_valid({column}) AND (
           json_extract({column}, '$.context.waymark.profileId') IN (SELECT value FROM json_each(?1))
           OR json_extract({column}, '$.userId') IN (SELECT value FROM json_each(?2))
           OR json_extract({column}, '$.anonymousId') IN (SELECT value FROM json_each(?3))
           OR json_extract({column}, '$.context.waymark.visitorId') IN (SELECT value FROM json_each(?4)))"
    )
}

/// The parameters of [`filter`].
pub(crate) fn args(p: &PersonMatch) -> [String; 4] {
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    [
        json(&p.profile_ids),
        json(&p.user_ids),
        json(&p.anonymous_ids),
        json(&p.visitor_ids),
    ]
}

/// The person's events in `consent_holds` or `dead_letters`, by id.
fn matching(
    conn: &Connection,
    table: &str,
    at: &str,
    p: &PersonMatch,
) -> Result<Vec<PersonEvent>, StorageError> {
    let sql = format!(
        "SELECT destination, event, {at} FROM {table} WHERE {} ORDER BY id",
        filter("event")
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(args(p), |r| {
        Ok(PersonEvent {
            destination: r.get(0)?,
            event: r.get(1)?,
            at_ms: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The person's events held for consent.
pub(crate) fn held(conn: &Connection, p: &PersonMatch) -> Result<Vec<PersonEvent>, StorageError> {
    matching(conn, "consent_holds", "held_at_ms", p)
}

/// The person's dead letters.
pub(crate) fn dead_letters(
    conn: &Connection,
    p: &PersonMatch,
) -> Result<Vec<PersonEvent>, StorageError> {
    matching(conn, "dead_letters", "failed_at_ms", p)
}

/// Deletes the person's held events and dead letters; returns how many of each.
pub(crate) fn delete(conn: &Connection, p: &PersonMatch) -> Result<(usize, usize), StorageError> {
    let held = conn.execute(
        &format!("DELETE FROM consent_holds WHERE {}", filter("event")),
        args(p),
    )?;
    let dead = conn.execute(
        &format!("DELETE FROM dead_letters WHERE {}", filter("event")),
        args(p),
    )?;
    Ok((held, dead))
}
