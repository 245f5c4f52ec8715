//! The identity graph: linking one request's events into profiles.
//!
//! [`link_batch`] runs inside one write job on the store's single writer
//! thread, so every decision about the graph is serialised with every write
//! to it: two requests can never both create a profile for the same new
//! identifier. The node cache ([`super::state::GraphState`]) changes only
//! here, with the rows it mirrors; the cached path
//! ([`super::activity::link_cached`]) reads it under the same lock, and
//! records nothing but activity.
//!
//! # Design
//! For each event, its node keys are taken most-authoritative first (`user:`,
//! alias `previousId`, trait keys, `anon:`, `cookie:`). The first accepted
//! key is the event's anchor; every other accepted key that brings something
//! new (a new node, or another profile) is joined to the anchor by exactly
//! one link, so each profile's nodes and active links form a tree, and
//! removing the link of a merge splits the profile back in two (issue #4).
//! A profile that would bring a second user into a group that already has
//! one is refused, the refusal logged, and none of its keys linked.

use std::sync::Arc;

use super::activity::Activity;
use super::key::{kind_of, suppression_hash, ANON, COOKIE, USER};
use super::merge::{merge, MergeMeta};
use super::session::Session;
use super::state::{GraphState, MAX_PENDING};
use crate::event::EventType;
use crate::storage::identity::IdentityTx;
use crate::storage::StorageError;

/// Why an event's identifiers are linked: an ordinary event, or an explicit `alias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Any call but `alias`: its identifiers belong together.
    Event,
    /// `alias`: `previousId` and `userId` are the same person.
    Alias,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Event => "event",
            Cause::Alias => "alias",
        }
    }
}

/// One event's identity facts, taken from the event before the write job.
#[derive(Debug, Clone)]
pub(crate) struct EventIds {
    /// `messageId`, for the merge log.
    pub message_id: String,
    /// The call type, for event counts.
    pub kind: EventType,
    /// The event's (skew-corrected) time, in Unix milliseconds.
    pub ts_ms: i64,
    /// Node keys, most authoritative first; no junk, no duplicates. A
    /// `userId` is always first.
    pub keys: Vec<String>,
    /// Whether `keys[0]` is the event's own `userId` and counts for the
    /// guard even while it is new. False for `alias`, whose new `userId`
    /// may join the `previousId`'s profile.
    pub user_seed: bool,
    /// `alias`'s `previousId`, resolved to a node in the job (`user:`, then
    /// `anon:`, then `cookie:`, else a new `anon:`).
    pub previous_id: Option<String>,
    /// Why the keys are linked.
    pub cause: Cause,
    /// Traits to keep, as `(name, JSON text)`.
    pub traits: Vec<(String, String)>,
    /// The node key sessions are kept under: cookie, else anon, else user.
    pub session_key: Option<String>,
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Linked {
    /// The event carried no identifier that may link.
    Unlinked,
    /// A cookieless visitor: no identifier is linked, but the event's
    /// session key (a daily visitor hash) moves a session on.
    Session {
        /// The visitor's session.
        session: Option<Session>,
    },
    /// One of its identifiers belongs to a deleted person: drop the event.
    Suppressed,
    /// The event belongs to a profile.
    Profile {
        /// The profile's id after every link of the batch.
        profile_id: Arc<str>,
        /// The visitor's session, when the event has a session key.
        session: Option<Session>,
    },
}

/// What a batch did, for telemetry.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BatchReport {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub nodes_created: u64,
    pub profiles_created: u64,
    pub merges: u64,
    pub refusals: u64,
    pub suppressed: u64,
}

/// Batch-wide inputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchContext {
    /// Wall-clock time of the job, in Unix milliseconds.
    pub now_ms: i64,
    /// Inactivity that ends a session, in milliseconds.
    pub session_timeout_ms: i64,
}

/// Links every event of one request and records counts, traits and
/// sessions. Returns, per event in order, what became of it.
pub(crate) fn link_batch(
    conn: &dyn IdentityTx,
    state: &mut GraphState,
    events: &[EventIds],
    cx: BatchContext,
) -> Result<(Vec<Linked>, BatchReport), StorageError> {
    let mut report = BatchReport::default();
    let (suppressions, blocks) = state.counts(conn)?;
    // A job on a shared store reads its nodes and sessions up front, one
    // statement each, instead of one round trip per lookup.
    if state.is_job() {
        let (node_keys, session_keys) = named_keys(events);
        state.prefetch(conn, node_keys, session_keys, suppressions > 0)?;
    }
    // Per event: its anchor node, or why it has none.
    let mut anchors: Vec<Result<String, Linked>> = Vec::with_capacity(events.len());
    for ev in events {
        let keys = resolve_keys(conn, state, ev, &mut report)?;
        // 1. Suppression: any deleted person's identifier drops the whole
        //    event before anything is linked. Known nodes cannot be suppressed
        //    (deletion removes them), so only new ones are checked.
        if suppressions > 0 && is_suppressed(conn, state, &keys, &mut report)? {
            report.suppressed += 1;
            anchors.push(Err(Linked::Suppressed));
            continue;
        }
        anchors.push(link_event(
            conn,
            state,
            ev,
            &keys,
            blocks > 0,
            cx.now_ms,
            &mut report,
        )?);
    }

    // 2. Traits go on each event's anchor node; counts and sessions are
    //    activity, recorded for the next flush.
    let mut activity = Activity::default();
    let mut out = Vec::with_capacity(events.len());
    for (ev, anchor) in events.iter().zip(&anchors) {
        let anchor = match anchor {
            Ok(anchor) => anchor,
            Err(Linked::Unlinked) if ev.keys.is_empty() && ev.session_key.is_some() => {
                let previous = match ev.session_key.as_deref() {
                    Some(key) => match activity.latest_session(key) {
                        Some(row) => Some(row),
                        None => state.session(conn, key)?,
                    },
                    None => None,
                };
                out.push(Linked::Session {
                    session: activity.advance(ev, previous, cx.session_timeout_ms),
                });
                continue;
            }
            Err(linked) => {
                out.push(linked.clone());
                continue;
            }
        };
        for (name, value) in &ev.traits {
            conn.upsert_trait(anchor, name, value, ev.ts_ms)?;
        }
        let previous = match ev.session_key.as_deref() {
            Some(key) => match activity.latest_session(key) {
                Some(row) => Some(row),
                None => state.session(conn, key)?,
            },
            None => None,
        };
        let session = activity.add(anchor, ev, previous, cx.session_timeout_ms);
        // The profile after every link of the batch: an earlier event of the
        // request carries the same id as a later one that merged it.
        let profile_id = match state.lookup(conn, anchor, &mut report)? {
            Some(p) => p,
            None => {
                return Err(StorageError::Sql(format!(
                    "identity: node {anchor} vanished"
                )))
            }
        };
        out.push(Linked::Profile {
            profile_id,
            session,
        });
    }
    // The last fallible step comes before the activity is recorded, so a
    // job that is rolled back records nothing.
    if state.is_shared() {
        // Several writers: activity is written in this transaction, so
        // every worker sees the same sessions and counts (and a retried job
        // counts once); one statement per table, rows in key order, so no
        // two jobs wait on each other's rows in opposite orders.
        let (stats, sessions) = activity.into_sorted();
        conn.bump_nodes(&stats)?;
        conn.put_sessions(&sessions)?;
        return Ok((out, report));
    }
    if state.pending.len() >= MAX_PENDING {
        state.flush(conn)?;
    }
    activity.record(state);
    Ok((out, report))
}

/// Every node key the events name (each `previousId` under every kind it
/// may resolve to) and their session keys.
pub(crate) fn named_keys(events: &[EventIds]) -> (Vec<String>, Vec<String>) {
    let mut nodes = Vec::new();
    let mut sessions = Vec::new();
    for ev in events {
        nodes.extend(ev.keys.iter().cloned());
        if let Some(previous) = &ev.previous_id {
            for kind in [USER, ANON, COOKIE] {
                nodes.push(format!("{kind}:{previous}"));
            }
        }
        sessions.extend(ev.session_key.iter().cloned());
    }
    (nodes, sessions)
}

/// The event's keys with `previousId` resolved to its node.
fn resolve_keys(
    conn: &dyn IdentityTx,
    state: &mut GraphState,
    ev: &EventIds,
    report: &mut BatchReport,
) -> Result<Vec<String>, StorageError> {
    let Some(previous) = &ev.previous_id else {
        return Ok(ev.keys.clone());
    };
    let mut chosen = None;
    for kind in [USER, ANON, COOKIE] {
        let key = format!("{kind}:{previous}");
        if state.lookup(conn, &key, report)?.is_some() {
            chosen = Some(key);
            break;
        }
    }
    let previous_key = chosen.unwrap_or_else(|| format!("{ANON}:{previous}"));
    let mut keys = ev.keys.clone();
    if !keys.contains(&previous_key) {
        // Right after the userId, before the event's anonymous ids.
        let at = usize::from(keys.first().is_some_and(|k| kind_of(k) == USER));
        keys.insert(at, previous_key);
    }
    Ok(keys)
}

fn is_suppressed(
    conn: &dyn IdentityTx,
    state: &mut GraphState,
    keys: &[String],
    report: &mut BatchReport,
) -> Result<bool, StorageError> {
    for key in keys {
        if state.lookup(conn, key, report)?.is_some() {
            continue;
        }
        let suppressed = match state.prefetched_suppression(key) {
            Some(known) => known,
            None => conn.is_suppressed(&suppression_hash(key))?,
        };
        if suppressed {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Links one event's keys; returns its anchor node.
fn link_event(
    conn: &dyn IdentityTx,
    state: &mut GraphState,
    ev: &EventIds,
    keys: &[String],
    check_blocks: bool,
    now_ms: i64,
    report: &mut BatchReport,
) -> Result<Result<String, Linked>, StorageError> {
    if keys.is_empty() {
        return Ok(Err(Linked::Unlinked));
    }
    let message_id = Some(ev.message_id.as_str()).filter(|m| !m.is_empty());
    let mut group: Option<Arc<str>> = None;
    // The guard: does the group hold a user? A new userId counts already.
    let mut group_has_user = false;
    let mut anchor: Option<&str> = None;
    let mut new_keys: Vec<&str> = Vec::new();
    let mut refused: Vec<Arc<str>> = Vec::new();
    let mut identifiers_json: Option<String> = None;
    let mut identifiers = || -> String {
        identifiers_json
            .get_or_insert_with(|| serde_json::to_string(keys).unwrap_or_default())
            .clone()
    };

    for (i, key) in keys.iter().enumerate() {
        let Some(p) = state.lookup(conn, key, report)? else {
            if i == 0 && ev.user_seed {
                group_has_user = true;
            }
            anchor.get_or_insert(key);
            new_keys.push(key);
            continue;
        };
        if group.as_ref() == Some(&p) {
            anchor.get_or_insert(key);
            continue;
        }
        if refused.contains(&p) {
            continue;
        }
        let p_has_user = kind_of(key) == USER || conn.has_user(&p)?;
        let Some(g) = group.clone() else {
            // The first profile met: the group becomes it, unless a new
            // userId already claimed the group for another user.
            if group_has_user && p_has_user {
                refuse(
                    conn,
                    message_id,
                    &identifiers(),
                    None,
                    &p,
                    "conflicting_user",
                    now_ms,
                )?;
                report.refusals += 1;
                refused.push(p);
                continue;
            }
            if let Some(a) = anchor {
                conn.insert_link(a, key, ev.cause.as_str(), message_id, now_ms)?;
            }
            anchor.get_or_insert(key);
            group_has_user |= p_has_user;
            group = Some(p);
            continue;
        };
        // A second profile: merge, unless the guards say no.
        let reason = if group_has_user && p_has_user {
            Some("conflicting_user")
        } else if check_blocks && conn.is_blocked(&g, &p)? {
            Some("split_by_admin")
        } else {
            None
        };
        if let Some(reason) = reason {
            refuse(
                conn,
                message_id,
                &identifiers(),
                Some(&g),
                &p,
                reason,
                now_ms,
            )?;
            report.refusals += 1;
            refused.push(p);
            continue;
        }
        let a = anchor.unwrap_or(key);
        let link_id = conn.insert_link(a, key, ev.cause.as_str(), message_id, now_ms)?;
        let survivor = merge(
            conn,
            state,
            &g,
            &p,
            MergeMeta {
                cause: ev.cause.as_str(),
                message_id,
                identifiers: &identifiers(),
                link_id: Some(link_id),
                absorbed_side_node: key,
                group_side_node: a,
                actor: None,
            },
            now_ms,
        )?;
        report.merges += 1;
        group_has_user |= p_has_user;
        group = Some(survivor);
    }

    // New nodes join the group, or a new profile when there is none.
    let group = match group {
        Some(g) => g,
        None => {
            let id: Arc<str> = Arc::from(new_profile_id());
            conn.insert_profile(&id, now_ms)?;
            report.profiles_created += 1;
            id
        }
    };
    let anchor = anchor.unwrap_or(keys[0].as_str());
    for key in new_keys {
        conn.insert_node(key, &group, now_ms)?;
        report.nodes_created += 1;
        if key != anchor {
            conn.insert_link(anchor, key, ev.cause.as_str(), message_id, now_ms)?;
        }
        state.cache_node(key, &group);
    }
    Ok(Ok(anchor.to_owned()))
}

fn refuse(
    conn: &dyn IdentityTx,
    message_id: Option<&str>,
    identifiers: &str,
    kept: Option<&str>,
    refused: &str,
    reason: &str,
    now_ms: i64,
) -> Result<(), StorageError> {
    conn.insert_refusal(
        message_id,
        kept.unwrap_or(""),
        refused,
        identifiers,
        reason,
        now_ms,
    )
}

/// A new profile id: a UUIDv7, so ids sort by creation time.
pub(crate) fn new_profile_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Index of a call type in `NodeStats::counts` (`EventType::ALL` order).
pub(crate) fn type_index(kind: EventType) -> usize {
    EventType::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}
