//! The identity store on PostgreSQL, shared by every worker of a fleet
//! (issue #12): [`PgIdentity`] runs identity jobs in `SERIALIZABLE`
//! transactions and runs a job again when PostgreSQL reports a conflict.
//!
//! # Design
//! The graph's decisions (does this profile hold a user? is this node
//! new?) are reads followed by writes, so two workers linking the same
//! identifiers at once would both decide on the same snapshot. Serializable
//! isolation turns every such race into a serialization failure (or a unique
//! violation on a node key) for all but one of them, and the loser runs its
//! job again on the winner's rows: concurrent events end in one profile, and
//! the guards hold as they do on the single-writer SQLite store. No graph
//! lookup is cached in memory (`crate::storage::identity` says why).
//!
//! A request that changes nothing in the graph (every identifier is a node
//! of one profile already: a returning visitor) needs none of that: it is
//! one statement at `READ COMMITTED` ([`IdentityStore::move_known`], in
//! `known`) that locks the request's sessions, reads its nodes and moves
//! its sessions on, its locks held for that statement alone; its counters
//! wait for the worker's write-behind.
//!
//! A request whose identifiers and sessions are all absent (a first-time
//! visitor, by the light statement's reads) runs its graph job at
//! `READ COMMITTED` instead ([`IdentityStore::run_new`]): it only creates
//! nodes, profiles and sessions, so the unique keys arbitrate between racing
//! jobs, and a node or session it finds that it did not write, or a unique
//! violation, ends it and runs it at once as a serializable job. The
//! suppressions it reads are kept consistent by `identity_link_gate`, an
//! empty table: such a job holds it in `SHARE` mode from its `BEGIN`; a
//! privacy delete takes it `EXCLUSIVE` as its first statement, which takes
//! no snapshot, so the delete's snapshot sees every node such a job created
//! before it, and every such job after it sees its suppressions. This keeps
//! new visitors, most of a fleet's graph writes, out of `SERIALIZABLE`'s
//! page-level conflicts between jobs inserting neighbouring keys.
//! (During a rolling upgrade from a worker without the gate, run privacy
//! deletes from upgraded workers: the older ones do not take it.)
//!
//! Jobs are synchronous ([`IdentityTx`]) and run on a blocking thread, each
//! statement driven by the runtime's handle; a pooled connection is held for
//! the length of one job.
//!
//! Events waiting in the delivery tables belong to the delivery side, so a
//! privacy delete asks it, through [`PersonEventTables`], inside the same
//! transaction.

mod graph;
mod known;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Object, Pool};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::storage::identity::{
    DeletedEvents, IdentityStore, Job, JobOutput, KnownQuery, KnownRows, PersonEvents, PersonMatch,
};
use crate::storage::StorageError;
use crate::telemetry::identity::IdentityJobConflict;

/// Migrations of the `identity` module on PostgreSQL; step N is version N.
/// Released steps never change.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: graph, profiles, traits, sessions, merge log, privacy. Keys sort
    //    bytewise (COLLATE "C") as on SQLite; the rows updated per event
    //    leave room for HOT updates (fillfactor).
    r#"
    CREATE TABLE identity_profiles (
        id           text COLLATE "C" PRIMARY KEY,
        created_ms   bigint NOT NULL,
        merged_into  text COLLATE "C"
    );
    CREATE INDEX identity_profiles_merged ON identity_profiles (merged_into)
        WHERE merged_into IS NOT NULL;

    CREATE TABLE identity_nodes (
        key            text COLLATE "C" PRIMARY KEY,
        profile_id     text COLLATE "C" NOT NULL,
        created_ms     bigint NOT NULL,
        first_seen_ms  bigint,
        last_seen_ms   bigint,
        n_track        bigint NOT NULL DEFAULT 0,
        n_page         bigint NOT NULL DEFAULT 0,
        n_screen       bigint NOT NULL DEFAULT 0,
        n_identify     bigint NOT NULL DEFAULT 0,
        n_group        bigint NOT NULL DEFAULT 0,
        n_alias        bigint NOT NULL DEFAULT 0
    ) WITH (fillfactor = 70);
    CREATE INDEX identity_nodes_profile ON identity_nodes (profile_id, key);

    CREATE TABLE identity_links (
        id          bigserial PRIMARY KEY,
        a           text COLLATE "C" NOT NULL,
        b           text COLLATE "C" NOT NULL,
        cause       text NOT NULL,
        message_id  text,
        created_ms  bigint NOT NULL,
        active      integer NOT NULL DEFAULT 1
    );
    CREATE INDEX identity_links_a ON identity_links (a);
    CREATE INDEX identity_links_b ON identity_links (b);

    CREATE TABLE identity_merges (
        id             bigserial PRIMARY KEY,
        at_ms          bigint NOT NULL,
        survivor       text COLLATE "C" NOT NULL,
        absorbed       text COLLATE "C" NOT NULL,
        cause          text NOT NULL,
        message_id     text,
        identifiers    text NOT NULL,
        link_id        bigint,
        absorbed_node  text COLLATE "C",
        actor          text,
        split_at_ms    bigint
    );
    CREATE INDEX identity_merges_survivor ON identity_merges (survivor);
    CREATE INDEX identity_merges_absorbed ON identity_merges (absorbed);

    CREATE TABLE identity_refusals (
        id           bigserial PRIMARY KEY,
        at_ms        bigint NOT NULL,
        message_id   text,
        kept         text COLLATE "C" NOT NULL,
        refused      text COLLATE "C" NOT NULL,
        identifiers  text NOT NULL,
        reason       text NOT NULL
    );
    CREATE INDEX identity_refusals_kept ON identity_refusals (kept);
    CREATE INDEX identity_refusals_refused ON identity_refusals (refused);

    CREATE TABLE identity_blocks (
        x         text COLLATE "C" NOT NULL,
        y         text COLLATE "C" NOT NULL,
        merge_id  bigint,
        PRIMARY KEY (x, y)
    );

    CREATE TABLE identity_traits (
        node        text COLLATE "C" NOT NULL,
        key         text COLLATE "C" NOT NULL,
        value       text NOT NULL,
        updated_ms  bigint NOT NULL,
        PRIMARY KEY (node, key)
    ) WITH (fillfactor = 80);

    CREATE TABLE identity_sessions (
        key               text COLLATE "C" PRIMARY KEY,
        session_id        bigint NOT NULL,
        count             bigint NOT NULL,
        last_activity_ms  bigint NOT NULL
    ) WITH (fillfactor = 70);

    CREATE TABLE identity_suppressions (
        hash        text COLLATE "C" PRIMARY KEY,
        created_ms  bigint NOT NULL,
        audit_id    bigint
    );

    CREATE TABLE identity_audit (
        id      bigserial PRIMARY KEY,
        at_ms   bigint NOT NULL,
        actor   text NOT NULL,
        action  text NOT NULL,
        target  text NOT NULL,
        detail  text NOT NULL
    );
    "#,
    // 2: the gate between jobs over new identifiers and privacy deletes
    //    (`PgIdentity::run_new`); no rows, only its table lock is taken.
    "CREATE TABLE identity_link_gate ();",
];

const SERIALIZABLE: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";

/// Attempts of one job before its conflict is reported as an error.
const MAX_ATTEMPTS: u32 = 40;

/// The delivery side's answer to a privacy export or delete: a person's
/// events in the outbox, consent holds, dead letters and quarantine, read or
/// deleted inside the identity job's transaction.
pub(crate) trait PersonEventTables: Send + Sync + 'static {
    /// The person's waiting events.
    fn person_events(
        &self,
        conn: &PgConn<'_>,
        person: &PersonMatch,
    ) -> Result<PersonEvents, StorageError>;
    /// Deletes the person's waiting events; returns how many, per place.
    fn delete_person_events(
        &self,
        conn: &PgConn<'_>,
        person: &PersonMatch,
    ) -> Result<DeletedEvents, StorageError>;
}

/// The identity store on a PostgreSQL pool.
pub(crate) struct PgIdentity {
    pool: Pool,
    events: Arc<dyn PersonEventTables>,
}

impl PgIdentity {
    /// The identity store over `pool`, whose database has the
    /// [`MIGRATIONS`] applied; `events` answers for the delivery tables.
    pub(crate) fn new(pool: Pool, events: Arc<dyn PersonEventTables>) -> PgIdentity {
        PgIdentity { pool, events }
    }

    async fn client(&self) -> Result<Object, StorageError> {
        self.pool
            .get()
            .await
            .map_err(|e| StorageError::Commit(format!("cannot reach PostgreSQL: {e}")))
    }

    /// Runs `job` in a transaction begun with `begin`, again while it
    /// fails on a conflict; the job's result once committed. `new`: the
    /// job runs over new identifiers only ([`PgIdentity::run_new`]), and
    /// its first conflict runs it again at once as a serializable job.
    async fn run(
        &self,
        mut begin: &'static str,
        mut new: bool,
        mut job: Job,
    ) -> Result<JobOutput, StorageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client = self.client().await?;
            let events = Arc::clone(&self.events);
            let handle = tokio::runtime::Handle::current();
            let (result, job_back) = tokio::task::spawn_blocking(move || {
                let mut guard = Held(Some(client));
                let result = guard.run(&handle, begin, new, &mut job, &*events);
                guard.release(!matches!(&result, Err(f) if f.broken));
                (result, job)
            })
            .await
            .map_err(|_| StorageError::Closed)?;
            job = job_back;
            match result {
                Ok(out) => return Ok(out),
                Err(e) if e.conflict && new => {
                    // Something it took for new exists: the serializable
                    // job decides on it, without waiting.
                    IdentityJobConflict { job: "new" }.emit();
                    (begin, new) = (SERIALIZABLE, false);
                }
                Err(e) if e.conflict && attempt < MAX_ATTEMPTS => {
                    IdentityJobConflict { job: "other" }.emit();
                    // Back off a little, more each time, so racing workers
                    // do not meet again at once.
                    let jitter = rand::random::<u64>() % 16;
                    let base = 1u64 << attempt.min(5);
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                }
                Err(e) => return Err(e.error),
            }
        }
    }
}

#[async_trait::async_trait]
impl IdentityStore for PgIdentity {
    fn shared(&self) -> bool {
        true
    }

    async fn run_write(&self, job: Job) -> Result<JobOutput, StorageError> {
        self.run(SERIALIZABLE, false, job).await
    }

    async fn run_new(&self, job: Job) -> Result<JobOutput, StorageError> {
        // Statement by statement at READ COMMITTED: every row the job
        // writes is new, so unique keys arbitrate between racing jobs, and
        // every row it finds that it did not write ends it (`PgConn::not_new`)
        // and runs it as a serializable job. The gate, shared, keeps every
        // privacy delete (which takes it exclusively before its snapshot)
        // either wholly before this job or wholly after. As for activity,
        // the ingest commit that follows flushes the WAL past this commit.
        self.run(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = off; \
             LOCK TABLE identity_link_gate IN SHARE MODE",
            true,
            job,
        )
        .await
    }

    async fn run_activity(&self, job: Job) -> Result<JobOutput, StorageError> {
        // Each statement is correct on its own at READ COMMITTED: reads see
        // committed rows, sessions are locked, counters add. The ingest
        // commit that follows flushes the WAL past this commit.
        self.run(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = off",
            false,
            job,
        )
        .await
    }

    async fn move_known(&self, query: KnownQuery) -> Result<KnownRows, StorageError> {
        self.move_known_pg(&query).await
    }

    async fn run_read(&self, job: Job) -> Result<JobOutput, StorageError> {
        self.run(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            false,
            job,
        )
        .await
    }
}

/// A job's failure: whether running it again may succeed, and whether
/// the connection must not go back to the pool.
struct Failure {
    error: StorageError,
    conflict: bool,
    broken: bool,
}

/// A pooled connection held by one job. Unless released after a clean
/// `COMMIT` or `ROLLBACK`, it is detached from the pool when dropped (a
/// panicking job must not hand an open transaction to the next one).
struct Held(Option<Object>);

impl Held {
    fn run(
        &mut self,
        handle: &tokio::runtime::Handle,
        begin: &str,
        new: bool,
        job: &mut Job,
        events: &dyn PersonEventTables,
    ) -> Result<JobOutput, Failure> {
        let Some(client) = self.0.as_deref() else {
            return Err(Failure {
                error: StorageError::Closed,
                conflict: false,
                broken: true,
            });
        };
        let conn = PgConn {
            client,
            handle,
            conflict: Cell::new(false),
            broken: Cell::new(false),
            deferred: RefCell::default(),
            new: new.then(RefCell::default),
        };
        let failure = |conn: &PgConn<'_>, error| Failure {
            error,
            conflict: conn.conflict.get(),
            broken: conn.broken.get(),
        };
        conn.batch(begin).map_err(|e| failure(&conn, e))?;
        let tx = graph::PgTx {
            conn: &conn,
            events,
        };
        match job(&tx) {
            Ok(out) => match conn.batch("COMMIT") {
                Ok(()) => Ok(out),
                Err(e) => Err(failure(&conn, e)),
            },
            Err(e) => {
                // NOTE: a failed ROLLBACK leaves the connection unusable;
                // `broken` then keeps it out of the pool.
                let _ = conn.rollback();
                Err(failure(&conn, e))
            }
        }
    }

    fn release(&mut self, reusable: bool) {
        if reusable {
            self.0.take();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(Object::take(object));
        }
    }
}

/// One pooled connection inside a job, with blocking statement helpers
/// (for [`PersonEventTables`] implementations too). Errors note whether
/// PostgreSQL reported a conflict worth running the job again for.
///
/// New profiles and nodes are not inserted one statement each: they wait
/// in [`Deferred`] and go to PostgreSQL in the same round trip as the next
/// statement of the job (or its `COMMIT`), sent before it, so every
/// statement still sees them and a conflict on a node key still fails the
/// job. A new visitor's event then costs no round trip of its own.
pub(crate) struct PgConn<'a> {
    client: &'a ClientWrapper,
    handle: &'a tokio::runtime::Handle,
    conflict: Cell<bool>,
    broken: Cell<bool>,
    deferred: RefCell<Deferred>,
    /// In a job over new identifiers ([`PgIdentity::run_new`]), the keys of
    /// the nodes it created: any other node or session it finds ends it.
    new: Option<RefCell<HashSet<String>>>,
}

/// Rows written with the job's next statement (see [`PgConn`]).
#[derive(Default)]
struct Deferred {
    /// `(id, created_ms)`.
    profiles: Vec<(String, i64)>,
    /// `(key, profile_id, created_ms)`.
    nodes: Vec<(String, String, i64)>,
}

const INSERT_PROFILES: &str = "INSERT INTO identity_profiles (id, created_ms)
     SELECT * FROM unnest($1::text[], $2::int8[])";

/// In key order, so two jobs inserting the same keys meet on the first one
/// instead of deadlocking.
const INSERT_NODES: &str = "INSERT INTO identity_nodes (key, profile_id, created_ms)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) ORDER BY 1";

/// Statement parameters.
pub(crate) type Params<'p> = [&'p (dyn ToSql + Sync)];

impl PgConn<'_> {
    /// Rows of a (cached, prepared) statement.
    pub(crate) fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StorageError> {
        let deferred = self.deferred.take();
        self.handle
            .block_on(async {
                let flush = self.prepare_flush(&deferred).await?;
                let stmt = self.client.prepare_cached(sql).await?;
                // `biased`: the deferred rows are sent first.
                let (flushed, rows) = tokio::join!(
                    biased;
                    self.flush(flush.as_ref(), &deferred),
                    self.client.query(&stmt, params)
                );
                flushed?;
                rows
            })
            .map_err(|e| self.error(e))
    }

    /// At most one row.
    pub(crate) fn query_opt(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, StorageError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Rows changed by a statement.
    pub(crate) fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64, StorageError> {
        let deferred = self.deferred.take();
        self.handle
            .block_on(async {
                let flush = self.prepare_flush(&deferred).await?;
                let stmt = self.client.prepare_cached(sql).await?;
                let (flushed, changed) = tokio::join!(
                    biased;
                    self.flush(flush.as_ref(), &deferred),
                    self.client.execute(&stmt, params)
                );
                flushed?;
                changed
            })
            .map_err(|e| self.error(e))
    }

    /// Creates a profile with the job's next statement.
    pub(crate) fn defer_profile(&self, id: &str, now_ms: i64) {
        self.deferred
            .borrow_mut()
            .profiles
            .push((id.to_owned(), now_ms));
    }

    /// Creates a node with the job's next statement.
    pub(crate) fn defer_node(&self, key: &str, profile: &str, now_ms: i64) {
        if let Some(own) = &self.new {
            own.borrow_mut().insert(key.to_owned());
        }
        self.deferred
            .borrow_mut()
            .nodes
            .push((key.to_owned(), profile.to_owned(), now_ms));
    }

    /// Runs `sql` (`BEGIN`, `COMMIT`) after the deferred rows.
    fn batch(&self, sql: &str) -> Result<(), StorageError> {
        let deferred = self.deferred.take();
        self.handle
            .block_on(async {
                let flush = self.prepare_flush(&deferred).await?;
                let (flushed, done) = tokio::join!(
                    biased;
                    self.flush(flush.as_ref(), &deferred),
                    self.client.batch_execute(sql)
                );
                flushed?;
                done
            })
            .map_err(|e| self.error(e))
    }

    /// Rolls the job back; its deferred rows go with it.
    fn rollback(&self) -> Result<(), StorageError> {
        self.deferred.take();
        self.handle
            .block_on(self.client.batch_execute("ROLLBACK"))
            .map_err(|e| self.error(e))
    }

    /// The statements `deferred` needs, prepared before anything is sent,
    /// so the rows and the statement after them go out in order.
    async fn prepare_flush(
        &self,
        deferred: &Deferred,
    ) -> Result<Option<[tokio_postgres::Statement; 2]>, tokio_postgres::Error> {
        if deferred.profiles.is_empty() && deferred.nodes.is_empty() {
            return Ok(None);
        }
        Ok(Some([
            self.client.prepare_cached(INSERT_PROFILES).await?,
            self.client.prepare_cached(INSERT_NODES).await?,
        ]))
    }

    /// Sends the deferred rows, profiles first.
    async fn flush(
        &self,
        statements: Option<&[tokio_postgres::Statement; 2]>,
        deferred: &Deferred,
    ) -> Result<(), tokio_postgres::Error> {
        let Some([profiles, nodes]) = statements else {
            return Ok(());
        };
        let (ids, created): (Vec<&str>, Vec<i64>) = deferred
            .profiles
            .iter()
            .map(|(id, at)| (id.as_str(), *at))
            .unzip();
        let keys: Vec<&str> = deferred.nodes.iter().map(|n| n.0.as_str()).collect();
        let owners: Vec<&str> = deferred.nodes.iter().map(|n| n.1.as_str()).collect();
        let node_created: Vec<i64> = deferred.nodes.iter().map(|n| n.2).collect();
        let (p, n) = tokio::join!(
            biased;
            async {
                if ids.is_empty() {
                    return Ok(0);
                }
                self.client.execute(profiles, &[&ids, &created]).await
            },
            async {
                if keys.is_empty() {
                    return Ok(0);
                }
                self.client
                    .execute(nodes, &[&keys, &owners, &node_created])
                    .await
            }
        );
        p?;
        n?;
        Ok(())
    }

    /// Whether this job runs over new identifiers only.
    fn is_new(&self) -> bool {
        self.new.is_some()
    }

    /// In a job over new identifiers, fails it as a conflict when `keys`
    /// name a node it did not create; elsewhere `Ok`.
    fn nodes_new<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<(), StorageError> {
        let Some(own) = &self.new else {
            return Ok(());
        };
        let own = own.borrow();
        match keys.into_iter().find(|k| !own.contains(*k)) {
            Some(_) => Err(self.not_new()),
            None => Ok(()),
        }
    }

    /// In a job over new identifiers, fails it as a conflict when it found
    /// a session (it writes its own only at its end); elsewhere `Ok`.
    fn sessions_new(&self, found: usize) -> Result<(), StorageError> {
        if self.is_new() && found > 0 {
            return Err(self.not_new());
        }
        Ok(())
    }

    /// The conflict that ends a job over new identifiers that found a row
    /// it did not write: it runs again as a serializable job.
    #[cold]
    fn not_new(&self) -> StorageError {
        self.conflict.set(true);
        StorageError::Sql(
            "identity: a key this job took for new exists; it runs again serializable".into(),
        )
    }

    #[cold]
    fn error(&self, e: tokio_postgres::Error) -> StorageError {
        let code = e.code();
        if code == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
            || code == Some(&SqlState::T_R_DEADLOCK_DETECTED)
            || code == Some(&SqlState::UNIQUE_VIOLATION)
        {
            self.conflict.set(true);
        }
        if e.as_db_error().is_none() || e.is_closed() {
            self.broken.set(true);
        }
        let text = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        StorageError::Sql(format!("postgres: {text}"))
    }
}

#[cfg(test)]
mod tests;
