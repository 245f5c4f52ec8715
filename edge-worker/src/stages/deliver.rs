//! Deliver: one worker per destination drains its outbox.
//!
//! Batches are taken oldest first, up to what the vendor accepts. A
//! retriable failure reschedules the batch with exponential backoff and
//! jitter (or the vendor's `Retry-After`); a permanent one, or an event
//! older than the destination's maximum age, goes to the dead-letter store.
//! Backoff lives here and only here: destinations never sleep.
//!
//! # Design
//! Each destination has its own task and reads its own rows, so a slow or
//! failing destination never slows ingest or the other destinations; its
//! events wait on disk, not in memory (issue #2).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;

use super::outbox::Outbox;
use crate::config::DeliveryConfig;
use crate::destinations::{DeliveryError, Destination};
use crate::storage::OutboxEntry;
use crate::telemetry::deliver::{BatchDelivered, DeliveryFailed, EventsDeadLettered};
use crate::time::now_ms;

/// Retry and batching settings with defaults applied.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Most events per send.
    pub batch_size: usize,
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

/// Idle wait between outbox checks when no wake-up arrives, so retries
/// scheduled for later are picked up.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Runs the delivery loop for one destination until `shutdown` turns true.
pub async fn run_worker(
    name: Arc<str>,
    destination: Arc<dyn Destination>,
    policy: RetryPolicy,
    outbox: Outbox,
    mut shutdown: watch::Receiver<bool>,
) {
    let waker = outbox.waker(&name);
    let storage = Arc::clone(outbox.storage());
    loop {
        if *shutdown.borrow() {
            return;
        }
        let due = match storage.outbox_due(&name, now_ms(), policy.batch_size).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(destination = %name, error = %error, "Reading the outbox failed.");
                sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                continue;
            }
        };
        if due.is_empty() {
            tokio::select! {
                _ = waker.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        deliver_batch(&name, destination.as_ref(), &policy, &outbox, due).await;
    }
}

async fn deliver_batch(
    name: &Arc<str>,
    destination: &dyn Destination,
    policy: &RetryPolicy,
    outbox: &Outbox,
    batch: Vec<OutboxEntry>,
) {
    let storage = outbox.storage();
    let started = std::time::Instant::now();
    let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
    let result = destination.send(&batch).await;
    let outcome = match result {
        Ok(()) => {
            BatchDelivered {
                destination: name,
                count: batch.len(),
                duration: started.elapsed(),
                oldest_enqueued_ms: batch.iter().map(|e| e.enqueued_at_ms).min().unwrap_or(0),
            }
            .emit();
            storage.outbox_delivered(ids).await
        }
        Err(error) => handle_failure(name, policy, outbox, batch, error).await,
    };
    if let Err(error) = outcome {
        // The events stay in the outbox and are retried; nothing is lost.
        tracing::error!(destination = %name, error = %error, "Recording a delivery outcome failed.");
    }
}

async fn handle_failure(
    name: &Arc<str>,
    policy: &RetryPolicy,
    outbox: &Outbox,
    batch: Vec<OutboxEntry>,
    error: DeliveryError,
) -> Result<(), crate::storage::StorageError> {
    let storage = outbox.storage();
    let now = now_ms();
    DeliveryFailed {
        destination: name,
        count: batch.len(),
        error: &error,
    }
    .emit();
    let (expired, alive): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|e| !error.is_retriable() || now - e.enqueued_at_ms > policy.max_age_ms);
    if !expired.is_empty() {
        EventsDeadLettered {
            destination: name,
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
        let delay = policy.backoff(attempts, error.retry_after);
        let ids = alive.iter().map(|e| e.id).collect();
        storage
            .outbox_retry(ids, now + delay.as_millis() as i64, error.message)
            .await?;
    }
    Ok(())
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            batch_size: 10,
            max_age_ms: 1_000,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
        };
        for _ in 0..50 {
            let first = policy.backoff(0, None).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let capped = policy.backoff(30, None).as_millis();
            assert!((500..=1_000).contains(&capped), "{capped}");
        }
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let policy = RetryPolicy::from_config(&DeliveryConfig::default(), 100);
        let d = policy.backoff(0, Some(Duration::from_secs(30)));
        assert_eq!(d, Duration::from_secs(30));
        assert_eq!(policy.batch_size, 100);
    }
}
