//! The API driven in-process: the real router over a real SQLite store.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::config::Config;
use crate::storage::syncs::RunStatus;
use crate::App;

const TOKEN: &str = "api-test-token";

fn config(extra: &str) -> Config {
    Config::parse(&format!(
        r#"
{extra}
[identity]
keys = [{{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }}]
[[sources]]
name = "web"
write_key = "wk_test"
[[destinations]]
name = "lake"
type = "file"
path = "lake.ndjson"
[[destinations]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/"
[[warehouses]]
name = "crm"
type = "sqlite"
path = "crm.db"
[[models]]
name = "users"
warehouse = "crm"
query = "select id, email from users"
primary_key = "id"
[[syncs]]
name = "users-to-hook"
model = "users"
destination = "hook"
call = "identify"
mapping = {{ userId = "id", "traits.email" = "email" }}
schedule = {{ every_secs = 3600 }}
[[syncs]]
name = "users-paused"
model = "users"
destination = "hook"
call = "identify"
mapping = {{ userId = "id" }}
disabled = true
"#
    ))
    .expect("the test config parses")
    .with_data_dir(crate::storage::conformance_tempdir())
}

/// The worker's router and state for `config`.
fn app(config: Config) -> (Router, crate::http::AppState) {
    let app = App::build(config).expect("the test worker builds");
    let state = app.state().clone();
    (crate::http::router(state.clone()), state)
}

fn with_token() -> (Router, crate::http::AppState) {
    app(config(&format!("[admin]\ntoken = \"{TOKEN}\"")))
}

/// Sends a request; `body` is JSON, or a form when it starts with `form:`.
async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(text) => match text.strip_prefix("form:") {
            Some(form) => {
                request = request.header("content-type", "application/x-www-form-urlencoded");
                Body::from(form.to_owned())
            }
            None => {
                request = request.header("content-type", "application/json");
                Body::from(text.to_owned())
            }
        },
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    call(router, "GET", uri, Some(TOKEN), None).await
}

fn problem(body: &Value) -> (String, String) {
    let p = &body["errors"][0];
    (
        p["field"].as_str().unwrap_or_default().to_owned(),
        p["problem"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The id of the sync `slug`, found the way Airflow finds it.
async fn sync_id(router: &Router, slug: &str) -> String {
    let (status, body) = get(router, &format!("/api/v1/syncs?slug={slug}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_wants_the_admin_token_as_a_bearer() {
    let (router, _) = with_token();
    for uri in [
        "/api/v1/syncs",
        "/api/v1/syncs/1",
        "/api/v1/syncs/1/runs",
        "/api/v1/models/1",
        "/api/v1/destinations/1",
    ] {
        for token in [None, Some("wrong")] {
            let (status, body) = call(&router, "GET", uri, token, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} {token:?}");
            let (field, text) = problem(&body);
            assert_eq!(field, "Authorization");
            assert!(text.contains("Bearer"), "{text}");
        }
        // With the token the route answers (ids are shared by all kinds,
        // so 1 is a sync and the others are 404s).
        let expected = if uri.starts_with("/api/v1/syncs") {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(get(&router, uri).await.0, expected, "{uri}");
    }
    let (status, _) = call(&router, "POST", "/api/v1/syncs/1/trigger", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Without a configured token the API is off, and says how to turn it on.
    let (open, _) = app(config(""));
    let (status, body) = call(&open, "GET", "/api/v1/syncs", Some(""), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(problem(&body).1.contains("no admin token is configured"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_are_listed_found_by_slug_and_read_by_id_as_7_or_7_0() {
    let (router, _) = with_token();
    let (status, list) = get(&router, "/api/v1/syncs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["hasMore"], false);
    let slugs: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["users-to-hook", "users-paused"]);
    let first = &list["data"][0];
    assert_eq!(first["status"], "pending");
    assert_eq!(first["primaryKey"], "id");
    assert_eq!(first["schedule"]["type"], "interval");
    assert_eq!(list["data"][1]["status"], "disabled");
    assert_eq!(list["data"][1]["disabled"], true);

    let id = sync_id(&router, "users-paused").await;
    let (_, page) = get(&router, "/api/v1/syncs?limit=1").await;
    assert_eq!(
        (page["data"].as_array().unwrap().len(), &page["hasMore"]),
        (1, &json!(true))
    );
    let (_, page) = get(&router, "/api/v1/syncs?limit=1.0&offset=1").await;
    assert_eq!(
        (page["data"][0]["id"].as_str(), &page["hasMore"]),
        (Some(id.as_str()), &json!(false))
    );
    let model = first["modelId"].as_str().unwrap();
    let (_, by_model) = get(&router, &format!("/api/v1/syncs?modelId={model}.0")).await;
    assert_eq!(by_model["data"].as_array().unwrap().len(), 2);
    let (_, none) = get(&router, "/api/v1/syncs?slug=nope").await;
    assert_eq!(none, json!({"data": [], "hasMore": false}));

    for form in [id.clone(), format!("{id}.0")] {
        let (status, sync) = get(&router, &format!("/api/v1/syncs/{form}")).await;
        assert_eq!(status, StatusCode::OK, "{form}");
        assert_eq!(
            (sync["id"].as_str(), sync["slug"].as_str()),
            (Some(id.as_str()), Some("users-paused"))
        );
    }
    let (status, body) = get(&router, "/api/v1/syncs/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem(&body).0, "syncId");
    assert!(problem(&body).1.contains("999"), "{body}");
    let (status, body) = get(&router, "/api/v1/syncs/seven").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem(&body).0, "syncId");
    let (status, body) = get(&router, "/api/v1/syncs?limit=many").await;
    assert_eq!(
        (status, problem(&body).0.as_str()),
        (StatusCode::BAD_REQUEST, "limit")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_queues_one_run_from_json_a_form_null_or_no_body() {
    let (router, state) = with_token();
    let id = sync_id(&router, "users-to-hook").await;
    let trigger = format!("/api/v1/syncs/{id}.0/trigger");
    let (status, first) = call(&router, "POST", &trigger, Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let run = first["id"].as_str().unwrap().to_owned();
    // While it waits, every trigger answers the same queued run.
    for body in [
        "null",
        r#"{"fullResync": true}"#,
        "form:fullResync=true",
        "{}",
    ] {
        let (status, again) = call(&router, "POST", &trigger, Some(TOKEN), Some(body)).await;
        assert_eq!(
            (status, again["id"].as_str()),
            (StatusCode::OK, Some(run.as_str())),
            "{body}"
        );
    }
    let stored = state
        .syncs
        .store()
        .run(run.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, RunStatus::Queued);
    assert!(
        stored.full_resync,
        "fullResync made the queued run a full one"
    );

    for body in [
        format!("form:syncId={id}.0"),
        "form:syncSlug=users-to-hook".into(),
        format!(r#"{{"syncId": {id}, "fullResync": false}}"#),
    ] {
        let (status, by) = call(
            &router,
            "POST",
            "/api/v1/syncs/trigger",
            Some(TOKEN),
            Some(body.as_str()),
        )
        .await;
        assert_eq!(
            (status, by["id"].as_str()),
            (StatusCode::OK, Some(run.as_str())),
            "{body}"
        );
    }
    let mismatched = format!("form:syncId={id}&syncSlug=users-paused");
    let cases = [
        (
            "/api/v1/syncs/trigger",
            "form:",
            StatusCode::BAD_REQUEST,
            "syncId",
        ),
        (
            "/api/v1/syncs/trigger",
            "form:syncSlug=nope",
            StatusCode::NOT_FOUND,
            "syncSlug",
        ),
        (
            "/api/v1/syncs/trigger",
            "form:syncId=999",
            StatusCode::NOT_FOUND,
            "syncId",
        ),
        (
            "/api/v1/syncs/trigger",
            mismatched.as_str(),
            StatusCode::BAD_REQUEST,
            "syncSlug",
        ),
        (
            "/api/v1/syncs/trigger",
            "form:syncId=x",
            StatusCode::BAD_REQUEST,
            "syncId",
        ),
        (
            trigger.as_str(),
            r#"{"fullResync": "maybe"}"#,
            StatusCode::BAD_REQUEST,
            "fullResync",
        ),
        (trigger.as_str(), "[1]", StatusCode::BAD_REQUEST, "body"),
        (
            "/api/v1/syncs/999/trigger",
            "{}",
            StatusCode::NOT_FOUND,
            "syncId",
        ),
    ];
    for (uri, body, expected, field) in cases {
        let (status, answer) = call(&router, "POST", uri, Some(TOKEN), Some(body)).await;
        assert_eq!(
            (status, problem(&answer).0.as_str()),
            (expected, field),
            "{uri} {body}: {answer}"
        );
    }
    let paused = sync_id(&router, "users-paused").await;
    let (status, answer) = call(
        &router,
        "POST",
        &format!("/api/v1/syncs/{paused}/trigger"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(problem(&answer).1.contains("disabled"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_come_newest_first_by_run_id_and_in_pages() {
    let (router, state) = with_token();
    let id = sync_id(&router, "users-to-hook").await;
    let store = state.syncs.store();
    let trigger = format!("/api/v1/syncs/{id}/trigger");
    // A first run that the executor's store calls finish, then one queued.
    let (_, first) = call(&router, "POST", &trigger, Some(TOKEN), None).await;
    let started = store.start_run(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(started.id.to_string(), first["id"].as_str().unwrap());
    store
        .finish_run(started.id, RunStatus::Success, None)
        .await
        .unwrap();
    let (_, second) = call(&router, "POST", &trigger, Some(TOKEN), None).await;
    assert_ne!(first["id"], second["id"]);

    let runs = format!("/api/v1/syncs/{id}/runs");
    let (status, list) = get(&router, &runs).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&second["id"], &first["id"]]);
    assert_eq!(list["hasMore"], false);
    assert_eq!(list["data"][0]["status"], "queued");
    assert_eq!(list["data"][1]["status"], "success");
    assert_eq!(list["data"][1]["completionRatio"], 1.0);
    let (_, sync) = get(&router, &format!("/api/v1/syncs/{id}")).await;
    assert_eq!(
        sync["status"], "queued",
        "a sync's status is its last run's"
    );

    let first_id = first["id"].as_str().unwrap();
    let (_, one) = get(&router, &format!("{runs}?runId={first_id}.0")).await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["id"], first["id"]);
    let (_, page) = get(&router, &format!("{runs}?limit=1")).await;
    assert_eq!(
        (page["data"][0]["id"].clone(), page["hasMore"].clone()),
        (second["id"].clone(), json!(true))
    );
    let (_, later) = get(&router, &format!("{runs}?limit=1&offset=1")).await;
    assert_eq!(
        (later["data"][0]["id"].clone(), later["hasMore"].clone()),
        (first["id"].clone(), json!(false))
    );
    let (_, future) = get(&router, &format!("{runs}?after=2999-01-01T00:00:00Z")).await;
    assert_eq!(future["data"], json!([]));

    for (query, field) in [
        ("before=yesterday", "before"),
        ("runId=abc", "runId"),
        ("offset=-1", "offset"),
    ] {
        let (status, body) = get(&router, &format!("{runs}?{query}")).await;
        assert_eq!(
            (status, problem(&body).0.as_str()),
            (StatusCode::BAD_REQUEST, field),
            "{query}"
        );
    }
    let (status, _) = get(&router, "/api/v1/syncs/999/runs").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_destinations_answer_in_hightouchs_fields() {
    let (router, _) = with_token();
    let id = sync_id(&router, "users-to-hook").await;
    let (_, sync) = get(&router, &format!("/api/v1/syncs/{id}")).await;
    let model = sync["modelId"].as_str().unwrap();
    let (status, body) = get(&router, &format!("/api/v1/models/{model}.0")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], model);
    assert_eq!(body["slug"], "users");
    assert_eq!(body["primaryKey"], "id");
    assert_eq!(body["queryType"], "raw_sql");
    assert_eq!(body["raw"]["sql"], "select id, email from users");
    assert_eq!(body["workspaceId"], "1");
    assert_eq!(
        body["sourceId"],
        Value::Null,
        "present: Hightouch's SDK needs the field"
    );
    assert_eq!(body["syncs"].as_array().unwrap().len(), 2);
    assert!(body["createdAt"].as_str().unwrap().ends_with('Z'));

    let destination = sync["destinationId"].as_str().unwrap();
    let (status, body) = get(&router, &format!("/api/v1/destinations/{destination}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["slug"].as_str(), body["type"].as_str()),
        (Some("hook"), Some("webhook"))
    );
    assert_eq!(
        body["configuration"],
        json!({}),
        "settings may hold secrets"
    );
    assert_eq!(body["syncs"].as_array().unwrap().len(), 2);

    for (uri, field) in [
        ("/api/v1/models/999", "modelId"),
        ("/api/v1/destinations/999", "destinationId"),
    ] {
        let (status, body) = get(&router, uri).await;
        assert_eq!(
            (status, problem(&body).0.as_str()),
            (StatusCode::NOT_FOUND, field)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lives_under_the_path_prefix() {
    let (router, _) = app(config(&format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[server]\npath_prefix = \"/collect\""
    )));
    assert_eq!(
        get(&router, "/collect/api/v1/syncs").await.0,
        StatusCode::OK
    );
    assert_eq!(get(&router, "/api/v1/syncs").await.0, StatusCode::NOT_FOUND);
}
