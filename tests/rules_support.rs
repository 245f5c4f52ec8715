//! Shared helpers of the `rules_*` tests: build the rule components once
//! (with the same code as `cargo xtask build-rules`), make rule configs and
//! events, and read metrics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use waymark::config::{OnError, RuleConfig};
use waymark::Event;

#[path = "../xtask/src/rules.rs"]
#[allow(clippy::all)]
mod build;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The built component `name` (a crate under `rules/examples/` or
/// `rules/testdata/`), building all of them on first use in this process.
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let root = root();
    if let Err(error) =
        BUILT.get_or_init(|| build::build_rules(&root).map_err(|e| format!("{e:#}")))
    {
        panic!("building rule components failed: {error}");
    }
    let path = root
        .join("target/rules/components")
        .join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A `[[rules]]` entry for the component `name` (deadline 1 s, memory 16 MiB).
pub fn rule(name: &str, config: Value, on_error: OnError) -> RuleConfig {
    rule_at(name, component(name), config, on_error)
}

/// A `[[rules]]` entry for the file at `path`.
pub fn rule_at(name: &str, path: PathBuf, config: Value, on_error: OnError) -> RuleConfig {
    let table: toml::Table = match serde_json::from_value(config) {
        Ok(table) => table,
        Err(e) => panic!("rule config must be a JSON object: {e}"),
    };
    RuleConfig {
        name: name.to_owned(),
        path,
        config: table,
        on_error,
        // Generous: tests share two cores with the build, and a wall-clock
        // deadline fires on a descheduled thread too. Hostile tests set
        // their own.
        timeout_ms: 1_000,
        memory_mb: 16,
    }
}

/// An event from JSON.
pub fn event(value: Value) -> Event {
    match value {
        Value::Object(map) => Event::from_map(map),
        other => panic!("events are objects, not {other}"),
    }
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "waymark-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// The value of `waymark_rule_errors_total{rule,kind}` in Prometheus text.
pub fn rule_errors(rendered: &str, rule: &str, kind: &str) -> u64 {
    rendered
        .lines()
        .filter(|line| line.starts_with("waymark_rule_errors_total{"))
        .filter(|line| {
            line.contains(&format!("rule=\"{rule}\"")) && line.contains(&format!("kind=\"{kind}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
