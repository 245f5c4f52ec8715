//! The light job of a shared store asked in one go ([`KnownQuery`]): a
//! request that changes nothing in the graph locks its sessions, reads its
//! nodes and, when they show every identifier is a node of one profile
//! already, moves its sessions on.
//!
//! # Design
//! Every request of a busy site moves the same few visitors' sessions, so
//! the time a session row stays locked bounds the rate of the whole fleet.
//! PostgreSQL therefore runs the job as one statement whose locks last for
//! that statement alone (no round trip to the worker while they are held),
//! and for that the store moves the sessions itself, from the stored rows
//! and the request's steps. Moving a session on by a run of events has a
//! closed form ([`KnownQuery::moved`]): an event starts a new session
//! exactly when it is later than the timeout after all earlier activity
//! (the stored row's and the request's earlier events' of that key), and
//! the last activity is the latest of all. `identity::session::advance_session`
//! run event by event gives the same rows; a test holds them equal.

use std::collections::HashMap;

use super::{IdentityTx, SessionRow};
use crate::storage::StorageError;

/// One event's step of its visitor's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStep {
    /// The session key.
    pub key: String,
    /// The event's time, Unix milliseconds.
    pub ts_ms: i64,
    /// The latest time of the request's earlier events with this key;
    /// `None` for its first.
    pub earlier_max_ms: Option<i64>,
}

/// What a light job asks of the store for one request (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct KnownQuery {
    /// Every session key of the request, sorted, each once: the order the
    /// rows are locked in.
    pub session_keys: Vec<String>,
    /// Every node key of the request, sorted, each once.
    pub node_keys: Vec<String>,
    /// Per event with identifiers: its index in the request and one key.
    pub event_keys: Vec<(i32, String)>,
    /// Session keys that must be stored for the request to be known: those
    /// of events with identifiers, sorted, each once.
    pub required_sessions: Vec<String>,
    /// The session steps, in request order.
    pub steps: Vec<SessionStep>,
    /// Inactivity that ends a session, in milliseconds.
    pub timeout_ms: i64,
    /// Per session key, the latest time of the steps so far.
    latest: HashMap<String, i64>,
    /// Events pushed so far.
    events: usize,
}

/// The store's answer to a [`KnownQuery`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownRows {
    /// Whether the request was known, so its sessions were moved on (and
    /// those of cookieless visitors created); nothing was written otherwise.
    pub moved: bool,
    /// The sessions as stored before the move, in key order.
    pub sessions: Vec<(String, SessionRow)>,
    /// The request's nodes that exist, as `(key, profile id)`.
    pub nodes: Vec<(String, String)>,
}

impl KnownQuery {
    /// An empty query for sessions that end after `timeout_ms` of inactivity.
    pub fn new(timeout_ms: i64) -> KnownQuery {
        KnownQuery {
            timeout_ms,
            ..KnownQuery::default()
        }
    }

    /// Adds the request's next event: its node keys (empty for a cookieless
    /// visitor), its session key and its time.
    pub fn push_event(&mut self, keys: &[String], session_key: Option<&str>, ts_ms: i64) {
        let index = i32::try_from(self.events).unwrap_or(i32::MAX);
        for key in keys {
            self.event_keys.push((index, key.clone()));
            self.node_keys.push(key.clone());
        }
        self.events += 1;
        let Some(key) = session_key else { return };
        if !keys.is_empty() {
            self.required_sessions.push(key.to_owned());
        }
        self.session_keys.push(key.to_owned());
        let earlier = self.latest.get(key).copied();
        self.latest
            .insert(key.to_owned(), earlier.map_or(ts_ms, |m| m.max(ts_ms)));
        self.steps.push(SessionStep {
            key: key.to_owned(),
            ts_ms,
            earlier_max_ms: earlier,
        });
    }

    /// Sorts and dedups the key lists once every event is pushed.
    pub fn finish(mut self) -> KnownQuery {
        for keys in [
            &mut self.session_keys,
            &mut self.node_keys,
            &mut self.required_sessions,
        ] {
            keys.sort_unstable();
            keys.dedup();
        }
        self
    }

    /// Whether stored `sessions` and `nodes` (key to profile) show the
    /// request is known: every required session is stored, and every
    /// event's keys are nodes of one profile.
    pub fn is_known(
        &self,
        sessions: &HashMap<&str, SessionRow>,
        nodes: &HashMap<&str, &str>,
    ) -> bool {
        if !self
            .required_sessions
            .iter()
            .all(|k| sessions.contains_key(k.as_str()))
        {
            return false;
        }
        let mut profile_of_event: HashMap<i32, &str> = HashMap::new();
        self.event_keys.iter().all(|(i, key)| {
            let Some(&profile) = nodes.get(key.as_str()) else {
                return false;
            };
            *profile_of_event.entry(*i).or_insert(profile) == profile
        })
    }

    /// Whether the request is known in `tx`'s snapshot (read only, no lock).
    pub fn is_known_in(&self, tx: &dyn IdentityTx) -> Result<bool, StorageError> {
        let sessions = if self.required_sessions.is_empty() {
            Vec::new()
        } else {
            tx.node_sessions(&self.required_sessions)?
        };
        let nodes = if self.node_keys.is_empty() {
            Vec::new()
        } else {
            tx.node_profiles(&self.node_keys)?
        };
        let (stored, profiles) = by_key(&sessions, &nodes);
        Ok(self.is_known(&stored, &profiles))
    }

    /// The sessions after this request's steps, per key in key order, from
    /// the `stored` rows (the closed form of the module docs).
    pub fn moved(&self, stored: &HashMap<&str, SessionRow>) -> Vec<(String, SessionRow)> {
        let mut out: HashMap<&str, SessionRow> = HashMap::new();
        for step in &self.steps {
            let old = stored.get(step.key.as_str());
            let starts = match (old, step.earlier_max_ms) {
                (Some(o), m) => {
                    step.ts_ms > o.last_activity_ms.max(m.unwrap_or(i64::MIN)) + self.timeout_ms
                }
                (None, None) => true,
                (None, Some(m)) => step.ts_ms > m + self.timeout_ms,
            };
            let row = out.entry(step.key.as_str()).or_insert(match old {
                Some(o) => *o,
                None => SessionRow {
                    session_id: step.ts_ms,
                    count: 0,
                    last_activity_ms: step.ts_ms,
                },
            });
            if starts {
                row.session_id = step.ts_ms;
                row.count += 1;
            }
            row.last_activity_ms = row.last_activity_ms.max(step.ts_ms);
        }
        let mut rows: Vec<(String, SessionRow)> =
            out.into_iter().map(|(k, r)| (k.to_owned(), r)).collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rows
    }
}

/// Stored sessions and node profiles as read, keyed by their keys.
fn by_key<'r>(
    sessions: &'r [(String, SessionRow)],
    nodes: &'r [(String, String)],
) -> (HashMap<&'r str, SessionRow>, HashMap<&'r str, &'r str>) {
    let stored = sessions.iter().map(|(k, r)| (k.as_str(), *r)).collect();
    let profiles = nodes
        .iter()
        .map(|(k, p)| (k.as_str(), p.as_str()))
        .collect();
    (stored, profiles)
}

/// A [`KnownQuery`] answered statement by statement inside a job: the
/// default of [`super::IdentityStore::move_known`].
pub(crate) fn move_known_in(
    tx: &dyn IdentityTx,
    query: &KnownQuery,
) -> Result<KnownRows, StorageError> {
    let sessions = if query.session_keys.is_empty() {
        Vec::new()
    } else {
        tx.lock_sessions(&query.session_keys)?
    };
    let nodes = if query.node_keys.is_empty() {
        Vec::new()
    } else {
        tx.node_profiles(&query.node_keys)?
    };
    let (stored, profiles) = by_key(&sessions, &nodes);
    let moved = query.is_known(&stored, &profiles);
    if moved {
        let (updated, created): (Vec<_>, Vec<_>) = query
            .moved(&stored)
            .into_iter()
            .partition(|(key, _)| stored.contains_key(key.as_str()));
        if !updated.is_empty() || !created.is_empty() {
            tx.store_sessions(&updated, &created)?;
        }
    }
    Ok(KnownRows {
        moved,
        sessions,
        nodes,
    })
}
