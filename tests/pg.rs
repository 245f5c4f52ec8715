//! Throwaway PostgreSQL clusters for tests (issue #12), in one file shared by
//! the worker's storage tests, the end-to-end tests and `cargo xtask test`.
//!
//! It uses only `std` so each of them can include it (`#[path]`) without new
//! dependencies. A [`Cluster`] is `initdb` in a temporary directory, served on
//! a free loopback port with `synchronous_commit` on, stopped and removed on
//! drop. [`test_database`] hands each test its own empty database:
//!
//! - in a cluster named by `WAYMARK_TEST_PG_URL` (`cargo xtask test` starts one
//!   for the whole run and exports it), or else
//! - in a cluster this process starts and shares between its tests, removed
//!   when the last [`TestDb`] is dropped.
//!
//! With `WAYMARK_TEST_PG_REQUIRED=1` (set by `cargo xtask test`) a missing
//! URL is an error rather than a private cluster, so no test silently runs
//! without the shared one. Callers `expect` the result: a PostgreSQL test
//! never skips.
#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The role every test cluster is created with (trust auth on loopback).
pub const USER: &str = "waymark";

/// A throwaway PostgreSQL cluster on a loopback port.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// Runs `initdb` in a new temporary directory and starts the server on a
    /// free loopback port. As root, the server runs as the `postgres` user
    /// (initdb refuses root), which Debian's `postgresql` package creates.
    pub fn start() -> io::Result<Cluster> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "PostgreSQL's initdb was not found on PATH or in /usr/lib/postgresql/*/bin; \
                 install Debian's `postgresql` (cargo xtask test does)",
            )
        })?;
        let dir = std::env::temp_dir().join(format!(
            "waymark-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let as_postgres = running_as_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        }
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = cluster.data_dir();
        run(cluster.command("initdb").arg("-D").arg(&data).args([
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
        cluster.port = free_port()?;
        cluster.start_again()?;
        Ok(cluster)
    }

    /// Starts the server again after [`stop`](Self::stop) (same port, same data).
    pub fn start_again(&self) -> io::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c synchronous_commit=on -c fsync=on -c max_connections=300",
            self.port,
            self.dir.display()
        );
        // More server options for a profiling run, e.g.
        // `-c shared_preload_libraries=pg_stat_statements`.
        let options = match std::env::var("WAYMARK_PG_EXTRA") {
            Ok(extra) => format!("{options} {extra}"),
            Err(_) => options,
        };
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"]))
    }

    /// Stops the server at once (`immediate`: like a crash, no checkpoint).
    pub fn stop(&self) -> io::Result<()> {
        run(self.command("pg_ctl").arg("-D").arg(self.data_dir()).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]))
    }

    /// Creates an empty database `name`; returns its URL.
    pub fn create_database(&self, name: &str) -> io::Result<String> {
        let base = self.base_url();
        create_database(&base, name)
    }

    /// The postmaster's pid, while the server runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Runs `sql` with `psql` on database `url`; returns its unaligned
    /// output (`|` between columns).
    pub fn psql(&self, url: &str, sql: &str) -> io::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-q", "-t", "-d", url, "-c", sql])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://waymark@127.0.0.1:PORT/postgres`.
    pub fn base_url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = run(self.command("pg_ctl").arg("-D").arg(self.data_dir()).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One test's own empty database.
pub struct TestDb {
    url: String,
    _cluster: Option<Arc<Cluster>>,
}

impl TestDb {
    /// `postgres://waymark@127.0.0.1:PORT/DB`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql` on this database with `psql`; returns its unaligned
    /// output (`|` between columns).
    pub fn psql(&self, sql: &str) -> io::Result<String> {
        let psql = bin_dir()
            .map(|b| b.join("psql"))
            .unwrap_or_else(|| PathBuf::from("psql"));
        let out = Command::new(psql)
            .args(["-X", "-A", "-q", "-t", "-d", &self.url, "-c", sql])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A fresh database named after `name_hint`, in the run's shared cluster
/// (`WAYMARK_TEST_PG_URL`) or in one this process starts (see the module docs).
pub fn test_database(name_hint: &str) -> io::Result<TestDb> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let name: String = format!(
        "t_{}_{}_{}",
        name_hint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            })
            .take(30)
            .collect::<String>(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let (base, cluster) = match std::env::var("WAYMARK_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ if std::env::var("WAYMARK_TEST_PG_REQUIRED").as_deref() == Ok("1") => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "WAYMARK_TEST_PG_REQUIRED=1 but WAYMARK_TEST_PG_URL is not set: \
                 run the suite through `cargo xtask test`, which starts the cluster",
            ))
        }
        _ => {
            let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
            let cluster = match shared.upgrade() {
                Some(c) => c,
                None => {
                    let c = Arc::new(Cluster::start()?);
                    *shared = Arc::downgrade(&c);
                    c
                }
            };
            (cluster.base_url(), Some(cluster))
        }
    };
    Ok(TestDb {
        url: create_database(&base, &name)?,
        _cluster: cluster,
    })
}

/// Creates database `name` on the server of `base` (any URL of it).
fn create_database(base: &str, name: &str) -> io::Result<String> {
    let (host, port) = host_port(base)?;
    let createdb = bin_dir()
        .map(|b| b.join("createdb"))
        .unwrap_or_else(|| PathBuf::from("createdb"));
    run(Command::new(createdb)
        .args(["-h", &host, "-p", &port, "-U", USER])
        .arg(name))?;
    let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(base);
    Ok(format!("{prefix}/{name}"))
}

/// Host and port of `postgres://user@host:port/db`.
fn host_port(url: &str) -> io::Result<(String, String)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("bad test URL {url}"));
    let rest = url.strip_prefix("postgres://").ok_or_else(bad)?;
    let authority = rest.split('/').next().ok_or_else(bad)?;
    let hostport = authority.rsplit('@').next().ok_or_else(bad)?;
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
    Ok((host.to_owned(), port.to_owned()))
}

/// The directory holding `initdb`, `pg_ctl` and `createdb`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            // Debian links `initdb` into PATH without `createdb` beside it:
            // the real directory is where the link points.
            if let Ok(real) = std::fs::canonicalize(dir.join("initdb")) {
                if let Some(bin) = real.parent().filter(|b| b.join("pg_ctl").exists()) {
                    return Some(bin.to_path_buf());
                }
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn run(command: &mut Command) -> io::Result<()> {
    let out = command.stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{:?} failed ({}): {}{}",
        command,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

/// Whether `path` looks like a cluster directory this module made.
pub fn is_cluster_dir(path: &Path) -> bool {
    path.join("data/PG_VERSION").exists()
}
