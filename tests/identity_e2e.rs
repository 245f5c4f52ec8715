//! Visitor stitching end to end (issue #4): the real `waymark` binary, two
//! browsers (two signed `wm_vid` cookies), the identity admin API, privacy
//! deletion with suppression at ingest, and split.

use std::time::Duration;

use reqwest::blocking::Response;
use serde_json::{json, Value};
use waymark_tests::{client, Worker, BASIC_CONFIG};

const ADMIN: &str = "admin-secret";

fn browser(visitor: &str) -> String {
    waymark_tests::browser_cookie(visitor)
}

fn send(worker: &Worker, cookie: &str, events: Vec<Value>) {
    let events: Vec<Value> = events
        .into_iter()
        .map(|mut e| {
            e["messageId"] = json!(uuid::Uuid::new_v4().to_string());
            e
        })
        .collect();
    let resp = client()
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .header("cookie", cookie)
        .json(&json!({ "batch": events }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
}

fn admin_get(worker: &Worker, path: &str) -> Response {
    client()
        .get(worker.url(path))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
}

fn admin_post(worker: &Worker, path: &str, body: Value) -> Response {
    client()
        .post(worker.url(path))
        .bearer_auth(ADMIN)
        .header("x-waymark-actor", "dpo@example.com")
        .json(&body)
        .send()
        .unwrap()
}

fn profile_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["context"]["waymark"]["profileId"]
                .as_str()
                .unwrap_or_else(|| panic!("no profileId on {e}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn the_same_user_from_two_browsers_resolves_to_one_profile() {
    let worker = Worker::start(BASIC_CONFIG);
    let phone = browser("phonephonephonephone01");
    let laptop = browser("laptoplaptoplaptoplap1");
    send(
        &worker,
        &phone,
        vec![json!({"type":"identify","userId":"ada","traits":{"name":"Ada"}})],
    );
    send(&worker, &laptop, vec![json!({"type":"page","name":"Home"})]);
    send(
        &worker,
        &laptop,
        vec![
            json!({"type":"identify","userId":"ada","traits":{"plan":"pro"}}),
            json!({"type":"track","event":"Order Completed"}),
        ],
    );
    send(
        &worker,
        &phone,
        vec![json!({"type":"track","event":"App Opened"})],
    );
    let events = worker.wait_for_file_events("events.ndjson", 5, Duration::from_secs(10));
    let ids = profile_ids(&events);
    // Every event after the laptop's identify, on both browsers, carries one id.
    let phone_id = &ids[0];
    assert_eq!(&ids[2], phone_id);
    assert_eq!(&ids[3], phone_id);
    assert_eq!(&ids[4], phone_id);
    // The laptop's anonymous page view carried the laptop's own profile,
    // which now resolves to the merged one.
    let resp = admin_get(&worker, &format!("/admin/profiles/{}", ids[1]));
    assert_eq!(resp.status(), 200);
    let profile: Value = resp.json().unwrap();
    assert_eq!(&profile["id"], phone_id);
    assert_eq!(profile["traits"], json!({"name":"Ada","plan":"pro"}));
    assert_eq!(profile["eventCounts"]["total"], 5);
    assert_eq!(profile["merges"].as_array().unwrap().len(), 1);
    assert!(profile["merges"][0]["messageId"].is_string());
    let by_user: Value = admin_get(&worker, "/admin/profiles?userId=ada")
        .json()
        .unwrap();
    assert_eq!(&by_user["id"], phone_id);
    let visitors: Vec<&str> = by_user["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "visitorId")
        .map(|i| i["value"].as_str().unwrap())
        .collect();
    assert_eq!(visitors.len(), 2, "{by_user}");
    let by_visitor: Value = admin_get(&worker, "/admin/profiles?visitorId=laptoplaptoplaptoplap1")
        .json()
        .unwrap();
    assert_eq!(&by_visitor["id"], phone_id);
    // Sessions are kept per browser.
    assert_eq!(events[1]["context"]["waymark"]["session"]["count"], 1);
    assert!(events[1]["context"]["waymark"]["session"]["id"].is_i64());
}

#[test]
fn an_anonymous_visitor_keeps_its_profile_id_after_identifying() {
    let worker = Worker::start(BASIC_CONFIG);
    let cookie = browser("anonanonanonanonanon01");
    send(
        &worker,
        &cookie,
        vec![
            json!({"type":"page"}),
            json!({"type":"track","event":"Viewed"}),
        ],
    );
    send(
        &worker,
        &cookie,
        vec![json!({"type":"identify","userId":"grace"})],
    );
    let events = worker.wait_for_file_events("events.ndjson", 3, Duration::from_secs(10));
    let ids = profile_ids(&events);
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    let session = &events[2]["context"]["waymark"]["session"];
    assert_eq!(
        session["id"],
        events[0]["context"]["waymark"]["session"]["id"]
    );
    assert_eq!(session["start"], false);
}

#[test]
fn a_deleted_person_is_gone_and_their_later_events_are_suppressed() {
    let worker = Worker::start(BASIC_CONFIG);
    let cookie = browser("deletedeletedeletedel1");
    send(
        &worker,
        &cookie,
        vec![json!({"type":"identify","userId":"mallory","traits":{"email":"m@example.com"}})],
    );
    let other = browser("keepkeepkeepkeepkeep01");
    send(
        &worker,
        &other,
        vec![json!({"type":"identify","userId":"trent"})],
    );
    worker.wait_for_file_events("events.ndjson", 2, Duration::from_secs(10));

    // Export first: everything held on the person.
    let export: Value = admin_get(&worker, "/admin/privacy/export?userId=mallory")
        .json()
        .unwrap();
    assert_eq!(export["profile"]["traits"]["email"], "m@example.com");
    assert!(export["auditId"].is_i64());

    let resp = admin_post(
        &worker,
        "/admin/privacy/delete",
        json!({"userId":"mallory"}),
    );
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().unwrap();
    assert_eq!(report["identifiers"], 3, "{report}");
    assert_eq!(
        admin_get(&worker, "/admin/profiles?userId=mallory").status(),
        404
    );

    // Later events carrying any of the identifiers are dropped and counted.
    send(
        &worker,
        &cookie,
        vec![json!({"type":"track","event":"Came Back"})],
    );
    send(
        &worker,
        &browser("newnewnewnewnewnewne01"),
        vec![json!({"type":"identify","traits":{"email":" M@example.com"}})],
    );
    send(
        &worker,
        &other,
        vec![json!({"type":"track","event":"Still Here"})],
    );
    let events = worker.wait_for_file_events("events.ndjson", 3, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let events_now = worker.file_events("events.ndjson");
    assert_eq!(events_now.len(), 3, "{events_now:?}");
    assert_eq!(events[2]["event"], "Still Here");
    let metrics = client()
        .get(worker.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("waymark_events_dropped_total") && l.contains("suppressed"))
        .unwrap_or_else(|| panic!("no suppression counter in:\n{metrics}"));
    assert!(dropped.ends_with(" 2"), "{dropped}");

    // Both operations are audited: who, when, what.
    let audit: Value = admin_get(&worker, "/admin/privacy/audit").json().unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries[0]["action"], "delete");
    assert_eq!(entries[0]["actor"], "dpo@example.com");
    assert!(entries[0]["at"].is_string());
    assert_eq!(entries[1]["action"], "export");
    assert!(
        !audit.to_string().contains("mallory"),
        "the audit names the person only by hash"
    );
}

#[test]
fn an_admin_can_split_a_merge() {
    let worker = Worker::start(BASIC_CONFIG);
    let phone = browser("splitphonesplitphone01");
    let kiosk = browser("kioskkioskkioskkiosk01");
    send(
        &worker,
        &phone,
        vec![json!({"type":"identify","userId":"ivan"})],
    );
    send(&worker, &kiosk, vec![json!({"type":"page"})]);
    let kiosk_before: Value =
        admin_get(&worker, "/admin/profiles?visitorId=kioskkioskkioskkiosk01")
            .json()
            .unwrap();
    send(
        &worker,
        &kiosk,
        vec![json!({"type":"identify","userId":"ivan"})],
    );
    let merged: Value = admin_get(&worker, "/admin/profiles?userId=ivan")
        .json()
        .unwrap();
    assert_eq!(merged["mergedIds"], json!([kiosk_before["id"]]));
    let merge_id = merged["merges"][0]["id"].as_i64().unwrap();

    let resp = admin_post(
        &worker,
        &format!("/admin/profiles/{}/split", merged["id"].as_str().unwrap()),
        json!({"mergeId": merge_id}),
    );
    assert_eq!(resp.status(), 200);
    let split: Value = resp.json().unwrap();
    assert_eq!(split["profiles"].as_array().unwrap().len(), 2);
    let kiosk_after: Value = admin_get(&worker, "/admin/profiles?visitorId=kioskkioskkioskkiosk01")
        .json()
        .unwrap();
    assert_eq!(kiosk_after["id"], kiosk_before["id"]);
    let ivan: Value = admin_get(&worker, "/admin/profiles?userId=ivan")
        .json()
        .unwrap();
    assert_eq!(ivan["id"], merged["id"]);
    // Splitting again is a conflict, in the API's error shape.
    let again = admin_post(
        &worker,
        &format!("/admin/profiles/{}/split", merged["id"].as_str().unwrap()),
        json!({"mergeId": merge_id}),
    );
    assert_eq!(again.status(), 409);
    assert!(again.json::<Value>().unwrap()["errors"][0]["problem"].is_string());
    // And an admin can force them back together.
    let resp = admin_post(
        &worker,
        "/admin/profiles/merge",
        json!({"profileIds": [kiosk_after["id"], ivan["id"]], "reason": "same person"}),
    );
    assert_eq!(resp.status(), 200);
    let forced: Value = resp.json().unwrap();
    assert_eq!(forced["id"], ivan["id"]);
}

#[test]
fn the_identity_admin_api_needs_the_admin_token() {
    let worker = Worker::start(BASIC_CONFIG);
    let gets = [
        "/admin/profiles/x",
        "/admin/profiles?userId=u",
        "/admin/privacy/export?userId=u",
        "/admin/privacy/audit",
    ];
    let posts = [
        "/admin/profiles/x/split",
        "/admin/profiles/merge",
        "/admin/privacy/delete",
    ];
    for token in [None, Some("wrong"), Some("admin-secre")] {
        for path in gets {
            let mut req = client().get(worker.url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            assert_eq!(
                req.send().unwrap().status(),
                401,
                "GET {path} with {token:?}"
            );
        }
        for path in posts {
            let mut req = client().post(worker.url(path)).json(&json!({"userId":"u"}));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            assert_eq!(
                req.send().unwrap().status(),
                401,
                "POST {path} with {token:?}"
            );
        }
    }
    // With the token: unknown people are 404, bad requests 400.
    assert_eq!(admin_get(&worker, "/admin/profiles/nope").status(), 404);
    assert_eq!(admin_get(&worker, "/admin/profiles").status(), 400);
    assert_eq!(
        admin_post(
            &worker,
            "/admin/privacy/delete",
            json!({"userId":"a","visitorId":"b"})
        )
        .status(),
        400
    );
}
