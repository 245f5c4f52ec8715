//! Profiles as the admin API shows them: identifiers, merged traits (the
//! latest timestamp wins per trait), first and last seen, event counts and
//! the merge history, all derived from the profile's nodes.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{Map, Value};

use super::key::{kind_of, value_of, ANON, COOKIE, USER};
use super::store;
use super::{Identity, IdentityError};
use crate::event::EventType;
use crate::storage::StorageError;

/// How an admin names a person: any identifier, or a profile id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A profile id (a merged id resolves to the profile that absorbed it).
    ProfileId(String),
    /// A Segment `userId`.
    UserId(String),
    /// A Segment `anonymousId` (also found when it was the visitor id).
    AnonymousId(String),
    /// The `wm_vid` cookie's visitor id.
    VisitorId(String),
}

impl Lookup {
    /// The one lookup among optional query fields, or a message naming them.
    pub fn from_fields(
        profile_id: Option<String>,
        user_id: Option<String>,
        anonymous_id: Option<String>,
        visitor_id: Option<String>,
    ) -> Result<Lookup, String> {
        let mut found: Vec<Lookup> = [
            profile_id.map(Lookup::ProfileId),
            user_id.map(Lookup::UserId),
            anonymous_id.map(Lookup::AnonymousId),
            visitor_id.map(Lookup::VisitorId),
        ]
        .into_iter()
        .flatten()
        .collect();
        match (found.pop(), found.is_empty()) {
            (Some(one), true) => Ok(one),
            _ => Err("give exactly one of profileId, userId, anonymousId or visitorId".to_owned()),
        }
    }

    /// What the lookup names, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Lookup::ProfileId(v) => format!("profileId `{v}`"),
            Lookup::UserId(v) => format!("userId `{v}`"),
            Lookup::AnonymousId(v) => format!("anonymousId `{v}`"),
            Lookup::VisitorId(v) => format!("visitorId `{v}`"),
        }
    }
}

/// Resolves a lookup to the current profile id.
pub(crate) fn resolve(conn: &Connection, lookup: &Lookup) -> Result<Option<String>, StorageError> {
    let keys: Vec<String> = match lookup {
        Lookup::ProfileId(id) => return store::current_profile(conn, id),
        Lookup::UserId(v) => vec![format!("{USER}:{v}")],
        // The identify stage files an anonymousId equal to the visitor id
        // under `cookie:` only.
        Lookup::AnonymousId(v) => vec![format!("{ANON}:{v}"), format!("{COOKIE}:{v}")],
        Lookup::VisitorId(v) => vec![format!("{COOKIE}:{v}")],
    };
    for key in keys {
        if let Some(p) = store::node_profile(conn, &key)? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// One identifier of a profile.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentifierView {
    /// `userId`, `anonymousId`, `visitorId`, or a trait key such as `email`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The id; for trait keys, the SHA-256 of the normalised value.
    pub value: String,
    /// First event seen with this identifier as the event's main one, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// Latest such event, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

/// One entry of a profile's merge history.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeView {
    /// Merge id, to name it in a split.
    pub id: i64,
    /// When, RFC 3339.
    pub at: String,
    /// The profile id that survived (the older one).
    pub survivor: String,
    /// The profile id merged into it.
    pub absorbed: String,
    /// `event`, `alias` or `admin`.
    pub cause: String,
    /// The event that caused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The identifiers the event (or admin) brought, as node keys.
    pub identifiers: Value,
    /// Who forced it, for admin merges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// When an admin split it again, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_at: Option<String>,
}

/// A link the guards refused.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusalView {
    /// When, RFC 3339.
    pub at: String,
    /// The event that asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The profile the event went to (empty when it was new).
    pub kept: String,
    /// The profile that was not merged.
    pub refused: String,
    /// The identifiers the event carried, as node keys.
    pub identifiers: Value,
    /// `conflicting_user` or `split_by_admin`.
    pub reason: String,
}

/// A profile as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    /// The profile id.
    pub id: String,
    /// Ids of profiles merged into this one (events stamped before a merge carry them).
    pub merged_ids: Vec<String>,
    /// Its identifiers.
    pub identifiers: Vec<IdentifierView>,
    /// Merged traits: per trait, the value with the latest timestamp.
    pub traits: Map<String, Value>,
    /// First event, RFC 3339.
    pub first_seen: Option<String>,
    /// Latest event, RFC 3339.
    pub last_seen: Option<String>,
    /// Events per call type, and `total`.
    pub event_counts: Map<String, Value>,
    /// Merges into or out of this profile, oldest first.
    pub merges: Vec<MergeView>,
    /// Links the guards refused that involved this profile, oldest first.
    pub refusals: Vec<RefusalView>,
}

/// Reads a profile by its current id.
pub(crate) fn load(conn: &Connection, id: &str) -> Result<Option<ProfileView>, StorageError> {
    let exists: Option<String> = conn
        .query_row(
            "SELECT id FROM identity_profiles WHERE id = ?1 AND merged_into IS NULL",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    let ids = store::profile_ids(conn, id)?;
    let merged_ids = ids.iter().filter(|i| *i != id).cloned().collect();

    // 1. Identifiers and their counts.
    let mut identifiers = Vec::new();
    let mut counts = [0i64; 6];
    let (mut first, mut last): (Option<i64>, Option<i64>) = (None, None);
    let mut stmt = conn.prepare_cached(
        "SELECT key, first_seen_ms, last_seen_ms, n_track, n_page, n_screen, n_identify, n_group, n_alias
         FROM identity_nodes WHERE profile_id = ?1 ORDER BY created_ms, key",
    )?;
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        let f: Option<i64> = r.get(1)?;
        let l: Option<i64> = r.get(2)?;
        for (i, c) in counts.iter_mut().enumerate() {
            *c += r.get::<_, i64>(3 + i)?;
        }
        first = min_opt(first, f);
        last = max_opt(last, l);
        identifiers.push(IdentifierView {
            kind: kind_name(kind_of(&key)).to_owned(),
            value: value_of(&key).to_owned(),
            first_seen: f.map(format_ms),
            last_seen: l.map(format_ms),
        });
    }
    let mut event_counts = Map::new();
    for (kind, c) in EventType::ALL.iter().zip(counts) {
        event_counts.insert(kind.as_str().to_owned(), Value::from(c));
    }
    event_counts.insert("total".into(), Value::from(counts.iter().sum::<i64>()));

    // 2. Traits: the latest value per key across the profile's nodes.
    let mut traits = Map::new();
    let mut stmt = conn.prepare_cached(
        "SELECT t.key, t.value, max(t.updated_ms) FROM identity_traits t
         JOIN identity_nodes n ON n.key = t.node
         WHERE n.profile_id = ?1 GROUP BY t.key ORDER BY t.key",
    )?;
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        let value: String = r.get(1)?;
        traits.insert(
            key,
            serde_json::from_str(&value).unwrap_or(Value::String(value)),
        );
    }

    Ok(Some(ProfileView {
        id: id.to_owned(),
        merged_ids,
        identifiers,
        traits,
        first_seen: first.map(format_ms),
        last_seen: last.map(format_ms),
        event_counts,
        merges: merges(conn, &ids)?,
        refusals: refusals(conn, &ids)?,
    }))
}

fn merges(conn: &Connection, ids: &[String]) -> Result<Vec<MergeView>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at_ms, survivor, absorbed, cause, message_id, identifiers, actor, split_at_ms
         FROM identity_merges WHERE survivor = ?1 OR absorbed = ?1",
    )?;
    let mut out: Vec<MergeView> = Vec::new();
    for id in ids {
        let rows = stmt.query_map([id], |r| {
            let identifiers: String = r.get(6)?;
            Ok(MergeView {
                id: r.get(0)?,
                at: format_ms(r.get(1)?),
                survivor: r.get(2)?,
                absorbed: r.get(3)?,
                cause: r.get(4)?,
                message_id: r.get(5)?,
                identifiers: serde_json::from_str(&identifiers).unwrap_or(Value::Null),
                actor: r.get(7)?,
                split_at: r.get::<_, Option<i64>>(8)?.map(format_ms),
            })
        })?;
        for m in rows {
            let m = m?;
            if !out.iter().any(|o| o.id == m.id) {
                out.push(m);
            }
        }
    }
    out.sort_by_key(|m| m.id);
    Ok(out)
}

fn refusals(conn: &Connection, ids: &[String]) -> Result<Vec<RefusalView>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at_ms, message_id, kept, refused, identifiers, reason
         FROM identity_refusals WHERE kept = ?1 OR refused = ?1 ORDER BY id DESC LIMIT 100",
    )?;
    let mut out: Vec<(i64, RefusalView)> = Vec::new();
    for id in ids {
        let rows = stmt.query_map([id], |r| {
            let identifiers: String = r.get(5)?;
            Ok((
                r.get::<_, i64>(0)?,
                RefusalView {
                    at: format_ms(r.get(1)?),
                    message_id: r.get(2)?,
                    kept: r.get(3)?,
                    refused: r.get(4)?,
                    identifiers: serde_json::from_str(&identifiers).unwrap_or(Value::Null),
                    reason: r.get(6)?,
                },
            ))
        })?;
        for row in rows {
            let row = row?;
            if !out.iter().any(|(id, _)| *id == row.0) {
                out.push(row);
            }
        }
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// The admin name of a node kind.
pub(crate) fn kind_name(kind: &str) -> &str {
    match kind {
        USER => "userId",
        ANON => "anonymousId",
        COOKIE => "visitorId",
        other => other,
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Unix milliseconds as RFC 3339.
pub(crate) fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(crate::time::format_rfc3339)
        .unwrap_or_default()
}

impl Identity {
    /// The profile with this id; a merged id gives the profile that absorbed it.
    pub async fn profile(&self, id: &str) -> Result<ProfileView, IdentityError> {
        self.find(Lookup::ProfileId(id.to_owned())).await
    }

    /// The profile an identifier (or profile id) belongs to.
    pub async fn find(&self, lookup: Lookup) -> Result<ProfileView, IdentityError> {
        self.admin_read(move |conn| {
            let Some(id) = resolve(conn, &lookup)? else {
                return Err(IdentityError::NotFound(lookup.describe()));
            };
            load(conn, &id)?.ok_or_else(|| IdentityError::NotFound(lookup.describe()))
        })
        .await
    }
}
