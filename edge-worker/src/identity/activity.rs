//! Activity: what every event adds to its profile (event counts, first and
//! last seen, the session), and [`link_cached`], which records only that for
//! a request that changes nothing in the graph.

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
