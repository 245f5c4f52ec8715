//! Deliver: one worker per destination drains its outbox.
//!
//! Batches are taken oldest first, up to what the vendor accepts, and up to
//! `delivery.concurrency` of them are in flight at once. A retriable
//! failure reschedules the batch with exponential backoff and jitter (or
//! the vendor's `Retry-After`); a permanent one, or an event older than the
//! destination's maximum age, goes to the dead-letter store. Backoff lives
//! here and only here: destinations never sleep.
//!
//! Before sending, the destination's rule chain (if any) runs on each
//! event: a dropped event leaves the outbox, counted as an intentional
//! drop with its reason; a quarantined one moves to the quarantine store
//! with the destination, the rule and the reason, replayable to this
//! destination. Neither counts as delivered.
//!
//! The destination answers per event ([`Outcome`]): delivered events leave
//! the outbox; retries are rescheduled; rejected events go to the
//! dead-letter store with their own reasons; events that do not apply are
//! skipped, counted in `waymark_events_skipped_total{reason}` and shown in
//! the live stream. One event's outcome never decides another's.
//!
//! # Design
//! Each destination has its own task and reads its own rows, so a slow or
//! failing destination never slows ingest or the other destinations; its
//! events wait on disk, not in memory (issues #2, #5). Per-destination rule
//! chains run here rather than before the outbox for the same reason: a
//! slow chain delays only its own destination, never the ingest ack.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::outbox::Outbox;
use super::Verdict;
use crate::config::DeliveryConfig;
use crate::destinations::{DeliveryError, Destination, Outcome, SkipReason};
use crate::event::Event;
use crate::storage::syncs::{Delivery, SettledRow};
use crate::storage::{OutboxEntry, RuleQuarantine, StorageError};
use crate::syncs::run::{outcome_of, SYNC_SOURCE_PREFIX};
use crate::telemetry::deliver::{
    BatchDelivered, ConsentHolds, DeliveryFailed, DestinationMetrics, EventsDeadLettered,
    EventsDroppedByRule, EventsQuarantinedByRule, EventsRetried, EventsSkipped, QueueMeasured,
};
use crate::time::now_ms;

/// Retry, batching and concurrency settings with defaults applied.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Most events per send.
    pub batch_size: usize,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Longest an event is retried, in milliseconds.
    pub max_age_ms: i64,
    /// First retry delay, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    /// Applies defaults to `config`, capping the batch at `vendor_max`.
    pub fn from_config(config: &DeliveryConfig, vendor_max: usize) -> RetryPolicy {
        RetryPolicy {
            batch_size: config
                .batch_size
                .unwrap_or(vendor_max)
                .clamp(1, vendor_max.max(1)),
            concurrency: config.concurrency.unwrap_or(2).clamp(1, 64),
            max_age_ms: config.max_age_secs.unwrap_or(86_400) as i64 * 1_000,
            initial_backoff_ms: config.initial_backoff_ms.unwrap_or(500).max(1),
            max_backoff_ms: config.max_backoff_ms.unwrap_or(300_000).max(1),
        }
    }

    /// Delay before attempt `attempts + 1`: exponential with full jitter in
    /// the upper half, capped; a vendor's `Retry-After` wins when longer.
    pub fn backoff(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .initial_backoff_ms
            .saturating_mul(1u64 << attempts.min(20))
            .min(self.max_backoff_ms);
        let jittered = exp / 2 + rand::thread_rng().gen_range(0..=exp / 2);
        let delay = Duration::from_millis(jittered);
        match retry_after {
            Some(after) if after > delay => after,
            _ => delay,
        }
    }
}

/// A destination's rule chain, as the deliver stage sees it.
///
/// The rules engine's `RuleChain` implements it; `App` hands each
/// destination's chain to [`run_worker`]. The chain runs in the delivery
/// worker, so a slow chain never delays the ingest ack.
pub trait DestinationRules: Send + Sync + 'static {
    /// Runs the chain on one event, possibly changing it.
    fn apply(&self, event: &mut Event) -> Verdict;
}

/// Idle wait between outbox checks when no wake-up arrives, so retries
/// scheduled for later are picked up.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// How often a lane that never drains reads its queue from the start, so a
/// retry coming due, or a row committed after later ones (PostgreSQL),
/// below the rows in flight is not left waiting until the load stops.
const REREAD_EVERY: Duration = Duration::from_secs(1);

/// How often queue gauges are measured and expired consent holds dropped.
const HOUSEKEEPING: Duration = Duration::from_secs(2);

/// Everything one batch's task needs.
struct Lane {
    name: Arc<str>,
    destination: Arc<dyn Destination>,
    policy: RetryPolicy,
    outbox: Outbox,
    rules: Option<Arc<dyn DestinationRules>>,
    metrics: DestinationMetrics,
}

/// Runs the delivery loop for one destination, with its rule chain if it
/// has one, until `shutdown` turns true.
pub async fn run_worker(
    name: Arc<str>,
    destination: Arc<dyn Destination>,
    policy: RetryPolicy,
    outbox: Outbox,
    rules: Option<Arc<dyn DestinationRules>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let waker = outbox.waker(&name);
    let storage = Arc::clone(outbox.storage());
    let lane = Arc::new(Lane {
        metrics: DestinationMetrics::register(&name),
        name,
        destination,
        policy,
        outbox,
        rules,
    });
    let housekeeping = tokio::spawn(housekeep(Arc::clone(&lane), shutdown.clone()));
    // Rows being sent now, so a concurrent read does not send them twice.
    let mut in_flight: BTreeSet<i64> = BTreeSet::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut task_rows: HashMap<tokio::task::Id, Vec<i64>> = HashMap::new();
    let mut last_reread = Instant::now();
    loop {
        if *shutdown.borrow() {
            break;
        }
        // 1. Fill free lanes with due batches.
        while tasks.len() < lane.policy.concurrency {
            // Read past the rows in flight rather than reading and skipping
            // them; rows below (retries coming due) are read once the lane
            // drains, or every `REREAD_EVERY` while it does not.
            let from_start = in_flight.is_empty() || last_reread.elapsed() >= REREAD_EVERY;
            let (after_id, limit) = if from_start {
                last_reread = Instant::now();
                (0, lane.policy.batch_size + in_flight.len())
            } else {
                (
                    in_flight.last().copied().unwrap_or(0),
                    lane.policy.batch_size,
                )
            };
            let due = match storage
                .outbox_due(&lane.name, now_ms(), after_id, limit)
                .await
            {
                Ok(due) => due,
                Err(error) => {
                    tracing::error!(destination = %lane.name, error = %error, "Reading the outbox failed.");
                    sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                    break;
                }
            };
            let batch: Vec<OutboxEntry> = due
                .into_iter()
                .filter(|e| !in_flight.contains(&e.id))
                .take(lane.policy.batch_size)
                .collect();
            if batch.is_empty() {
                break;
            }
            let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
            in_flight.extend(&ids);
            let handle = tasks.spawn(deliver_batch(Arc::clone(&lane), batch));
            task_rows.insert(handle.id(), ids);
        }
        // 2. Wait for a finished send, new events, a retry coming due, or shutdown.
        tokio::select! {
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match &done {
                    Ok((id, ())) => *id,
                    Err(e) => {
                        // The rows stay in the outbox and are sent again.
                        tracing::error!(destination = %lane.name, error = %e, "A delivery task failed.");
                        e.id()
                    }
                };
                for row in task_rows.remove(&id).unwrap_or_default() {
                    in_flight.remove(&row);
                }
            }
            _ = waker.notified() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
    // Let sends in flight finish: their outcome is recorded, nothing is lost either way.
    while tasks.join_next().await.is_some() {}
    housekeeping.abort();
}

async fn deliver_batch(lane: Arc<Lane>, batch: Vec<OutboxEntry>) {
    // 1. The destination's rule chain.
    let batch = match &lane.rules {
        Some(rules) => {
            let ruled = apply_rules(rules.as_ref(), batch);
            settle_rules(&lane, ruled.dropped, ruled.quarantined).await;
            ruled.keep
        }
        None => batch,
    };
    if batch.is_empty() {
        return;
    }
    // 2. Send, and settle each event by its own outcome.
    let started = Instant::now();
    let mut outcomes = lane.destination.send(&batch).await;
    let duration = started.elapsed();
    // NOTE: a destination answers one outcome per event; any it left out
    // are retried rather than guessed.
    outcomes.resize_with(batch.len(), || {
        Outcome::Retry(DeliveryError::retriable("the destination gave no outcome"))
    });
    if let Err(error) = settle(&lane, batch, outcomes, duration).await {
        // The events stay in the outbox and are retried; nothing is lost.
        tracing::error!(destination = %lane.name, error = %error, "Recording a delivery outcome failed.");
    }
}

/// A batch split by the rule chain's verdicts.
struct Ruled {
    /// Events to send, as the chain changed them.
    keep: Vec<OutboxEntry>,
    /// Events dropped on purpose, with the reason.
    dropped: Vec<(OutboxEntry, String)>,
    /// Events to quarantine, with the reason.
    quarantined: Vec<(OutboxEntry, String)>,
}

/// Runs the chain on each event.
fn apply_rules(rules: &dyn DestinationRules, batch: Vec<OutboxEntry>) -> Ruled {
    let mut ruled = Ruled {
        keep: Vec::with_capacity(batch.len()),
        dropped: Vec::new(),
        quarantined: Vec::new(),
    };
    for mut entry in batch {
        let mut event = match serde_json::from_str::<serde_json::Value>(&entry.json) {
            Ok(serde_json::Value::Object(map)) => Event::from_map(map),
            // Not an object: let the destination refuse it into the dead-letter store.
            _ => {
                ruled.keep.push(entry);
                continue;
            }
        };
        match rules.apply(&mut event) {
            Verdict::Keep => {
                entry.json = event.to_json().into();
                ruled.keep.push(entry);
            }
            Verdict::Drop { reason } => ruled.dropped.push((entry, reason)),
            Verdict::Quarantine { reason } => ruled.quarantined.push((entry, reason)),
        }
    }
    ruled
}

/// The rule a chain's reason names (`rule <name>: <why>`).
fn rule_of(reason: &str) -> Option<String> {
    let rest = reason.strip_prefix("rule ")?;
    rest.split_once(": ").map(|(name, _)| name.to_owned())
}

/// Removes dropped events (counted as intentional drops) and moves
/// quarantined ones to the quarantine store. On a storage error the events
/// stay in the outbox and the chain decides again on the next attempt.
async fn settle_rules(
    lane: &Lane,
    dropped: Vec<(OutboxEntry, String)>,
    quarantined: Vec<(OutboxEntry, String)>,
) {
    let storage = lane.outbox.storage();
    let live = lane.outbox.live();
    if let Some((_, first)) = dropped.first() {
        EventsDroppedByRule {
            metrics: &lane.metrics,
            destination: &lane.name,
            count: dropped.len(),
            first_reason: first,
        }
        .emit();
        for (e, reason) in &dropped {
            live.publish_json_from(
                Some(&e.source),
                "dropped",
                &e.json,
                Some(&lane.name),
                Some(reason),
            );
        }
        let ids = dropped.iter().map(|(e, _)| e.id).collect();
        // Dropped on purpose: the row is settled as the rules wanted.
        let rows = sync_rows(dropped.iter().map(|(e, _)| (e, Delivery::Delivered)));
        if let Err(error) = storage.outbox_delivered(ids, rows).await {
            tracing::error!(destination = %lane.name, error = %error, "Removing dropped events failed.");
        }
    }
    if let Some((_, first)) = quarantined.first() {
        EventsQuarantinedByRule {
            metrics: &lane.metrics,
            destination: &lane.name,
            count: quarantined.len(),
            first_reason: first,
        }
        .emit();
        for (e, reason) in &quarantined {
            live.publish_json_from(
                Some(&e.source),
                "quarantined",
                &e.json,
                Some(&lane.name),
                Some(reason),
            );
        }
        // Quarantined: the destination did not get the row, so it is failed.
        let rows = sync_rows(
            quarantined
                .iter()
                .filter(|(e, _)| is_sync(e))
                .map(|(e, reason)| {
                    let failed = Delivery::DeadLettered {
                        reason: reason.clone(),
                    };
                    (e, failed)
                }),
        );
        let entries = quarantined
            .into_iter()
            .map(|(e, reason)| RuleQuarantine {
                id: e.id,
                rule: rule_of(&reason),
                reason,
            })
            .collect();
        if let Err(error) = storage.outbox_quarantine(entries, rows).await {
            tracing::error!(destination = %lane.name, error = %error, "Quarantining events failed.");
        }
    }
}

/// The sync row `entry` carried, settled as `delivery`, recorded with the
/// entry's own outbox bookkeeping (issue #18). `None` for every entry that
/// is not a sync's row, which costs one prefix comparison and is never
/// parsed, so the ingest hot path is not slowed.
fn sync_row(entry: &OutboxEntry, delivery: &Delivery) -> Option<SettledRow> {
    Some(SettledRow {
        entry: entry.id,
        outcome: outcome_of(entry, delivery)?,
    })
}

/// Whether `entry` is a sync's row (its source is `sync:<name>`); lets the
/// failure paths skip building a reason for entries of other sources.
fn is_sync(entry: &OutboxEntry) -> bool {
    entry.source.starts_with(SYNC_SOURCE_PREFIX)
}

/// The sync rows among `settled` entries, each with how it settled.
fn sync_rows<'e>(settled: impl Iterator<Item = (&'e OutboxEntry, Delivery)>) -> Vec<SettledRow> {
    settled
        .filter_map(|(e, delivery)| sync_row(e, &delivery))
        .collect()
}

/// Groups `(key, value)` pairs by key, in first-seen order.
fn group<K: PartialEq, V>(pairs: Vec<(K, V)>) -> Vec<(K, Vec<V>)> {
    let mut groups: Vec<(K, Vec<V>)> = Vec::new();
    for (k, e) in pairs {
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, entries)) => entries.push(e),
            None => groups.push((k, vec![e])),
        }
    }
    groups
}

/// Records each event's outcome: delivered and skipped events leave the
/// outbox, rejected ones are dead-lettered with their reasons, retries are
/// rescheduled (or dead-lettered past the maximum age).
async fn settle(
    lane: &Lane,
    batch: Vec<OutboxEntry>,
    outcomes: Vec<Outcome>,
    duration: Duration,
) -> Result<(), StorageError> {
    let storage = lane.outbox.storage();
    let live = lane.outbox.live();
    let mut done: Vec<i64> = Vec::new();
    let mut done_rows: Vec<SettledRow> = Vec::new();
    let mut enqueued: Vec<i64> = Vec::new();
    let mut skipped: Vec<(SkipReason, OutboxEntry)> = Vec::new();
    let mut rejected: Vec<(String, OutboxEntry)> = Vec::new();
    let mut retries: Vec<(String, (DeliveryError, OutboxEntry))> = Vec::new();
    for (entry, outcome) in batch.into_iter().zip(outcomes) {
        match outcome {
            Outcome::Delivered => {
                live.publish_json_from(
                    Some(&entry.source),
                    "delivered",
                    &entry.json,
                    Some(&lane.name),
                    None,
                );
                enqueued.push(entry.enqueued_at_ms);
                done_rows.extend(sync_row(&entry, &Delivery::Delivered));
                done.push(entry.id);
            }
            Outcome::Skipped(reason) => {
                live.publish_json_from(
                    Some(&entry.source),
                    "skipped",
                    &entry.json,
                    Some(&lane.name),
                    Some(reason.as_str()),
                );
                done_rows.extend(sync_row(&entry, &Delivery::Delivered));
                done.push(entry.id);
                skipped.push((reason, entry));
            }
            Outcome::Rejected(reason) => {
                live.publish_json_from(
                    Some(&entry.source),
                    "failed",
                    &entry.json,
                    Some(&lane.name),
                    Some(&reason),
                );
                rejected.push((reason, entry));
            }
            Outcome::Retry(error) => {
                live.publish_json_from(
                    Some(&entry.source),
                    "failed",
                    &entry.json,
                    Some(&lane.name),
                    Some(&error.message),
                );
                retries.push((error.message.clone(), (error, entry)));
            }
        }
    }
    if !enqueued.is_empty() {
        BatchDelivered {
            metrics: &lane.metrics,
            count: enqueued.len(),
            duration,
            enqueued_ms: &enqueued,
        }
        .emit();
    }
    for (reason, entries) in group(skipped) {
        EventsSkipped {
            metrics: &lane.metrics,
            destination: &lane.name,
            reason,
            count: entries.len(),
        }
        .emit();
    }
    if !done.is_empty() {
        storage.outbox_delivered(done, done_rows).await?;
    }
    for (reason, entries) in group(rejected) {
        handle_failure(lane, entries, DeliveryError::permanent(reason)).await?;
    }
    for (_, pairs) in group(retries) {
        let mut pairs = pairs.into_iter();
        let Some((error, first)) = pairs.next() else {
            continue;
        };
        let entries = std::iter::once(first)
            .chain(pairs.map(|(_, e)| e))
            .collect();
        handle_failure(lane, entries, error).await?;
    }
    Ok(())
}

async fn handle_failure(
    lane: &Lane,
    batch: Vec<OutboxEntry>,
    error: DeliveryError,
) -> Result<(), StorageError> {
    let storage = lane.outbox.storage();
    let now = now_ms();
    DeliveryFailed {
        metrics: &lane.metrics,
        destination: &lane.name,
        count: batch.len(),
        error: &error,
    }
    .emit();
    let (expired, alive): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|e| !error.is_retriable() || now - e.enqueued_at_ms > lane.policy.max_age_ms);
    if !expired.is_empty() {
        EventsDeadLettered {
            metrics: &lane.metrics,
            destination: &lane.name,
            count: expired.len(),
            retriable: error.is_retriable(),
        }
        .emit();
        let ids = expired.iter().map(|e| e.id).collect();
        let failed = Delivery::DeadLettered {
            reason: error.message.clone(),
        };
        let rows = sync_rows(
            expired
                .iter()
                .filter(|e| is_sync(e))
                .map(|e| (e, failed.clone())),
        );
        storage
            .outbox_dead_letter(ids, error.message.clone(), rows)
            .await?;
    }
    if !alive.is_empty() {
        let attempts = alive.iter().map(|e| e.attempts).max().unwrap_or(0);
        let delay = lane.policy.backoff(attempts, error.retry_after);
        EventsRetried {
            metrics: &lane.metrics,
            destination: &lane.name,
            count: alive.len(),
            delay,
        }
        .emit();
        let ids = alive.iter().map(|e| e.id).collect();
        storage
            .outbox_retry(ids, now + delay.as_millis() as i64, error.message)
            .await?;
    }
    Ok(())
}

/// Measures the queue gauges and drops expired consent holds, periodically.
async fn housekeep(lane: Arc<Lane>, mut shutdown: watch::Receiver<bool>) {
    let storage = Arc::clone(lane.outbox.storage());
    loop {
        match storage.expire_holds(&lane.name, now_ms()).await {
            Ok(n) => ConsentHolds {
                destination: &lane.name,
                outcome: "expired",
                count: n as usize,
            }
            .emit(),
            Err(error) => {
                tracing::warn!(destination = %lane.name, error = %error, "Expiring consent holds failed.")
            }
        }
        let measured = async {
            Ok::<_, StorageError>((
                storage.outbox_depth(&lane.name).await?,
                storage.held_count(&lane.name).await?,
                storage.dead_letter_count(&lane.name).await?,
            ))
        };
        if let Ok((outbox, held, dead_letters)) = measured.await {
            QueueMeasured {
                metrics: &lane.metrics,
                outbox,
                held,
                dead_letters,
            }
            .emit();
        }
        if sleep_or_shutdown(HOUSEKEEPING, &mut shutdown).await {
            return;
        }
    }
}

/// Sleeps `d`; true when shutdown was signalled.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

mod removed;
pub use removed::abandon_removed;

#[cfg(test)]
mod tests;
