//! Admit: the step every producer shares once it has an event and its
//! consent decision. The source's rule chain may change, drop or
//! quarantine the event; route picks its destinations by filter and by the
//! decision; the event then takes its place in the request's outbox commit
//! with the purposes granted. Ingest runs it per event; a sync run (issue
//! 18) is meant to run it per planned row, so neither copies the other.

use std::sync::Arc;

use super::normalize::Rejection;
use super::outbox::CommitBuilder;
use super::route::Router;
use super::rules::RuleChain;
use super::Verdict;
use crate::consent::Decision;
use crate::event::Event;
use crate::http::live::LiveStream;
use crate::telemetry::ingest::EventsDropped;

/// What admitting one request's events did, for its metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Events a rule dropped.
    pub rule_dropped: usize,
    /// Events a failing rule quarantined.
    pub rule_quarantined: usize,
    /// (event, destination) pairs consent kept from a destination.
    pub consent_blocked: usize,
}

impl Tally {
    /// Emits the drops of `source`'s request.
    pub fn emit(&self, source: &str) {
        for (stage, reason, count) in [
            ("rules", "rule", self.rule_dropped),
            ("rules", "rule_quarantine", self.rule_quarantined),
            ("route", "consent", self.consent_blocked),
        ] {
            if count > 0 {
                EventsDropped {
                    stage,
                    source,
                    reason,
                    count,
                }
                .emit();
            }
        }
    }
}

/// The shared step: rules, route and accept.
pub struct Admit<'a> {
    /// The producer's name (the source), in logs and live frames.
    pub source: &'a Arc<str>,
    /// The chain run before routing; empty for none.
    pub rules: &'a RuleChain,
    /// The routing table.
    pub router: &'a Router,
    /// Where `transformed` frames go.
    pub live: &'a LiveStream,
}

impl Admit<'_> {
    /// Runs `event` through the rules and route into `commit`. Returns
    /// whether the event was kept (routed, possibly to no destination).
    pub fn admit(
        &self,
        mut event: Event,
        decision: &Decision,
        commit: &mut CommitBuilder,
        tally: &mut Tally,
    ) -> bool {
        if !self.rules.is_empty() {
            match self.rules.apply(&mut event) {
                Verdict::Keep => {
                    self.live
                        .publish_event_from(self.source, "transformed", &event, None)
                }
                Verdict::Drop { reason } => {
                    tracing::debug!(source = %self.source, reason = %reason, "Rule dropped an event.");
                    tally.rule_dropped += 1;
                    return false;
                }
                Verdict::Quarantine { reason } => {
                    let rejection = Rejection {
                        reason: "rule",
                        field: "rules".to_owned(),
                        problem: reason,
                    };
                    commit.quarantine(&event.to_json(), &rejection);
                    tally.rule_quarantined += 1;
                    return false;
                }
            }
        }
        // Route: consent per destination is read from the decision here.
        let routes = self.router.route(&event, decision);
        tally.consent_blocked += routes.consent_blocked.len();
        commit.accept(&event, routes.to, decision.granted_purposes());
        commit.consent(&event, &routes.consent_blocked, routes.holds);
        true
    }
}
