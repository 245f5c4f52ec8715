//! Privacy operations: delete a person, export a person, both audited.
//!
//! Deletion removes the profile, every identifier and trait, its sessions
//! and merge history, and every event of the person not yet delivered
//! (outbox, consent holds, dead letters, quarantine). What stays is a suppression entry per
//! identifier: the SHA-256 of its node key, so a later event carrying any of
//! them is dropped at ingest and counted, and the audit entry, which names
//! the person only by such a hash.

use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::{json, Value};

use super::key::{kind_of, suppression_hash, value_of, ANON, COOKIE, USER};
use super::profile::{format_ms, kind_name, load, resolve, Lookup, ProfileView};
use super::state::GraphState;
use super::store;
use super::{Identity, IdentityError};
use crate::storage::outbox;
use crate::storage::StorageError;
use crate::time::now_ms;

/// What a deletion removed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteReport {
    /// The audit entry recording it.
    pub audit_id: i64,
    /// The deleted profile id.
    pub profile_id: String,
    /// Profile ids merged into it, deleted with it.
    pub merged_ids: Vec<String>,
    /// Identifiers deleted, and now suppressed.
    pub identifiers: usize,
    /// Undelivered events deleted from the outbox (one per destination).
    pub outbox_events: usize,
    /// Events held for consent deleted.
    pub held_events: usize,
    /// Dead-lettered events deleted.
    pub dead_letters: usize,
    /// Quarantined events deleted.
    pub quarantined: usize,
}

/// The person's identifiers, split by what events carry them as.
struct PersonIds {
    profile_ids: Vec<String>,
    nodes: Vec<String>,
    user_ids: String,
    anonymous_ids: String,
    visitor_ids: String,
    profile_ids_json: String,
}

fn person(conn: &Connection, profile: &str) -> Result<PersonIds, StorageError> {
    let profile_ids = store::profile_ids(conn, profile)?;
    let nodes = store::profile_nodes(conn, profile)?;
    let values = |kinds: &[&str]| -> String {
        let v: Vec<&str> = nodes
            .iter()
            .filter(|k| kinds.contains(&kind_of(k)))
            .map(|k| value_of(k))
            .collect();
        serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
    };
    Ok(PersonIds {
        user_ids: values(&[USER]),
        // The identify stage fills anonymousId from the visitor id.
        anonymous_ids: values(&[ANON, COOKIE]),
        visitor_ids: values(&[COOKIE]),
        profile_ids_json: serde_json::to_string(&profile_ids).unwrap_or_else(|_| "[]".into()),
        profile_ids,
        nodes,
    })
}

/// SQL matching an event column against the person's ids (`?1` profile
/// ids, `?2` user ids, `?3` anonymous ids, `?4` visitor ids, as JSON arrays).
fn person_filter(column: &str) -> String {
    format!(
        "json_valid({column}) AND (
           json_extract({column}, '$.context.waymark.profileId') IN (SELECT value FROM json_each(?1))
           OR json_extract({column}, '$.userId') IN (SELECT value FROM json_each(?2))
           OR json_extract({column}, '$.anonymousId') IN (SELECT value FROM json_each(?3))
           OR json_extract({column}, '$.context.waymark.visitorId') IN (SELECT value FROM json_each(?4)))"
    )
}

fn person_params(p: &PersonIds) -> [&str; 4] {
    [
        &p.profile_ids_json,
        &p.user_ids,
        &p.anonymous_ids,
        &p.visitor_ids,
    ]
}

/// The audit name of a lookup: its kind and the hash of its node key.
fn audit_target(lookup: &Lookup) -> String {
    let (kind, key) = match lookup {
        Lookup::ProfileId(v) => return format!("profileId:{v}"),
        Lookup::UserId(v) => ("userId", format!("{USER}:{v}")),
        Lookup::AnonymousId(v) => ("anonymousId", format!("{ANON}:{v}")),
        Lookup::VisitorId(v) => ("visitorId", format!("{COOKIE}:{v}")),
    };
    format!("{kind}:sha256:{}", suppression_hash(&key))
}

/// Deletes a person and suppresses their identifiers.
pub(crate) fn delete(
    conn: &Connection,
    state: &mut GraphState,
    lookup: &Lookup,
    actor: &str,
) -> Result<DeleteReport, IdentityError> {
    let profile =
        resolve(conn, lookup)?.ok_or_else(|| IdentityError::NotFound(lookup.describe()))?;
    let p = person(conn, &profile)?;
    let now = now_ms();
    let args = person_params(&p);

    // 1. Undelivered events.
    let waiting: Vec<i64> = outbox::matching(conn, &person_filter(outbox::EVENT_SQL), args)?
        .into_iter()
        .map(|(key, ..)| key)
        .collect();
    let outbox_events = outbox::remove(conn, &waiting, true)?.taken.len();
    let held_events = conn
        .execute(
            &format!("DELETE FROM consent_holds WHERE {}", person_filter("event")),
            args,
        )
        .map_err(StorageError::from)?;
    let dead_letters = conn
        .execute(
            &format!("DELETE FROM dead_letters WHERE {}", person_filter("event")),
            args,
        )
        .map_err(StorageError::from)?;
    let quarantined = conn
        .execute(
            &format!("DELETE FROM quarantine WHERE {}", person_filter("raw")),
            args,
        )
        .map_err(StorageError::from)?;

    // 2. The graph: traits, sessions, links, history, nodes, profiles.
    let ids = p.profile_ids_json.as_str();
    let nodes = serde_json::to_string(&p.nodes).unwrap_or_else(|_| "[]".into());
    let nodes = nodes.as_str();
    for (sql, arg) in [
        (
            "DELETE FROM identity_traits WHERE node IN (SELECT value FROM json_each(?1))",
            nodes,
        ),
        (
            "DELETE FROM identity_sessions WHERE key IN (SELECT value FROM json_each(?1))",
            nodes,
        ),
        (
            "DELETE FROM identity_links WHERE a IN (SELECT value FROM json_each(?1))
               OR b IN (SELECT value FROM json_each(?1))",
            nodes,
        ),
        (
            "DELETE FROM identity_merges WHERE survivor IN (SELECT value FROM json_each(?1))
               OR absorbed IN (SELECT value FROM json_each(?1))",
            ids,
        ),
        (
            "DELETE FROM identity_refusals WHERE kept IN (SELECT value FROM json_each(?1))
               OR refused IN (SELECT value FROM json_each(?1))",
            ids,
        ),
        (
            "DELETE FROM identity_blocks WHERE x IN (SELECT value FROM json_each(?1))
               OR y IN (SELECT value FROM json_each(?1))",
            ids,
        ),
        (
            "DELETE FROM identity_nodes WHERE key IN (SELECT value FROM json_each(?1))",
            nodes,
        ),
        (
            "DELETE FROM identity_profiles WHERE id IN (SELECT value FROM json_each(?1))",
            ids,
        ),
    ] {
        conn.execute(sql, [arg]).map_err(StorageError::from)?;
    }

    // 3. Audit, then suppress every identifier by hash.
    let hashes: Vec<String> = p.nodes.iter().map(|k| suppression_hash(k)).collect();
    let detail = json!({
        "profileId": profile,
        "mergedIds": &p.profile_ids,
        "suppressedHashes": &hashes,
        "deleted": {
            "identifiers": p.nodes.len(),
            "outboxEvents": outbox_events,
            "heldEvents": held_events,
            "deadLetters": dead_letters,
            "quarantined": quarantined,
        },
    });
    let audit_id = store::insert_audit(
        conn,
        actor,
        "delete",
        &audit_target(lookup),
        &detail.to_string(),
        now,
    )?;
    {
        let mut suppress = conn
            .prepare_cached(
                "INSERT INTO identity_suppressions (hash, created_ms, audit_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (hash) DO NOTHING",
            )
            .map_err(StorageError::from)?;
        for hash in &hashes {
            suppress
                .execute(params![hash, now, audit_id])
                .map_err(StorageError::from)?;
        }
    }
    for key in &p.nodes {
        state.forget_node(key);
        state.forget_activity(key);
    }
    state.added(hashes.len() as u64, 0);
    Ok(DeleteReport {
        audit_id,
        merged_ids: p
            .profile_ids
            .iter()
            .filter(|i| **i != profile)
            .cloned()
            .collect(),
        profile_id: profile,
        identifiers: p.nodes.len(),
        outbox_events,
        held_events,
        dead_letters,
        quarantined,
    })
}

/// Everything held on a person.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Export {
    /// When the export was made, RFC 3339.
    pub exported_at: String,
    /// The audit entry recording it.
    pub audit_id: i64,
    /// The profile: identifiers, merged traits, counts, merge history.
    pub profile: ProfileView,
    /// Every stored trait value, per identifier, with its time.
    pub traits: Vec<Value>,
    /// Sessions kept per identifier.
    pub sessions: Vec<Value>,
    /// Events not yet delivered, one entry per destination.
    pub undelivered_events: Vec<Value>,
    /// Events held until the person's consent is known.
    pub held_events: Vec<Value>,
    /// Events that failed delivery and wait in the dead-letter store.
    pub dead_letters: Vec<Value>,
}

/// Exports a person and audits the export.
pub(crate) fn export(
    conn: &Connection,
    lookup: &Lookup,
    actor: &str,
) -> Result<Export, IdentityError> {
    let not_found = || IdentityError::NotFound(lookup.describe());
    let profile_id = resolve(conn, lookup)?.ok_or_else(not_found)?;
    let profile = load(conn, &profile_id)?.ok_or_else(not_found)?;
    let p = person(conn, &profile_id)?;
    let nodes = serde_json::to_string(&p.nodes).unwrap_or_else(|_| "[]".into());
    let identifier = |key: &str| json!({ "type": kind_name(kind_of(key)), "value": value_of(key) });

    let mut traits = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT node, key, value, updated_ms FROM identity_traits WHERE node IN (SELECT value FROM json_each(?1)) ORDER BY node, key")
            .map_err(StorageError::from)?;
        let mut rows = stmt.query([&nodes]).map_err(StorageError::from)?;
        while let Some(r) = rows.next().map_err(StorageError::from)? {
            let node: String = r.get(0).map_err(StorageError::from)?;
            let value: String = r.get(2).map_err(StorageError::from)?;
            traits.push(json!({
                "identifier": identifier(&node),
                "trait": r.get::<_, String>(1).map_err(StorageError::from)?,
                "value": serde_json::from_str::<Value>(&value).unwrap_or(Value::String(value)),
                "updatedAt": format_ms(r.get(3).map_err(StorageError::from)?),
            }));
        }
    }
    let mut sessions = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT key, session_id, count, last_activity_ms FROM identity_sessions WHERE key IN (SELECT value FROM json_each(?1)) ORDER BY key")
            .map_err(StorageError::from)?;
        let mut rows = stmt.query([&nodes]).map_err(StorageError::from)?;
        while let Some(r) = rows.next().map_err(StorageError::from)? {
            let key: String = r.get(0).map_err(StorageError::from)?;
            sessions.push(json!({
                "identifier": identifier(&key),
                "sessionId": r.get::<_, i64>(1).map_err(StorageError::from)?,
                "count": r.get::<_, i64>(2).map_err(StorageError::from)?,
                "lastActivity": format_ms(r.get(3).map_err(StorageError::from)?),
            }));
        }
    }
    let events = |table: &str, at: &str| -> Result<Vec<Value>, StorageError> {
        let sql = format!(
            "SELECT destination, event, {at} FROM {table} WHERE {} ORDER BY id",
            person_filter("event")
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(person_params(&p))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let event: String = r.get(1)?;
            out.push(json!({
                "destination": r.get::<_, String>(0)?,
                "at": format_ms(r.get(2)?),
                "event": serde_json::from_str::<Value>(&event).unwrap_or(Value::String(event)),
            }));
        }
        Ok(out)
    };
    let undelivered_events =
        outbox::matching(conn, &person_filter(outbox::EVENT_SQL), person_params(&p))?
            .into_iter()
            .map(|(_, destination, at, event)| {
                json!({
                    "destination": destination,
                    "at": format_ms(at),
                    "event": serde_json::from_str::<Value>(&event).unwrap_or(Value::String(event)),
                })
            })
            .collect::<Vec<_>>();
    let held_events = events("consent_holds", "held_at_ms")?;
    let dead_letters = events("dead_letters", "failed_at_ms")?;

    let now = now_ms();
    let detail = json!({
        "profileId": profile_id,
        "identifiers": p.nodes.len(),
        "undeliveredEvents": undelivered_events.len(),
        "heldEvents": held_events.len(),
        "deadLetters": dead_letters.len(),
    });
    let audit_id = store::insert_audit(
        conn,
        actor,
        "export",
        &audit_target(lookup),
        &detail.to_string(),
        now,
    )?;
    Ok(Export {
        exported_at: format_ms(now),
        audit_id,
        profile,
        traits,
        sessions,
        undelivered_events,
        held_events,
        dead_letters,
    })
}

/// One audit entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Entry id.
    pub id: i64,
    /// When, RFC 3339.
    pub at: String,
    /// Who (the `X-Waymark-Actor` header of the admin request, else `admin`).
    pub actor: String,
    /// `delete`, `export`, `split` or `merge`.
    pub action: String,
    /// Whom: a profile id, or an identifier kind with the hash of the identifier.
    pub target: String,
    /// What was done.
    pub detail: Value,
}

/// The most recent audit entries, newest first.
pub(crate) fn audit_log(conn: &Connection, limit: usize) -> Result<Vec<AuditEntry>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at_ms, actor, action, target, detail FROM identity_audit ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        let detail: String = r.get(5)?;
        Ok(AuditEntry {
            id: r.get(0)?,
            at: format_ms(r.get(1)?),
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

impl Identity {
    /// Deletes the person a lookup names, with everything held on them (admin).
    pub async fn delete_person(
        &self,
        lookup: Lookup,
        actor: String,
    ) -> Result<DeleteReport, IdentityError> {
        let report = self
            .admin_write(move |conn, state| delete(conn, state, &lookup, &actor))
            .await;
        // The deleted person's events must not linger in memory either.
        self.store.forget_cached_packs();
        report
    }

    /// Everything held on the person a lookup names (admin; audited).
    pub async fn export_person(
        &self,
        lookup: Lookup,
        actor: String,
    ) -> Result<Export, IdentityError> {
        self.admin_write(move |conn, _| export(conn, &lookup, &actor))
            .await
    }

    /// The most recent audit entries, newest first (admin).
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, IdentityError> {
        self.admin_read(move |conn| Ok(audit_log(conn, limit)?))
            .await
    }
}
