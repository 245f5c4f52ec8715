//! The second producer: rows a sync run made into Segment calls (issue 18
//! §3). They pass the same steps as an ingest request's events, in the
//! same order: normalize, identify (a deleted person's row is dropped),
//! consent, and [`Admit`] (rules, route, accept) into one durable outbox
//! commit. What differs is said here once: no cookie, no request, no
//! dedup by `messageId` (the planner decides what is sent; a retried row
//! keeps its id so the vendor deduplicates), and a router holding only the
//! sync's destination.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use serde_json::value::RawValue;

use super::admit::{Admit, Tally};
use super::identify::{self, Visit};
use super::ingest::RawEvent;
use super::normalize::{normalize, NormalizeContext};
use super::outbox::CommitBuilder;
use super::route::Router;
use super::rules::RuleChain;
use super::{Pipeline, Verdict};
use crate::config::{ConsentDefault, DestinationConfig};
use crate::storage::StorageError;

/// Where a sync's rows go: one destination, its consent defaults.
#[derive(Debug, Clone)]
pub struct RowTarget {
    /// The producer's name, `sync:<name>`.
    pub source: Arc<str>,
    /// The routing table of the sync's destination alone.
    pub router: Router,
    /// Every purpose the destination needs, granted unless the row says
    /// otherwise: the sync itself is the operator's choice to send these
    /// rows there. A row that maps a consent column into
    /// `context.consent.*` is decided from it, as an event would be.
    pub defaults: BTreeMap<String, ConsentDefault>,
}

impl RowTarget {
    /// The target for rows of `source` sent to `destination`.
    pub fn new(source: &str, destination: &DestinationConfig) -> RowTarget {
        RowTarget {
            source: Arc::from(source),
            router: Router::new(std::slice::from_ref(destination)),
            defaults: destination
                .consent
                .iter()
                .map(|p| (p.clone(), ConsentDefault::Granted))
                .collect(),
        }
    }
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowFate {
    /// In the destination's outbox; its delivery settles it.
    Committed,
    /// Not sent, and why (invalid call, deleted person, consent, filter).
    NotSent(String),
}

impl Pipeline {
    /// Admits one batch of a sync's calls (`rows`, JSON objects) to
    /// `target` in one durable commit, and says per row whether it went in.
    /// Fails, committing nothing, when the store does.
    pub async fn commit_rows(
        &self,
        target: &RowTarget,
        rows: &[Box<RawValue>],
    ) -> Result<Vec<RowFate>, StorageError> {
        let now = Utc::now();
        let received_at_text = crate::time::format_rfc3339(now);
        let cx = NormalizeContext {
            received_at: now,
            received_at_text: &received_at_text,
            batch_sent_at: None,
            max_event_bytes: self.limits.max_event_bytes,
            max_depth: self.limits.max_depth,
            // The row's primary key vouches for it (a removal carries only that).
            has_visitor: true,
        };
        let mut fates = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        let mut positions = Vec::with_capacity(rows.len());
        for (i, raw) in rows.iter().enumerate() {
            let raw = RawEvent {
                raw,
                endpoint_type: None,
            };
            match normalize(&raw, &cx) {
                Ok(event) => {
                    events.push(event);
                    positions.push(i);
                    fates.push(RowFate::Committed);
                }
                Err(rejection) => fates.push(RowFate::NotSent(format!(
                    "the row's call is invalid: {}: {}",
                    rejection.field, rejection.problem
                ))),
            }
        }
        // Identify: links the row's ids and traits; a deleted person's row
        // is dropped. Rows open no sessions.
        let visit = Visit {
            visitor: None,
            cookie_known: false,
            cookie_granted: &[],
            sessions: false,
        };
        let verdicts = identify::link(&self.identity, &mut events, &visit).await?;
        let rules = RuleChain::default();
        let admit = Admit {
            source: &target.source,
            rules: &rules,
            router: &target.router,
            live: self.outbox.live(),
        };
        let mut commit = CommitBuilder::new(&target.source, false);
        let mut tally = Tally::default();
        for ((event, verdict), i) in events.into_iter().zip(verdicts).zip(positions) {
            if verdict != Verdict::Keep {
                fates[i] = RowFate::NotSent("the person was deleted (suppressed)".into());
                continue;
            }
            let decision = self.consent.decide(&event, &target.defaults);
            let routes = target.router.route(&event, &decision);
            if routes.to.is_empty() {
                fates[i] = RowFate::NotSent(match routes.consent_blocked.first() {
                    Some((_, true)) => "consent denied by the row".into(),
                    Some((_, false)) => "consent not given by the row".into(),
                    None if !routes.holds.held.is_empty() => "consent not given by the row".into(),
                    None => "the destination's filters exclude this call".into(),
                });
                tally.consent_blocked += routes.consent_blocked.len();
                continue;
            }
            admit.admit(event, &decision, &mut commit, &mut tally);
        }
        self.outbox.commit(commit).await?;
        tally.emit(&target.source);
        Ok(fates)
    }
}
