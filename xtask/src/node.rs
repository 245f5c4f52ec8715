//! Node.js and the npm packages the tests run:
//!
//! - `tests/node/tcf`: IAB's TCF encoder (`@iabtechlabtcf/core`), whose
//!   strings the worker's TC string decoder is checked against;
//! - `tests/node/segment`: Segment's analytics-next, for
//!   `tests/browser_segment_next.rs`;
//! - `tests/node/cmp`: IAB's CMP API, stub and encoder, for
//!   `tests/browser_cmp.rs`.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// The npm package directories of the repository, each with a
/// `package.json` and a `package-lock.json`.
const NPM_DIRS: &[&str] = &["tests/node/tcf", "tests/node/segment", "tests/node/cmp"];

/// Installs Node.js and npm from Debian when missing, then `npm ci` in each
/// package directory whose `node_modules` is missing or older than its
/// lockfile.
pub fn ensure_node_packages(root: &Path) -> anyhow::Result<()> {
    let have_node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have_npm = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_node || !have_npm {
        eprintln!("installing nodejs npm");
        crate::sh(root, "apt-get", &["update", "-qq"])?;
        let status = Command::new("apt-get")
            .args(["install", "-y", "-qq", "nodejs", "npm"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?;
        anyhow::ensure!(status.success(), "apt-get install nodejs npm failed");
    }
    for dir in NPM_DIRS {
        let dir = root.join(dir);
        let lock = dir.join("package-lock.json");
        let marker = dir.join("node_modules/.package-lock.json");
        let fresh = match (marker.metadata(), lock.metadata()) {
            (Ok(m), Ok(l)) => m.modified()? >= l.modified()?,
            _ => false,
        };
        if fresh {
            continue;
        }
        eprintln!("+ npm ci in {}", dir.display());
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .context("cannot run npm")?;
        anyhow::ensure!(status.success(), "npm ci failed in {}", dir.display());
    }
    Ok(())
}
