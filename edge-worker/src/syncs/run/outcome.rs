//! The delivery hook's first step (issue 18 §3): an outbox entry that
//! settled becomes the [`RowOutcome`] of the sync row it carried. Only
//! entries whose source starts with `sync:` are parsed; every other entry
//! costs one prefix comparison, so the ingest hot path is not slowed.

use crate::storage::syncs::{Delivery, RowOutcome};
use crate::storage::OutboxEntry;

use super::call::{SyncMark, SYNC_SOURCE_PREFIX};

/// The outcome of `entry` settling as `delivery`, or `None` when the entry
/// is not a sync's row (or its mark is missing or malformed).
pub fn outcome_of(entry: &OutboxEntry, delivery: &Delivery) -> Option<RowOutcome> {
    if !entry.source.starts_with(SYNC_SOURCE_PREFIX) {
        return None;
    }
    let event: serde_json::Value = serde_json::from_str(&entry.json).ok()?;
    let mark = SyncMark::from_event(&event)?;
    Some(RowOutcome {
        sync: mark.sync,
        run: mark.run,
        key: mark.key,
        hash: mark.hash,
        change: mark.change,
        delivery: delivery.clone(),
    })
}

/// The outcomes of the sync rows among `entries`, all settled as `delivery`.
pub fn outcomes_of<'e>(
    entries: impl IntoIterator<Item = &'e OutboxEntry>,
    delivery: &Delivery,
) -> Vec<RowOutcome> {
    entries
        .into_iter()
        .filter_map(|e| outcome_of(e, delivery))
        .collect()
}
