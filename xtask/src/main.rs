//! `cargo xtask`: Waymark's developer commands.
//!
//! - `run`: build what the worker serves and start it on the embedded default.
//! - `test`: install what is missing, build every part, run every test.
//! - `fuzz`: run each coverage-guided fuzz target for a bounded time.
//! - `bench ingest`: the batch path against the real worker and a bare server.
//! - `bench edge`: one event per request on one core (worker and sink on
//!   CPU 0, the generator on CPU 1), against the same bare server.
//! - `bench paced`: the batch load at 80% of the worker's maximum, with
//!   latency from the scheduled send and RSS per slice.
//! - `bench sync`: a million-row Reverse-ETL sync on a throwaway PostgreSQL.
//! - `dist`: the release archive and its checksum.
//!
//! Each command installs its own prerequisites, so a fresh machine needs
//! only `cargo xtask run` and `cargo xtask test`.

mod console;
mod dist;
mod edge;
mod minify;
mod node;
mod pg;
mod python;
mod rules;
mod setup;
mod tag;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("run") => run(&root, &args[1..]),
        Some("test") => test(&root),
        Some("bench") => bench(
            &root,
            args.get(1).map(String::as_str),
            &args[args.len().min(2)..],
        ),
        Some("build-tag") => tag::build_tag(&root).map(|_| ()),
        Some("build-rules") => rules::build_rules(&root),
        Some("dist") => dist::dist(&root).map(|_| ()),
        Some("fuzz") => edge::fuzz_command(&root, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 run [ARGS]           start Waymark on the embedded default (extra ARGS go to `waymark serve`)\n  \
                 test                 install prerequisites and run every test\n  \
                 bench ingest [ARGS]  ingest load generator vs a bare server\n                       \
                 (ARGS: --rounds N, --seconds N, --random-ids)\n  \
                 bench edge [ARGS]    one page event per request on one core, worker vs a bare server\n                       \
                 (ARGS: --seconds N, --concurrency N)\n  \
                 bench paced [ARGS]   the batch load at 80% of the worker's maximum: p99 and RSS over time\n                       \
                 (ARGS: --seconds N (60; 600 for the memory soak), --percent P)\n  \
                 bench sync [ARGS]    a Reverse-ETL sync of a large model (ARGS: --rows N)\n  \
                 build-tag            build the browser tag into client-wasm/dist and check its size budget\n  \
                 build-rules          build the example and test rules into WASM components\n  \
                 dist                 release archive (one binary carrying its tag, example config, licences) and its SHA-256\n  \
                 fuzz [--seconds N] [TARGET...]  run each fuzz target N seconds (default 60)"
            );
            bail!("unknown command");
        }
    }
}

/// The workspace root (the parent of xtask/). Read at run time first:
/// `cargo run` sets `CARGO_MANIFEST_DIR` for the binary it runs, and a
/// binary shared through a target dir another checkout built (cargo's
/// fingerprints do not depend on the workspace's path) would otherwise
/// work on that checkout.
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command in `root`, failing with its name when it fails.
pub(crate) fn sh(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    // 1. The tag the demo site loads (installs the wasm32 target, wasm-opt
    //    and terser when missing; wasm-bindgen only for the test suite).
    tag::build_tag(root)?;
    // 2. The worker, built exactly as `cargo xtask test` builds it (step 4
    //    there): `cargo run -p waymark` would resolve other dependency
    //    features than the workspace build and rebuild them for minutes.
    build_workspace_bins(root)?;
    // 3. The worker on the embedded default.
    let waymark = setup::target_dir(root).join("debug/waymark");
    let mut args = vec!["serve"];
    // `cargo xtask run -- --listen …` passes the separator through; drop it.
    let extra = extra.strip_prefix(&["--".to_owned()]).unwrap_or(extra);
    args.extend(extra.iter().map(String::as_str));
    console::announce(extra);
    sh(
        root,
        waymark.to_str().unwrap_or("target/debug/waymark"),
        &args,
    )
}

/// `cargo build --workspace --bins`: the one build of the binaries that
/// `run`, `test` and the end-to-end tests share.
fn build_workspace_bins(root: &Path) -> anyhow::Result<()> {
    sh(root, &cargo(), &["build", "--workspace", "--bins"])
}

fn test(root: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // 1. Formatting is cheap to check and keeps diffs honest.
    sh(root, &cargo(), &["fmt", "--all", "--", "--check"])?;
    // 2. Prerequisites: Chromium for the browser tests, npm packages,
    //    Hightouch's Python SDK, PostgreSQL and nginx (the tag and rule
    //    builds install their own toolchain pieces).
    tag::ensure_chromium()?;
    node::ensure_node_packages(root)?;
    python::ensure_hightouch_sdk(root)?;
    let _pg = pg::start_test_cluster()?;
    edge::ensure_nginx()?;
    // 3. What the tests load: the tag (fails over its size budget) and the
    //    rule components.
    tag::build_tag(root)?;
    rules::build_rules(root)?;
    // 4. The binaries the end-to-end tests start.
    build_workspace_bins(root)?;
    // 5. Every unit, integration and doc test of the workspace, then the
    //    guest rules' own unit tests and the tag's tests in the browser.
    //    The end-to-end tests start the binary built in step 4: building it
    //    again from inside a test (`cargo build -p waymark`) would resolve
    //    other dependency features and rebuild it for minutes.
    let workspace = run_workspace_tests(root);
    let guests = test_guest_rules(root);
    let tag = tag::test_tag_wasm(root);
    // NOTE: the fuzz targets' smoke run is `fuzz/tests/smoke.rs`, part of
    // the workspace tests: seeds and seeded mutations on the ordinary
    // build. The coverage-guided run (`cargo xtask fuzz`) needs a second,
    // instrumented build of every crate (about 17 minutes on 2 cores), too
    // much for CI's budget.
    eprintln!(
        "xtask test: finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    workspace?;
    guests?;
    tag?;
    Ok(())
}

/// `cargo test --workspace`, pointing the end-to-end tests at the built binary.
fn run_workspace_tests(root: &Path) -> anyhow::Result<()> {
    eprintln!("+ cargo test --workspace --no-fail-fast");
    let status = Command::new(cargo())
        .args(["test", "--workspace", "--no-fail-fast"])
        .env("WAYMARK_BIN", setup::target_dir(root).join("debug/waymark"))
        .current_dir(root)
        .status()
        .context("cannot run cargo test")?;
    if !status.success() {
        bail!("workspace tests failed ({status})");
    }
    Ok(())
}

/// The guest rules' unit tests, on the host (their logic is kept apart from
/// the WIT bindings so it builds natively).
fn test_guest_rules(root: &Path) -> anyhow::Result<()> {
    eprintln!("+ cargo test --manifest-path rules/Cargo.toml --workspace");
    let status = Command::new(cargo())
        .args(["test", "--manifest-path", "rules/Cargo.toml", "--workspace"])
        .env(
            "CARGO_TARGET_DIR",
            setup::target_dir(root).join("rules-host"),
        )
        .current_dir(root)
        .status()
        .context("cannot run cargo test for rules/")?;
    if !status.success() {
        bail!("the guest rules' unit tests failed ({status})");
    }
    Ok(())
}

fn bench(root: &Path, what: Option<&str>, extra: &[String]) -> anyhow::Result<()> {
    let usage = "usage: cargo xtask bench ingest [--rounds N] [--seconds N] [--random-ids] \
                 [--backend postgres [--workers N] [--soak SECS]]\n       \
                 cargo xtask bench edge [--seconds N] [--concurrency N]\n       \
                 cargo xtask bench sync [--rows N]\n       \
                 cargo xtask bench paced [--seconds N] [--percent P]";
    let Some(what @ ("ingest" | "edge" | "sync" | "paced")) = what else {
        bail!("{usage}");
    };
    if what == "sync" || extra.iter().any(|a| a == "postgres") {
        pg::ensure_postgres()?;
    }
    // The edge bench runs the `rename` example rule.
    if what == "edge" {
        rules::build_rules(root)?;
    }
    sh(
        root,
        &cargo(),
        &[
            "build",
            "--release",
            "-p",
            "waymark",
            "-p",
            "waymark-tests",
            "--bins",
        ],
    )?;
    let target = setup::target_dir(root);
    let waymark = target.join("release/waymark");
    let loadgen = target.join("release/waymark-loadgen");
    let rule = target.join("rules/components/rename.wasm");
    let mut args = vec![what, "--waymark", waymark.to_str().unwrap_or("waymark")];
    if what == "edge" {
        args.extend(["--rule", rule.to_str().unwrap_or("rename.wasm")]);
    }
    args.extend(extra.iter().map(String::as_str));
    sh(root, loadgen.to_str().unwrap_or("waymark-loadgen"), &args)
}
