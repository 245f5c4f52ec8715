//! [`KnownQuery`] on PostgreSQL: one statement, sent with its `BEGIN` and
//! `COMMIT` in one round trip, so the request's session rows are locked for
//! that statement alone.
//!
//! # Design
//! The statement locks the sessions in key order (`FOR UPDATE` over a
//! sorted scan; in `READ COMMITTED` a row another job moved meanwhile is
//! read in its latest version), reads the nodes, decides whether the
//! request is known, and moves the sessions on by the closed form of
//! `storage::identity::known`, all before it returns. The nodes are read
//! in the statement's snapshot, taken before its locks were granted: a
//! person deleted while it waited has lost the session rows it waits for
//! (they are skipped, so the request is not known and nothing is written);
//! a merge committed meanwhile is seen as by a job that ran just before it.
//! A cookieless visitor's session created by another job meanwhile is a
//! unique violation, and the job runs again. `synchronous_commit` is off
//! for this transaction only, as for every activity job: the ingest commit
//! that follows flushes the WAL past it, so nothing is acked before it is
//! durable, and its locks are not held over a WAL flush.

use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;

use super::{PgIdentity, MAX_ATTEMPTS};
use crate::storage::identity::{KnownQuery, KnownRows, SessionRow};
use crate::storage::StorageError;

/// The whole light job (see the module docs). Every key comparison names
/// the column's collation, so array elements compare bytewise as the keys do.
const MOVE_KNOWN: &str = r#"
WITH old AS MATERIALIZED (
    SELECT key, session_id, count, last_activity_ms FROM identity_sessions
    WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE
), nodes AS MATERIALIZED (
    SELECT key, profile_id FROM identity_nodes WHERE key = ANY($2::text[])
), verdict AS (
    SELECT NOT EXISTS (
               SELECT 1 FROM unnest($3::int4[], $4::text[]) AS e(i, key)
               LEFT JOIN nodes n ON n.key = e.key COLLATE "C"
               GROUP BY e.i
               HAVING count(n.key) < count(*) OR count(DISTINCT n.profile_id) > 1)
           AND (SELECT count(*) FROM old WHERE old.key = ANY($5::text[]))
               = cardinality($5::text[]) AS known
), steps AS (
    SELECT s.key, s.n, s.t,
           COALESCE(s.t > GREATEST(o.last_activity_ms, s.pm) + $9, true) AS starts
    FROM unnest($6::text[], $7::int8[], $8::int8[]) WITH ORDINALITY AS s(key, t, pm, n)
    LEFT JOIN old o ON o.key = s.key COLLATE "C"
), moved AS (
    SELECT s.key, o.key IS NOT NULL AS stored,
           COALESCE((array_agg(s.t ORDER BY s.n DESC) FILTER (WHERE s.starts))[1],
                    o.session_id) AS session_id,
           COALESCE(o.count, 0) + count(*) FILTER (WHERE s.starts) AS count,
           GREATEST(o.last_activity_ms, max(s.t)) AS last_activity_ms
    FROM steps s LEFT JOIN old o ON o.key = s.key COLLATE "C"
    GROUP BY s.key, o.key, o.session_id, o.count, o.last_activity_ms
), updated AS (
    UPDATE identity_sessions t
    SET session_id = m.session_id, count = m.count, last_activity_ms = m.last_activity_ms
    FROM moved m, verdict v
    WHERE v.known AND m.stored AND t.key = m.key COLLATE "C"
    RETURNING t.key
), inserted AS (
    INSERT INTO identity_sessions (key, session_id, count, last_activity_ms)
    SELECT m.key, m.session_id, m.count, m.last_activity_ms FROM moved m, verdict v
    WHERE v.known AND NOT m.stored ORDER BY m.key
    RETURNING key
)
SELECT 0, key, NULL::text COLLATE "C", session_id, count, last_activity_ms FROM old
UNION ALL
SELECT 1, key, profile_id, NULL, NULL, NULL FROM nodes
UNION ALL
SELECT 2, NULL, NULL, CASE WHEN v.known THEN 1 ELSE 0 END,
       (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted), NULL
FROM verdict v
"#;

/// How one attempt failed.
struct Failed {
    error: StorageError,
    conflict: bool,
}

impl PgIdentity {
    /// Answers `query` in one statement, again while it fails on a conflict.
    pub(super) async fn move_known_pg(
        &self,
        query: &KnownQuery,
    ) -> Result<KnownRows, StorageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client = self.client().await?;
            match run_once(&client, query).await {
                Ok(rows) => return Ok(rows),
                Err(failed) => {
                    if client.is_closed() {
                        // NOTE: a connection that broke mid-statement must
                        // not go back to the pool.
                        drop(Object::take(client));
                    }
                    if !failed.conflict || attempt >= MAX_ATTEMPTS {
                        return Err(failed.error);
                    }
                    let jitter = rand::random::<u64>() % 16;
                    tokio::time::sleep(Duration::from_millis((1u64 << attempt.min(5)) + jitter))
                        .await;
                }
            }
        }
    }
}

/// One attempt: `BEGIN`, the statement and `COMMIT` sent at once. A failed
/// statement leaves the transaction aborted, and the `COMMIT` behind it then
/// rolls it back, so the connection is clean either way.
async fn run_once(client: &Object, q: &KnownQuery) -> Result<KnownRows, Failed> {
    let stmt = client.prepare_cached(MOVE_KNOWN).await.map_err(failed)?;
    let (event_index, event_key): (Vec<i32>, Vec<&str>) =
        q.event_keys.iter().map(|(i, k)| (*i, k.as_str())).unzip();
    let step_key: Vec<&str> = q.steps.iter().map(|s| s.key.as_str()).collect();
    let step_ts: Vec<i64> = q.steps.iter().map(|s| s.ts_ms).collect();
    let step_earlier: Vec<Option<i64>> = q.steps.iter().map(|s| s.earlier_max_ms).collect();
    let begin = client
        .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = off");
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &q.session_keys,
        &q.node_keys,
        &event_index,
        &event_key,
        &q.required_sessions,
        &step_key,
        &step_ts,
        &step_earlier,
        &q.timeout_ms,
    ];
    let statement = client.query(&stmt, &params);
    let commit = client.batch_execute("COMMIT");
    let (began, rows, committed) = tokio::join!(begin, statement, commit);
    began.map_err(failed)?;
    let rows = rows.map_err(failed)?;
    committed.map_err(failed)?;
    let mut out = KnownRows::default();
    for r in rows {
        match r.get::<_, i32>(0) {
            0 => out.sessions.push((
                r.get(1),
                SessionRow {
                    session_id: r.get(3),
                    count: r.get(4),
                    last_activity_ms: r.get(5),
                },
            )),
            1 => out.nodes.push((r.get(1), r.get(2))),
            _ => out.moved = r.get::<_, i64>(3) == 1,
        }
    }
    out.sessions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cold]
fn failed(e: tokio_postgres::Error) -> Failed {
    let conflict = e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE);
    Failed {
        error: StorageError::from(e),
        conflict,
    }
}
