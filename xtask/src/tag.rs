//! `cargo xtask build-tag`: builds the browser tag (client-wasm) into the
//! assets the worker serves, and checks its size budget.
//!
//! Output, in `client-wasm/dist/` (not committed):
//! - `wm.js`: the loader, short-cached, served at `/wm.js`. It knows the
//!   hashed name of the glue, templated in here.
//! - `wm/waymark.<hash>.js` and `wm/waymark.<hash>.wasm`: the glue (an ES
//!   module) and the module, content-hashed and served as immutable.
//!
//! Steps: `cargo build` for wasm32 (no_std `bare` feature, `wasm-release`
//! profile, own target dir `target/wasm`), `wasm-opt`
//! ([`WASM_OPT_PASSES`]) between byte passes ([`drop_dead_table_entries`]
//! before, [`strip_exports`], [`blank_dead_data`] and [`shorten_env_imports`]
//! after); the glue is
//! `js/env.js` and the hand-written `js/glue.js` bundled as one ES module
//! ([`bundle_glue`]) and minified with terser (`minify.rs`).
//!
//! # Design
//! The budget (issue 15) is 12 KB gzipped for loader + glue + wasm. The
//! shipped build does not use wasm-bindgen: its generated glue and the
//! adapters it adds to the module (externref table, string passing both
//! ways, closure shims kept alive by a function table it never
//! garbage-collects) were about a quarter of the tag. `src/bind/raw.rs` and
//! `js/glue.js` are a hand-written handle ABI instead; the `std` build keeps
//! wasm-bindgen for the wasm-bindgen-test suite (`test_tag_wasm`).

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};

/// Gzipped bytes allowed for loader + glue + wasm together (issue 15's goal).
pub const BUDGET_GZ: usize = 12 * 1024;
/// Gzipped bytes allowed for the inline snippet.
pub const SNIPPET_BUDGET_GZ: usize = 1024;

/// Sizes of one build, raw and gzipped (level 9).
#[derive(Debug, Clone, Copy)]
pub struct TagSizes {
    pub loader: (usize, usize),
    pub glue: (usize, usize),
    pub wasm: (usize, usize),
    pub snippet: (usize, usize),
    /// The analytics.js drop-in (`js/segment.js`), loaded only by pages that
    /// install the tag under another global; not part of the budget.
    pub segment: (usize, usize),
}

impl TagSizes {
    /// Loader + glue + wasm, gzipped.
    pub fn total_gz(&self) -> usize {
        self.loader.1 + self.glue.1 + self.wasm.1
    }

    /// The parts in print order, with their names.
    fn parts(&self) -> [(&'static str, (usize, usize)); 5] {
        [
            ("loader", self.loader),
            ("glue", self.glue),
            ("wasm", self.wasm),
            ("snippet", self.snippet),
            ("segment", self.segment),
        ]
    }

    /// One `name raw gz` line per part, read back by [`TagSizes::parse`].
    pub fn record(&self) -> String {
        self.parts()
            .iter()
            .map(|(n, (raw, gz))| format!("{n} {raw} {gz}\n"))
            .collect()
    }

    /// Reads [`TagSizes::record`]'s text; `None` when a part is missing.
    pub fn parse(text: &str) -> Option<TagSizes> {
        let find = |name: &str| {
            text.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == name).then_some(())?;
                Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
            })
        };
        Some(TagSizes {
            loader: find("loader")?,
            glue: find("glue")?,
            wasm: find("wasm")?,
            snippet: find("snippet")?,
            segment: find("segment").unwrap_or((0, 0)),
        })
    }

    /// Prints the figures as a small table, with the change against
    /// `previous` (the last build) when known.
    pub fn print(&self, previous: Option<&TagSizes>) {
        let delta = |now: usize, before: Option<usize>| match before {
            Some(b) if b != now => format!(" ({:+} B)", now as i64 - b as i64),
            Some(_) => " (=)".to_owned(),
            None => String::new(),
        };
        let before = previous.map(TagSizes::parts);
        println!("waymark tag size (gzip -9):");
        for (i, (n, (raw, gz))) in self.parts().iter().enumerate() {
            let was = before.and_then(|b| b.get(i).map(|p| p.1));
            if i == 3 {
                println!(
                    "  total    {:>7} B gzip{} (budget {} B, {} B left)",
                    self.total_gz(),
                    delta(self.total_gz(), previous.map(TagSizes::total_gz)),
                    BUDGET_GZ,
                    BUDGET_GZ as i64 - self.total_gz() as i64
                );
            }
            let note = match *n {
                "snippet" => "  inline, not in the total",
                "segment" => "  analytics.js drop-in, loaded only under another global",
                _ => "",
            };
            println!(
                "  {n:<8} {raw:>7} B raw{} {gz:>7} B gzip{}{note}",
                delta(*raw, was.map(|w| w.0)),
                delta(*gz, was.map(|w| w.1)),
            );
        }
    }
}

/// `cargo xtask build-tag`: installs what is missing, builds, writes
/// `client-wasm/dist/`, prints the sizes and fails above the budget.
pub fn build_tag(root: &Path) -> anyhow::Result<TagSizes> {
    let crate_dir = root.join("client-wasm");
    let target = root.join("target/wasm");
    ensure_wasm_target()?;
    ensure_wasm_opt()?;
    let terser = crate::minify::ensure_terser(root)?;

    // 1. The module, without std's panic formatting and without
    //    wasm-bindgen (`bare`). Names stay in (strip=false) so `twiggy` can
    //    read this file; wasm-opt strips them from what ships.
    run(Command::new(cargo())
        .current_dir(root)
        .args([
            "build",
            "-p",
            "waymark-tag",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .args([
            "--profile",
            "wasm-release",
            "--no-default-features",
            "--features",
            "bare",
        ])
        .arg("--target-dir")
        .arg(&target)
        .env("CARGO_PROFILE_WASM_RELEASE_STRIP", "false"))?;
    let raw = target.join("wasm32-unknown-unknown/wasm-release/waymark_tag.wasm");

    // 2. wasm-opt, with the features rustc enables by default. Flattening
    //    and re-looping before two -Oz rounds, run to a fixed point, then
    //    merging look-alike functions: 227 B gzipped less than one -Oz
    //    (measured; see client-wasm/README.md "Where the bytes go").
    let pkg = target.join("pkg");
    let _ = std::fs::remove_dir_all(&pkg);
    std::fs::create_dir_all(&pkg)?;
    let shrunk = pkg.join("shrunk.wasm");
    std::fs::write(&shrunk, drop_dead_table_entries(&std::fs::read(&raw)?)?)?;
    let opt = pkg.join("waymark_tag.wasm");
    run(Command::new("wasm-opt")
        .args(WASM_OPT_PASSES)
        // The target_features section only guides later tools: 100 B gzip.
        .args([
            "--strip-debug",
            "--strip-producers",
            "--strip-target-features",
        ])
        .args(WASM_FEATURES)
        .arg(&shrunk)
        .arg("-o")
        .arg(&opt))?;
    let wasm = strip_exports(&std::fs::read(&opt)?, &["__data_end", "__heap_base"])?;
    let wasm = blank_dead_data(&wasm)?;
    let (wasm, env_renames) = shorten_env_imports(&wasm)?;
    let wasm_name = format!("waymark.{}.wasm", content_hash(&wasm));

    // 3. The glue: env.js and the hand-written js/glue.js (the ABI of
    //    src/bind/raw.rs) as one ES module, pointed at the hashed module.
    let env = std::fs::read_to_string(crate_dir.join("js/env.js"))?;
    let glue = std::fs::read_to_string(crate_dir.join("js/glue.js"))?;
    let glue = bundle_glue(&glue, &env, &env_renames, &wasm_name)?;
    let glue = crate::minify::terser(&terser, &glue, crate::minify::Kind::Module)?;
    let glue_name = format!("waymark.{}.js", content_hash(glue.as_bytes()));

    // 4. The loader, templated with the glue's name.
    let loader = std::fs::read_to_string(crate_dir.join("js/loader.js"))?;
    if !loader.contains("__WM_GLUE__") {
        bail!("client-wasm/js/loader.js: missing the __WM_GLUE__ placeholder");
    }
    // The analytics.js drop-in, loaded by the loader only for another global.
    let segment = crate::minify::terser(
        &terser,
        &std::fs::read_to_string(crate_dir.join("js/segment.js"))?,
        crate::minify::Kind::Script,
    )?;
    let segment_name = format!("segment.{}.js", content_hash(segment.as_bytes()));
    if !loader.contains("__WM_SEGMENT__") {
        bail!("client-wasm/js/loader.js: missing the __WM_SEGMENT__ placeholder");
    }
    let loader = crate::minify::terser(
        &terser,
        &loader
            .replace("__WM_GLUE__", &glue_name)
            .replace("__WM_SEGMENT__", &segment_name),
        crate::minify::Kind::Script,
    )?;
    let snippet = std::fs::read_to_string(crate_dir.join("js/snippet.html"))?;

    // 5. dist/: replaced as a whole so stale hashed files do not pile up.
    let dist = crate_dir.join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::create_dir_all(dist.join("wm"))?;
    std::fs::write(dist.join("wm.js"), &loader)?;
    std::fs::write(dist.join("wm").join(&glue_name), &glue)?;
    std::fs::write(dist.join("wm").join(&wasm_name), &wasm)?;
    // Precompressed twins: the worker serves `/wm/*` with
    // `precompressed_gzip`, so browsers get these bytes.
    std::fs::write(
        dist.join("wm").join(format!("{glue_name}.gz")),
        gz(glue.as_bytes()),
    )?;
    std::fs::write(dist.join("wm").join(format!("{wasm_name}.gz")), gz(&wasm))?;
    std::fs::write(dist.join("wm").join(&segment_name), &segment)?;
    std::fs::write(
        dist.join("wm").join(format!("{segment_name}.gz")),
        gz(segment.as_bytes()),
    )?;

    let sizes = TagSizes {
        loader: (loader.len(), gz_len(loader.as_bytes())),
        glue: (glue.len(), gz_len(glue.as_bytes())),
        wasm: (wasm.len(), gz_len(&wasm)),
        snippet: (snippet.len(), gz_len(snippet.as_bytes())),
        segment: (segment.len(), gz_len(segment.as_bytes())),
    };
    // The change against the previous build, kept beside the wasm target.
    let record = target.join("tag-sizes.txt");
    let previous = std::fs::read_to_string(&record)
        .ok()
        .and_then(|t| TagSizes::parse(&t));
    sizes.print(previous.as_ref());
    let _ = std::fs::write(&record, sizes.record());
    check_budget(&sizes)?;
    Ok(sizes)
}

/// Fails when the tag or the snippet is over budget.
pub fn check_budget(s: &TagSizes) -> anyhow::Result<()> {
    if s.total_gz() > BUDGET_GZ {
        bail!(
            "tag over budget: {} B gzip > {} B (loader {} + glue {} + wasm {}); `twiggy top` on target/wasm/pkg/waymark_tag_bg.wasm says why",
            s.total_gz(),
            BUDGET_GZ,
            s.loader.1,
            s.glue.1,
            s.wasm.1
        );
    }
    if s.snippet.1 > SNIPPET_BUDGET_GZ {
        bail!(
            "snippet over budget: {} B gzip > {} B",
            s.snippet.1,
            SNIPPET_BUDGET_GZ
        );
    }
    Ok(())
}

/// The wasm-opt passes, in order.
const WASM_OPT_PASSES: [&str; 6] = [
    "--flatten",
    "--rereloop",
    "-Oz",
    "-Oz",
    "--converge",
    "--merge-similar-functions",
];

/// Features rustc's wasm32 target enables by default; Debian's binaryen
/// (version 108) needs them spelled out.
const WASM_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// Adds the `wasm32-unknown-unknown` target through rustup when missing.
pub fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let has = installed.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == "wasm32-unknown-unknown")
    });
    if has {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// Installs the wasm-bindgen CLI pinned (`=x.y.z`) in client-wasm/Cargo.toml
/// when the one on PATH is missing or another version. Only the
/// wasm-bindgen-test suite needs it (its `wasm-bindgen-test-runner`); the
/// tag that ships is built without wasm-bindgen.
pub fn ensure_wasm_bindgen(crate_dir: &Path) -> anyhow::Result<()> {
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml"))?;
    let version = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("wasm-bindgen ="))
        .and_then(|l| l.split("\"=").nth(1))
        .and_then(|v| v.split('"').next())
        .context("client-wasm/Cargo.toml: wasm-bindgen must be pinned as version = \"=x.y.z\"")?
        .to_string();
    let have = Command::new("wasm-bindgen").arg("--version").output().ok();
    let have = have
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if have == format!("wasm-bindgen {version}") {
        return Ok(());
    }
    eprintln!("installing wasm-bindgen-cli {version} (found: {:?})", have);
    let locked = Command::new(cargo())
        .args([
            "install",
            "wasm-bindgen-cli",
            "--version",
            &version,
            "--locked",
        ])
        .status()?;
    if !locked.success() {
        // NOTE: the published lockfile can name a crate version the registry
        // no longer serves (seen with webpki-roots); resolve afresh then.
        eprintln!("--locked install failed; retrying with fresh resolution");
        run(Command::new(cargo()).args(["install", "wasm-bindgen-cli", "--version", &version]))?;
    }
    Ok(())
}

/// Installs Debian's binaryen (wasm-opt) when missing.
pub fn ensure_wasm_opt() -> anyhow::Result<()> {
    if Command::new("wasm-opt")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    apt_install(&["binaryen"])
}

/// Installs Debian's Chromium and ChromeDriver when missing (browser tests
/// and wasm-bindgen-test).
pub fn ensure_chromium() -> anyhow::Result<()> {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        return Ok(());
    }
    apt_install(&["chromium", "chromium-driver"])
}

fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    eprintln!("installing {}", pkgs.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The tag's wasm-bindgen-test suite in headless Chromium.
pub fn test_tag_wasm(root: &Path) -> anyhow::Result<()> {
    ensure_wasm_bindgen(&root.join("client-wasm"))?;
    ensure_chromium()?;
    run(Command::new(cargo())
        .current_dir(root.join("client-wasm"))
        .args([
            "test",
            "-p",
            "waymark-tag",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .arg("--target-dir")
        .arg(root.join("target/wasm"))
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        )
        .env("CHROMEDRIVER", "/usr/bin/chromedriver")
        .env("WASM_BINDGEN_TEST_TIMEOUT", "60"))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn gz_len(data: &[u8]) -> usize {
    gz(data).len()
}

/// FNV-1a 64, 12 hex digits: a cache-busting name, not a security hash.
fn content_hash(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", h >> 16)
}

// ---- Module passes -------------------------------------------------------

fn leb(b: &[u8], i: &mut usize) -> anyhow::Result<u32> {
    let (mut r, mut s) = (0u32, 0u32);
    loop {
        let x = *b.get(*i).context("wasm: truncated leb128")?;
        *i += 1;
        r |= u32::from(x & 0x7f) << s;
        if x < 0x80 {
            return Ok(r);
        }
        s += 7;
        if s > 28 {
            bail!("wasm: leb128 too long");
        }
    }
}

fn put_leb(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn name<'a>(b: &'a [u8], i: &mut usize) -> anyhow::Result<&'a str> {
    let n = leb(b, i)? as usize;
    let s = b.get(*i..*i + n).context("wasm: truncated name")?;
    *i += n;
    Ok(std::str::from_utf8(s)?)
}

/// Function-table entries that are never called through the table, by
/// name: `Display` impls referenced by panic messages, which are only
/// called when a message is formatted, and the `bare` panic handler formats
/// nothing.
const DEAD_TABLE_ENTRIES: [&str; 1] = ["fmt"];

/// Points function-table entries named in [`DEAD_TABLE_ENTRIES`] at
/// function 0 (an import, which stays anyway), so wasm-opt can drop them
/// and the formatting code behind them. Needs the name section.
pub fn drop_dead_table_entries(m: &[u8]) -> anyhow::Result<Vec<u8>> {
    // Pass 1: function names, from the `name` custom section.
    let mut names = std::collections::HashMap::new();
    for_each_section(m, |id, body, _| {
        let mut j = 0;
        if id == 0 && name(body, &mut j)? == "name" {
            while j < body.len() {
                let sub = body[j];
                j += 1;
                let sub_end = leb(body, &mut j)? as usize + j;
                if sub == 1 {
                    for _ in 0..leb(body, &mut j)? {
                        let idx = leb(body, &mut j)?;
                        names.insert(idx, name(body, &mut j)?.to_string());
                    }
                }
                j = sub_end;
            }
        }
        Ok(())
    })?;
    let dead = |f: u32| {
        names
            .get(&f)
            .is_some_and(|n| DEAD_TABLE_ENTRIES.iter().any(|d| n.contains(d)))
    };
    // Pass 2: rewrite the element section.
    rewrite_section(m, 9, |body| {
        let mut j = 0;
        let mut b = Vec::new();
        let n = leb(body, &mut j)?;
        put_leb(&mut b, n);
        for _ in 0..n {
            let flags = leb(body, &mut j)?;
            if flags != 0 {
                // Only the plain active segment rustc emits is understood.
                return Ok(None);
            }
            put_leb(&mut b, flags);
            let expr = j;
            while *body.get(j).context("wasm: element offset")? != 0x0b {
                j += 1;
            }
            j += 1;
            b.extend_from_slice(&body[expr..j]);
            let count = leb(body, &mut j)?;
            put_leb(&mut b, count);
            for _ in 0..count {
                let f = leb(body, &mut j)?;
                put_leb(&mut b, if dead(f) { 0 } else { f });
            }
        }
        Ok(Some(b))
    })
}

/// Zeroes the bytes of dead panic strings in the data section, then drops
/// the zeros a segment ends with (memory starts zeroed): the
/// `/rustc/<commit>/library/…rs` paths of panic locations, alloc's
/// `capacity overflow` and `memory allocation of … bytes failed`, and the
/// `00`..`99` digit table of integer formatting.
///
/// # Design
/// These bytes are only read when a panic message is formatted. The `bare`
/// panic handler formats nothing, and once [`drop_dead_table_entries`] has
/// unhooked the `Display` impls no formatting code is left in the module
/// (`twiggy top` on `target/wasm/pkg/shrunk.wasm` after wasm-opt shows
/// none). wasm-opt cannot do this: it does not split data segments.
/// About 310 B gzipped (issue 15).
pub fn blank_dead_data(m: &[u8]) -> anyhow::Result<Vec<u8>> {
    let digits: Vec<u8> = (0..100)
        .flat_map(|n: u8| [b'0' + n / 10, b'0' + n % 10])
        .collect();
    let messages: [&[u8]; 4] = [
        &digits,
        b"capacity overflow",
        b"memory allocation of ",
        b" bytes failed",
    ];
    rewrite_section(m, 11, |body| {
        let mut j = 0;
        let mut b = Vec::new();
        let n = leb(body, &mut j)?;
        put_leb(&mut b, n);
        for _ in 0..n {
            let flags = leb(body, &mut j)?;
            if flags != 0 {
                // Only the active memory-0 segments rustc emits are understood.
                return Ok(None);
            }
            put_leb(&mut b, flags);
            let expr = j;
            while *body.get(j).context("wasm: data offset")? != 0x0b {
                j += 1;
            }
            j += 1;
            b.extend_from_slice(&body[expr..j]);
            let len = leb(body, &mut j)? as usize;
            let mut data = body
                .get(j..j + len)
                .context("wasm: truncated data")?
                .to_vec();
            j += len;
            for msg in messages {
                blank_all(&mut data, msg, msg.len());
            }
            blank_rustc_paths(&mut data);
            while data.last() == Some(&0) {
                data.pop();
            }
            put_leb(&mut b, data.len() as u32);
            b.extend_from_slice(&data);
        }
        Ok(Some(b))
    })
}

/// Zeroes `len` bytes at every occurrence of `needle` in `data`.
fn blank_all(data: &mut [u8], needle: &[u8], len: usize) {
    let mut at = 0;
    while let Some(p) = data
        .get(at..)
        .and_then(|d| d.windows(needle.len()).position(|w| w == needle))
    {
        let from = at + p;
        data[from..from + len].fill(0);
        at = from + len;
    }
}

/// Zeroes each `/rustc/…/library/….rs` path.
fn blank_rustc_paths(data: &mut [u8]) {
    let mut at = 0;
    while let Some(p) = data
        .get(at..)
        .and_then(|d| d.windows(7).position(|w| w == b"/rustc/"))
    {
        let from = at + p;
        let Some(len) = data[from..].windows(3).position(|w| w == b".rs") else {
            return;
        };
        let path = &data[from..from + len];
        if !path.contains(&0) && path.windows(9).any(|w| w == b"/library/") {
            data[from..from + len + 3].fill(0);
        }
        at = from + len + 3;
    }
}

/// (old, new) import names.
pub type Renames = Vec<(String, String)>;

/// Renames the imports of module `e` named `wm_*` (the functions of
/// `js/env.js`, which keep their names in src/env.rs) to `0`, `1`, … in
/// import order; returns the (old, new) pairs for [`bundle_glue`].
pub fn shorten_env_imports(m: &[u8]) -> anyhow::Result<(Vec<u8>, Renames)> {
    let mut renames = Vec::new();
    let out = rewrite_section(m, 2, |body| {
        let mut j = 0;
        let mut b = Vec::new();
        let n = leb(body, &mut j)?;
        put_leb(&mut b, n);
        for _ in 0..n {
            let module = name(body, &mut j)?.to_string();
            let mut field = name(body, &mut j)?.to_string();
            let desc = j;
            let kind = *body.get(j).context("wasm: import")?;
            j += 1;
            skip_import_desc(body, &mut j, kind)?;
            if module == "e" && field.starts_with("wm_") {
                let short = renames.len().to_string();
                renames.push((std::mem::replace(&mut field, short.clone()), short));
            }
            for s in [&module, &field] {
                put_leb(&mut b, s.len() as u32);
                b.extend_from_slice(s.as_bytes());
            }
            b.extend_from_slice(&body[desc..j]);
        }
        Ok(Some(b))
    })?;
    Ok((out, renames))
}

fn skip_import_desc(m: &[u8], j: &mut usize, kind: u8) -> anyhow::Result<()> {
    match kind {
        0 => {
            leb(m, j)?;
        }
        1 => {
            *j += 1;
            if leb(m, j)? & 1 != 0 {
                leb(m, j)?;
            }
            leb(m, j)?;
        }
        2 => {
            if leb(m, j)? & 1 != 0 {
                leb(m, j)?;
            }
            leb(m, j)?;
        }
        3 => *j += 2,
        k => bail!("wasm: unknown import kind {k}"),
    }
    Ok(())
}

/// Removes the named exports. rustc exports the `__data_end` and
/// `__heap_base` globals from every wasm32 cdylib; nothing reads them.
pub fn strip_exports(m: &[u8], drop: &[&str]) -> anyhow::Result<Vec<u8>> {
    rewrite_section(m, 7, |body| {
        let mut j = 0;
        let mut kept = Vec::new();
        let mut count = 0u32;
        for _ in 0..leb(body, &mut j)? {
            let at = j;
            let field = name(body, &mut j)?.to_string();
            j += 1;
            leb(body, &mut j)?;
            if !drop.contains(&field.as_str()) {
                kept.extend_from_slice(&body[at..j]);
                count += 1;
            }
        }
        let mut b = Vec::new();
        put_leb(&mut b, count);
        b.extend_from_slice(&kept);
        Ok(Some(b))
    })
}

/// Calls `visit` with each section's id, body and whole bytes (header
/// included, as written), in order.
fn for_each_section(
    m: &[u8],
    mut visit: impl FnMut(u8, &[u8], &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if m.get(..8) != Some(b"\0asm\x01\0\0\0") {
        bail!("wasm: not a wasm module");
    }
    let mut i = 8;
    while i < m.len() {
        let (start, id) = (i, m[i]);
        i += 1;
        let size = leb(m, &mut i)? as usize;
        let body = m.get(i..i + size).context("wasm: truncated section")?;
        visit(id, body, &m[start..i + size])?;
        i += size;
    }
    Ok(())
}

/// Copies module `m`, replacing the body of each section with id `id` by
/// what `rewrite` makes of it. `rewrite` answers `None` for a section it
/// does not understand, and then the module is returned unchanged.
fn rewrite_section(
    m: &[u8],
    id: u8,
    mut rewrite: impl FnMut(&[u8]) -> anyhow::Result<Option<Vec<u8>>>,
) -> anyhow::Result<Vec<u8>> {
    let mut out = m.get(..8).unwrap_or_default().to_vec();
    let mut unchanged = false;
    for_each_section(m, |section, body, raw| {
        let new = if section == id && !unchanged {
            rewrite(body)?
        } else {
            None
        };
        match new {
            Some(b) => {
                out.push(section);
                put_leb(&mut out, b.len() as u32);
                out.extend_from_slice(&b);
            }
            None => {
                unchanged |= section == id;
                out.extend_from_slice(raw);
            }
        }
        Ok(())
    })?;
    Ok(if unchanged { m.to_vec() } else { out })
}

// ---- Glue passes ---------------------------------------------------------

/// Puts `env.js` (its functions, un-exported, and `__wm_env`, the object
/// js/glue.js wraps them from, keyed by their import names: `renames`
/// from [`shorten_env_imports`]) in front of the glue and points the glue
/// at the hashed module.
pub fn bundle_glue(
    glue: &str,
    env: &str,
    renames: &[(String, String)],
    wasm_name: &str,
) -> anyhow::Result<String> {
    if !glue.contains("__WM_WASM__") || !glue.contains("__wm_env") {
        bail!("client-wasm/js/glue.js: missing the __WM_WASM__ or __wm_env placeholder");
    }
    let exported: Vec<&str> = env
        .lines()
        .filter_map(|l| l.strip_prefix("export function "))
        .filter_map(|l| l.split('(').next())
        .collect();
    if let Some((old, _)) = renames
        .iter()
        .find(|(old, _)| !exported.contains(&old.as_str()))
    {
        bail!("the module imports {old}, which client-wasm/js/env.js does not export");
    }
    let env_obj = format!(
        "{}\nvar __wm_env = {{ {} }};\n",
        env.replace("export function ", "function "),
        renames
            .iter()
            .map(|(old, new)| format!("{new}: {old}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(format!(
        "{env_obj}{}",
        glue.replace("__WM_WASM__", wasm_name)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_exports_drops_only_the_named_exports() {
        // (module (global i32 (i32.const 0)) (export "a" (global 0)) (export "__heap_base" (global 0)))
        let m: Vec<u8> = [
            &b"\0asm\x01\0\0\0"[..],
            &[6, 6, 1, 0x7f, 0, 0x41, 0, 0x0b],
            &[7, 19, 2, 1, b'a', 3, 0, 11],
            b"__heap_base",
            &[3, 0],
        ]
        .concat();
        let out = strip_exports(&m, &["__heap_base"]).unwrap();
        assert_eq!(&out[..16], &m[..16]);
        assert_eq!(&out[16..], &[7, 5, 1, 1, b'a', 3, 0]);
    }

    #[test]
    fn dead_panic_strings_are_zeroed_and_trailing_zeros_dropped() {
        let mut data = b"keep/rustc/0123/library/alloc/src/lib.rs\0capacity overflow".to_vec();
        data.extend((0..100u8).flat_map(|n| [b'0' + n / 10, b'0' + n % 10]));
        // (data (i32.const 16) <data>)
        let mut seg = vec![1, 0, 0x41, 16, 0x0b];
        put_leb(&mut seg, data.len() as u32);
        seg.extend_from_slice(&data);
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.push(11);
        put_leb(&mut m, seg.len() as u32);
        m.extend_from_slice(&seg);
        let out = blank_dead_data(&m).unwrap();
        assert_eq!(
            &out[8..],
            &[11, 10, 1, 0, 0x41, 16, 0x0b, 4, b'k', b'e', b'e', b'p']
        );
    }

    #[test]
    fn the_glue_gets_env_and_the_module_name() {
        let env = "// c\nexport function wm_a(x) { return x; }\n";
        let glue = "Object.keys(__wm_env); fetch('__WM_WASM__');";
        let renames = [("wm_a".to_string(), "0".to_string())];
        let out = bundle_glue(glue, env, &renames, "waymark.1.wasm").unwrap();
        assert!(out.contains("function wm_a(x)"));
        assert!(out.contains("var __wm_env = { 0: wm_a };"));
        assert!(out.contains("fetch('waymark.1.wasm')"));
        assert!(!out.contains("export"));
        let missing = [("wm_b".to_string(), "0".to_string())];
        assert!(bundle_glue(glue, env, &missing, "w").is_err());
    }

    #[test]
    fn env_imports_get_short_names_and_others_keep_theirs() {
        // (import "e" "a" (func)) (import "e" "wm_load" (func)) (import "x" "wm_y" (memory 1))
        let mut imports = vec![3];
        for (module, field, desc) in [
            ("e", "a", &[0u8, 0][..]),
            ("e", "wm_load", &[0, 0]),
            ("x", "wm_y", &[2, 0, 1]),
        ] {
            for s in [module, field] {
                imports.push(s.len() as u8);
                imports.extend_from_slice(s.as_bytes());
            }
            imports.extend_from_slice(desc);
        }
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.push(2);
        put_leb(&mut m, imports.len() as u32);
        m.extend_from_slice(&imports);
        let (out, renames) = shorten_env_imports(&m).unwrap();
        assert_eq!(renames, [("wm_load".to_string(), "0".to_string())]);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("\u{1}e\u{1}0") && text.contains("wm_y") && !text.contains("wm_load")
        );
    }

    #[test]
    fn leb_roundtrip() {
        for v in [0u32, 1, 127, 128, 300, 65_535, 1 << 20] {
            let mut b = Vec::new();
            put_leb(&mut b, v);
            let mut i = 0;
            assert_eq!(leb(&b, &mut i).unwrap(), v);
            assert_eq!(i, b.len());
        }
    }
}
