//! `cargo xtask dist`: a release archive of the one binary.
//!
//! Builds the tag, then the release worker with `WAYMARK_REQUIRE_TAG=1` (so
//! its `build.rs` refuses to embed nothing), and packs into
//! `<target>/dist/waymark-<version>-<host>.tar.gz`:
//! `waymark`, `waymark.example.toml`, `README.md`, `LICENSE` and
//! `THIRD-PARTY-LICENSES.txt` (every crate linked into the binary with its
//! licence expression and the licence texts it ships), next to
//! `<archive>.sha256` in `sha256sum -c` format.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use sha2::{Digest as _, Sha256};

use crate::{cargo, setup, tag};

/// Builds the archive and its checksum; returns the archive's path.
pub fn dist(root: &Path) -> anyhow::Result<PathBuf> {
    tag::build_tag(root)?;
    eprintln!("+ cargo build --release -p waymark --bin waymark (WAYMARK_REQUIRE_TAG=1)");
    let status = Command::new(cargo())
        .args(["build", "--release", "-p", "waymark", "--bin", "waymark"])
        .env("WAYMARK_REQUIRE_TAG", "1")
        .current_dir(root)
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("the release build failed ({status})");
    }
    let target = setup::target_dir(root);
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("waymark-{version}-{}", host_triple()?);
    let out = target.join("dist");
    let stage = out.join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    std::fs::copy(target.join("release/waymark"), stage.join("waymark"))
        .context("copying target/release/waymark")?;
    for file in ["waymark.example.toml", "README.md", "LICENSE"] {
        std::fs::copy(root.join(file), stage.join(file))
            .with_context(|| format!("copying {file}"))?;
    }
    std::fs::write(
        stage.join("THIRD-PARTY-LICENSES.txt"),
        third_party_licenses(root)?,
    )?;

    let archive = out.join(format!("{name}.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .args(["--owner=0", "--group=0", "--numeric-owner"])
        .arg(&name)
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!("tar failed ({status})");
    }
    let digest = hex(&Sha256::digest(std::fs::read(&archive)?));
    let sum = out.join(format!("{name}.tar.gz.sha256"));
    std::fs::write(&sum, format!("{digest}  {name}.tar.gz\n"))?;
    println!("{}", archive.display());
    println!("{}  (sha256 {digest})", sum.display());
    Ok(archive)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc").arg("-vV").output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("`rustc -vV` printed no host")
}

/// Every crate the worker links (normal dependencies), with its licence
/// expression, then the licence files each ships.
fn third_party_licenses(root: &Path) -> anyhow::Result<String> {
    let out = Command::new(cargo())
        .args(["tree", "-p", "waymark", "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}\t{l}"])
        .current_dir(root)
        .output()
        .context("cannot run cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut crates: Vec<(String, String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim_end_matches(" (*)");
            let (pkg, licence) = line.split_once('\t')?;
            let mut words = pkg.split_whitespace();
            let (name, version) = (words.next()?, words.next()?.trim_start_matches('v'));
            // Path dependencies (the workspace) carry a path after the version.
            if words.next().is_some() {
                return None;
            }
            Some((name.to_owned(), version.to_owned(), licence.to_owned()))
        })
        .collect();
    crates.sort();
    crates.dedup();

    let mut text = String::from(
        "Waymark is licensed under Apache-2.0 (LICENSE). The waymark binary links these crates:\n\n",
    );
    for (name, version, licence) in &crates {
        let _ = writeln!(text, "{name} {version}: {licence}");
    }
    let sources = registry_sources();
    for (name, version, _) in &crates {
        let Some(dir) = sources
            .iter()
            .map(|s| s.join(format!("{name}-{version}")))
            .find(|d| d.is_dir())
        else {
            continue;
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let f = p
                    .file_name()
                    .map(|f| f.to_string_lossy().to_ascii_uppercase())
                    .unwrap_or_default();
                p.is_file()
                    && (f.starts_with("LICENSE")
                        || f.starts_with("LICENCE")
                        || f.starts_with("COPYING"))
            })
            .collect();
        files.sort();
        for file in files {
            let body = std::fs::read_to_string(&file).unwrap_or_default();
            let fname = file.file_name().unwrap_or_default().to_string_lossy();
            let _ = write!(
                text,
                "\n==== {name} {version}: {fname} ====\n\n{}\n",
                body.trim_end()
            );
        }
    }
    Ok(text)
}

/// `$CARGO_HOME/registry/src/*`, where cargo unpacks crates.
fn registry_sources() -> Vec<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    std::fs::read_dir(home.join("registry/src"))
        .map(|it| it.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}
