//! The encode loop the HTTP vendors share: parse each outbox entry, map it
//! to the vendor's shape or skip it, check it against the vendor's size
//! limit, and collect what is to be sent, remembering which event of the
//! batch each encoded item came from. Requests are then cut to the vendor's
//! limits, and each answer settles only the events of its request; an
//! answer that names refused events rejects those and resends the rest.
//!
//! # Design
//! Per-event outcomes exist once, here (issue #14): before it, each vendor
//! copied a loop in which one bad entry (`parse_event(entry)?`) or one
//! over-size event failed the whole batch into the dead-letter store.

use std::ops::Range;

use reqwest::RequestBuilder;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::http::{self, Answer};
use super::{DeliveryError, Outcome, SkipReason};
use crate::storage::OutboxEntry;

/// What a vendor mapping made of one event.
pub(crate) enum Mapped<T> {
    /// The vendor's JSON for it, and what the request builder needs besides.
    Event(Value, T),
    /// The event does not apply to this vendor.
    Skip(SkipReason),
    /// The event can never be sent, with the reason.
    Reject(String),
}

/// One encoded event waiting to be sent.
pub(crate) struct Item<T> {
    /// Its position in the batch.
    pub index: usize,
    /// Its vendor JSON, serialised once.
    pub json: String,
    /// What the mapping kept besides (GA4's client, Amplitude's id length).
    pub meta: T,
}

/// A batch on its way to a vendor: encoded items and the outcomes decided so far.
pub(crate) struct Encoded<T> {
    outcomes: Vec<Option<Outcome>>,
    /// The events to send, in batch order.
    pub items: Vec<Item<T>>,
}

/// Parses, maps and size-checks every entry of `events` for `vendor`.
/// An encoded event longer than `max_event_bytes` is rejected alone.
pub(crate) fn encode_batch<T>(
    events: &[OutboxEntry],
    vendor: &str,
    max_event_bytes: usize,
    mut map: impl FnMut(&Map<String, Value>, &OutboxEntry) -> Mapped<T>,
) -> Encoded<T> {
    let mut encoded = Encoded {
        outcomes: Vec::with_capacity(events.len()),
        items: Vec::with_capacity(events.len()),
    };
    for (index, entry) in events.iter().enumerate() {
        let outcome = match http::parse_event(entry) {
            Err(error) => Some(Outcome::Rejected(format!("{vendor}: {}", error.message))),
            Ok(event) => match map(&event, entry) {
                Mapped::Skip(reason) => Some(Outcome::Skipped(reason)),
                Mapped::Reject(reason) => Some(Outcome::Rejected(format!("{vendor}: {reason}"))),
                Mapped::Event(value, meta) => {
                    let json = value.to_string();
                    if json.len() > max_event_bytes {
                        Some(over_size(vendor, entry, json.len(), max_event_bytes))
                    } else {
                        encoded.items.push(Item { index, json, meta });
                        None
                    }
                }
            },
        };
        encoded.outcomes.push(outcome);
    }
    encoded
}

/// Checks every entry of `events` for a vendor that takes the stored JSON
/// as it is (Segment, webhooks): a JSON object within `max_event_bytes`.
/// The items carry the stored text; nothing is re-encoded.
pub(crate) fn check_raw(
    events: &[OutboxEntry],
    vendor: &str,
    max_event_bytes: usize,
) -> Encoded<()> {
    let mut encoded = Encoded {
        outcomes: Vec::with_capacity(events.len()),
        items: Vec::with_capacity(events.len()),
    };
    for (index, entry) in events.iter().enumerate() {
        let text = entry.json.trim_start();
        let is_object =
            text.starts_with('{') && serde_json::from_str::<IgnoredAny>(&entry.json).is_ok();
        let outcome = if !is_object {
            Some(Outcome::Rejected(format!(
                "{vendor}: outbox entry {} is not a JSON object",
                entry.id
            )))
        } else if entry.json.len() > max_event_bytes {
            Some(over_size(vendor, entry, entry.json.len(), max_event_bytes))
        } else {
            encoded.items.push(Item {
                index,
                json: String::new(),
                meta: (),
            });
            None
        };
        encoded.outcomes.push(outcome);
    }
    encoded
}

#[cold]
fn over_size(vendor: &str, entry: &OutboxEntry, bytes: usize, limit: usize) -> Outcome {
    Outcome::Rejected(format!(
        "{vendor}: event {} is {bytes} bytes, over the limit of {limit} bytes per event",
        entry.message_id
    ))
}

/// Cuts `lens` (the byte length of each item, in order) into requests of
/// at most `max_events` items and `max_body_bytes`, counting `overhead`
/// bytes of envelope and one separator per item.
pub(crate) fn requests(
    lens: impl IntoIterator<Item = usize>,
    max_events: usize,
    max_body_bytes: usize,
    overhead: usize,
) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut count, mut bytes) = (0, 0, overhead);
    for (i, len) in lens.into_iter().enumerate() {
        if count > 0 && (count >= max_events || bytes + len + 1 > max_body_bytes) {
            out.push(start..i);
            (start, count, bytes) = (i, 0, overhead);
        }
        count += 1;
        bytes += len + 1;
    }
    if count > 0 {
        out.push(start..start + count);
    }
    out
}

/// Joins JSON texts into `head` + `a,b,c` + `tail`.
pub(crate) fn splice<'a>(head: &str, parts: impl Iterator<Item = &'a str>, tail: &str) -> String {
    let mut body = String::from(head);
    for (i, p) in parts.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(p);
    }
    body.push_str(tail);
    body
}

/// Events a vendor refused in an answer, by position in the request.
pub(crate) struct Refusal {
    /// `(position in the request, reason)` of each refused event.
    pub refused: Vec<(usize, String)>,
    /// Whether the vendor stored the other events of the request (Mixpanel's
    /// strict mode does); else they are sent again without the refused ones.
    pub others_stored: bool,
}

/// Most requests one group of events is sent in while a vendor keeps
/// refusing some of them; what is left after that is retried later.
const MAX_ROUNDS: usize = 4;

impl<T> Encoded<T> {
    /// Decides the outcome of the batch event `index`.
    pub(crate) fn settle(&mut self, index: usize, outcome: Outcome) {
        if let Some(slot) = self.outcomes.get_mut(index) {
            *slot = Some(outcome);
        }
    }

    /// Settles the items at `positions` with the answer of the one request
    /// that carried them.
    pub(crate) fn settle_items(&mut self, positions: &[usize], result: &Result<(), DeliveryError>) {
        for &p in positions {
            if let Some(index) = self.items.get(p).map(|i| i.index) {
                self.settle(index, Outcome::of(result));
            }
        }
    }

    /// Sends the items at `positions` with `build`, settling each. When an
    /// answer names refused events (`read_refusal`), those are rejected with
    /// their reasons and, unless the vendor stored the others, the others
    /// are sent again, for at most [`MAX_ROUNDS`] requests.
    pub(crate) async fn send_items(
        &mut self,
        vendor: &str,
        mut positions: Vec<usize>,
        build: impl Fn(&Self, &[usize]) -> RequestBuilder,
        read_refusal: impl Fn(&Answer) -> Option<Refusal>,
    ) {
        for round in 0..MAX_ROUNDS {
            if positions.is_empty() {
                return;
            }
            let answer = match http::send_raw(build(self, &positions), vendor).await {
                Ok(answer) => answer,
                Err(error) => return self.settle_items(&positions, &Err(error)),
            };
            let result = answer.classify(vendor);
            let refusal = match &result {
                Ok(()) => None,
                Err(e) if e.is_retriable() => None,
                Err(_) => read_refusal(&answer).filter(|r| {
                    !r.refused.is_empty() && r.refused.iter().all(|(p, _)| *p < positions.len())
                }),
            };
            let Some(refusal) = refusal else {
                return self.settle_items(&positions, &result);
            };
            let mut refused = vec![false; positions.len()];
            for (p, reason) in refusal.refused {
                if let Some(index) = self.items.get(positions[p]).map(|i| i.index) {
                    self.settle(index, Outcome::Rejected(format!("{vendor}: {reason}")));
                }
                refused[p] = true;
            }
            let rest: Vec<usize> = positions
                .iter()
                .zip(&refused)
                .filter(|(_, r)| !**r)
                .map(|(p, _)| *p)
                .collect();
            if refusal.others_stored {
                return self.settle_items(&rest, &Ok(()));
            }
            positions = rest;
            if round + 1 == MAX_ROUNDS {
                let error = DeliveryError::retriable(format!(
                    "{vendor}: kept refusing events of this request; the rest is retried"
                ));
                self.settle_items(&positions, &Err(error));
            }
        }
    }

    /// The outcome of every event of the batch, in order. An event nothing
    /// was decided for (which the loop above does not leave) is retried.
    pub(crate) fn finish(self) -> Vec<Outcome> {
        self.outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Outcome::Retry(DeliveryError::retriable("no outcome was recorded"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn entry(id: i64, json: &str) -> OutboxEntry {
        OutboxEntry {
            id,
            source: "web".into(),
            message_id: format!("m{id}"),
            granted: Default::default(),
            json: Arc::from(json),
            enqueued_at_ms: 0,
            attempts: 0,
        }
    }

    #[test]
    fn a_bad_entry_and_an_over_size_event_are_rejected_alone() {
        let big = format!(r#"{{"type":"track","event":"{}"}}"#, "x".repeat(200));
        let events = vec![
            entry(1, r#"{"type":"track","event":"A"}"#),
            entry(2, "not json"),
            entry(3, &big),
            entry(4, r#"{"type":"group","groupId":"g"}"#),
        ];
        let enc = encode_batch(&events, "v", 100, |e, _| {
            match e.get("type").and_then(Value::as_str) {
                Some("track") => Mapped::Event(json!({ "name": e["event"] }), ()),
                _ => Mapped::Skip(SkipReason::UnsupportedType),
            }
        });
        assert_eq!(enc.items.len(), 1);
        let outcomes = enc.finish();
        assert!(matches!(outcomes[0], Outcome::Retry(_)));
        assert!(
            matches!(&outcomes[1], Outcome::Rejected(r) if r.contains("not a JSON object")),
            "{outcomes:?}"
        );
        assert!(
            matches!(&outcomes[2], Outcome::Rejected(r) if r.contains("over the limit of 100 bytes")),
            "{outcomes:?}"
        );
        assert!(matches!(
            outcomes[3],
            Outcome::Skipped(SkipReason::UnsupportedType)
        ));
    }

    #[test]
    fn raw_entries_are_checked_without_re_encoding() {
        let events = vec![
            entry(1, r#"{"a":1}"#),
            entry(2, r#"["not","an","object"]"#),
            entry(3, r#"{"a":"0123456789"}"#),
        ];
        let enc = check_raw(&events, "segment", 10);
        assert_eq!(enc.items.iter().map(|i| i.index).collect::<Vec<_>>(), [0]);
        let outcomes = enc.finish();
        assert!(matches!(&outcomes[1], Outcome::Rejected(_)));
        assert!(matches!(&outcomes[2], Outcome::Rejected(r) if r.contains("m3")));
    }

    #[test]
    fn requests_respect_count_and_bytes() {
        assert_eq!(requests([10; 5], 2, 1_000, 2), vec![0..2, 2..4, 4..5]);
        assert_eq!(requests([40, 40, 40], 10, 100, 10), vec![0..2, 2..3]);
        assert_eq!(requests([500], 10, 100, 10), vec![0..1]);
        assert!(requests([], 10, 100, 10).is_empty());
    }
}
