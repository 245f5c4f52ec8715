use super::*;
use crate::storage::syncs::RunStatus;
use serde_json::json;

#[test]
fn ids_are_read_as_whole_numbers_in_any_dress_and_written_as_strings() {
    for text in [json!(7), json!(7.0), json!("7"), json!("7.0")] {
        let id: ApiId = serde_json::from_value(text.clone()).unwrap();
        assert_eq!(id, ApiId(7), "{text}");
    }
    for text in [json!(7.5), json!(-1), json!("x"), json!(null), json!("-3")] {
        assert!(
            serde_json::from_value::<ApiId>(text.clone()).is_err(),
            "{text}"
        );
    }
    assert_eq!(ApiId::parse("12.0"), Some(ApiId(12)));
    assert_eq!(ApiId::parse("12"), Some(ApiId(12)));
    assert_eq!(ApiId::parse("1e1"), Some(ApiId(10)));
    assert_eq!(ApiId::parse("NaN"), None);
    assert_eq!(serde_json::to_value(ApiId(7)).unwrap(), json!("7"));
}

fn run() -> SyncRun {
    SyncRun {
        id: 42,
        sync: 3,
        status: RunStatus::Warning,
        full_resync: false,
        created_at_ms: 1_700_000_000_000,
        started_at_ms: Some(1_700_000_001_000),
        finished_at_ms: Some(1_700_000_002_500),
        query_size: Some(10),
        planned: RowCounts {
            added: 5,
            changed: 3,
            removed: 0,
        },
        successful: RowCounts {
            added: 5,
            changed: 1,
            removed: 0,
        },
        failed: RowCounts {
            added: 0,
            changed: 2,
            removed: 0,
        },
        invalid: 2,
        error: None,
    }
}

#[test]
fn a_run_has_hightouchs_field_names() {
    let value = serde_json::to_value(ApiSyncRun::from(&run())).unwrap();
    assert_eq!(
        value,
        json!({
            "id": "42",
            "createdAt": "2023-11-14T22:13:20.000Z",
            "startedAt": "2023-11-14T22:13:21.000Z",
            "finishedAt": "2023-11-14T22:13:22.500Z",
            "querySize": 10,
            "status": "warning",
            "completionRatio": 1.0,
            "plannedRows": {"addedCount": 5, "changedCount": 3, "removedCount": 0},
            "successfulRows": {"addedCount": 5, "changedCount": 1, "removedCount": 0},
            "failedRows": {"addedCount": 0, "changedCount": 2, "removedCount": 0}
        })
    );
    let mut failed = run();
    failed.status = RunStatus::Failed;
    failed.error = Some("the query failed".into());
    let value = serde_json::to_value(ApiSyncRun::from(&failed)).unwrap();
    assert_eq!(value["error"], "the query failed");
    let list = ApiList {
        data: vec![ApiSyncRun::from(&run())],
        has_more: true,
    };
    let value = serde_json::to_value(list).unwrap();
    assert_eq!(value["hasMore"], true);
    assert_eq!(value["data"][0]["id"], "42");
}

#[test]
fn a_sync_has_hightouchs_field_names_and_schedule_shape() {
    let sync: SyncConfig = toml::from_str(
        r#"
name = "crm-users"
model = "users"
destination = "hook"
call = "identify"
mapping = { userId = "id", "traits.email" = "email" }
schedule = { every_secs = 7200 }
"#,
    )
    .unwrap();
    let id = ObjectId {
        id: 3,
        name: "crm-users".into(),
        created_at_ms: 1_700_000_000_000,
    };
    let value = serde_json::to_value(ApiSync::of(
        &sync,
        "id",
        &id,
        ApiId(4),
        ApiId(5),
        Some(&run()),
    ))
    .unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "slug",
            "workspaceId",
            "createdAt",
            "updatedAt",
            "destinationId",
            "modelId",
            "configuration",
            "schedule",
            "status",
            "disabled",
            "lastRunAt",
            "referencedColumns",
            "primaryKey"
        ]
    );
    assert_eq!(value["id"], "3");
    assert_eq!(value["modelId"], "4");
    assert_eq!(value["status"], "warning");
    assert_eq!(
        value["schedule"],
        json!({"type": "interval", "schedule": {"interval": {"quantity": 2, "unit": "hour"}}})
    );
    assert_eq!(value["referencedColumns"], json!(["email", "id"]));
    assert_eq!(value["configuration"]["mapping"]["traits.email"], "email");
    let never =
        serde_json::to_value(ApiSync::of(&sync, "id", &id, ApiId(4), ApiId(5), None)).unwrap();
    assert_eq!(
        (never["status"].clone(), never["lastRunAt"].clone()),
        (json!("pending"), json!(null))
    );
    assert_eq!(ApiSchedule::of(None).kind, "manual");
    assert_eq!(
        serde_json::to_value(ApiSchedule::of(Some(&Schedule::Cron("0 * * * *".into())))).unwrap(),
        json!({"type": "cron", "schedule": {"expression": "0 * * * *"}})
    );
}

#[tokio::test]
async fn a_trigger_reads_json_and_form_bodies() {
    let json: ApiTrigger = serde_json::from_value(json!({"fullResync": true})).unwrap();
    assert_eq!(
        json,
        ApiTrigger {
            full_resync: true,
            ..ApiTrigger::default()
        }
    );
    let by_id: ApiTrigger = serde_json::from_value(json!({"syncId": 7.0})).unwrap();
    assert_eq!(by_id.sync_id, Some(ApiId(7)));
    assert!(!by_id.full_resync);
    // Airflow's HttpHook sends a form.
    use axum::extract::FromRequest;
    let request = http::Request::builder()
        .method("POST")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(
            "syncSlug=crm-users&syncId=7&fullResync=true",
        ))
        .unwrap();
    let axum::Form(form) = axum::Form::<ApiTrigger>::from_request(request, &())
        .await
        .unwrap();
    assert_eq!(
        form,
        ApiTrigger {
            full_resync: true,
            sync_id: Some(ApiId(7)),
            sync_slug: Some("crm-users".into())
        }
    );
    assert_eq!(
        serde_json::to_value(ApiTriggered { id: ApiId(9) }).unwrap(),
        json!({"id": "9"})
    );
}

#[test]
fn runs_queries_become_store_filters() {
    let q = ApiRunsQuery {
        run_id: Some(ApiId(3)),
        limit: Some(ApiId(2)),
        after: Some("2023-11-14T22:13:20Z".into()),
        ..ApiRunsQuery::default()
    };
    let f = q.filter().unwrap();
    assert_eq!((f.run, f.limit, f.offset), (Some(3), 2, 0));
    assert_eq!(f.after_ms, Some(1_700_000_000_000));
    let bad = ApiRunsQuery {
        before: Some("yesterday".into()),
        ..ApiRunsQuery::default()
    };
    assert_eq!(bad.filter(), Err("before"));
    assert_eq!(ApiRunsQuery::default().filter().unwrap().limit, 5);
}

#[test]
fn runs_queries_take_naive_times_as_utc_and_within_as_minutes_back() {
    // Python's `datetime.isoformat()` of a naive time has no offset.
    let naive = ApiRunsQuery {
        after: Some("2023-11-14T22:13:20.250000".into()),
        ..ApiRunsQuery::default()
    };
    assert_eq!(naive.filter().unwrap().after_ms, Some(1_700_000_000_250));
    let within = ApiRunsQuery {
        within: Some(ApiId(10)),
        ..ApiRunsQuery::default()
    };
    let after = within.filter().unwrap().after_ms.unwrap();
    let expected = crate::time::now_ms() - 600_000;
    assert!((after - expected).abs() < 5_000, "{after} vs {expected}");
    // The later bound of `after` and `within` applies.
    let both = ApiRunsQuery {
        after: Some("2023-11-14T22:13:20Z".into()),
        within: Some(ApiId(10)),
        ..ApiRunsQuery::default()
    };
    assert!(both.filter().unwrap().after_ms.unwrap() > 1_700_000_000_000);
}
