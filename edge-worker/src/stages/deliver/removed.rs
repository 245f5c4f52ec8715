//! Entries of destinations removed from the configuration.
//!
//! Nothing drains a destination the configuration no longer names, so its
//! entries would wait forever (and on PostgreSQL keep their whole dataset
//! from being dropped). Once a destination has been missing from the
//! configuration for `storage.removed_destination_secs`, its entries move to
//! the dead letters, where `waymark dlq replay --destination NAME` sends
//! them after it is added back, and its consent holds are dropped.
//!
//! # Design
//! The grace period covers a configuration rolled out worker by worker: on
//! PostgreSQL the move also needs the destination's lease, so it never runs
//! while another worker still delivers the destination.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::sleep_or_shutdown;
use crate::storage::Storage;

/// How often the store is asked which destinations it holds entries for.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Moves the entries of destinations not in `configured` to the dead letters
/// once each has been missing for `grace`; runs until shutdown.
pub async fn abandon_removed(
    storage: Arc<dyn Storage>,
    configured: Vec<String>,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut missing_since: HashMap<String, Instant> = HashMap::new();
    loop {
        match storage.outbox_destinations().await {
            Ok(found) => {
                missing_since.retain(|d, _| found.contains(d));
                for name in found.into_iter().filter(|d| !configured.contains(d)) {
                    let since = *missing_since
                        .entry(name.clone())
                        .or_insert_with(Instant::now);
                    if since.elapsed() >= grace {
                        abandon(storage.as_ref(), &name).await;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "Could not list the destinations with waiting events.");
            }
        }
        if sleep_or_shutdown(CHECK_EVERY, &mut shutdown).await {
            return;
        }
    }
}

async fn abandon(storage: &dyn Storage, name: &str) {
    let reason = format!("destination `{name}` is no longer configured");
    match storage.outbox_abandon(name, &reason).await {
        Ok(0) => {}
        Ok(events) => tracing::warn!(
            destination = name,
            events,
            replay = %format!("waymark dlq replay --destination {name}"),
            "Events of a destination no longer configured moved to the dead letters; add it back and replay them."
        ),
        Err(error) => tracing::warn!(
            destination = name,
            error = %error,
            "Could not move the events of a destination no longer configured; trying again later."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance::{accepted, commit, Backend};

    /// Runs the upkeep for `grace` against a store holding two entries of
    /// `gone` and one of `kept`; returns the dead letters of `gone` once
    /// its first pass is over.
    async fn dead_letters_after_first_pass(grace: Duration) -> (u64, u64) {
        let b = Backend::sqlite();
        b.store
            .commit_ingest(commit(vec![
                accepted("web", "m1", &["kept", "gone"]),
                accepted("web", "m2", &["gone"]),
            ]))
            .await
            .unwrap();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(abandon_removed(
            Arc::clone(&b.store),
            vec!["kept".to_owned()],
            grace,
            shutdown,
        ));
        // The first pass runs at once; give it time, then stop.
        for _ in 0..50 {
            if b.store.dead_letter_count("gone").await.unwrap() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap();
        (
            b.store.dead_letter_count("gone").await.unwrap(),
            b.store.outbox_depth("kept").await.unwrap(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_destination_missing_past_its_grace_goes_to_the_dead_letters() {
        assert_eq!(dead_letters_after_first_pass(Duration::ZERO).await, (2, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_destination_missing_within_its_grace_keeps_its_entries() {
        assert_eq!(
            dead_letters_after_first_pass(Duration::from_secs(3_600)).await,
            (0, 1)
        );
    }
}
