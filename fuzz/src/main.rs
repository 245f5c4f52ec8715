//! Waymark's coverage-guided fuzz targets, driven by libFuzzer.
//!
//! Each target is a file in `src/targets/` with `pub fn run(data: &[u8])`
//! that must never panic, whatever the bytes. `cargo xtask fuzz` builds
//! this binary with SanitizerCoverage for the workspace crates (on stable
//! Rust: no sanitizer, which Rust's memory safety makes up for) and runs
//! every target in turn for a bounded time, each with its own corpus under
//! `target/fuzz-corpus/<name>` seeded from `fuzz/seeds/<name>`.
//!
//! Adding a target: one file in `src/targets/`, one name in `targets!`
//! (`src/targets/mod.rs`). `tests/smoke.rs` runs every target briefly in
//! the suite.

#![no_main]

mod targets;

use std::sync::OnceLock;

/// The target chosen by `WAYMARK_FUZZ_TARGET`, once.
fn target() -> fn(&[u8]) {
    static CHOSEN: OnceLock<fn(&[u8])> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let name = std::env::var("WAYMARK_FUZZ_TARGET").unwrap_or_default();
        match targets::ALL.iter().find(|(n, _)| *n == name) {
            Some((_, run)) => *run,
            None => {
                let names: Vec<&str> = targets::ALL.iter().map(|(n, _)| *n).collect();
                eprintln!(
                    "set WAYMARK_FUZZ_TARGET to one of {}; `cargo xtask fuzz` does",
                    names.join(", ")
                );
                std::process::exit(2);
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| target()(data));
