//! Edge prerequisites: Debian's nginx for the CDN deployment test
//! (`tests/edge_nginx.rs`), and the coverage-guided fuzz runs (`fuzz/`).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};

/// Where Debian puts the nginx binary; the test starts it from here.
pub const NGINX: &str = "/usr/sbin/nginx";

/// Installs Debian's `nginx` when its binary is missing. The test runs its
/// own nginx as a child process with a throwaway config; a system service
/// the package may start is not used.
pub fn ensure_nginx() -> anyhow::Result<()> {
    if Path::new(NGINX).exists() {
        return Ok(());
    }
    eprintln!("installing nginx");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "nginx"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if !Path::new(NGINX).exists() {
        bail!("apt-get installed nginx but {NGINX} is missing; install Debian's nginx package by hand");
    }
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// `cargo xtask fuzz [--seconds N] [TARGET...]`: every fuzz target (or the
/// named ones) for N seconds each (default 60).
pub fn fuzz_command(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut seconds = 60;
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .context("--seconds takes a whole number, e.g. --seconds 300")?;
            }
            name => only.push(name.to_owned()),
        }
    }
    fuzz(root, seconds, &only)
}

/// Builds the fuzz binary with coverage instrumentation and runs each
/// target for `seconds`, failing on the first crash with its input's path.
/// Each target's corpus grows in `<target>/fuzz-corpus/<name>` across runs.
pub fn fuzz(root: &Path, seconds: u64, only: &[String]) -> anyhow::Result<()> {
    let target = crate::setup::target_dir(root);
    // 1. Build: the wrapper instruments the workspace crates only.
    //    `--workspace` keeps the dependencies' features those of the
    //    ordinary build (`-p` would resolve others and rebuild wasmtime);
    //    `--bin` builds only the fuzz binary, and the `libfuzzer` feature
    //    gives the instrumented worker library its own artifact.
    eprintln!("+ cargo build --workspace --bin waymark-fuzz --features waymark-fuzz/libfuzzer (SanitizerCoverage)");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args([
                "build",
                "--workspace",
                "--bin",
                "waymark-fuzz",
                "--features",
                "waymark-fuzz/libfuzzer",
            ])
            .env(
                "RUSTC_WORKSPACE_WRAPPER",
                root.join("fuzz/rustc-wrapper.sh"),
            ),
    )?;
    let bin = target.join("debug/waymark-fuzz");
    // 2. The targets: one file each in fuzz/src/targets/.
    let mut names: Vec<String> = std::fs::read_dir(root.join("fuzz/src/targets"))
        .context("reading fuzz/src/targets")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .filter(|n| only.is_empty() || only.contains(n))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no fuzz target matches {only:?}; targets are the files in fuzz/src/targets/");
    }
    // 3. Each for a bounded time.
    for name in &names {
        let corpus = target.join("fuzz-corpus").join(name);
        let artifacts = target.join("fuzz-artifacts").join(name);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let seeds = root.join("fuzz/seeds").join(name);
        let mut cmd = Command::new(&bin);
        cmd.env("WAYMARK_FUZZ_TARGET", name)
            .arg(format!("-max_total_time={seconds}"))
            .arg("-max_len=8192")
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&corpus);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |key: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{key}:")))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| "?".into())
        };
        eprintln!(
            "fuzz {name}: {} executions in {seconds} s, corpus {} inputs",
            stat("number_of_executed_units"),
            std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0),
        );
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {name} failed ({}); the input is in {}:\n{}",
                out.status,
                artifacts.display(),
                tail.join("\n")
            );
        }
    }
    Ok(())
}
