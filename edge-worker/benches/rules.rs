//! Per-event cost of the rules stage (issue #3), against a native Rust
//! closure doing the same field change, and against the alternative ABI
//! (the whole event as JSON text in and out).
//!
//! Needs the bench components: `cargo xtask build-rules`, then
//! `cargo bench -p waymark --bench rules`.
//!
//! Groups:
//! * `native/two_fields`: the baseline, a closure on `Event`.
//! * `wasm/noop/{1,5}`: chains of rules that do nothing (host overhead).
//! * `wasm/two_fields/{1,5}`: chains of rules that read two fields and write two.
//! * `json_abi/two_fields`: the same change with the event serialised to
//!   JSON, copied in, parsed, changed, serialised, copied out and parsed back.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use waymark::config::{OnError, RuleConfig};
use waymark::rules::RuleHost;
use waymark::stages::rules::RuleChain;
use waymark::Event;

mod json_abi {
    wasmtime::component::bindgen!({
        path: "../rules/testdata/bench-json/wit",
        world: "json-rule",
    });
}

fn components() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/rules/components");
    assert!(
        dir.join("bench-noop.wasm").is_file(),
        "bench components missing: run `cargo xtask build-rules` first"
    );
    dir
}

fn sample_event() -> Event {
    let value = json!({
        "type": "track", "event": "Order Completed", "messageId": "3f1c2a9e-8d7b-4e0f-9a61-2b5c7d8e9f01",
        "anonymousId": "a-123", "userId": "u-456", "timestamp": "2024-05-01T12:00:00.000Z",
        "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (Macintosh) Safari/605.1.15",
                    "page": {"url": "https://shop.example/checkout?step=3", "referrer": "https://shop.example/cart"},
                    "library": {"name": "analytics.js", "version": "5.2.0"}},
        "properties": {"price": 41.99, "currency": "eur", "order_id": "o-789", "items": 3}
    });
    match value {
        Value::Object(map) => Event::from_map(map),
        _ => unreachable!("literal object"),
    }
}

fn chain(host: &RuleHost, file: &str, count: usize) -> RuleChain {
    let dir = components();
    let configs: Vec<RuleConfig> = (0..count)
        .map(|i| RuleConfig {
            name: format!("{file}-{i}"),
            path: dir.join(format!("{file}.wasm")),
            config: toml::Table::new(),
            on_error: OnError::Pass,
            timeout_ms: 2,
            memory_mb: 16,
        })
        .collect();
    host.load(&configs).expect("bench rules load");
    let names: Vec<String> = configs.into_iter().map(|c| c.name).collect();
    host.chain(&names).expect("bench chain")
}

/// The native baseline: the same two-field change as `bench-two-fields`.
fn native_two_fields(event: &mut Event) {
    if let Some(price) = event.get("properties.price").and_then(Value::as_f64) {
        let _ = event.set(
            "properties.price_cents",
            json!((price * 100.0).round() as i64),
        );
    }
    if let Some(currency) = event
        .str("properties.currency")
        .map(str::to_ascii_uppercase)
    {
        let _ = event.set("properties.currency", Value::String(currency));
    }
}

fn bench_rules(c: &mut Criterion) {
    let host = RuleHost::builder().build().expect("rule host");
    let mut group = c.benchmark_group("rules");

    let mut event = sample_event();
    group.bench_function("native/two_fields", |b| {
        b.iter(|| native_two_fields(std::hint::black_box(&mut event)))
    });

    for (file, label) in [("bench-noop", "noop"), ("bench-two-fields", "two_fields")] {
        for count in [1, 5] {
            let chain = chain(&host, file, count);
            let mut event = sample_event();
            group.bench_function(format!("wasm/{label}/{count}"), |b| {
                b.iter(|| chain.apply(std::hint::black_box(&mut event)))
            });
        }
    }

    // The alternative ABI, on an engine with the same call-path settings.
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    let engine = wasmtime::Engine::new(&config).expect("engine");
    let component =
        wasmtime::component::Component::from_file(&engine, components().join("bench-json.wasm"))
            .expect("bench-json component");
    let linker = wasmtime::component::Linker::new(&engine);
    let pre =
        json_abi::JsonRulePre::new(linker.instantiate_pre(&component).expect("pre")).expect("pre");
    let mut store = wasmtime::Store::new(&engine, ());
    // Nothing bumps this engine's epoch; one tick of deadline never fires.
    store.set_epoch_deadline(1);
    let rule = pre.instantiate(&mut store).expect("instantiate");
    rule.call_init(&mut store, "{}")
        .expect("init")
        .expect("init ok");
    let mut event = sample_event();
    group.bench_function("json_abi/two_fields", |b| {
        b.iter(|| {
            store.set_epoch_deadline(1);
            let text = event.to_json();
            match rule.call_transform(&mut store, &text) {
                Ok(json_abi::Outcome::Keep(out)) => {
                    if let Ok(Value::Object(map)) = serde_json::from_str(&out) {
                        event = Event::from_map(map);
                    }
                }
                other => panic!("json rule failed: {other:?}"),
            }
        })
    });
    group.finish();
}

/// On-CPU nanoseconds of this thread so far (Linux schedstat), so the
/// summary below is not skewed by time spent descheduled on a busy machine.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Prints on-CPU time per event for each case: on a shared, busy machine
/// wall-clock figures include waiting for a core; these do not.
fn cpu_time_summary(_c: &mut Criterion) {
    const N: u64 = 200_000;
    let host = RuleHost::builder().build().expect("rule host");
    let mut cases: Vec<(String, Box<dyn FnMut()>)> = Vec::new();
    let mut native_event = sample_event();
    cases.push((
        "native/two_fields".into(),
        Box::new(move || native_two_fields(std::hint::black_box(&mut native_event))),
    ));
    for (file, label) in [("bench-noop", "noop"), ("bench-two-fields", "two_fields")] {
        for count in [1, 5] {
            let chain = chain(&host, file, count);
            let mut event = sample_event();
            cases.push((
                format!("wasm/{label}/{count}"),
                Box::new(move || {
                    chain.apply(std::hint::black_box(&mut event));
                }),
            ));
        }
    }
    for (name, mut run) in cases {
        for _ in 0..10_000 {
            run();
        }
        let (Some(before), wall) = (thread_cpu_ns(), std::time::Instant::now()) else {
            return;
        };
        for _ in 0..N {
            run();
        }
        let wall = wall.elapsed().as_nanos() as u64;
        let cpu = thread_cpu_ns().unwrap_or(before) - before;
        println!(
            "cpu-time {name:<22} {:>7.0} ns/event on-CPU ({:>7.0} ns wall), {:>9.0} events/s per core",
            cpu as f64 / N as f64,
            wall as f64 / N as f64,
            N as f64 * 1e9 / cpu.max(1) as f64
        );
    }
}

criterion_group!(benches, bench_rules, cpu_time_summary);
criterion_main!(benches);
