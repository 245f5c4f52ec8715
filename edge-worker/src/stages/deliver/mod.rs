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
//! event; a dropped event leaves the outbox, counted.
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
use crate::destinations::{DeliveryError, Destination};
use crate::event::Event;
use crate::storage::{OutboxEntry, StorageError};
use crate::telemetry::deliver::{
    BatchDelivered, ConsentHolds, DeliveryFailed, DestinationMetrics, EventsDeadLettered,
    EventsDroppedByRule, EventsRetried, QueueMeasured,
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
    loop {
        if *shutdown.borrow() {
            break;
        }
        // 1. Fill free lanes with due batches.
        while tasks.len() < lane.policy.concurrency {
            // Read past the rows in flight rather than reading and skipping
            // them; rows below (retries coming due) are read once the lane
            // drains.
            let after_id = in_flight.last().copied().unwrap_or(0);
            let limit = lane.policy.batch_size;
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
    let storage = lane.outbox.storage();
    // 1. The destination's rule chain.
    let (batch, dropped) = match &lane.rules {
        Some(rules) => apply_rules(rules.as_ref(), batch),
        None => (batch, Vec::new()),
    };
    if !dropped.is_empty() {
        EventsDroppedByRule {
            metrics: &lane.metrics,
            destination: &lane.name,
            count: dropped.len(),
        }
        .emit();
        if let Err(error) = storage.outbox_delivered(dropped).await {
            tracing::error!(destination = %lane.name, error = %error, "Recording a delivery outcome failed.");
        }
    }
    if batch.is_empty() {
        return;
    }
    // 2. Send.
    let started = Instant::now();
    let result = lane.destination.send(&batch).await;
    let live = lane.outbox.live();
    let outcome = match result {
        Ok(()) => {
            let enqueued: Vec<i64> = batch.iter().map(|e| e.enqueued_at_ms).collect();
            BatchDelivered {
                metrics: &lane.metrics,
                count: batch.len(),
                duration: started.elapsed(),
                enqueued_ms: &enqueued,
            }
            .emit();
            for e in &batch {
                live.publish_json_from(
                    Some(e.source.as_str()),
                    "delivered",
                    &e.json,
                    Some(&lane.name),
                    None,
                );
            }
            storage
                .outbox_delivered(batch.iter().map(|e| e.id).collect())
                .await
        }
        Err(error) => {
            for e in &batch {
                live.publish_json_from(
                    Some(e.source.as_str()),
                    "failed",
                    &e.json,
                    Some(&lane.name),
                    Some(&error.message),
                );
            }
            handle_failure(&lane, batch, error).await
        }
    };
    if let Err(error) = outcome {
        // The events stay in the outbox and are retried; nothing is lost.
        tracing::error!(destination = %lane.name, error = %error, "Recording a delivery outcome failed.");
    }
}

/// Runs the chain on each event; returns what to send and the ids dropped.
fn apply_rules(
    rules: &dyn DestinationRules,
    batch: Vec<OutboxEntry>,
) -> (Vec<OutboxEntry>, Vec<i64>) {
    let mut keep = Vec::with_capacity(batch.len());
    let mut dropped = Vec::new();
    for mut entry in batch {
        let mut event = match serde_json::from_str::<serde_json::Value>(&entry.json) {
            Ok(serde_json::Value::Object(map)) => Event::from_map(map),
            // Not an object: let the destination refuse it into the dead-letter store.
            _ => {
                keep.push(entry);
                continue;
            }
        };
        match rules.apply(&mut event) {
            Verdict::Keep => {
                entry.json = event.to_json().into();
                keep.push(entry);
            }
            Verdict::Drop { .. } | Verdict::Quarantine { .. } => dropped.push(entry.id),
        }
    }
    (keep, dropped)
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
        storage
            .outbox_dead_letter(ids, error.message.clone())
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

#[cfg(test)]
mod tests;
