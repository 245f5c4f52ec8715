//! Activity: what every event adds to its profile (event counts, first and
//! last seen, the session), and the paths that record only that for a
//! request that changes nothing in the graph: [`link_cached`] from memory
//! (single writer), [`link_known`] in one light job (shared store).

use std::collections::HashMap;
use std::sync::Arc;

use super::graph::{type_index, BatchContext, BatchReport, EventIds, Linked};
use super::session::{advance_session, Session};
use super::state::{GraphState, MAX_PENDING};
use crate::storage::identity::{KnownQuery, KnownRows, NodeStats, SessionRow};
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

/// The light job of a request on a store several workers share
/// ([`KnownQuery`]), when it may change nothing in the graph: no `alias`,
/// no traits. `None` means it needs [`link_batch`](super::graph::link_batch).
pub(crate) fn known_query(events: &[EventIds], cx: BatchContext) -> Option<KnownQuery> {
    if events
        .iter()
        .any(|ev| ev.previous_id.is_some() || !ev.traits.is_empty())
    {
        return None;
    }
    let mut query = KnownQuery::new(cx.session_timeout_ms);
    for ev in events {
        query.push_event(&ev.keys, ev.session_key.as_deref(), ev.ts_ms);
    }
    Some(query.finish())
}

/// Links a request that changes nothing in the graph, on a store several
/// workers share, from the store's answer to its [`known_query`]: every
/// event's identifiers are nodes of one profile already and every such
/// visitor has a stored session, which the store moved on. Each event's
/// session is the stored row moved on event by event, as the store did;
/// counts are returned for the write-behind. `None` means the store found
/// the request unknown and wrote nothing: it needs
/// [`link_batch`](super::graph::link_batch).
///
/// # Design
/// Known nodes cannot be suppressed (deletion removes them) and nothing
/// merges, so no guard applies and the job needs no serializable snapshot:
/// the one read of the nodes decides. The store locks the sessions in key
/// order, so two workers moving one visitor's session on take turns and
/// each sees the other's row, as on one worker. It locks them before it
/// reads the nodes, so a privacy delete (which removes a person's sessions
/// and nodes in one transaction) either waits for the job or has removed
/// both before it looks; and a session is created only for a visitor
/// without a node (cookieless), so no row of a deleted person can come back.
pub(crate) fn link_known(
    events: &[EventIds],
    rows: KnownRows,
    cx: BatchContext,
) -> Result<Option<Known>, StorageError> {
    if !rows.moved {
        return Ok(None);
    }
    let stored: HashMap<String, SessionRow> = rows.sessions.into_iter().collect();
    let mut report = BatchReport::default();
    let mut profiles: HashMap<String, Arc<str>> = HashMap::with_capacity(rows.nodes.len());
    let mut ids: HashMap<String, Arc<str>> = HashMap::new();
    report.cache_misses += rows.nodes.len() as u64;
    for (key, profile) in rows.nodes {
        let id = ids
            .entry(profile)
            .or_insert_with_key(|p| Arc::from(p.as_str()));
        profiles.insert(key, Arc::clone(id));
    }
    let mut activity = Activity::default();
    let mut linked = Vec::with_capacity(events.len());
    for ev in events {
        let previous = ev.session_key.as_deref().and_then(|key| {
            activity
                .latest_session(key)
                .or_else(|| stored.get(key).copied())
        });
        linked.push(match ev.keys.first() {
            Some(anchor) => {
                let Some(profile_id) = profiles.get(anchor) else {
                    return Err(unknown_node(anchor));
                };
                Linked::Profile {
                    profile_id: Arc::clone(profile_id),
                    session: activity.add(anchor, ev, previous, cx.session_timeout_ms),
                }
            }
            None if ev.session_key.is_some() => Linked::Session {
                session: activity.advance(ev, previous, cx.session_timeout_ms),
            },
            None => Linked::Unlinked,
        });
    }
    let (stats, _) = activity.into_sorted();
    Ok(Some(Known {
        linked,
        report,
        stats,
    }))
}

/// The store moved a request on whose node it did not return: a broken
/// backend, reported rather than linked.
#[cold]
fn unknown_node(key: &str) -> StorageError {
    StorageError::Sql(format!(
        "identity: the store found node {key} known but did not return it"
    ))
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
