use super::*;
use crate::config::Config;

const BASE: &str = r#"
[identity]
keys = [{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }]
[[sources]]
name = "web"
write_key = "wk_test"
[[destinations]]
name = "mixpanel"
type = "mixpanel"
token = "t"
[[destinations]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/"
"#;

const SYNC: &str = r#"
[[warehouses]]
name = "local"
type = "sqlite"
path = "crm.db"
[[models]]
name = "users"
warehouse = "local"
query = "select id, email from users"
primary_key = "id"
[[syncs]]
name = "users-to-hook"
model = "users"
destination = "hook"
call = "identify"
mapping = { userId = "id", "traits.email" = "email" }
"#;

fn parse(extra: &str) -> Result<Config, ConfigError> {
    Config::parse(&format!("{BASE}\n{extra}"))
}

#[test]
fn the_example_parses() {
    std::env::set_var("CRM_PG_URL", "postgres://u@127.0.0.1:1/crm");
    let config = parse(EXAMPLE).expect("the example parses");
    assert_eq!(config.warehouses[0].kind, WarehouseKind::Postgres);
    assert_eq!(config.warehouses[1].path, Some(PathBuf::from("crm.db")));
    assert_eq!(config.models[0].primary_key, "id");
    let sync = &config.syncs[0];
    assert_eq!(
        (sync.call, sync.mode),
        (SyncCall::Identify, SyncMode::Upsert)
    );
    assert_eq!(sync.schedule, Some(Schedule::EverySecs(3600)));
    assert!(sync.fail_on_zero_rows);
    assert_eq!(sync.referenced_columns(), ["email", "id", "plan"]);
    assert_eq!(sync.mapping["traits.email"], "email");
    let track = &config.syncs[1];
    assert_eq!(track.event.as_deref(), Some("Plan Changed"));
    assert_eq!(track.schedule, Some(Schedule::Cron("0 * * * *".into())));
}

#[test]
fn defaults_apply_and_the_zero_rows_guard_can_be_turned_off() {
    let config = parse(SYNC).unwrap();
    assert_eq!(config.warehouses[0].batch_rows, 1000);
    assert_eq!(config.warehouses[0].connect_timeout_ms, 5000);
    assert_eq!(config.syncs[0].schedule, None);
    assert!(!config.syncs[0].disabled);
    let config = parse(&format!(
        "{SYNC}fail_on_zero_rows = false\nmode = \"mirror\"\n"
    ))
    .unwrap();
    assert!(!config.syncs[0].fail_on_zero_rows);
    assert_eq!(config.syncs[0].mode, SyncMode::Mirror);
}

#[test]
fn misspelt_keys_are_named() {
    for (text, key) in [
        (SYNC.replace("primary_key", "primary_kee"), "primary_kee"),
        (SYNC.replace("call = ", "kall = "), "kall"),
        (format!("{SYNC}schedule = {{ every = 5 }}\n"), "every"),
        (
            SYNC.replace("type = \"sqlite\"", "type = \"mysql\""),
            "mysql",
        ),
        (format!("{SYNC}mode = \"merge\"\n"), "merge"),
        (
            SYNC.replace("path = \"crm.db\"", "path = \"crm.db\"\nfile = 1"),
            "file",
        ),
    ] {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(key), "expected `{key}` in `{err}`");
    }
}

#[test]
fn references_and_rules_are_checked_and_name_the_key() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            SYNC.replace("warehouse = \"local\"", "warehouse = \"nope\""),
            "models[0].warehouse",
            "no warehouse named `nope`",
        ),
        (
            SYNC.replace("model = \"users\"", "model = \"nope\""),
            "syncs[0].model",
            "no model named `nope`",
        ),
        (
            SYNC.replace("destination = \"hook\"", "destination = \"nope\""),
            "syncs[0].destination",
            "[[destinations]]",
        ),
        (
            SYNC.replace("destination = \"hook\"", "destination = \"mixpanel\"")
                + "mode = \"mirror\"\n",
            "syncs[0].mode",
            "cannot remove rows",
        ),
        (
            SYNC.replace("call = \"identify\"", "call = \"track\""),
            "syncs[0].event",
            "needs the event name",
        ),
        (
            format!("{SYNC}event = \"X\"\n"),
            "syncs[0].event",
            "only for call = \"track\"",
        ),
        (
            SYNC.replace("call = \"identify\"", "call = \"group\""),
            "syncs[0].mapping",
            "groupId",
        ),
        (
            SYNC.replace("\"traits.email\"", "\"properties.email\""),
            "syncs[0].mapping.\"properties.email\"",
            "traits.<name>",
        ),
        (
            SYNC.replace("\"traits.email\"", "\"traits\""),
            "syncs[0].mapping.\"traits\"",
            "not a field",
        ),
        (
            SYNC.replace("\"traits.email\"", "\"traits..email\""),
            "syncs[0].mapping.\"traits..email\"",
            "empty path segment",
        ),
        (
            SYNC.replace("\"traits.email\"", "\"context.waymark.sync\""),
            "context.waymark",
            "set by Waymark",
        ),
        (
            SYNC.replace("userId = \"id\"", "\"traits.id\" = \"id\""),
            "syncs[0].mapping",
            "neither userId nor anonymousId",
        ),
        (
            SYNC.replace("name = \"users-to-hook\"", "name = \"users to hook\""),
            "syncs[0].name",
            "not a slug",
        ),
        (
            format!("{SYNC}schedule = {{ cron = \"0 * *\" }}\n"),
            "syncs[0].schedule.cron",
            "five",
        ),
        (
            format!("{SYNC}schedule = {{ every_secs = 0 }}\n"),
            "syncs[0].schedule.every_secs",
            "at least 1",
        ),
        (
            SYNC.replace("path = \"crm.db\"", ""),
            "warehouses[0].path",
            "set path",
        ),
        (
            SYNC.replace("type = \"sqlite\"", "type = \"postgres\""),
            "warehouses[0].path",
            "url_env",
        ),
        (
            SYNC.replace("path = \"crm.db\"", "path = \"crm.db\"\nbatch_rows = 0"),
            "warehouses[0].batch_rows",
            "1 to 100000",
        ),
        (
            format!("{SYNC}[[models]]\nname = \"users\"\nwarehouse = \"local\"\nquery = \"select 1\"\nprimary_key = \"id\"\n"),
            "models[1]",
            "used twice",
        ),
        (
            SYNC.replace("primary_key = \"id\"", "primary_key = \"\""),
            "models[0].primary_key",
            "identifies a row",
        ),
    ];
    for (text, key, problem) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(key), "expected `{key}` in `{err}`");
        assert!(err.contains(problem), "expected `{problem}` in `{err}`");
    }
}

#[test]
fn a_postgres_warehouse_needs_its_url_variable_set() {
    let text = SYNC
        .replace("type = \"sqlite\"", "type = \"postgres\"")
        .replace(
            "path = \"crm.db\"",
            "url_env = \"WAYMARK_TEST_UNSET_WAREHOUSE_URL\"",
        );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("WAYMARK_TEST_UNSET_WAREHOUSE_URL"), "{err}");
    let inline = SYNC
        .replace("type = \"sqlite\"", "type = \"postgres\"")
        .replace(
            "path = \"crm.db\"",
            "url = \"postgres://u@127.0.0.1:1/crm\"",
        );
    assert!(parse(&inline).is_ok());
}
