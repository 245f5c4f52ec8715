//! Two workers on one PostgreSQL behave as one Waymark for people (issue
//! #12): one person seen through both is one profile on both, a consent
//! hold made on one is released by a grant the other sees, and a privacy
//! delete acked by one is enforced by the other at once.

use std::time::Duration;

use serde_json::{json, Value};
use waymark_tests::fakes::{webhook, Fake};
use waymark_tests::pg::{test_database, TestDb};
use waymark_tests::{browser_cookie, client, Worker};

const ADMIN: &str = "admin-secret";

fn config(db: &TestDb, hook: &Fake, ads: &Fake) -> String {
    format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "{secret}" }}]
[admin]
token = "{ADMIN}"
[storage]
backend = "postgres"
url = "{url}"
lease_secs = 3
pool_size = 8
[[sources]]
name = "web"
write_key = "wk_test"
default_consent = {{ analytics = "granted", marketing = "pending" }}
[[destinations]]
name = "hook"
type = "webhook"
url = "{hook}/hook"
secret = "s"
[[destinations]]
name = "ads"
type = "webhook"
url = "{ads}/hook"
secret = "s"
consent = ["marketing"]
wait_for_consent = true
consent_hold_secs = 60
"#,
        secret = waymark_tests::TEST_SECRET,
        url = db.url(),
        hook = hook.base,
        ads = ads.base,
    )
}

fn send(worker: &Worker, cookie: &str, events: Vec<Value>) {
    let events: Vec<Value> = events
        .into_iter()
        .map(|mut e| {
            if e.get("messageId").is_none() {
                e["messageId"] = json!(uuid::Uuid::new_v4().to_string());
            }
            e
        })
        .collect();
    let resp = client()
        .post(worker.url("/v1/batch"))
        .basic_auth("wk_test", Some(""))
        .header("cookie", cookie)
        .json(&json!({ "batch": events }))
        .send()
        .expect("post a batch");
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
}

fn admin_get(worker: &Worker, path: &str) -> (u16, Value) {
    let resp = client()
        .get(worker.url(path))
        .bearer_auth(ADMIN)
        .send()
        .expect("admin get");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn one_person_through_two_workers_is_one_profile_and_a_delete_holds_on_both() {
    let db = test_database("fleet_person").expect("PostgreSQL test database");
    let hook = webhook::start("s");
    let ads = webhook::start("s");
    let cfg = config(&db, &hook, &ads);
    let a = Worker::start(&cfg);
    let b = Worker::start(&cfg);
    let laptop = browser_cookie("fleetlaptopfleetlapt01");
    let phone = browser_cookie("fleetphonefleetphone01");
    // The same user signs in on two browsers, each through another worker,
    // at the same time.
    std::thread::scope(|s| {
        s.spawn(|| {
            send(
                &a,
                &laptop,
                vec![
                    json!({"type":"identify","userId":"ada","traits":{"email":"ada@example.com"}}),
                ],
            )
        });
        s.spawn(|| {
            send(
                &b,
                &phone,
                vec![json!({"type":"identify","userId":"ada","traits":{"plan":"pro"}})],
            )
        });
    });
    hook.wait_for(2, Duration::from_secs(20));
    let (status, on_a) = admin_get(&a, "/admin/profiles?userId=ada");
    assert_eq!(status, 200, "{on_a}");
    let (_, on_b) = admin_get(&b, "/admin/profiles?userId=ada");
    assert_eq!(on_a["id"], on_b["id"], "one profile on both workers");
    assert_eq!(on_a, on_b, "a profile reads the same on every worker");
    assert_eq!(on_b["traits"]["email"], "ada@example.com");
    assert_eq!(on_b["traits"]["plan"], "pro");
    let (_, by_phone) = admin_get(&a, "/admin/profiles?visitorId=fleetphonefleetphone01");
    assert_eq!(by_phone["id"], on_a["id"]);

    // Deleted through A; B drops her next event at once.
    let resp = client()
        .post(a.url("/admin/privacy/delete"))
        .bearer_auth(ADMIN)
        .json(&json!({"userId":"ada"}))
        .send()
        .expect("delete");
    assert_eq!(resp.status(), 200);
    assert_eq!(admin_get(&b, "/admin/profiles?userId=ada").0, 404);
    let before = hook.events().len();
    send(
        &b,
        &phone,
        vec![json!({"type":"track","event":"Came Back"})],
    );
    send(
        &b,
        &browser_cookie("fleetotherfleetother01"),
        vec![json!({"type":"track","event":"Someone Else"})],
    );
    let got = hook.wait_for(before + 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let now = hook.events();
    assert_eq!(now.len(), got.len(), "a suppressed event was delivered");
    assert!(now.iter().all(|e| e["event"] != "Came Back"));
    assert!(now.iter().any(|e| e["event"] == "Someone Else"));
}

#[test]
fn a_hold_made_on_one_worker_is_released_by_a_grant_seen_by_the_other() {
    let db = test_database("fleet_hold").expect("PostgreSQL test database");
    let hook = webhook::start("s");
    let ads = webhook::start("s");
    let cfg = config(&db, &hook, &ads);
    let a = Worker::start(&cfg);
    let b = Worker::start(&cfg);
    let cookie = browser_cookie("fleetholdfleetholdfl01");
    let ev = |id: &str, marketing: Option<bool>| {
        let mut e = json!({"type":"track","event":"E","anonymousId":"vis-fleet","messageId":id});
        if let Some(m) = marketing {
            e["context"] = json!({"consent":{"categoryPreferences":{"marketing":m}}});
        }
        e
    };
    send(&a, &cookie, vec![ev("h1", None), ev("h2", None)]);
    // Analytics (hook) gets both; ads holds them.
    hook.wait_for(2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    assert!(ads.events().is_empty(), "pending events leaked to ads");
    send(&b, &cookie, vec![ev("g1", Some(true))]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut ids: Vec<String> = ads
            .events()
            .iter()
            .filter_map(|e| e["messageId"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        if ids == ["g1", "h1", "h2"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ads got {ids:?}, expected g1, h1 and h2"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
