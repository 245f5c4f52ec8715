//! PostgreSQL for the test suite (issue #12): Debian's `postgresql` when it
//! is missing, and one throwaway cluster for the whole `cargo xtask test`
//! run. Each test creates its own database in it (see `tests/pg.rs`).

use std::process::Command;

use anyhow::Context as _;

#[path = "../../tests/pg.rs"]
mod cluster;

pub use cluster::Cluster;

/// Installs Debian's `postgresql` when `initdb` and `pg_ctl` are not found.
pub fn ensure_postgres() -> anyhow::Result<()> {
    if cluster::bin_dir().is_some() {
        return Ok(());
    }
    eprintln!("installing postgresql");
    let status = Command::new("apt-get").args(["update", "-qq"]).status()?;
    anyhow::ensure!(status.success(), "`apt-get update` failed ({status})");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    anyhow::ensure!(
        status.success(),
        "`apt-get install postgresql` failed ({status})"
    );
    anyhow::ensure!(
        cluster::bin_dir().is_some(),
        "postgresql is installed but initdb is not in /usr/lib/postgresql/*/bin"
    );
    Ok(())
}

/// Installs PostgreSQL when missing, starts the run's cluster and exports
/// `WAYMARK_TEST_PG_URL` and `WAYMARK_TEST_PG_REQUIRED=1` to the tests this
/// process starts. The cluster is removed when the returned value drops.
pub fn start_test_cluster() -> anyhow::Result<Cluster> {
    ensure_postgres()?;
    let cluster = Cluster::start().context("cannot start the test PostgreSQL cluster")?;
    eprintln!("test PostgreSQL on 127.0.0.1:{}", cluster.port());
    // xtask is single-threaded here, before any test process starts.
    std::env::set_var("WAYMARK_TEST_PG_URL", cluster.base_url());
    std::env::set_var("WAYMARK_TEST_PG_REQUIRED", "1");
    Ok(cluster)
}
