//! The tag with a real CMP (issue 13 point 9): the demo page with IAB's CMP
//! stub (`@iabtechlabtcf/stub`) and CMP API (`@iabtechlabtcf/cmpapi`) from
//! npm, and a TC string made in the page by IAB's encoder
//! (`@iabtechlabtcf/core`). With `waitForConsent` the tag holds every event
//! until the CMP answers, then sends them with the string in
//! `context.consent.tcf` and the purposes mapped as the worker's default
//! (`analytics` = TCF purposes 1 and 8, `marketing` = 1, 3 and 4). The
//! worker then routes by the string itself (issue 13 point 4): the vendor
//! with consent in it gets the events, a vendor without consent and a
//! marketing destination do not.
//! The packages come from `tests/node/cmp` (`cargo xtask test` runs `npm
//! ci` there).

#[path = "browser/mod.rs"]
mod browser;

use std::time::Duration;

use browser::{at, root, tempdir, Browser, Worker};

/// Scripts put before the Waymark snippet: the stub (so `__tcfapi` exists
/// when the tag starts) and, as a module, a CMP that decides on `decide()`.
const CMP: &str = r#"<script src="/npm/@iabtechlabtcf/stub/lib/stub.js"></script>
<script type="importmap">{"imports": {"@iabtechlabtcf/core": "/npm/@iabtechlabtcf/core/lib/mjs/index.js"}}</script>
<script type="module">
import { GVL, TCModel, TCString } from "@iabtechlabtcf/core";
import { CmpApi } from "/npm/@iabtechlabtcf/cmpapi/lib/mjs/index.js";
const purposes = {};
for (let i = 1; i <= 11; i++) purposes[i] = { id: i, name: "p" + i, description: "", descriptionLegal: "" };
const gvl = new GVL({
  gvlSpecificationVersion: 3, vendorListVersion: 150, tcfPolicyVersion: 4, lastUpdated: "2026-01-01T00:00:00Z",
  purposes, specialPurposes: {}, features: {}, specialFeatures: {}, stacks: {}, dataCategories: {},
  vendors: { 755: { id: 755, name: "v755", purposes: [1, 3, 4, 8], legIntPurposes: [], flexiblePurposes: [],
    specialPurposes: [], features: [], specialFeatures: [], policyUrl: "https://example.com",
    cookieMaxAgeSeconds: 0, usesCookies: true, usesNonCookieAccess: false } }
});
const model = new TCModel(gvl);
model.cmpId = 10; model.cmpVersion = 1; model.consentScreen = 1; model.isServiceSpecific = true;
model.purposeConsents.set([1, 8]);
model.vendorConsents.set(755);
const cmp = new CmpApi(10, 1, true);
window.tcString = TCString.encode(model);
window.decide = function () { cmp.update(window.tcString, false); return window.tcString; };
window.cmpReady = true;
</script>
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tag_waits_for_the_iab_cmp_and_sends_its_tc_string() {
    let _serial = browser::SERIAL.lock().await;
    browser::require_prerequisites().unwrap();
    let npm = root().join("tests/node/cmp/node_modules");
    assert!(
        npm.join("@iabtechlabtcf/cmpapi").is_dir(),
        "tests/node/cmp has no node_modules: run `cargo xtask test` (it runs `npm ci` there)"
    );
    // The demo shop, with the CMP in front of the snippet and waitForConsent on.
    let site = tempdir("wm-cmp-site").unwrap();
    for entry in std::fs::read_dir(root().join("demo-site"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(entry.path(), site.join(entry.file_name())).unwrap();
    }
    std::os::unix::fs::symlink(&npm, site.join("npm")).unwrap();
    let index = std::fs::read_to_string(site.join("index.html")).unwrap();
    let snippet = index
        .find("<!-- 3. The Waymark snippet")
        .expect("the demo's snippet");
    let mut page = index.clone();
    page.insert_str(snippet, CMP);
    let page = page.replacen(
        "a.o=a.o||{writeKey:\"wk_demo\",",
        "a.o=a.o||{writeKey:\"wk_demo\",waitForConsent:true,",
        1,
    );
    assert!(
        page.contains("waitForConsent:true"),
        "the demo's options moved"
    );
    std::fs::write(site.join("index.html"), page).unwrap();
    let config = format!(
        "[server]\nsite_dir = {:?}\n\n{}",
        site.display().to_string(),
        DEFAULT_REST
    );
    let w = Worker::start(Some(&config)).await.unwrap();
    let b = Browser::start().await.unwrap();
    b.goto(&format!("{}/", w.base)).await.unwrap();
    b.wait_for("window.cmpReady && window.waymark && typeof waymark.h == 'function'")
        .await
        .unwrap();

    // Before the CMP answers: nothing leaves, the events are held.
    b.eval("waymark.track('Before CMP')").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        w.events().is_empty(),
        "sent before consent: {:#?}",
        w.events()
    );

    // The CMP decides: everything held goes, stamped with the string.
    let tc = b.eval("decide()").await.unwrap();
    let tc = tc.as_str().expect("a TC string").to_owned();
    assert!(tc.starts_with('C'), "{tc}");
    let page = w.wait_event("page", |e| e["type"] == "page").await.unwrap();
    let track = w
        .wait_event("Before CMP", |e| e["event"] == "Before CMP")
        .await
        .unwrap();
    for e in [&page, &track] {
        assert_eq!(at(e, "context.consent.tcf"), tc.as_str(), "{e:#}");
        assert_eq!(
            at(e, "context.consent.categoryPreferences.analytics"),
            true,
            "{e:#}"
        );
        assert_eq!(
            at(e, "context.consent.categoryPreferences.marketing"),
            false,
            "{e:#}"
        );
    }
    // Later events carry it too.
    b.eval("waymark.track('After CMP')").await.unwrap();
    let after = w
        .wait_event("After CMP", |e| e["event"] == "After CMP")
        .await
        .unwrap();
    assert_eq!(at(&after, "context.consent.tcf"), tc.as_str());
    // The edge decided from the string: vendor 755 has consent for TCF 1
    // and 8, so `measure` got what the local file got; vendor 12 has none
    // and marketing (1, 3, 4) is not granted.
    let lines = |name: &str| {
        std::fs::read_to_string(w.data_dir.join(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|e| e["messageId"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lines("measure.ndjson").len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut measured = lines("measure.ndjson");
    measured.sort();
    let mut all: Vec<String> = [&page, &track, &after]
        .iter()
        .map(|e| e["messageId"].as_str().unwrap_or("").to_owned())
        .collect();
    all.sort();
    assert!(
        all.iter().all(|id| measured.contains(id)),
        "the consented vendor missed events: {measured:?} vs {all:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lines("other-vendor.ndjson"), Vec::<String>::new());
    assert_eq!(lines("ads.ndjson"), Vec::<String>::new());
    assert_eq!(b.errors(), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&site);
}

/// The embedded default without its `[server]` table.
const DEFAULT_REST: &str = r#"[identity]
keys = [{ id = "t", secret = "cmp-test-cookie-key-0123456789abcdef" }]

[[sources]]
name = "demo"
write_key = "wk_demo"
default_consent = { analytics = "pending", marketing = "pending" }

[[destinations]]
name = "local-file"
type = "file"
path = "events.ndjson"

[[destinations]]
name = "measure"
type = "file"
path = "measure.ndjson"
consent = ["analytics"]
tcf_vendor_id = 755

[[destinations]]
name = "other-vendor"
type = "file"
path = "other-vendor.ndjson"
consent = ["analytics"]
tcf_vendor_id = 12

[[destinations]]
name = "ads"
type = "file"
path = "ads.ndjson"
consent = ["marketing"]
"#;
