//! Privacy operations: delete a person, export a person, both audited.
//!
//! Deletion removes the profile, every identifier and trait, its sessions
//! and merge history, and every event of the person not yet delivered
//! (outbox, consent holds, dead letters, quarantine). What stays is a suppression entry per
//! identifier: the SHA-256 of its node key, so a later event carrying any of
//! them is dropped at ingest and counted, and the audit entry, which names
//! the person only by such a hash.

use serde::Serialize;
use serde_json::{json, Value};

use super::key::{kind_of, suppression_hash, value_of, ANON, COOKIE, USER};
use super::profile::{format_ms, kind_name, load, resolve, Lookup, ProfileView};
use super::state::GraphState;
use super::{Identity, IdentityError};
use crate::storage::identity::{IdentityTx, PersonEvent, PersonMatch};
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

/// The person's ids: profile ids, nodes, and what events carry them as.
struct PersonIds {
    profile_ids: Vec<String>,
    nodes: Vec<String>,
    events: PersonMatch,
}

fn person(conn: &dyn IdentityTx, profile: &str) -> Result<PersonIds, StorageError> {
    let profile_ids = conn.profile_ids(profile)?;
    let nodes = conn.profile_nodes(profile)?;
    let values = |kinds: &[&str]| -> Vec<String> {
        nodes
            .iter()
            .filter(|k| kinds.contains(&kind_of(k)))
            .map(|k| value_of(k).to_owned())
            .collect()
    };
    Ok(PersonIds {
        events: PersonMatch {
            profile_ids: profile_ids.clone(),
            user_ids: values(&[USER]),
            // The identify stage fills anonymousId from the visitor id.
            anonymous_ids: values(&[ANON, COOKIE]),
            visitor_ids: values(&[COOKIE]),
        },
        profile_ids,
        nodes,
    })
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
    conn: &dyn IdentityTx,
    state: &mut GraphState,
    lookup: &Lookup,
    actor: &str,
) -> Result<DeleteReport, IdentityError> {
    // First: no job over new identifiers may overlap the delete.
    conn.exclude_new_links()?;
    let profile =
        resolve(conn, lookup)?.ok_or_else(|| IdentityError::NotFound(lookup.describe()))?;
    let p = person(conn, &profile)?;
    let now = now_ms();

    // 1. Undelivered events, asked of the modules that keep them.
    let deleted = conn.delete_person_events(&p.events)?;
    let (outbox_events, held_events, dead_letters, quarantined) = (
        deleted.outbox,
        deleted.held,
        deleted.dead_letters,
        deleted.quarantined,
    );

    // 2. The graph: traits, sessions, links, history, nodes, profiles.
    conn.delete_graph(&p.profile_ids, &p.nodes)?;

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
    let audit_id = conn.insert_audit(
        actor,
        "delete",
        &audit_target(lookup),
        &detail.to_string(),
        now,
    )?;
    conn.suppress(&hashes, now, audit_id)?;
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
    conn: &dyn IdentityTx,
    lookup: &Lookup,
    actor: &str,
) -> Result<Export, IdentityError> {
    let not_found = || IdentityError::NotFound(lookup.describe());
    let profile_id = resolve(conn, lookup)?.ok_or_else(not_found)?;
    let profile = load(conn, &profile_id)?.ok_or_else(not_found)?;
    let p = person(conn, &profile_id)?;
    let identifier = |key: &str| json!({ "type": kind_name(kind_of(key)), "value": value_of(key) });

    let traits: Vec<Value> = conn
        .node_traits(&p.nodes)?
        .into_iter()
        .map(|t| {
            json!({
                "identifier": identifier(&t.node),
                "trait": t.key,
                "value": serde_json::from_str::<Value>(&t.value).unwrap_or(Value::String(t.value)),
                "updatedAt": format_ms(t.updated_ms),
            })
        })
        .collect();
    let sessions: Vec<Value> = conn
        .node_sessions(&p.nodes)?
        .into_iter()
        .map(|(key, s)| {
            json!({
                "identifier": identifier(&key),
                "sessionId": s.session_id,
                "count": s.count,
                "lastActivity": format_ms(s.last_activity_ms),
            })
        })
        .collect();
    let events = conn.person_events(&p.events)?;
    let undelivered_events = event_values(events.undelivered);
    let held_events = event_values(events.held);
    let dead_letters = event_values(events.dead_letters);

    let now = now_ms();
    let detail = json!({
        "profileId": profile_id,
        "identifiers": p.nodes.len(),
        "undeliveredEvents": undelivered_events.len(),
        "heldEvents": held_events.len(),
        "deadLetters": dead_letters.len(),
    });
    let audit_id = conn.insert_audit(
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
pub(crate) fn audit_log(
    conn: &dyn IdentityTx,
    limit: usize,
) -> Result<Vec<AuditEntry>, StorageError> {
    Ok(conn
        .audit_log(limit)?
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            at: format_ms(r.at_ms),
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: serde_json::from_str(&r.detail).unwrap_or(Value::String(r.detail)),
        })
        .collect())
}

/// Stored events as the export shows them.
fn event_values(events: Vec<PersonEvent>) -> Vec<Value> {
    events
        .into_iter()
        .map(|e| {
            json!({
                "destination": e.destination,
                "at": format_ms(e.at_ms),
                "event": serde_json::from_str::<Value>(&e.event).unwrap_or(Value::String(e.event)),
            })
        })
        .collect()
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
        self.store.forget_cached_events();
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
