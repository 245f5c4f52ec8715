//! The tag's JavaScript minifier: terser, pinned in
//! `client-wasm/js/minify/package-lock.json` and installed there with
//! `npm ci` (Node.js and npm from Debian when missing).
//!
//! terser took wasm-bindgen's glue from 4 918 B to about 3 900 B gzipped
//! and takes the loader down by about 150 B (client-wasm/README.md, "Where
//! the bytes go"); it minifies the hand-written glue (`js/env.js` +
//! `js/glue.js`) too. The size budget counts on it, so a missing Node is
//! installed, not skipped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

/// Where terser's package.json and lockfile live, relative to the root.
const DIR: &str = "client-wasm/js/minify";

/// How a file is loaded, which decides what terser may rename.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// An ES module (the glue): top-level names are private, exports kept.
    Module,
    /// A classic script (loader, analytics.js drop-in): top-level names are
    /// globals and stay.
    Script,
}

/// Installs terser when missing and returns the path of its CLI.
pub fn ensure_terser(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join(DIR);
    let cli = dir.join("node_modules/terser/bin/terser");
    let lock = dir.join("package-lock.json");
    let marker = dir.join("node_modules/.package-lock.json");
    let fresh = match (marker.metadata(), lock.metadata()) {
        (Ok(m), Ok(l)) => m.modified()? >= l.modified()?,
        _ => false,
    };
    if fresh && cli.is_file() {
        return Ok(cli);
    }
    ensure_node()?;
    eprintln!("+ npm ci in {}", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .context("cannot run npm")?;
    if !status.success() {
        bail!("`npm ci` failed in {} ({status})", dir.display());
    }
    Ok(cli)
}

fn ensure_node() -> anyhow::Result<()> {
    let ok = |c: &str| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("node") && ok("npm") {
        return Ok(());
    }
    eprintln!("installing nodejs npm (the tag build minifies with terser)");
    let run = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    if !run(Command::new("apt-get").args(["update", "-qq"]))
        || !run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "nodejs", "npm"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    {
        bail!("could not install nodejs and npm with apt-get; install them and run again");
    }
    Ok(())
}

/// Minifies `src` with terser: two compress passes and mangled names.
/// Scripts keep terser's default `ecma: 5`, so no newer syntax is
/// introduced (the loader must run, and fail quietly, in any browser).
pub fn terser(cli: &Path, src: &str, kind: Kind) -> anyhow::Result<String> {
    let mut cmd = Command::new("node");
    cmd.arg(cli)
        .args(["--compress", "passes=2", "--mangle", "--comments", "false"]);
    if let Kind::Module = kind {
        // A browser that runs ES modules has ES2017: terser may use arrow
        // functions and the like where they are shorter.
        cmd.args(["--module", "--ecma", "2017"]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run node (terser)")?;
    // Writing the whole input before reading is fine: terser reads all of
    // stdin before it writes anything.
    child
        .stdin
        .take()
        .context("terser: no stdin")?
        .write_all(src.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("terser failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}
