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
//! profile, own target dir `target/wasm`), `wasm-bindgen --target web`, two
//! byte-level passes over the module (see [`shrink_module`]), `wasm-opt`
//! ([`WASM_OPT_PASSES`]), then the glue is bundled with `js/env.js`, given short import
//! names, lightly minified and pointed at the hashed module.
//!
//! # Design
//! The budget (issue 15) is 15.5 KB gzipped (goal 12 KB) for loader + glue + wasm. The two
//! byte passes are what wasm-bindgen's own output leaves on the table:
//! since wasm-bindgen 0.2.10x the function table is never garbage-collected,
//! so ~40 unused closure invoke shims stay alive through it; and every
//! import is named `__wbg_<name>_<16 hex digits>` twice (module and glue),
//! which gzip cannot compress.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};

/// Gzipped bytes allowed for loader + glue + wasm together.
pub const BUDGET_GZ: usize = 15 * 1024 + 512;
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
    ensure_wasm_bindgen(&crate_dir)?;
    ensure_wasm_opt()?;
    let terser = crate::minify::ensure_terser(root)?;

    // 1. The module, without std's panic formatting (`bare`). Names stay in
    //    (strip=false) for the table pass; wasm-opt strips them at the end.
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

    // 2. wasm-bindgen: the ES-module glue and the module it expects.
    let pkg = target.join("pkg");
    let _ = std::fs::remove_dir_all(&pkg);
    run(Command::new("wasm-bindgen")
        .args([
            "--target",
            "web",
            "--no-typescript",
            "--keep-debug",
            "--out-dir",
        ])
        .arg(&pkg)
        .arg(&raw))?;

    // 3. Drop dead table entries and shorten import names.
    let module = std::fs::read(pkg.join("waymark_tag_bg.wasm"))?;
    let (module, renames) = shrink_module(&module)?;
    let shrunk = pkg.join("shrunk.wasm");
    std::fs::write(&shrunk, &module)?;

    // 4. wasm-opt, with the features rustc enables by default. Flattening
    //    and re-looping before two -Oz rounds, run to a fixed point, then
    //    merging look-alike functions: 227 B gzipped less than one -Oz
    //    (measured; see client-wasm/README.md "Where the bytes go").
    let opt = pkg.join("opt.wasm");
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
    let wasm = fix_table_exports(&std::fs::read(&opt)?)?;
    let wasm_name = format!("waymark.{}.wasm", content_hash(&wasm));

    // 5. The glue: env.js inlined, short names, pointed at the hashed module.
    let glue = std::fs::read_to_string(pkg.join("waymark_tag.js"))?;
    let env = std::fs::read_to_string(crate_dir.join("js/env.js"))?;
    let glue = bundle_glue(&glue, &env, &renames, &wasm_name)?;
    let glue = crate::minify::terser(&terser, &glue, crate::minify::Kind::Module)?;
    let glue_name = format!("waymark.{}.js", content_hash(glue.as_bytes()));

    // 6. The loader, templated with the glue's name.
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

    // 7. dist/: replaced as a whole so stale hashed files do not pile up.
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
/// when the one on PATH is missing or another version.
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

fn put_name(out: &mut Vec<u8>, s: &str) {
    put_leb(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// Function-table entries that are never called through the table in the
/// `bare` build, by name:
/// - wasm-bindgen's closure invoke shims (the glue calls them as exports);
/// - `Display` impls referenced by panic messages, which are only called
///   when a message is formatted, and the `bare` panic handler formats
///   nothing;
/// - js-sys's JSPI task waker (the tag runs no futures).
const DEAD_TABLE_ENTRIES: [&str; 3] = [
    "closures::_::invoke",
    "::fmt::Display>::fmt",
    "jspi::task_waker",
];

/// Short import names: import module → short module, and each field of
/// the glue module (`__wbg_*`) → a short field. The glue is rewritten with
/// the same map.
#[derive(Debug, Default)]
pub struct Renames {
    /// (old module, new module).
    pub modules: Vec<(String, String)>,
    /// old field → new field, for fields of the glue module.
    pub fields: HashMap<String, String>,
}

/// The two byte passes over wasm-bindgen's output (see the module docs):
/// - function-table entries that are never called through the table
///   ([`DEAD_TABLE_ENTRIES`]) are pointed at the table's first other entry,
///   so wasm-opt can drop the functions;
/// - import modules and glue import fields get short names.
///
/// Needs the name section (`--keep-debug`) to recognise the shims.
pub fn shrink_module(m: &[u8]) -> anyhow::Result<(Vec<u8>, Renames)> {
    if m.get(..8) != Some(b"\0asm\x01\0\0\0") {
        bail!("wasm: not a wasm module");
    }
    // Pass 1: find sections, imported function count and function names.
    let mut sections = Vec::new();
    let mut i = 8;
    let mut imported_funcs = 0u32;
    let mut names: HashMap<u32, String> = HashMap::new();
    while i < m.len() {
        let id = m[i];
        let start = i;
        i += 1;
        let size = leb(m, &mut i)? as usize;
        let body = i;
        let end = body + size;
        if id == 2 {
            let mut j = body;
            for _ in 0..leb(m, &mut j)? {
                name(m, &mut j)?;
                name(m, &mut j)?;
                let kind = *m.get(j).context("wasm: import")?;
                j += 1;
                skip_import_desc(m, &mut j, kind)?;
                if kind == 0 {
                    imported_funcs += 1;
                }
            }
        }
        if id == 0 {
            let mut j = body;
            if name(m, &mut j)? == "name" {
                while j < end {
                    let sub = m[j];
                    j += 1;
                    let sub_end = leb(m, &mut j)? as usize + j;
                    if sub == 1 {
                        for _ in 0..leb(m, &mut j)? {
                            let idx = leb(m, &mut j)?;
                            names.insert(idx, name(m, &mut j)?.to_string());
                        }
                    }
                    j = sub_end;
                }
            }
        }
        sections.push((id, start, body, end));
        i = end;
    }
    let _ = imported_funcs;
    let is_shim = |f: u32| {
        names
            .get(&f)
            .is_some_and(|n| DEAD_TABLE_ENTRIES.iter().any(|d| n.contains(d)))
    };

    // Pass 2: rewrite the import (2) and element (9) sections.
    let mut out = m[..8].to_vec();
    let mut renames = Renames::default();
    for &(id, start, body, end) in &sections {
        let new_body = match id {
            2 => {
                let mut j = body;
                let mut b = Vec::new();
                let n = leb(m, &mut j)?;
                put_leb(&mut b, n);
                for _ in 0..n {
                    let module = name(m, &mut j)?.to_string();
                    let field = name(m, &mut j)?.to_string();
                    let desc_start = j + 1;
                    let kind = m[j];
                    j += 1;
                    skip_import_desc(m, &mut j, kind)?;
                    let short_module = match renames.modules.iter().find(|(old, _)| *old == module)
                    {
                        Some((_, new)) => new.clone(),
                        None => {
                            let new = short_id(renames.modules.len());
                            renames.modules.push((module.clone(), new.clone()));
                            new
                        }
                    };
                    let short_field = if field.starts_with("__wbg_") {
                        let next = short_id(renames.fields.len());
                        renames.fields.entry(field.clone()).or_insert(next).clone()
                    } else {
                        field.clone()
                    };
                    put_name(&mut b, &short_module);
                    put_name(&mut b, &short_field);
                    b.push(kind);
                    b.extend_from_slice(&m[desc_start..j]);
                }
                Some(b)
            }
            9 => {
                let mut j = body;
                let mut b = Vec::new();
                let n = leb(m, &mut j)?;
                put_leb(&mut b, n);
                for _ in 0..n {
                    let flags = leb(m, &mut j)?;
                    if flags != 0 {
                        // Only the plain active segment that rustc emits is
                        // understood; leave anything else untouched.
                        return Ok((m.to_vec(), Renames::default()));
                    }
                    put_leb(&mut b, flags);
                    let expr = j;
                    while *m.get(j).context("wasm: element offset")? != 0x0b {
                        j += 1;
                    }
                    j += 1;
                    b.extend_from_slice(&m[expr..j]);
                    let count = leb(m, &mut j)?;
                    let mut funcs = Vec::with_capacity(count as usize);
                    for _ in 0..count {
                        funcs.push(leb(m, &mut j)?);
                    }
                    let keep = funcs.iter().copied().find(|f| !is_shim(*f));
                    put_leb(&mut b, count);
                    for f in funcs {
                        put_leb(&mut b, if is_shim(f) { keep.unwrap_or(f) } else { f });
                    }
                }
                Some(b)
            }
            _ => None,
        };
        match new_body {
            Some(b) => {
                out.push(id);
                put_leb(&mut out, b.len() as u32);
                out.extend_from_slice(&b);
            }
            None => out.extend_from_slice(&m[start..end]),
        }
    }
    Ok((out, renames))
}

/// Points each exported table at a table of the type its name implies.
///
/// NOTE: Debian bookworm's binaryen (108) writes the export of
/// wasm-bindgen's `__wbindgen_externrefs` table with the index of the
/// function table (the code itself keeps using the right table), and
/// `init` then fails with "WebAssembly.Table.set(): Argument 1 is invalid
/// for table". This re-points that export at the module's one externref
/// table, and fails if there is not exactly one.
pub fn fix_table_exports(m: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = m.to_vec();
    let mut i = 8;
    let mut externref_tables = Vec::new();
    let mut table_count = 0u32;
    while i < m.len() {
        let id = m[i];
        i += 1;
        let size = leb(m, &mut i)? as usize;
        let end = i + size;
        if id == 2 {
            let mut j = i;
            for _ in 0..leb(m, &mut j)? {
                name(m, &mut j)?;
                name(m, &mut j)?;
                let kind = m[j];
                j += 1;
                if kind == 1 {
                    if m.get(j) == Some(&0x6f) {
                        externref_tables.push(table_count);
                    }
                    table_count += 1;
                }
                skip_import_desc(m, &mut j, kind)?;
            }
        }
        if id == 4 {
            let mut j = i;
            for _ in 0..leb(m, &mut j)? {
                if m.get(j) == Some(&0x6f) {
                    externref_tables.push(table_count);
                }
                table_count += 1;
                skip_import_desc(m, &mut j, 1)?;
            }
        }
        if id == 7 {
            let mut j = i;
            for _ in 0..leb(m, &mut j)? {
                let field = name(m, &mut j)?.to_string();
                let kind = m[j];
                j += 1;
                let at = j;
                let idx = leb(m, &mut j)?;
                if kind == 1 && field == "__wbindgen_externrefs" {
                    let [want] = externref_tables[..] else {
                        bail!(
                            "wasm: expected one externref table, found {}",
                            externref_tables.len()
                        );
                    };
                    if idx != want {
                        if j - at != 1 || want > 127 {
                            bail!("wasm: cannot re-point the externref table export in place");
                        }
                        out[at] = want as u8;
                    }
                }
            }
        }
        i = end;
    }
    Ok(out)
}

fn skip_import_desc(m: &[u8], j: &mut usize, kind: u8) -> anyhow::Result<()> {
    match kind {
        0 => {
            leb(m, j)?;
        }
        1 => {
            *j += 1;
            let flags = leb(m, j)?;
            leb(m, j)?;
            if flags & 1 != 0 {
                leb(m, j)?;
            }
        }
        2 => {
            let flags = leb(m, j)?;
            leb(m, j)?;
            if flags & 1 != 0 {
                leb(m, j)?;
            }
        }
        3 => *j += 2,
        k => bail!("wasm: unknown import kind {k}"),
    }
    Ok(())
}

/// `a`, `b`, ..., `z`, `A`, ..., `Z`, `aa`, ...: valid JS identifiers.
fn short_id(mut n: usize) -> String {
    const C: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut s = String::new();
    loop {
        s.push(C[n % C.len()] as char);
        n /= C.len();
        if n == 0 {
            return s;
        }
        n -= 1;
    }
}

// ---- Glue passes ---------------------------------------------------------

/// Inlines `env.js` into the glue (wasm-bindgen emits it as a separate
/// snippet module), applies the import renames, points the default module
/// URL at the hashed wasm and appends the bootstrap that starts the tag,
/// or calls the loader's fallback (`waymark.x`) when the module cannot load.
pub fn bundle_glue(glue: &str, env: &str, r: &Renames, wasm_name: &str) -> anyhow::Result<String> {
    let env_fns: Vec<&str> = env
        .lines()
        .filter_map(|l| l.strip_prefix("export function "))
        .filter_map(|l| l.split('(').next())
        .collect();
    let mut out = String::new();
    for line in glue.lines() {
        let t = line.trim();
        // `import { a, b } from './snippets/..'` and `import * as importN from "./snippets/.."`.
        if t.starts_with("import ") && t.contains("/snippets/") {
            if let Some(alias) = t
                .strip_prefix("import * as ")
                .and_then(|x| x.split(' ').next())
            {
                out.push_str(&format!("const {alias} = __wm_env;\n"));
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let env_body: String = env.replace("export function ", "function ");
    let env_obj = format!(
        "{env_body}\nconst __wm_env = {{ {} }};\n",
        env_fns
            .iter()
            .map(|f| format!("{f}: {f}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut out = format!("{env_obj}{out}");
    // Import module keys in the imports object.
    for (old, new) in &r.modules {
        out = out.replace(&format!("\"{old}\":"), &format!("\"{new}\":"));
    }
    // Field names: the object keys `__wbg_x_<hash>: function`.
    for (old, new) in &r.fields {
        out = out.replace(&format!("{old}:"), &format!("{new}:"));
    }
    if !out.contains("'waymark_tag_bg.wasm'") {
        bail!("glue: default module URL not found; wasm-bindgen output changed shape");
    }
    out = out.replace("'waymark_tag_bg.wasm'", &format!("'{wasm_name}'"));
    out.push_str(
        "\n__wbg_init().catch(function () { var a = window.waymark; a && a.x && a.x(); });\n",
    );
    Ok(minify_js(&out))
}

/// Conservative minification: drops comments on their own lines, block
/// comments, blank lines and indentation. Safe for wasm-bindgen's glue and
/// our hand-written ES5 (no multi-line strings or template literals).
pub fn minify_js(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut in_block = false;
    for line in src.lines() {
        let mut t = line.trim();
        if in_block {
            match t.find("*/") {
                Some(p) => {
                    in_block = false;
                    t = t[p + 2..].trim();
                }
                None => continue,
            }
        }
        if t.starts_with("/*") {
            match t.find("*/") {
                Some(p) => t = t[p + 2..].trim(),
                None => {
                    in_block = true;
                    continue;
                }
            }
        }
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        out.push_str(t);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_unique_identifiers() {
        let ids: std::collections::HashSet<String> = (0..3000).map(short_id).collect();
        assert_eq!(ids.len(), 3000);
        assert!(ids
            .iter()
            .all(|s| s.chars().all(|c| c.is_ascii_alphabetic())));
    }

    #[test]
    fn minify_keeps_code_and_drops_comments() {
        let js = "/* a\n b */\n  var x = 1; // keep\n// drop\n\n  f(x);\n";
        assert_eq!(minify_js(js), "var x = 1; // keep\nf(x);\n");
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
