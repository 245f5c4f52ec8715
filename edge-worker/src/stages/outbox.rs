//! Outbox: make a request's events durable before the ack, and wake the
//! delivery workers of the destinations they were routed to.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use super::normalize::Rejection;
use crate::event::Event;
use crate::storage::{
    AcceptedEvent, IngestCommit, QuarantinedEvent, Storage, StorageError, Stored,
};

/// Collects one request's writes.
#[derive(Debug)]
pub struct CommitBuilder {
    source: Arc<str>,
    dedup: bool,
    commit: IngestCommit,
}

impl CommitBuilder {
    /// A builder for events of `source`.
    pub fn new(source: &Arc<str>, dedup: bool) -> CommitBuilder {
        CommitBuilder {
            source: Arc::clone(source),
            dedup,
            commit: IngestCommit::default(),
        }
    }

    /// Adds an accepted event routed to `destinations`.
    pub fn accept(&mut self, event: &Event, destinations: Vec<Arc<str>>) {
        self.commit.accepted.push(AcceptedEvent {
            source: Arc::clone(&self.source),
            message_id: event.message_id().to_owned(),
            dedup: self.dedup,
            json: event.to_json(),
            destinations,
        });
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
}

impl Outbox {
    /// An outbox over `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Outbox {
        Outbox {
            storage,
            wakers: Arc::default(),
        }
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

    /// Commits one request durably, then wakes the workers it fed.
    pub async fn commit(&self, builder: CommitBuilder) -> Result<CommitSummary, StorageError> {
        let mut touched: Vec<Arc<str>> = Vec::new();
        for event in &builder.commit.accepted {
            for d in &event.destinations {
                if !touched.contains(d) {
                    touched.push(Arc::clone(d));
                }
            }
        }
        let stored = self.storage.commit_ingest(builder.commit).await?;
        let duplicates = stored.iter().filter(|s| **s == Stored::Duplicate).count();
        if duplicates < stored.len() {
            for d in touched {
                // `notify_one` keeps a permit, so a worker that is busy now
                // still sees the wake-up when it next waits.
                self.waker(&d).notify_one();
            }
        }
        Ok(CommitSummary { duplicates })
    }
}
