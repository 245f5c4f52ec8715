//! Profiles as the admin API shows them: identifiers, merged traits (the
//! latest timestamp wins per trait), first and last seen, event counts and
//! the merge history, all derived from the profile's nodes.

use serde::Serialize;
use serde_json::{Map, Value};

use super::key::{kind_of, value_of, ANON, COOKIE, USER};
use super::{Identity, IdentityError};
use crate::event::EventType;
use crate::storage::identity::IdentityTx;
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
pub(crate) fn resolve(
    conn: &dyn IdentityTx,
    lookup: &Lookup,
) -> Result<Option<String>, StorageError> {
    let keys: Vec<String> = match lookup {
        Lookup::ProfileId(id) => return conn.current_profile(id),
        Lookup::UserId(v) => vec![format!("{USER}:{v}")],
        // The identify stage files an anonymousId equal to the visitor id
        // under `cookie:` only.
        Lookup::AnonymousId(v) => vec![format!("{ANON}:{v}"), format!("{COOKIE}:{v}")],
        Lookup::VisitorId(v) => vec![format!("{COOKIE}:{v}")],
    };
    for key in keys {
        if let Some(p) = conn.node_profile(&key)? {
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
pub(crate) fn load(conn: &dyn IdentityTx, id: &str) -> Result<Option<ProfileView>, StorageError> {
    if !conn.profile_is_current(id)? {
        return Ok(None);
    }
    let ids = conn.profile_ids(id)?;
    let merged_ids = ids.iter().filter(|i| *i != id).cloned().collect();

    // 1. Identifiers and their counts.
    let mut identifiers = Vec::new();
    let mut counts = [0i64; 6];
    let (mut first, mut last): (Option<i64>, Option<i64>) = (None, None);
    for row in conn.profile_node_rows(id)? {
        for (c, n) in counts.iter_mut().zip(row.counts) {
            *c += n;
        }
        first = min_opt(first, row.first_seen_ms);
        last = max_opt(last, row.last_seen_ms);
        identifiers.push(IdentifierView {
            kind: kind_name(kind_of(&row.key)).to_owned(),
            value: value_of(&row.key).to_owned(),
            first_seen: row.first_seen_ms.map(format_ms),
            last_seen: row.last_seen_ms.map(format_ms),
        });
    }
    let mut event_counts = Map::new();
    for (kind, c) in EventType::ALL.iter().zip(counts) {
        event_counts.insert(kind.as_str().to_owned(), Value::from(c));
    }
    event_counts.insert("total".into(), Value::from(counts.iter().sum::<i64>()));

    // 2. Traits: the latest value per key across the profile's nodes.
    let mut traits = Map::new();
    for (key, value) in conn.profile_traits(id)? {
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

fn merges(conn: &dyn IdentityTx, ids: &[String]) -> Result<Vec<MergeView>, StorageError> {
    let mut out: Vec<MergeView> = Vec::new();
    for id in ids {
        for m in conn.merges_of(id)? {
            if out.iter().any(|o| o.id == m.id) {
                continue;
            }
            out.push(MergeView {
                id: m.id,
                at: format_ms(m.at_ms),
                survivor: m.survivor,
                absorbed: m.absorbed,
                cause: m.cause,
                message_id: m.message_id,
                identifiers: serde_json::from_str(&m.identifiers).unwrap_or(Value::Null),
                actor: m.actor,
                split_at: m.split_at_ms.map(format_ms),
            });
        }
    }
    out.sort_by_key(|m| m.id);
    Ok(out)
}

fn refusals(conn: &dyn IdentityTx, ids: &[String]) -> Result<Vec<RefusalView>, StorageError> {
    let mut out: Vec<(i64, RefusalView)> = Vec::new();
    for id in ids {
        for r in conn.refusals_of(id)? {
            if out.iter().any(|(seen, _)| *seen == r.id) {
                continue;
            }
            out.push((
                r.id,
                RefusalView {
                    at: format_ms(r.at_ms),
                    message_id: r.message_id,
                    kept: r.kept,
                    refused: r.refused,
                    identifiers: serde_json::from_str(&r.identifiers).unwrap_or(Value::Null),
                    reason: r.reason,
                },
            ));
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
