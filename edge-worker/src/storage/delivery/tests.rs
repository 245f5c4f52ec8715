use super::*;
use crate::storage::{
    AcceptedEvent, DeliveryQueue as _, IngestCommit, IngestStore as _, ReplayStore as _,
};

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("waymark-delivery-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn held(dest: &str, visitor: &str, id: &str) -> HeldEvent {
    HeldEvent {
        destination: dest.into(),
        source: "web".into(),
        visitor: visitor.into(),
        message_id: id.into(),
        json: format!(
            r#"{{"messageId":"{id}","context":{{"consent":{{"categoryPreferences":{{}}}}}}}}"#
        ),
    }
}

#[tokio::test]
async fn holds_release_on_grant_and_drop_on_denial() {
    let store = SqliteStorage::open(&tempdir(), 100).unwrap();
    let far = HashMap::from([(Arc::from("ads"), now_ms() + 60_000)]);
    let out = store
        .commit_holds(HoldCommit {
            held: vec![
                held("ads", "v1", "m1"),
                held("ads", "v1", "m2"),
                held("ads", "v2", "m3"),
                held("ads", "v1", "m1"),
            ],
            settled: vec![],
            expires_at_ms: far.clone(),
        })
        .await
        .unwrap();
    assert_eq!(out.held, vec![(Arc::from("ads"), 3)]);
    let out = store
        .commit_holds(HoldCommit {
            held: vec![],
            settled: vec![
                ConsentSettled {
                    destination: "ads".into(),
                    visitor: "v1".into(),
                    granted: Some(vec!["marketing".into()]),
                },
                ConsentSettled {
                    destination: "ads".into(),
                    visitor: "v2".into(),
                    granted: None,
                },
            ],
            expires_at_ms: far,
        })
        .await
        .unwrap();
    assert_eq!(out.released, vec![(Arc::from("ads"), 2)]);
    assert_eq!(out.dropped, vec![(Arc::from("ads"), 1)]);
    let due = store.outbox_due("ads", now_ms(), 0, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(
        due[0].json.contains(r#""marketing":true"#),
        "{}",
        due[0].json
    );
    assert_eq!(store.held_count("ads").await.unwrap(), 0);
}

#[tokio::test]
async fn holds_expire() {
    let store = SqliteStorage::open(&tempdir(), 100).unwrap();
    store
        .commit_holds(HoldCommit {
            held: vec![held("ads", "v1", "m1")],
            settled: vec![],
            expires_at_ms: HashMap::from([(Arc::from("ads"), now_ms() - 1)]),
        })
        .await
        .unwrap();
    assert_eq!(store.expire_holds("ads", now_ms()).await.unwrap(), 1);
    assert_eq!(store.expire_holds("ads", now_ms()).await.unwrap(), 0);
}

#[tokio::test]
async fn dead_letters_list_and_replay() {
    let store = SqliteStorage::open(&tempdir(), 100).unwrap();
    let accepted = (0..3)
        .map(|i| AcceptedEvent {
            source: "web".into(),
            message_id: format!("m{i}"),
            dedup: true,
            json: format!(r#"{{"messageId":"m{i}"}}"#).into(),
            destinations: vec!["hook".into()],
        })
        .collect();
    store
        .commit_ingest(IngestCommit {
            accepted,
            quarantined: vec![],
            holds: Default::default(),
        })
        .await
        .unwrap();
    let ids = store
        .outbox_due("hook", now_ms(), 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    store
        .outbox_dead_letter(ids, "HTTP 400".into())
        .await
        .unwrap();
    let letters = store.dead_letters("hook", 10).await.unwrap();
    assert_eq!(letters.len(), 3);
    assert_eq!(letters[0].event.get(), r#"{"messageId":"m0"}"#);
    assert_eq!(
        store
            .replay_dead_letters("hook", Some(vec![letters[1].id]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.outbox_depth("hook").await.unwrap(), 1);
    assert_eq!(store.replay_dead_letters("hook", None).await.unwrap(), 2);
    assert_eq!(store.outbox_depth("hook").await.unwrap(), 3);
    assert!(store.dead_letters("hook", 10).await.unwrap().is_empty());
}
