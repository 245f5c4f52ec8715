//! Nothing acked is lost: kill the worker with SIGKILL under load, restart
//! it, and check that every `messageId` answered 200 is still in the store's
//! outbox or already in the file destination, and that the restarted worker
//! delivers the rest.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use waymark_tests::{client, track, Worker, BASIC_CONFIG};

#[test]
fn every_acked_event_survives_sigkill_under_load() {
    let mut worker = Worker::start(BASIC_CONFIG);
    let url = worker.url("/v1/batch");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    // 1. Eight clients post batches of 10 as fast as the worker acks them.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, acked, stop) = (url.clone(), Arc::clone(&acked), Arc::clone(&stop));
        clients.push(std::thread::spawn(move || {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let events: Vec<_> = (0..10).map(|_| track("Crash Test")).collect();
                let ids: Vec<String> = events
                    .iter()
                    .map(|e| e["messageId"].as_str().unwrap_or_default().to_owned())
                    .collect();
                let sent = http
                    .post(&url)
                    .basic_auth("wk_test", Some(""))
                    .json(&json!({ "batch": events }))
                    .send();
                // Only a 200 counts as acked; a connection cut by the kill does not.
                if let Ok(resp) = sent {
                    if resp.status() == 200 {
                        acked.lock().unwrap().extend(ids);
                    }
                }
            }
        }));
    }

    // 2. Let load build up, then kill the process without warning.
    let started = Instant::now();
    while acked.lock().unwrap().len() < 1_000 && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.kill();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 500,
        "too little load before the kill: {}",
        acked.len()
    );

    // 3. Right after the crash: every acked id is in the outbox or the file.
    let in_store: HashSet<String> = {
        let db = worker.db();
        // One row per request and destination, its events in a JSON array.
        let mut stmt = db
            .prepare("SELECT json_extract(j.value, '$.m') FROM outbox_packs, json_each(outbox_packs.events) j")
            .unwrap();
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        ids
    };
    let in_file: HashSet<String> = worker
        .file_events("events.ndjson")
        .iter()
        .filter_map(|e| e["messageId"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !in_store.contains(*id) && !in_file.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acked events lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );

    // 4. After a restart, the outbox drains into the file: all acked events land.
    let config = std::fs::read_to_string(&worker.config_path).unwrap();
    let restarted = Worker::start_in(&config, worker.data_dir.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: HashSet<String> = restarted
            .file_events("events.ndjson")
            .iter()
            .filter_map(|e| e["messageId"].as_str().map(str::to_owned))
            .collect();
        let missing = acked.iter().filter(|id| !delivered.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acked events never delivered after restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
