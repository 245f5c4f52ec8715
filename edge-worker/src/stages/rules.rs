//! The rules stage: a chain of WASM rules applied in order to one event,
//! per source (before routing) and per destination (before delivery).
//!
//! A rule that keeps the event passes it, possibly changed, to the next
//! rule; the first drop ends the chain. A rule that fails follows its
//! `on_error` policy: `pass` (the event goes on exactly as it was before
//! that rule), `drop`, or `quarantine`.

use std::sync::Arc;

use crate::config::OnError;
use crate::event::Event;
use crate::rules::RuleHandle;
use crate::stages::Verdict;
use crate::telemetry::rules::RuleTrapped;

/// Longest drop reason taken from a rule, in bytes.
const MAX_REASON_BYTES: usize = 64;

/// The rules a source or destination names, in order. Cheap to clone.
#[derive(Clone, Default)]
pub struct RuleChain {
    rules: Arc<[Arc<RuleHandle>]>,
}

impl std::fmt::Debug for RuleChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|r| &r.name))
            .finish()
    }
}

impl RuleChain {
    pub(crate) fn new(rules: Vec<Arc<RuleHandle>>) -> RuleChain {
        RuleChain {
            rules: rules.into(),
        }
    }

    /// Whether the chain has no rules (then `apply` is free).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs the chain on `event` in place.
    ///
    /// Synchronous and short: each call is bounded by its rule's
    /// `timeout_ms` (2 ms by default), so calling it from async code is fine.
    /// Returns [`Verdict::Keep`] (the event, changed, goes on),
    /// [`Verdict::Drop`] (a rule dropped it, or a failing rule with
    /// `on_error = "drop"`) or [`Verdict::Quarantine`] (a failing rule with
    /// `on_error = "quarantine"`). Reasons read `rule <name>: <why>`; they
    /// are for people, not metric labels.
    pub fn apply(&self, event: &mut Event) -> Verdict {
        for handle in self.rules.iter() {
            // Each rule is read once per event: a reload during the chain
            // applies from the next event on.
            let rule = handle.current();
            match rule.call(event) {
                Ok(crate::rules::Outcome::Keep) => {}
                Ok(crate::rules::Outcome::Drop(reason)) => {
                    return Verdict::Drop {
                        reason: format!("rule {}: {}", rule.name, clean_reason(&reason)),
                    };
                }
                Err(error) => {
                    RuleTrapped {
                        rule: &rule.name,
                        error: &error,
                        policy: rule.on_error,
                    }
                    .emit();
                    let reason = || format!("rule {}: {}", rule.name, error.kind());
                    match rule.on_error {
                        OnError::Pass => {}
                        OnError::Drop => return Verdict::Drop { reason: reason() },
                        OnError::Quarantine => return Verdict::Quarantine { reason: reason() },
                    }
                }
            }
        }
        Verdict::Keep
    }
}

/// The deliver stage runs a destination's chain through this seam.
impl crate::stages::deliver::DestinationRules for RuleChain {
    fn apply(&self, event: &mut Event) -> Verdict {
        RuleChain::apply(self, event)
    }
}

/// A rule's drop reason, cut short and without control characters.
fn clean_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REASON_BYTES));
    for c in reason.chars() {
        if out.len() + c.len_utf8() > MAX_REASON_BYTES {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    if out.is_empty() {
        out.push_str("dropped");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short_and_printable() {
        assert_eq!(clean_reason("bot"), "bot");
        assert_eq!(clean_reason(""), "dropped");
        assert_eq!(clean_reason("a\nb"), "a b");
        assert_eq!(clean_reason(&"é".repeat(100)).len(), 64);
    }

    #[test]
    fn an_empty_chain_keeps_the_event() {
        let mut e = Event::from_map(serde_json::Map::new());
        assert!(RuleChain::default().is_empty());
        assert_eq!(RuleChain::default().apply(&mut e), Verdict::Keep);
    }
}
