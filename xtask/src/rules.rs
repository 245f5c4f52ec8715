//! `cargo xtask build-rules`: builds the example rules and the test
//! components in `rules/` into WebAssembly components.
//!
//! Steps: make sure the `wasm32-unknown-unknown` target is installed, build
//! the `rules/` workspace for it (release, into `target/rules` so it never
//! waits on the worker's target-dir lock), then wrap each core module into
//! a component with `wit-component` (the same step as `wasm-tools component
//! new`, without installing a tool). Output:
//! `target/rules/components/<crate-name>.wasm`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// The target rules are compiled for. It has no WASI, so components import
/// exactly what the WIT declares and nothing more.
const TARGET: &str = "wasm32-unknown-unknown";

/// Builds every crate under `rules/examples/` and `rules/testdata/` into
/// `target/rules/components/<name>.wasm`.
pub fn build_rules(root: &Path) -> anyhow::Result<()> {
    // Step 1: the compilation target (rustup ships it; install once).
    ensure_target()?;

    // Step 2: build the guest workspace.
    let target_dir = root.join("target").join("rules");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--release", "--workspace", "--target", TARGET])
        .arg("--manifest-path")
        .arg(root.join("rules").join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .context("running cargo build for rules/")?;
    if !status.success() {
        bail!("cargo build of rules/ failed ({status})");
    }

    // Step 3: wrap each core module into a component.
    let out_dir = target_dir.join("components");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for name in guest_crates(root)? {
        let module = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let bytes =
            std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&bytes)
            .and_then(|encoder| encoder.validate(true).encode())
            .with_context(|| format!("making a component of {}", module.display()))?;
        let out = out_dir.join(format!("{name}.wasm"));
        // Write then rename, so a reader never sees half a component.
        let tmp = out.with_extension("wasm.tmp");
        std::fs::write(&tmp, component).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
        println!("built {}", out.display());
    }
    Ok(())
}

/// Crate names under `rules/examples/` and `rules/testdata/`, which by
/// convention equal their folder names.
fn guest_crates(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for group in ["examples", "testdata"] {
        let dir = root.join("rules").join(group);
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            if path.join("Cargo.toml").is_file() {
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    names.push(name.to_owned());
                }
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Installs the wasm target with rustup when it is missing.
fn ensure_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (is it installed?)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .context("running rustup target add")?;
    if !status.success() {
        bail!("rustup target add {TARGET} failed ({status})");
    }
    Ok(())
}
