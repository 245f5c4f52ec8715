//! Shared support for Waymark's end-to-end tests: start the real `waymark`
//! binary on a free loopback port with a temporary data directory, speak
//! HTTP to it, read what it stored.
//!
//! ```no_run
//! let worker = waymark_tests::Worker::start(waymark_tests::BASIC_CONFIG);
//! let url = worker.url("/healthz");
//! # let _ = url;
//! ```

pub mod fakes;
pub mod loadgen;
pub mod pg;
pub mod procstat;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A minimal valid config: one source `wk_test` allowing
/// `https://shop.example.com`, one file destination `events.ndjson`.
pub const BASIC_CONFIG: &str = r#"
[identity]
keys = [{ id = "k1", secret = "test-secret-0123456789abcdef0123456789" }]

[admin]
token = "admin-secret"

[[sources]]
name = "web"
write_key = "wk_test"
allowed_origins = ["https://shop.example.com"]
default_consent = { analytics = "granted" }

[[destinations]]
name = "lake"
type = "file"
path = "events.ndjson"
"#;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of the `waymark` binary, built once per test process when needed.
///
/// `WAYMARK_BIN` overrides it (the benchmark uses a release build).
pub fn waymark_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("WAYMARK_BIN") {
            return PathBuf::from(bin);
        }
        let root = workspace_root();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--quiet", "-p", "waymark", "--bin", "waymark"])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the waymark binary failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        target.join("debug").join("waymark")
    })
    .clone()
}

/// A fresh temporary directory.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("waymark-{label}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A running `waymark serve`, killed on drop.
pub struct Worker {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The config file it was started with.
    pub config_path: PathBuf,
    stderr_log: PathBuf,
}

impl Worker {
    /// Starts the binary with `config` (TOML text) on a free port and a new data dir.
    pub fn start(config: &str) -> Worker {
        let data_dir = temp_dir("worker");
        Worker::start_in(config, data_dir)
    }

    /// Starts the binary with `config` using an existing data dir (restarts).
    pub fn start_in(config: &str, data_dir: PathBuf) -> Worker {
        Worker::start_listening(config, data_dir, "127.0.0.1:0")
    }

    /// Starts the binary with `config` in `data_dir` on `listen` (a fixed
    /// address, for a worker others point at that must come back there).
    pub fn start_listening(config: &str, data_dir: PathBuf, listen: &str) -> Worker {
        let config_path = data_dir.join("waymark.toml");
        std::fs::write(&config_path, config).expect("write config");
        let config_arg = config_path.to_string_lossy().into_owned();
        Worker::spawn(
            &[
                "serve",
                "--config",
                &config_arg,
                "--listen",
                listen,
                "--data-dir",
                data_dir.to_str().unwrap_or_default(),
            ],
            data_dir.clone(),
            config_path,
        )
    }

    /// Starts the embedded default (no `--config`) on a free port.
    pub fn start_default(data_dir: PathBuf) -> Worker {
        Worker::spawn(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_dir.to_str().unwrap_or_default(),
            ],
            data_dir.clone(),
            PathBuf::new(),
        )
    }

    fn spawn(args: &[&str], data_dir: PathBuf, config_path: PathBuf) -> Worker {
        let stderr_log = data_dir.join(format!("stderr-{}.log", uuid::Uuid::new_v4()));
        let stderr = std::fs::File::create(&stderr_log).expect("stderr log");
        let mut child = Command::new(waymark_bin())
            .args(args)
            .current_dir(workspace_root())
            .env("WAYMARK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start waymark");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(url) = line.trim().strip_prefix("waymark listening on ") {
                    let _ = tx.send(url.to_owned());
                }
                line.clear();
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                panic!("waymark did not start:\n{log}");
            }
        };
        Worker {
            child: Some(child),
            base,
            data_dir,
            config_path,
            stderr_log,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Kills the process with SIGKILL, without any chance to flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process gracefully (SIGTERM) and waits up to 15 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the worker wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Lines of a file destination's NDJSON, parsed.
    pub fn file_events(&self, relative: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.data_dir.join(relative)).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `relative` holds at least `n` events, or panics after `timeout`.
    pub fn wait_for_file_events(
        &self,
        relative: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.file_events(relative);
            if events.len() >= n || Instant::now() > deadline {
                assert!(
                    events.len() >= n,
                    "expected {n} events in {relative}, found {}; stderr:\n{}",
                    events.len(),
                    self.stderr()
                );
                return events;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Opens the worker's SQLite database read-only.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.data_dir.join("waymark.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open waymark.db")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking HTTP client that keeps cookies off (tests set them by hand).
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A Segment track event with a fresh messageId.
pub fn track(event: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "track",
        "event": event,
        "anonymousId": "anon-1",
        "messageId": uuid::Uuid::new_v4().to_string(),
        "properties": {"price": 9.99, "currency": "EUR"},
    })
}

/// The identity secret of [`BASIC_CONFIG`] (key `k1`).
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// The `Cookie` header of a browser whose visitor id is `visitor` (22
/// base64url characters), signed as the worker signs `wm_vid` with key `k1`
/// of [`TEST_SECRET`].
pub fn browser_cookie(visitor: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    assert_eq!(visitor.len(), 22, "visitor ids are 22 base64url characters");
    let issued = chrono::Utc::now().timestamp();
    let payload = format!("v1.{visitor}.{issued}.k1");
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(TEST_SECRET.as_bytes()).expect("any key length");
    mac.update(payload.as_bytes());
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("wm_vid={payload}.{tag}")
}
