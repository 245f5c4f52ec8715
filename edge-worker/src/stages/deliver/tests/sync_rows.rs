//! The delivery hook through the deliver stage (issue #18 §2): sync rows
//! sent to a real webhook on loopback end synced when it takes them and
//! failed when it refuses them, in the store the outbox settles in.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::routing::post;

use super::super::*;
use crate::destinations::{BuildContext, WebhookConfig};
use crate::storage::syncs::{Change, KeyStatus, RowCounts};
use crate::storage::syncs_hook_conformance::sync_event;
use crate::storage::{
    DeliveryQueue as _, IngestCommit, IngestStore as _, ReplayStore as _, SqliteStorage, Storage,
};

/// A webhook receiver on loopback: answers 400 to the row whose `userId`
/// is `bad`, 200 to everything else, and records the `userId`s it took.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let took: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&took);
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: String| {
            let seen = Arc::clone(&seen);
            async move {
                let event: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let user = event["userId"].as_str().unwrap_or_default().to_owned();
                if user == "bad" {
                    return (StatusCode::BAD_REQUEST, "invalid email");
                }
                seen.lock().unwrap().push(user);
                (StatusCode::OK, "ok")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rows_a_webhook_takes_are_synced_and_those_it_refuses_are_failed() {
    let dir = crate::storage::conformance_tempdir();
    let store = SqliteStorage::open(&dir, 64).unwrap();
    let syncs = store.sync_store();
    let run = syncs.queue_run(1, false).await.unwrap();
    syncs.start_run(1).await.unwrap().unwrap();
    let mut accepted: Vec<_> = ["good", "bad"]
        .iter()
        .map(|k| sync_event(1, run, k, 1, Change::Added))
        .collect();
    for a in &mut accepted {
        a.destinations = vec!["d".into()];
    }
    store
        .commit_ingest(IngestCommit {
            accepted,
            quarantined: vec![],
            holds: Default::default(),
        })
        .await
        .unwrap();

    // The real webhook destination, one event per request, to loopback.
    let (url, took) = receiver().await;
    let config = WebhookConfig {
        url,
        secret_env: None,
        secret: None,
        batch: false,
        max_batch: 100,
        max_event_bytes: 1 << 20,
        headers: Default::default(),
        timeout_ms: 5_000,
    };
    let destination: Arc<dyn Destination> = config
        .build(&BuildContext { data_dir: dir }, "destinations[0]")
        .unwrap()
        .into();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let storage: Arc<dyn Storage> = Arc::new(Arc::clone(&store));
    let lane = Arc::new(Lane {
        name: "d".into(),
        destination,
        policy: RetryPolicy::from_config(&DeliveryConfig::default(), 100),
        outbox: Outbox::new(storage),
        rules: None,
        metrics: metrics::with_local_recorder(&recorder, || DestinationMetrics::register("d")),
    });
    let batch = store.outbox_due("d", now_ms(), 0, 100).await.unwrap();
    assert_eq!(batch.len(), 2);
    deliver_batch(lane, batch).await;

    assert_eq!(*took.lock().unwrap(), ["good"]);
    let state = syncs.state_page(1, None, 10).await.unwrap();
    let view: Vec<_> = state.iter().map(|k| (k.key.as_str(), k.status)).collect();
    assert_eq!(
        view,
        [("bad", KeyStatus::FailedNew), ("good", KeyStatus::Synced)]
    );
    let error = state[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("400"), "{error}");
    let r = syncs.run(run).await.unwrap().unwrap();
    let one = RowCounts {
        added: 1,
        ..RowCounts::default()
    };
    assert_eq!((r.successful, r.failed), (one, one));
    assert_eq!(store.outbox_depth("d").await.unwrap(), 0);
    assert_eq!(store.dead_letter_count("d").await.unwrap(), 1);
}
