//! Outbox: make a request's events durable before the ack, and wake the
//! delivery workers of the destinations they were routed to.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use super::normalize::Rejection;
use super::route::HoldRoutes;
use crate::consent::GrantedPurposes;
use crate::event::Event;
use crate::http::live::LiveStream;
use crate::storage::{
    AcceptedEvent, ConsentSettled, HeldEvent, HoldCommit, HoldOutcome, IngestCommit,
    QuarantinedEvent, Storage, StorageError, Stored,
};
use crate::telemetry::deliver::{ConsentBlocked, ConsentHolds};
use crate::time::now_ms;

/// Collects one request's writes.
#[derive(Debug)]
pub struct CommitBuilder {
    source: Arc<str>,
    dedup: bool,
    commit: IngestCommit,
    /// Consent holds: (accepted index, destination, visitor, hold in seconds).
    holds: Vec<(usize, Arc<str>, String, u64)>,
    /// Consent decisions for waiting destinations.
    settled: Vec<ConsentSettled>,
    /// Events blocked by consent, per destination and denied-or-pending.
    blocked: Vec<(Arc<str>, bool, usize)>,
}

impl CommitBuilder {
    /// A builder for events of `source`.
    pub fn new(source: &Arc<str>, dedup: bool) -> CommitBuilder {
        CommitBuilder {
            source: Arc::clone(source),
            dedup,
            commit: IngestCommit::default(),
            holds: Vec::new(),
            settled: Vec::new(),
            blocked: Vec::new(),
        }
    }

    /// Adds an accepted event routed to `destinations`, with the purposes
    /// the edge granted it (stored with it for the destinations to read).
    pub fn accept(&mut self, event: &Event, destinations: Vec<Arc<str>>, granted: GrantedPurposes) {
        self.commit.accepted.push(AcceptedEvent {
            source: Arc::clone(&self.source),
            message_id: event.message_id().to_owned(),
            dedup: self.dedup,
            granted,
            json: event.to_json().into(),
            destinations,
        });
    }

    /// Records the consent side of the last accepted event's routes: counts
    /// what was blocked, holds it for destinations that wait, and settles
    /// earlier holds of its visitor. Call right after [`accept`](Self::accept).
    pub fn consent(&mut self, event: &Event, blocked: &[(Arc<str>, bool)], holds: HoldRoutes) {
        for (d, denied) in blocked {
            match self
                .blocked
                .iter_mut()
                .find(|(b, den, _)| b == d && den == denied)
            {
                Some((_, _, n)) => *n += 1,
                None => self.blocked.push((Arc::clone(d), *denied, 1)),
            }
        }
        if holds.held.is_empty() && holds.settled.is_empty() {
            return;
        }
        // Holds are per visitor; an event without one cannot be released
        // later, so it is not held (counted as blocked while pending).
        // `anonymousId` first: the tag and server SDKs keep it stable, and
        // identify fills it from the `wm_vid` cookie when absent.
        let Some(visitor) = event
            .anonymous_id()
            .or_else(|| event.str("context.waymark.visitorId"))
            .filter(|v| !v.is_empty())
        else {
            for (d, _) in holds.held {
                self.blocked.push((d, false, 1));
            }
            return;
        };
        let index = self.commit.accepted.len().saturating_sub(1);
        for (d, secs) in holds.held {
            self.holds.push((index, d, visitor.to_owned(), secs));
        }
        for (d, granted) in holds.settled {
            self.settled.push(ConsentSettled {
                destination: d,
                visitor: visitor.to_owned(),
                granted,
            });
        }
    }

    /// Adds a rejected event, kept as received.
    pub fn quarantine(&mut self, raw: &str, rejection: &Rejection) {
        self.commit.quarantined.push(QuarantinedEvent {
            source: Arc::clone(&self.source),
            reason: rejection.reason,
            detail: format!("{}: {}", rejection.field, rejection.problem),
            raw: raw.to_owned(),
        });
    }

    /// Accepted events so far.
    pub fn accepted_len(&self) -> usize {
        self.commit.accepted.len()
    }
}

/// What a commit did.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitSummary {
    /// Events not routed again because their `messageId` was seen before.
    pub duplicates: usize,
}

/// The durable outbox and the wake-up signals of its delivery workers.
#[derive(Clone)]
pub struct Outbox {
    storage: Arc<dyn Storage>,
    wakers: Arc<RwLock<HashMap<Arc<str>, Arc<Notify>>>>,
    live: LiveStream,
}

impl Outbox {
    /// An outbox over `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Outbox {
        Outbox {
            storage,
            wakers: Arc::default(),
            live: LiveStream::new(),
        }
    }

    /// The live stream events are published to as they pass the stages.
    pub fn live(&self) -> &LiveStream {
        &self.live
    }

    /// The store behind it.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The signal a destination's worker waits on; created on first use.
    pub fn waker(&self, destination: &str) -> Arc<Notify> {
        if let Some(n) = self
            .wakers
            .read()
            .ok()
            .and_then(|w| w.get(destination).cloned())
        {
            return n;
        }
        let mut wakers = match self.wakers.write() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(wakers.entry(Arc::from(destination)).or_default())
    }

    /// Commits one request durably (events, holds and consent decisions in
    /// one transaction), then wakes the workers it fed.
    pub async fn commit(&self, mut builder: CommitBuilder) -> Result<CommitSummary, StorageError> {
        let now = now_ms();
        let mut holds = HoldCommit {
            settled: std::mem::take(&mut builder.settled),
            ..HoldCommit::default()
        };
        // Which accepted event each hold is of, for the live stream.
        let mut held_of: Vec<usize> = Vec::new();
        for (i, destination, visitor, secs) in builder.holds.drain(..) {
            let Some(e) = builder.commit.accepted.get(i) else {
                continue;
            };
            holds
                .expires_at_ms
                .insert(Arc::clone(&destination), now + secs as i64 * 1_000);
            holds.held.push(HeldEvent {
                destination,
                source: Arc::clone(&e.source),
                visitor,
                message_id: e.message_id.clone(),
                json: e.json.to_string(),
            });
            held_of.push(i);
        }
        builder.commit.holds = holds;
        let watched = self.live.is_watched().then(|| {
            let accepted = &builder.commit.accepted;
            let frames: Vec<_> = accepted
                .iter()
                .map(|e| (Arc::clone(&e.json), e.destinations.clone()))
                .collect();
            let held: Vec<_> = held_of
                .iter()
                .zip(&builder.commit.holds.held)
                .map(|(&i, h)| (i, Arc::clone(&h.destination)))
                .collect();
            (frames, held)
        });
        let source = Arc::clone(&builder.source);
        let mut touched: Vec<Arc<str>> = Vec::new();
        for event in &builder.commit.accepted {
            for d in &event.destinations {
                if !touched.contains(d) {
                    touched.push(Arc::clone(d));
                }
            }
        }
        let outcome = self.storage.commit_ingest(builder.commit).await?;
        let stored = &outcome.stored;
        let duplicates = stored.iter().filter(|s| **s == Stored::Duplicate).count();
        for (d, denied, count) in &builder.blocked {
            ConsentBlocked {
                destination: d,
                denied: *denied,
                count: *count,
            }
            .emit();
        }
        self.count_holds(&outcome.holds);
        if let Some((frames, held)) = watched {
            for ((json, destinations), s) in frames.iter().zip(stored) {
                if *s == Stored::Duplicate {
                    continue;
                }
                self.live
                    .publish_json_from(Some(&*source), "accepted", json, None, None);
                for d in destinations {
                    self.live
                        .publish_json_from(Some(&*source), "routed", json, Some(d), None);
                }
            }
            for (i, d) in held {
                if let (Some(Stored::Enqueued), Some((json, _))) = (stored.get(i), frames.get(i)) {
                    self.live
                        .publish_json_from(Some(&*source), "held", json, Some(&d), None);
                }
            }
        }
        if duplicates < stored.len() {
            for d in touched {
                // `notify_one` keeps a permit, so a worker that is busy now
                // still sees the wake-up when it next waits.
                self.waker(&d).notify_one();
            }
        }
        for (d, _) in &outcome.holds.released {
            self.waker(d).notify_one();
        }
        Ok(CommitSummary { duplicates })
    }

    /// Counts what a commit's holds and decisions did.
    fn count_holds(&self, outcome: &HoldOutcome) {
        for (outcome_name, list) in [
            ("held", &outcome.held),
            ("released", &outcome.released),
            ("dropped", &outcome.dropped),
        ] {
            for (d, count) in list {
                ConsentHolds {
                    destination: d,
                    outcome: outcome_name,
                    count: *count,
                }
                .emit();
            }
        }
    }
}
