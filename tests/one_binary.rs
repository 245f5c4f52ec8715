//! One binary (issue 15 point 5): the `waymark` binary copied alone to an
//! empty directory and started with `waymark serve` serves the tag
//! (`/wm.js`, `/wm/*`) and the demo shop, which `build.rs` built into it.
//! Needs `cargo xtask build-tag` before the worker is built (`cargo xtask
//! test` does both in that order).

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use waymark_tests::{temp_dir, waymark_bin, workspace_root};

/// The child, killed on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Text between `start` (included) and the first `end` after it (included).
fn name_in(text: &str, start: &str, end: &str) -> Option<String> {
    let at = text.find(start)?;
    let len = text.get(at..)?.find(end)? + end.len();
    text.get(at..at + len).map(str::to_owned)
}

#[test]
fn the_binary_alone_serves_its_tag_and_the_demo_shop() {
    let dir = temp_dir("one-binary");
    let bin = dir.join("waymark");
    std::fs::copy(waymark_bin(), &bin).expect("copy the binary");
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .env("WAYMARK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the copied binary");
    let stdout = child.stdout.take().expect("stdout");
    let serve = Serve(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("waymark listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the copied binary starts");
    // Nothing of the checkout is next to it: only what it made itself.
    for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            name == "waymark" || name.starts_with("waymark-data"),
            "unexpected {name} in {}",
            dir.display()
        );
    }
    // reqwest would otherwise ask for gzip and decode it out of sight.
    let http = reqwest::blocking::Client::builder()
        .no_gzip()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    // The loader: short-cached JavaScript, the same bytes as the build.
    let r = http
        .get(format!("{base}/wm.js"))
        .send()
        .expect("GET /wm.js");
    assert_eq!(r.status(), 200, "/wm.js from the built-in tag");
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let loader = r.text().expect("loader text");
    let built = std::fs::read_to_string(workspace_root().join("client-wasm/dist/wm.js"))
        .expect("client-wasm/dist/wm.js: run `cargo xtask build-tag`");
    assert_eq!(
        loader, built,
        "the binary carries the current build (rebuild the worker after `cargo xtask build-tag`)"
    );
    let glue_name = name_in(&loader, "waymark.", ".js").expect("the loader names the glue");

    // The glue, gzipped as a browser asks for it, immutable.
    let r = http
        .get(format!("{base}/wm/{glue_name}"))
        .header("accept-encoding", "gzip")
        .send()
        .expect("GET glue");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let mut glue = String::new();
    flate2::read::GzDecoder::new(&r.bytes().expect("glue bytes")[..])
        .read_to_string(&mut glue)
        .expect("gunzip the glue");
    let wasm_name = name_in(&glue, "waymark.", ".wasm").expect("the glue names the module");

    // The module, plain when gzip is not offered, with the type streaming compilation needs.
    let r = http
        .get(format!("{base}/wm/{wasm_name}"))
        .header("accept-encoding", "identity")
        .send()
        .expect("GET wasm");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/wasm");
    assert!(r.headers().get("content-encoding").is_none());
    assert!(r.bytes().expect("wasm bytes").starts_with(b"\0asm"));
    let r = http
        .get(format!("{base}/wm/waymark.nope.js"))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404);

    // The demo shop at `/`, loading the tag.
    let r = http.get(format!("{base}/")).send().expect("GET /");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let page = r.text().expect("page");
    assert!(
        page.contains("/wm.js") && page.contains("Waymark Coffee"),
        "{page}"
    );
    let r = http
        .get(format!("{base}/app.js"))
        .send()
        .expect("GET /app.js");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );

    // And it collects: the embedded default accepts the demo's write key.
    let r = http
        .post(format!("{base}/v1/batch"))
        .header("content-type", "text/plain")
        .body(r#"{"writeKey":"wk_demo","batch":[{"type":"track","event":"One Binary","anonymousId":"a1","messageId":"m-one-binary"}]}"#)
        .send()
        .expect("POST /v1/batch");
    assert!(r.status().is_success(), "{}", r.status());
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}
