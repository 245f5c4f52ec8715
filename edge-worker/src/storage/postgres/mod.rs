//! The shared store for a fleet of workers: PostgreSQL (issue #12).
//!
//! Every worker of a fleet opens the same database; [`PgStorage`] implements
//! the same [`Storage`] boundary as the embedded store, so the pipeline does
//! not know which it runs on. What differs is said here:
//! - the ingest commit is one transaction (dedup, outbox rows, quarantine),
//!   acked only after `COMMIT` with `synchronous_commit` on ([`ingest`]);
//! - the delivery queue is append-only and partitioned by dataset, and each
//!   destination is drained by the worker holding its lease ([`queue`]);
//! - nothing is cached in memory that another worker could make stale: no
//!   dedup keys, no outbox packs, no identity lookups;
//! - the identity graph lives in the same database ([`identity`]), its jobs
//!   in `SERIALIZABLE` transactions retried on conflict.
//!
//! A worker that cannot reach PostgreSQL answers ingest with 503 and fails
//! `/readyz`; the pool reconnects by itself once the server is back.

mod datasets;
mod holds;
pub(crate) mod identity;
mod ingest;
pub(crate) mod migrate;
mod person;
mod queue;
pub(crate) mod schema;
pub(crate) mod syncs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use super::syncs::SettledRow;
use super::{
    DeliveryQueue, IngestCommit, IngestStore, OutboxEntry, QuarantineEntry, ReplayStore, Storage,
    StorageError,
};
use crate::config::StorageConfig;
use crate::time::now_ms;

/// The shared PostgreSQL store.
pub struct PgStorage {
    pool: Pool,
    /// This worker's name in `leases` (a fresh UUID per process).
    owner: String,
    /// How long a lease lasts without renewal.
    lease_ms: i64,
    /// Age at which a new dataset starts.
    dataset_ms: i64,
    /// Width of a dedup partition (a UTC day).
    bucket_ms: i64,
    /// The configured dedup window.
    dedup_window_ms: i64,
    /// Destinations whose lease this worker holds, with the expiry it wrote.
    leases: Mutex<HashMap<String, i64>>,
    /// Per destination this worker drains: where its queue scan starts
    /// ([`queue::ScanFloor`]).
    floors: Mutex<HashMap<String, queue::ScanFloor>>,
    /// Per destination: its last depth count and when it was taken.
    depths: Mutex<HashMap<String, (u64, std::time::Instant)>>,
    /// How far each older dataset is known drained ([`datasets`]).
    drain_cursors: Mutex<datasets::DrainCursors>,
    /// Dedup partitions known to exist.
    dedup_buckets: Mutex<Vec<i32>>,
    /// The identity store over the same pool.
    identity: Arc<identity::PgIdentity>,
    /// The sync state store over the same pool.
    syncs: Arc<syncs::PgSyncs>,
}

impl PgStorage {
    /// Connects to the database `[storage]` names, applies migrations and
    /// starts lease renewal and dataset upkeep on the current runtime.
    ///
    /// Migrations run on a short-lived thread of their own, so this may be
    /// called from inside or outside a runtime; the pool connects lazily.
    pub fn open(
        config: &StorageConfig,
        dedup_window_secs: u64,
    ) -> Result<Arc<PgStorage>, StorageError> {
        let url = config
            .resolve_url()
            .map_err(|e| open_error("storage.url", e.to_string()))?
            .ok_or_else(|| open_error("storage.url_env", "no PostgreSQL URL is set".into()))?;
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
            open_error(
                "storage.url",
                format!(
                    "not a postgres:// URL ({e}); use postgres://user:password@host:port/database"
                ),
            )
        })?;
        pg.connect_timeout(Duration::from_millis(config.connect_timeout_ms));
        if pg.get_application_name().is_none() {
            pg.application_name("waymark");
        }
        session_defaults(&mut pg);
        let migrate_with = pg.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StorageError::Unavailable(e.to_string()))?;
            runtime.block_on(async move {
                let mut client = connect(&migrate_with).await?;
                migrate::migrate(&mut client).await
            })
        })
        .join()
        .map_err(|_| StorageError::Closed)??;
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(Duration::from_millis(config.connect_timeout_ms));
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| open_error("storage", e.to_string()))?;
        let identity = Arc::new(identity::PgIdentity::new(
            pool.clone(),
            Arc::new(person::PgPersonEvents),
        ));
        let syncs = Arc::new(syncs::PgSyncs::new(pool.clone()));
        let store = Arc::new(PgStorage {
            identity,
            syncs,
            pool,
            owner: uuid::Uuid::now_v7().to_string(),
            lease_ms: config.lease_secs as i64 * 1_000,
            dataset_ms: config.dataset_secs as i64 * 1_000,
            bucket_ms: 86_400_000,
            dedup_window_ms: dedup_window_secs as i64 * 1_000,
            leases: Mutex::new(HashMap::new()),
            floors: Mutex::new(HashMap::new()),
            dedup_buckets: Mutex::new(Vec::new()),
            drain_cursors: Mutex::new(HashMap::new()),
            depths: Mutex::new(HashMap::new()),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(renew_leases(Arc::downgrade(&store)));
            handle.spawn(keep_datasets(Arc::downgrade(&store)));
        }
        Ok(store)
    }

    /// A pooled connection; `Unavailable` when PostgreSQL cannot be reached
    /// within `connect_timeout_ms`.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => StorageError::from(e),
            other => StorageError::Unavailable(other.to_string()),
        })
    }
}

/// Renews this worker's leases every third of their length, in a task of
/// its own: dataset upkeep's detach may wait for long transactions, and a
/// lease must not run out behind it.
async fn renew_leases(store: Weak<PgStorage>) {
    loop {
        let Some(s) = store.upgrade() else { return };
        let pause = Duration::from_millis((s.lease_ms / 3).clamp(200, 1_000) as u64);
        if let Err(error) = s.renew_leases().await {
            tracing::warn!(error = %error, "Renewing delivery leases failed.");
        }
        drop(s);
        tokio::time::sleep(pause).await;
    }
}

/// Keeps the partitions: new datasets, drained ones removed, dedup days
/// ahead ([`datasets`]).
async fn keep_datasets(store: Weak<PgStorage>) {
    loop {
        let Some(s) = store.upgrade() else { return };
        if let Err(error) = s.maintain().await {
            tracing::warn!(error = %error, "PostgreSQL queue upkeep failed.");
        }
        drop(s);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Session settings every worker connection starts with, unless the URL's
/// `options` already sets them.
///
/// JIT is off: the queue's statements are short and run thousands of times
/// a second, and with JIT on PostgreSQL compiled the delivery scan on every
/// call (its estimated cost is above `jit_above_cost`), which cost more CPU
/// than running it.
fn session_defaults(pg: &mut tokio_postgres::Config) {
    let given = pg.get_options().unwrap_or_default().to_owned();
    if !given.contains("jit") {
        let options = format!("{given} -c jit=off");
        pg.options(options.trim_start());
    }
}

/// Opens one connection outside the pool (migrations, `waymark check`).
pub(crate) async fn connect(
    pg: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, StorageError> {
    let (client, connection) = pg.connect(NoTls).await.map_err(|e| connect_error(pg, e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// What `waymark check` says about `[storage]` with backend `postgres`:
/// connects, checks the role may create tables, and that the schema is not
/// newer than this binary.
pub async fn check(config: &StorageConfig) -> Result<(), StorageError> {
    let url = config
        .resolve_url()
        .map_err(|e| open_error("storage.url", e.to_string()))?
        .ok_or_else(|| open_error("storage.url_env", "no PostgreSQL URL is set".into()))?;
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| open_error("storage.url", format!("not a postgres:// URL ({e})")))?;
    pg.connect_timeout(Duration::from_millis(config.connect_timeout_ms));
    let client = connect(&pg).await?;
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text,
                    has_database_privilege(current_database(), 'CREATE'),
                    has_schema_privilege('public', 'CREATE'),
                    to_regclass('waymark_schema') IS NOT NULL",
            &[],
        )
        .await?;
    let (user, database): (String, String) = (row.get(0), row.get(1));
    // Partitions are created as the queue rotates, so CREATE is needed always.
    if !row.get::<_, bool>(3) {
        return Err(StorageError::Privileges(format!(
            "role {user} may not create tables in schema public of database {database}; \
             run GRANT CREATE ON SCHEMA public TO {user} (or make it the database's owner)"
        )));
    }
    if row.get::<_, bool>(4) {
        for m in migrate::MODULES {
            let found: i32 = client
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM waymark_schema WHERE module = $1",
                    &[&m.module],
                )
                .await?
                .get(0);
            if found > m.steps.len() as i32 {
                return Err(StorageError::SchemaTooNew {
                    module: m.module.to_owned(),
                    found,
                    known: m.steps.len() as i32,
                });
            }
        }
    }
    Ok(())
}

#[cold]
fn open_error(key: &str, reason: String) -> StorageError {
    StorageError::Open {
        path: key.to_owned(),
        reason,
    }
}

/// A connection failure said for people: which server, and what to check.
#[cold]
fn connect_error(pg: &tokio_postgres::Config, e: tokio_postgres::Error) -> StorageError {
    let user = pg.get_user().unwrap_or("?").to_owned();
    let server = format!(
        "{}:{}",
        pg.get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_default(),
        pg.get_ports().first().copied().unwrap_or(5432)
    );
    match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD
            || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            StorageError::Auth(format!(
                "PostgreSQL at {server} refused user {user}: {}; check the user and password in the URL",
                describe(&e)
            ))
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => StorageError::Unavailable(format!(
            "PostgreSQL at {server}: {}; create the database first (createdb)",
            describe(&e)
        )),
        _ => StorageError::Unavailable(format!(
            "cannot connect to PostgreSQL at {server}: {}; check the URL and that the server is running",
            describe(&e)
        )),
    }
}

/// The server's message when there is one (`Display` says only "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

impl From<tokio_postgres::Error> for StorageError {
    #[cold]
    fn from(e: tokio_postgres::Error) -> Self {
        // No answer from the server, or a server going down or not up yet.
        if e.as_db_error().is_none()
            || e.is_closed()
            || e.code() == Some(&SqlState::ADMIN_SHUTDOWN)
            || e.code() == Some(&SqlState::CANNOT_CONNECT_NOW)
        {
            StorageError::Unavailable(describe(&e))
        } else {
            StorageError::Sql(describe(&e))
        }
    }
}

/// Comma-free identifiers for partitions (`outbox_ds12`).
fn partition(table: &str, n: i64) -> String {
    format!("{table}_ds{n}")
}

#[async_trait::async_trait]
impl IngestStore for Arc<PgStorage> {
    async fn commit_ingest(
        &self,
        commit: IngestCommit,
    ) -> Result<super::IngestOutcome, StorageError> {
        ingest::commit_ingest(self, commit).await
    }

    async fn prune_dedup(&self, cutoff_ms: i64) -> Result<u64, StorageError> {
        ingest::prune_dedup(self, cutoff_ms).await
    }

    async fn check_writable(&self) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO health (worker, checked_at_ms) VALUES ($1, $2)
                 ON CONFLICT (worker) DO UPDATE SET checked_at_ms = excluded.checked_at_ms",
                &[&self.owner, &now_ms()],
            )
            .await?;
        Ok(())
    }

    async fn commit_holds(
        &self,
        commit: super::HoldCommit,
    ) -> Result<super::HoldOutcome, StorageError> {
        holds::commit_holds(self, commit).await
    }
}

#[async_trait::async_trait]
impl DeliveryQueue for Arc<PgStorage> {
    async fn outbox_due(
        &self,
        destination: &str,
        now_ms: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        self.due(destination, now_ms, after_id, limit).await
    }

    async fn outbox_delivered(
        &self,
        ids: Vec<i64>,
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError> {
        self.mark_done(&ids, rows).await
    }

    async fn outbox_retry(
        &self,
        ids: Vec<i64>,
        next_attempt_ms: i64,
        error: String,
    ) -> Result<(), StorageError> {
        self.retry(&ids, next_attempt_ms, &error).await
    }

    async fn outbox_dead_letter(
        &self,
        ids: Vec<i64>,
        reason: String,
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError> {
        self.dead_letter(&ids, &reason, rows).await
    }

    async fn outbox_depth(&self, destination: &str) -> Result<u64, StorageError> {
        self.depth(destination).await
    }

    async fn outbox_quarantine(
        &self,
        entries: Vec<super::RuleQuarantine>,
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError> {
        holds::outbox_quarantine(self, entries, rows).await
    }

    async fn expire_holds(&self, destination: &str, now_ms: i64) -> Result<u64, StorageError> {
        holds::expire_holds(self, destination, now_ms).await
    }

    async fn held_count(&self, destination: &str) -> Result<u64, StorageError> {
        holds::count_for(self, "consent_holds", destination).await
    }

    async fn outbox_destinations(&self) -> Result<Vec<String>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(&super::destinations_waiting_sql("outbox"), &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn outbox_abandon(&self, destination: &str, reason: &str) -> Result<u64, StorageError> {
        // The lease first: without it another worker delivers the
        // destination, and neither its entries nor its holds may go.
        if !self.hold_lease(destination, crate::time::now_ms()).await? {
            return Ok(0);
        }
        let moved = super::abandon_through_due(self, destination, reason).await?;
        // The lease taken to move them goes at once, so a worker that has
        // the destination configured again takes it over.
        self.release_lease(destination).await?;
        Ok(moved)
    }

    async fn close(&self) -> Result<(), StorageError> {
        self.release_leases().await
    }
}

#[async_trait::async_trait]
impl ReplayStore for Arc<PgStorage> {
    async fn quarantine_list(&self, limit: usize) -> Result<Vec<QuarantineEntry>, StorageError> {
        holds::quarantine_list(self, limit).await
    }

    async fn quarantine_get(&self, ids: Vec<i64>) -> Result<Vec<QuarantineEntry>, StorageError> {
        holds::quarantine_get(self, ids).await
    }

    async fn quarantine_remove(&self, ids: Vec<i64>) -> Result<(), StorageError> {
        holds::quarantine_remove(self, ids).await
    }

    async fn quarantine_requeue(&self, ids: Vec<i64>) -> Result<Vec<i64>, StorageError> {
        holds::quarantine_requeue(self, ids).await
    }

    async fn dead_letters(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<super::DeadLetter>, StorageError> {
        holds::dead_letters(self, destination, limit).await
    }

    async fn replay_dead_letters(
        &self,
        destination: &str,
        ids: Option<Vec<i64>>,
    ) -> Result<u64, StorageError> {
        holds::replay_dead_letters(self, destination, ids).await
    }

    async fn dead_letter_count(&self, destination: &str) -> Result<u64, StorageError> {
        holds::count_for(self, "dead_letters", destination).await
    }
}

impl Storage for Arc<PgStorage> {
    fn identity_store(&self) -> Arc<dyn super::identity::IdentityStore> {
        Arc::clone(&self.identity) as Arc<dyn super::identity::IdentityStore>
    }

    fn sync_store(&self) -> Arc<dyn super::SyncStore> {
        Arc::clone(&self.syncs) as Arc<dyn super::SyncStore>
    }
}

#[cfg(test)]
#[path = "../../../../tests/pg.rs"]
pub(crate) mod test_db;

#[cfg(test)]
mod tests;
