//! The one-core edge benchmark (issue 17): one ~450 B `page` event per
//! request to `/v1/page` over 32 connections, the server under test and its
//! loopback webhook sink pinned to CPU 0, the generator to CPU 1. The worker
//! runs the `rename` example rule on the source and delivers to a webhook
//! (or a file). Variants show each cost: a returning visitor (a `wm_vid`
//! minted once and sent back), a first-time visitor (a cookie minted per
//! request), and the file destination instead of the webhook.

use std::time::Duration;

use waymark_tests::loadgen::{self, Load, Shape};

use crate::procs::{check_delivered, pin_self, pinned, Fleet, Server};
use crate::{arg, num, per_request, saturation};

/// The server side's core.
const SERVER_CPU: usize = 0;
/// The generator's core.
const GENERATOR_CPU: usize = 1;

/// Where the worker delivers.
#[derive(Clone, Copy, PartialEq)]
enum Dest {
    Webhook,
    File,
}

/// The worker's config: the rename rule on the source, one destination.
fn config(rule: &str, dest: Dest, sink: &str) -> String {
    let destination = match dest {
        Dest::Webhook => format!("type = \"webhook\"\nurl = \"{sink}/hook\""),
        Dest::File => "type = \"file\"\npath = \"events.ndjson\"".to_owned(),
    };
    format!(
        r#"
[identity]
keys = [{{ id = "k1", secret = "bench-secret-0123456789abcdef0123456789" }}]
[[rules]]
name = "rename"
path = "{rule}"
config = {{ events = {{ "Product" = "Product Viewed" }}, properties = {{ "properties.title" = "properties.page_title" }} }}
on_error = "pass"
[[sources]]
name = "bench"
write_key = "wk_bench"
default_consent = {{ analytics = "granted" }}
rules = ["rename"]
[[destinations]]
name = "out"
{destination}
"#
    )
}

/// A returning visitor's `wm_vid=…`: one page event without a cookie, and
/// the cookie the worker set on its answer.
fn mint_cookie(base: &str) -> anyhow::Result<String> {
    let answer = reqwest::blocking::Client::new()
        .post(format!("{base}/v1/page"))
        .basic_auth("wk_bench", Some(""))
        .json(&serde_json::json!({
            "type": "page", "name": "Home", "anonymousId": "anon-0001",
            "messageId": uuid::Uuid::new_v4().to_string(),
        }))
        .send()?;
    anyhow::ensure!(answer.status() == 200, "mint request: {}", answer.status());
    let cookie = answer
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .filter(|c| c.starts_with("wm_vid="))
        .ok_or_else(|| anyhow::anyhow!("the worker set no wm_vid cookie"))?;
    Ok(cookie.to_owned())
}

/// Runs the edge benchmark (`waymark-loadgen edge`).
pub fn edge(runtime: &tokio::runtime::Runtime, args: &[String]) -> anyhow::Result<()> {
    let waymark = arg(args, "--waymark").unwrap_or_else(|| "target/release/waymark".into());
    let rule = arg(args, "--rule").unwrap_or_else(|| "target/rules/components/rename.wasm".into());
    let rule = std::fs::canonicalize(&rule)
        .map_err(|e| anyhow::anyhow!("rule component {rule}: {e} (cargo xtask build-rules)"))?;
    let secs = num(args, "--seconds", 10);
    let concurrency = num(args, "--concurrency", 32) as usize;
    pin_self(GENERATOR_CPU)?;
    let cpu = Some(SERVER_CPU);
    println!(
        "edge benchmark: {concurrency} connections, POST /v1/page of one ~450 B page event, \
         unique messageIds; server and sink on CPU {SERVER_CPU}, generator on CPU \
         {GENERATOR_CPU}; rename rule on the source; {secs} s per phase after 2 s of warm-up\n"
    );
    let me = std::env::current_exe()?;
    let bare = Server::start(pinned(cpu, &me).arg("bare-server"), "bare listening on ")?;
    let load = |base: &str, cookie: Option<String>| Load {
        concurrency,
        shape: Shape::Page,
        cookie,
        duration: Duration::from_secs(secs),
        ..Load::batch(vec![base.to_owned()], "wk_bench")
    };
    let variants = [
        ("returning visitor, webhook", Dest::Webhook, true),
        (
            "first-time visitor (cookie minted per request), webhook",
            Dest::Webhook,
            false,
        ),
        ("returning visitor, file destination", Dest::File, true),
    ];
    let mut all_delivered = true;
    let mut summary = Vec::new();
    for (name, dest, returning) in variants {
        println!("{name}:");
        let mut bare_load = load(&bare.base, None);
        bare_load.watch = vec![("bare".into(), bare.pids())];
        let baseline = runtime.block_on(loadgen::run(bare_load));
        println!("  bare axum: {baseline}");
        println!(
            "    {}{}",
            per_request(&baseline, "bare"),
            saturation(&baseline, &[SERVER_CPU])
        );

        let sink = match dest {
            Dest::Webhook => Some(Server::start(
                pinned(cpu, &me).arg("sink"),
                "sink listening on ",
            )?),
            Dest::File => None,
        };
        let sink_base = sink.as_ref().map_or("", |s| s.base.as_str());
        let fleet = Fleet::start(
            &waymark,
            &config(&rule.to_string_lossy(), dest, sink_base),
            None,
            1,
            cpu,
        )?;
        let base = fleet.bases[0].clone();
        let (cookie, minted) = if returning {
            (Some(mint_cookie(&base)?), 1)
        } else {
            (None, 0)
        };
        let mut worker_load = load(&base, cookie);
        worker_load.watch = vec![("waymark".into(), fleet.pids())];
        if let Some(s) = &sink {
            worker_load.watch.push(("sink".into(), s.pids()));
        }
        let report = runtime.block_on(loadgen::run(worker_load));
        let ratio = report.requests_per_sec / baseline.requests_per_sec.max(1.0);
        println!("  waymark:   {report}");
        println!(
            "    {}  {}  ratio to bare {ratio:.3}",
            per_request(&report, "waymark"),
            per_request(&report, "sink")
        );
        let acked = report.acked_events + minted;
        all_delivered &= match &sink {
            Some(s) => {
                let count_url = format!("{}/count", s.base);
                check_delivered("webhook sink", acked, || {
                    reqwest::blocking::get(&count_url)
                        .and_then(|r| r.text())
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0)
                })
            }
            None => check_delivered("file", acked, || fleet.file_events()),
        };
        summary.push(format!(
            "  {name}: waymark {:.0} req/s, {}; bare {:.0} req/s, {}; ratio {ratio:.3}",
            report.requests_per_sec,
            per_request(&report, "waymark"),
            baseline.requests_per_sec,
            per_request(&baseline, "bare"),
        ));
        println!();
    }
    println!("summary:\n{}", summary.join("\n"));
    anyhow::ensure!(
        all_delivered,
        "some acked events did not reach the destination"
    );
    Ok(())
}
