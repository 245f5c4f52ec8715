use super::*;
use crate::storage::pack_cache::PackCache;
use crate::storage::{AcceptedEvent, QuarantinedEvent, Stored};

fn accepted(id: &str, destinations: &[&str]) -> AcceptedEvent {
    AcceptedEvent {
        source: "web".into(),
        message_id: id.into(),
        dedup: true,
        granted: Default::default(),
        json: format!(r#"{{"messageId":"{id}"}}"#).into(),
        destinations: destinations.iter().map(|d| Arc::from(*d)).collect(),
    }
}

#[tokio::test]
async fn commit_enqueues_per_destination_and_dedups() {
    let dir = tempdir();
    let store = SqliteStorage::open(&dir, 100).unwrap();
    let first = IngestCommit {
        accepted: vec![accepted("m1", &["a", "b"]), accepted("m2", &["a"])],
        quarantined: vec![QuarantinedEvent {
            source: "web".into(),
            reason: "missing_field",
            detail: "userId or anonymousId is required".into(),
            raw: "{}".into(),
        }],
        holds: Default::default(),
    };
    let stored = store.commit_ingest(first).await.unwrap().stored;
    assert_eq!(stored, vec![Stored::Enqueued, Stored::Enqueued]);
    assert_eq!(store.outbox_depth("a").await.unwrap(), 2);
    assert_eq!(store.outbox_depth("b").await.unwrap(), 1);

    let again = IngestCommit {
        accepted: vec![accepted("m1", &["a", "b"])],
        quarantined: vec![],
        holds: Default::default(),
    };
    assert_eq!(
        store.commit_ingest(again).await.unwrap().stored,
        vec![Stored::Duplicate]
    );
    assert_eq!(store.outbox_depth("a").await.unwrap(), 2);
    assert_eq!(store.quarantine_list(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn dedup_survives_reopen() {
    let dir = tempdir();
    {
        let store = SqliteStorage::open(&dir, 100).unwrap();
        store
            .commit_ingest(IngestCommit {
                accepted: vec![accepted("m1", &["a"])],
                quarantined: vec![],
                holds: Default::default(),
            })
            .await
            .unwrap();
    }
    let store = SqliteStorage::open(&dir, 100).unwrap();
    let stored = store
        .commit_ingest(IngestCommit {
            accepted: vec![accepted("m1", &["a"])],
            quarantined: vec![],
            holds: Default::default(),
        })
        .await
        .unwrap()
        .stored;
    assert_eq!(stored, vec![Stored::Duplicate]);
}

#[tokio::test]
async fn folded_ids_stay_duplicates_across_reopen() {
    let dir = tempdir();
    let commit = |ids: &[&str]| IngestCommit {
        accepted: ids.iter().map(|id| accepted(id, &["a"])).collect(),
        quarantined: vec![],
        holds: Default::default(),
    };
    {
        let store = SqliteStorage::open(&dir, 100).unwrap();
        store.commit_ingest(commit(&["m1", "m2"])).await.unwrap();
        assert_eq!(store.fold_dedup().await.unwrap(), 2);
        assert_eq!(store.recent.len(), 0);
        store.commit_ingest(commit(&["m3"])).await.unwrap();
        assert_eq!(store.fold_dedup().await.unwrap(), 1);
        assert_eq!(store.fold_dedup().await.unwrap(), 0);
    }
    let store = SqliteStorage::open(&dir, 100).unwrap();
    let stored = store
        .commit_ingest(commit(&["m1", "m3", "m4"]))
        .await
        .unwrap()
        .stored;
    assert_eq!(
        stored,
        vec![Stored::Duplicate, Stored::Duplicate, Stored::Enqueued]
    );
}

#[tokio::test]
async fn runs_merge_in_the_background_and_every_id_stays_a_duplicate() {
    let dir = tempdir();
    let ids: Vec<String> = (0..5 * 300).map(|i| format!("m{i}")).collect();
    let commit = |ids: &[String]| IngestCommit {
        accepted: ids.iter().map(|id| accepted(id, &["a"])).collect(),
        quarantined: vec![],
        holds: Default::default(),
    };
    {
        let store = SqliteStorage::open(&dir, 100).unwrap();
        // Five folds of one size: four of them merge into one.
        for chunk in ids.chunks(300) {
            store.commit_ingest(commit(chunk)).await.unwrap();
            assert_eq!(store.fold_dedup().await.unwrap(), 300);
        }
        let merged = async {
            while store.runs.infos().len() > 2
                || store.merging.load(std::sync::atomic::Ordering::Acquire)
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), merged)
            .await
            .expect("the merge finished");
        let mut sizes: Vec<i64> = store.runs.infos().iter().map(|r| r.keys).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [300, 1_200]);
        let stored = store.commit_ingest(commit(&ids)).await.unwrap().stored;
        assert!(stored.iter().all(|s| *s == Stored::Duplicate));
    }
    let files = std::fs::read_dir(dir.join(dedup::runs::RUNS_DIR))
        .unwrap()
        .count();
    assert_eq!(files, 2, "the merged inputs' files are gone");
    let store = SqliteStorage::open(&dir, 100).unwrap();
    let mut fresh = ids.clone();
    fresh.push("new".into());
    let stored = store.commit_ingest(commit(&fresh)).await.unwrap().stored;
    assert_eq!(stored.iter().filter(|s| **s == Stored::Enqueued).count(), 1);
    assert_eq!(stored.last(), Some(&Stored::Enqueued));
}

#[tokio::test]
async fn retry_delays_and_dead_letter_moves() {
    let dir = tempdir();
    let store = SqliteStorage::open(&dir, 100).unwrap();
    store
        .commit_ingest(IngestCommit {
            accepted: vec![accepted("m1", &["a"]), accepted("m2", &["a"])],
            quarantined: vec![],
            holds: Default::default(),
        })
        .await
        .unwrap();
    let due = store.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    store
        .outbox_retry(vec![due[0].id], now_ms() + 60_000, "503".into())
        .await
        .unwrap();
    let due_now = store.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    assert_eq!(due_now.len(), 1);
    store
        .outbox_dead_letter(vec![due_now[0].id], "400".into(), vec![])
        .await
        .unwrap();
    assert_eq!(store.outbox_depth("a").await.unwrap(), 1);
}

#[tokio::test]
async fn delivered_rows_leave_in_chunks() {
    let dir = tempdir();
    let store = SqliteStorage::open(&dir, 100).unwrap();
    let ids: Vec<String> = (0..150).map(|i| format!("m{i}")).collect();
    store
        .commit_ingest(IngestCommit {
            accepted: ids.iter().map(|id| accepted(id, &["a"])).collect(),
            quarantined: vec![],
            holds: Default::default(),
        })
        .await
        .unwrap();
    let due = store.outbox_due("a", now_ms(), 0, 1_000).await.unwrap();
    assert_eq!(due.len(), 150);
    // 2 full chunks of 64 and one of 21; one row stays.
    let delivered: Vec<i64> = due.iter().take(149).map(|e| e.id).collect();
    store.outbox_delivered(delivered, vec![]).await.unwrap();
    let left = store.outbox_due("a", now_ms(), 0, 1_000).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].message_id, "m149");
}

#[tokio::test]
async fn committed_packs_are_cached_and_read_as_stored() {
    let dir = tempdir();
    let store = SqliteStorage::open(&dir, 100).unwrap();
    for request in [["m1", "m2"], ["m3", "m4"]] {
        let accepted = request.iter().map(|id| accepted(id, &["a", "b"])).collect();
        store
            .commit_ingest(IngestCommit {
                accepted,
                quarantined: vec![],
                holds: Default::default(),
            })
            .await
            .unwrap();
    }
    let uncached = |destination: &'static str| {
        let conn = open_connection(&dir.join(DATABASE_FILE), READER_CACHE_KIB).unwrap();
        outbox::due(&conn, &PackCache::new(0), destination, now_ms(), 0, 10).unwrap()
    };
    for destination in ["a", "b"] {
        let read = store
            .outbox_due(destination, now_ms(), 0, 10)
            .await
            .unwrap();
        let stored = uncached(destination);
        let summary = |entries: &[OutboxEntry]| -> Vec<(i64, String, String)> {
            entries
                .iter()
                .map(|e| (e.id, e.message_id.clone(), e.json.to_string()))
                .collect()
        };
        assert_eq!(summary(&read), summary(&stored));
        assert_eq!(read.len(), 4);
        for e in &read {
            assert!(store.packs.get(outbox::pack_of(e.id)).is_some());
        }
    }
    // A delivered pack leaves the cache with the outbox.
    let read = store.outbox_due("a", now_ms(), 0, 10).await.unwrap();
    let first_pack = outbox::pack_of(read[0].id);
    store
        .outbox_delivered(read.iter().take(2).map(|e| e.id).collect(), vec![])
        .await
        .unwrap();
    assert!(store.packs.get(first_pack).is_none());
    assert_eq!(
        store.outbox_due("a", now_ms(), 0, 10).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn many_concurrent_writes_share_commits() {
    let dir = tempdir();
    let store = SqliteStorage::open(&dir, 500).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .commit_ingest(IngestCommit {
                    accepted: vec![accepted(&format!("m{i}"), &["a"])],
                    quarantined: vec![],
                    holds: Default::default(),
                })
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().stored, vec![Stored::Enqueued]);
    }
    assert_eq!(store.outbox_depth("a").await.unwrap(), 200);
    store.check_writable().await.unwrap();
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("waymark-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
