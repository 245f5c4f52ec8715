//! Activity: what every event adds to its profile (event counts, first and
//! last seen, the session), and the paths that record only that for a
//! request that changes nothing in the graph: [`link_cached`] from memory
//! (single writer), [`link_known`] in one light job (shared store).

use std::collections::HashMap;
use std::sync::Arc;

use super::graph::{type_index, BatchContext, BatchReport, EventIds, Linked};
use super::session::{advance_session, Session};
use super::state::{GraphState, MAX_PENDING};
use crate::storage::identity::{IdentityTx, NodeStats, SessionRow};
use crate::storage::StorageError;

/// Links a request from memory alone when it changes nothing in the graph:
/// every event's identifiers are cached nodes of one profile, none is an
/// `alias` or carries traits, and every session is cached. Counts and
/// sessions are recorded as pending activity. `None` means the request
/// needs [`link_batch`](super::graph::link_batch) on the writer; nothing was recorded then.
///
/// # Design
/// A returning visitor's events (the bulk of traffic) need no write before
/// the ack: their links already exist. Known nodes cannot be suppressed
/// (deletion removes them) and nothing merges, so no guard applies.
pub(crate) fn link_cached(
    state: &mut GraphState,
    events: &[EventIds],
    cx: BatchContext,
) -> Option<(Vec<Linked>, BatchReport)> {
    if state.pending.len() >= MAX_PENDING {
        return None;
    }
    let mut report = BatchReport::default();
    let mut activity = Activity::default();
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        if ev.previous_id.is_some() || !ev.traits.is_empty() {
            return None;
        }
        let Some((anchor, rest)) = ev.keys.split_first() else {
            // A cookieless visitor: a session, no node.
            let Some(key) = ev.session_key.as_deref() else {
                out.push(Linked::Unlinked);
                continue;
            };
            let previous = match activity.latest_session(key) {
                Some(row) => Some(row),
                None => Some(state.cached_session(key)?),
            };
            out.push(Linked::Session {
                session: activity.advance(ev, previous, cx.session_timeout_ms),
            });
            continue;
        };
        let profile_id = Arc::clone(state.nodes.get(anchor)?);
        for key in rest {
            if **state.nodes.get(key)? != *profile_id {
                return None;
            }
        }
        report.cache_hits += ev.keys.len() as u64;
        let previous = match ev.session_key.as_deref() {
            Some(key) => match activity.latest_session(key) {
                Some(row) => Some(row),
                None => Some(state.cached_session(key)?),
            },
            None => None,
        };
        let session = activity.add(anchor, ev, previous, cx.session_timeout_ms);
        out.push(Linked::Profile {
            profile_id,
            session,
        });
    }
    activity.record(state);
    Some((out, report))
}

/// What [`link_known`] did for a request: per event what became of it, and
/// the counts to add to the worker's write-behind once the job committed.
pub(crate) struct Known {
    pub linked: Vec<Linked>,
    pub report: BatchReport,
    /// Per anchor node, in key order.
    pub stats: Vec<(String, NodeStats)>,
}

/// Links a request that changes nothing in the graph, on a store several
/// workers share: every event's identifiers are nodes of one profile
/// already, none is an `alias` or carries traits, and every such visitor has
/// a stored session. Locks the request's sessions, reads its nodes in one
/// go, moves the sessions on and stores them in the same job; counts are
/// returned for the write-behind. `None` means the request needs
/// [`link_batch`](super::graph::link_batch); nothing was written then.
///
/// # Design
/// Known nodes cannot be suppressed (deletion removes them) and nothing
/// merges, so no guard applies and the job needs no serializable snapshot:
/// the one read of the nodes decides. Sessions are locked in key order
/// ([`IdentityTx::lock_sessions`]), so two workers moving one visitor's
/// session on take turns and each sees the other's row, as on one worker.
/// They are locked before the nodes are read, so a privacy delete (which
/// removes a person's sessions and nodes in one transaction) either waits
/// for this job or has removed both before it looks; and a session is
/// created here only for a visitor without a node (cookieless), so no row
/// of a deleted person can come back.
pub(crate) fn link_known(
    conn: &dyn IdentityTx,
    events: &[EventIds],
    cx: BatchContext,
) -> Result<Option<Known>, StorageError> {
    if events
        .iter()
        .any(|ev| ev.previous_id.is_some() || !ev.traits.is_empty())
    {
        return Ok(None);
    }
    let mut session_keys: Vec<String> = events
        .iter()
        .filter_map(|ev| ev.session_key.clone())
        .collect();
    session_keys.sort_unstable();
    session_keys.dedup();
    let stored: HashMap<String, SessionRow> = if session_keys.is_empty() {
        HashMap::new()
    } else {
        conn.lock_sessions(&session_keys)?.into_iter().collect()
    };
    if events.iter().any(|ev| {
        !ev.keys.is_empty()
            && ev
                .session_key
                .as_ref()
                .is_some_and(|k| !stored.contains_key(k))
    }) {
        return Ok(None);
    }

    let mut keys: Vec<String> = events.iter().flat_map(|ev| ev.keys.clone()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut report = BatchReport::default();
    let mut profiles: HashMap<String, Arc<str>> = HashMap::with_capacity(keys.len());
    if !keys.is_empty() {
        report.cache_misses += keys.len() as u64;
        let mut ids: HashMap<String, Arc<str>> = HashMap::new();
        for (key, profile) in conn.node_profiles(&keys)? {
            let id = ids
                .entry(profile)
                .or_insert_with_key(|p| Arc::from(p.as_str()));
            profiles.insert(key, Arc::clone(id));
        }
    }
    // Per event: its anchor and profile, or none (cookieless or unlinked).
    let mut anchors: Vec<Option<(&str, Arc<str>)>> = Vec::with_capacity(events.len());
    for ev in events {
        let Some((anchor, rest)) = ev.keys.split_first() else {
            anchors.push(None);
            continue;
        };
        let Some(profile) = profiles.get(anchor) else {
            return Ok(None);
        };
        if rest.iter().any(|k| profiles.get(k) != Some(profile)) {
            return Ok(None);
        }
        anchors.push(Some((anchor.as_str(), Arc::clone(profile))));
    }

    let mut activity = Activity::default();
    let mut linked = Vec::with_capacity(events.len());
    for (ev, anchor) in events.iter().zip(anchors) {
        let previous = ev.session_key.as_deref().and_then(|key| {
            activity
                .latest_session(key)
                .or_else(|| stored.get(key).copied())
        });
        linked.push(match anchor {
            Some((anchor, profile_id)) => Linked::Profile {
                profile_id,
                session: activity.add(anchor, ev, previous, cx.session_timeout_ms),
            },
            None if ev.session_key.is_some() => Linked::Session {
                session: activity.advance(ev, previous, cx.session_timeout_ms),
            },
            None => Linked::Unlinked,
        });
    }
    let (stats, sessions) = activity.into_sorted();
    let (moved, created): (Vec<_>, Vec<_>) = sessions
        .into_iter()
        .partition(|(key, _)| stored.contains_key(key));
    if !moved.is_empty() || !created.is_empty() {
        conn.store_sessions(&moved, &created)?;
    }
    Ok(Some(Known {
        linked,
        report,
        stats,
    }))
}

/// Counts per node and sessions per key, each in key order.
pub(super) type Sorted = (Vec<(String, NodeStats)>, Vec<(String, SessionRow)>);

/// One request's activity: counts per anchor node, sessions per session key.
#[derive(Default)]
pub(super) struct Activity<'a> {
    stats: HashMap<&'a str, NodeStats>,
    sessions: HashMap<&'a str, SessionRow>,
}

impl<'a> Activity<'a> {
    /// The session row this request last moved `key` to, if any.
    pub(super) fn latest_session(&self, key: &str) -> Option<SessionRow> {
        self.sessions.get(key).copied()
    }

    /// Counts `ev` on `anchor` and moves its session on from `previous`
    /// (the latest row for its session key).
    pub(super) fn add(
        &mut self,
        anchor: &'a str,
        ev: &'a EventIds,
        previous: Option<SessionRow>,
        timeout_ms: i64,
    ) -> Option<Session> {
        let s = self.stats.entry(anchor).or_insert(NodeStats {
            counts: [0; 6],
            first_seen_ms: ev.ts_ms,
            last_seen_ms: ev.ts_ms,
        });
        s.counts[type_index(ev.kind)] += 1;
        s.first_seen_ms = s.first_seen_ms.min(ev.ts_ms);
        s.last_seen_ms = s.last_seen_ms.max(ev.ts_ms);
        self.advance(ev, previous, timeout_ms)
    }

    /// Moves `ev`'s session on from `previous`; `None` without a session key.
    pub(super) fn advance(
        &mut self,
        ev: &'a EventIds,
        previous: Option<SessionRow>,
        timeout_ms: i64,
    ) -> Option<Session> {
        let key = ev.session_key.as_deref()?;
        let (row, start) = advance_session(previous, ev.ts_ms, timeout_ms);
        self.sessions.insert(key, row);
        Some(Session {
            id: row.session_id,
            count: row.count,
            start,
        })
    }

    /// Writes this request's activity at once (stores with several writers).
    pub(super) fn write(&self, conn: &dyn IdentityTx) -> Result<(), StorageError> {
        for (key, s) in &self.stats {
            conn.bump_node(key, s)?;
        }
        for (key, row) in &self.sessions {
            conn.put_session(key, row)?;
        }
        Ok(())
    }

    /// Counts per anchor node and sessions per key, each in key order.
    pub(super) fn into_sorted(self) -> Sorted {
        let mut stats: Vec<(String, NodeStats)> = self
            .stats
            .into_iter()
            .map(|(k, s)| (k.to_owned(), s))
            .collect();
        stats.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut sessions: Vec<(String, SessionRow)> = self
            .sessions
            .into_iter()
            .map(|(k, r)| (k.to_owned(), r))
            .collect();
        sessions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        (stats, sessions)
    }

    /// Adds this request's activity to the state's pending activity.
    pub(super) fn record(self, state: &mut GraphState) {
        for (key, s) in self.stats {
            state.record_stats(key, s);
        }
        for (key, row) in self.sessions {
            state.record_session(key, row);
        }
    }
}
