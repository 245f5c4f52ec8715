//! Identify: tie each event to its visitor, its profile and its session.
//!
//! [`apply_visitor`] runs per event: the request's verified `wm_vid`
//! visitor id becomes the event's `anonymousId` when it has none, and is
//! always recorded in `context.waymark.visitorId`. [`link`] then runs once
//! per request: it takes each event's identifiers ([`event_ids`]) into the
//! identity graph in one write, drops events of deleted people, and stamps
//! the rest with `context.waymark.profileId` and `context.waymark.session`.

pub mod cookieless;

use serde_json::{json, Value};

use super::Verdict;
use crate::event::{Event, EventType};
use crate::identity::graph::{Cause, EventIds, Linked};
use crate::identity::key::{KeyRules, ANON, COOKIE, USER};
use crate::identity::Identity;
use crate::storage::StorageError;
use crate::time::parse_rfc3339;
use crate::visitor::VisitorId;

/// Where the client's own `anonymousId` is kept when a verified cookie
/// takes its place: `context.waymark.clientAnonymousId`.
pub const CLIENT_ANONYMOUS_ID: &str = "context.waymark.clientAnonymousId";

/// [`CLIENT_ANONYMOUS_ID`]'s key inside `context.waymark`.
const CLIENT_ANONYMOUS_ID_KEY: &str = "clientAnonymousId";

/// Applies the request's visitor id to `event`.
///
/// With `trusted` (a verified cookie whose purpose is not denied), the
/// cookie's id takes precedence over the client's own `anonymousId`, which
/// is kept in `context.waymark.clientAnonymousId` and linked to the same
/// profile. A visitor minted for this request only fills a missing
/// `anonymousId`.
///
/// # Design
/// The worker's first-party cookie outlives script storage (Safari caps
/// that at 7 days), so once it exists it is the stabler id (issue #6).
pub fn apply_visitor(event: &mut Event, visitor: Option<&VisitorId>, trusted: bool) {
    let Some(visitor) = visitor else { return };
    let id = Value::String(visitor.as_str().to_owned());
    match event.anonymous_id() {
        None => {
            let _ = event.set("anonymousId", id.clone());
        }
        Some(own) if trusted && own != visitor.as_str() => {
            let own = Value::String(own.to_owned());
            event.stamp(CLIENT_ANONYMOUS_ID_KEY, own);
            let _ = event.set("anonymousId", id.clone());
        }
        Some(_) => {}
    }
    event.stamp("visitorId", id);
}

/// Whether a request's events name at most one `userId` and one
/// `anonymousId` of their own (besides `visitor`, which may have filled it in).
fn is_one_person(events: &[Event], visitor: Option<&VisitorId>) -> bool {
    let minted = visitor.map(VisitorId::as_str);
    let (mut user, mut anon): (Option<&str>, Option<&str>) = (None, None);
    for event in events {
        if let Some(u) = event.user_id() {
            if *user.get_or_insert(u) != u {
                return false;
            }
        }
        if let Some(a) = event.anonymous_id().filter(|a| Some(*a) != minted) {
            if *anon.get_or_insert(a) != a {
                return false;
            }
        }
    }
    true
}

/// What the identify stage knows about the request's visitor.
#[derive(Debug, Clone, Copy)]
pub struct Visit<'a> {
    /// The request's visitor id (verified cookie or freshly minted).
    pub visitor: Option<&'a VisitorId>,
    /// Whether the visitor id came from a verified cookie. A minted one
    /// becomes an identifier only for events whose cookie purpose is granted,
    /// because otherwise no cookie is set and the id dies with the request.
    pub cookie_known: bool,
    /// Per event (in order), whether the cookie's purpose is granted, as
    /// the consent decision says.
    pub cookie_granted: &'a [bool],
    /// Whether the events open and extend sessions (a sync's rows do not:
    /// they are not visits).
    pub sessions: bool,
}

/// Links one request's events into the identity graph and stamps them.
///
/// Returns a verdict per event: `Drop` for an event of a deleted person
/// (suppressed), `Keep` for every other. Fails, linking nothing, when the
/// store does; the caller answers 503 as for a failed outbox commit.
pub async fn link(
    identity: &Identity,
    events: &mut [Event],
    visit: &Visit<'_>,
) -> Result<Vec<Verdict>, StorageError> {
    let now_ms = crate::time::now_ms();
    // A minted visitor is an identifier only for a request of one person: a
    // server batch of many users must not be glued together by it.
    let one_person = visit.cookie_known || is_one_person(events, visit.visitor);
    let ids = events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let granted = visit.cookie_granted.get(i).copied().unwrap_or(false);
            let cookie = visit
                .visitor
                .map(VisitorId::as_str)
                .filter(|_| visit.cookie_known || (one_person && granted));
            let mut ids = event_ids(
                event,
                identity.rules(),
                visit.visitor.map(VisitorId::as_str),
                cookie,
                now_ms,
            );
            if !visit.sessions {
                ids.session_key = None;
            }
            if cookieless::is_cookieless(event) {
                // Counted, never linked: no node, no traits, only a session
                // under the day's visitor key.
                ids.session_key = event.anonymous_id().map(|a| format!("cookieless:{a}"));
                ids.keys.clear();
                ids.traits.clear();
                ids.previous_id = None;
                ids.user_seed = false;
                ids.cause = Cause::Event;
            }
            ids
        })
        .collect();
    let linked = identity.link(ids).await?;
    let mut verdicts = Vec::with_capacity(events.len());
    for (event, linked) in events.iter_mut().zip(linked) {
        match linked {
            Linked::Profile {
                profile_id,
                session,
            } => {
                event.stamp("profileId", Value::String(profile_id.to_string()));
                if let Some(s) = session {
                    event.stamp(
                        "session",
                        json!({ "id": s.id, "count": s.count, "start": s.start }),
                    );
                }
                verdicts.push(Verdict::Keep);
            }
            Linked::Session { session } => {
                if let Some(s) = session {
                    event.stamp(
                        "session",
                        json!({ "id": s.id, "count": s.count, "start": s.start }),
                    );
                }
                verdicts.push(Verdict::Keep);
            }
            Linked::Unlinked => verdicts.push(Verdict::Keep),
            Linked::Suppressed => verdicts.push(Verdict::Drop {
                reason: "suppressed".to_owned(),
            }),
        }
    }
    Ok(verdicts)
}

/// The identity facts of one event.
///
/// `visitor` is the request's visitor id and `cookie` the same id when it
/// may be used as an identifier. An `anonymousId` equal to the visitor id is
/// the cookie (the stage filled it in), so it is filed under `cookie:` only,
/// and not at all when the cookie may not be used.
pub(crate) fn event_ids(
    event: &Event,
    rules: &KeyRules,
    visitor: Option<&str>,
    cookie: Option<&str>,
    now_ms: i64,
) -> EventIds {
    let kind = event.event_type();
    let mut keys: Vec<String> = Vec::with_capacity(4);
    let push = |keys: &mut Vec<String>, key: Option<String>| {
        if let Some(key) = key {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    };
    // 1. Most authoritative first: userId, then trait keys, anonymousId, cookie.
    let user = event.user_id().and_then(|u| rules.key(USER, u));
    let user_seed = user.is_some() && kind != EventType::Alias;
    push(&mut keys, user);
    let own_traits = match kind {
        EventType::Identify => event.get("traits").and_then(Value::as_object),
        _ => None,
    };
    let context_traits = event.get("context.traits").and_then(Value::as_object);
    for name in rules.trait_keys() {
        let value = own_traits
            .and_then(|t| t.get(name))
            .or_else(|| context_traits.and_then(|t| t.get(name)))
            .and_then(Value::as_str);
        push(&mut keys, value.and_then(|v| rules.trait_key(name, v)));
    }
    if let Some(anon) = event.anonymous_id() {
        if Some(anon) != visitor {
            push(&mut keys, rules.key(ANON, anon));
        }
    }
    // The client's own id, when a verified cookie took its place.
    if let Some(own) = event.str(CLIENT_ANONYMOUS_ID) {
        push(&mut keys, rules.key(ANON, own));
    }
    let cookie_key = cookie.and_then(|c| rules.key(COOKIE, c));
    push(&mut keys, cookie_key.clone());

    // 2. Sessions follow the browser: the cookie, else the anonymousId, else the user.
    let session_key = cookie_key.or_else(|| {
        keys.iter()
            .rev()
            .find(|k| k.starts_with("anon:") || k.starts_with("user:"))
            .cloned()
    });

    // 3. Traits: context.traits first, so an identify call's own traits win.
    let mut traits = Vec::new();
    for source in [context_traits, own_traits].into_iter().flatten() {
        for (name, value) in source {
            traits.push((name.clone(), value.to_string()));
        }
    }

    let previous_id = match kind {
        EventType::Alias => event
            .str("previousId")
            .filter(|p| !rules.is_junk(p))
            .map(str::to_owned),
        _ => None,
    };
    let ts_ms = event
        .str("timestamp")
        .and_then(parse_rfc3339)
        .map(|t| t.timestamp_millis())
        .unwrap_or(now_ms);
    EventIds {
        message_id: event.message_id().to_owned(),
        kind,
        ts_ms,
        keys,
        user_seed,
        cause: if previous_id.is_some() {
            Cause::Alias
        } else {
            Cause::Event
        },
        previous_id,
        traits,
        session_key,
    }
}

#[cfg(test)]
mod tests;
