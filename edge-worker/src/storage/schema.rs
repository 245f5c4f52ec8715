//! The SQLite schema, applied in order at open. Each module that stores
//! something owns a numbered migration here; a migration never changes once
//! released, a new one is appended instead.

use rusqlite::Connection;

/// Migrations in order; `PRAGMA user_version` records how many have run.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: ingest: dedup, outbox, quarantine, dead letters.
    r#"
    CREATE TABLE dedup (
        source      TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        seen_at_ms  INTEGER NOT NULL,
        PRIMARY KEY (source, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX dedup_seen ON dedup (seen_at_ms);

    CREATE TABLE outbox (
        id               INTEGER PRIMARY KEY,
        destination      TEXT NOT NULL,
        source           TEXT NOT NULL,
        message_id       TEXT NOT NULL,
        event            TEXT NOT NULL,
        enqueued_at_ms   INTEGER NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms  INTEGER NOT NULL DEFAULT 0,
        last_error       TEXT
    );
    CREATE INDEX outbox_due ON outbox (destination, next_attempt_ms, id);

    CREATE TABLE quarantine (
        id              INTEGER PRIMARY KEY,
        source          TEXT NOT NULL,
        received_at_ms  INTEGER NOT NULL,
        reason          TEXT NOT NULL,
        detail          TEXT NOT NULL,
        raw             TEXT NOT NULL
    );

    CREATE TABLE dead_letters (
        id               INTEGER PRIMARY KEY,
        destination      TEXT NOT NULL,
        source           TEXT NOT NULL,
        message_id       TEXT NOT NULL,
        event            TEXT NOT NULL,
        enqueued_at_ms   INTEGER NOT NULL,
        failed_at_ms     INTEGER NOT NULL,
        attempts         INTEGER NOT NULL,
        reason           TEXT NOT NULL
    );
    CREATE INDEX dead_letters_destination ON dead_letters (destination, id);

    CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at_ms INTEGER NOT NULL);
    "#,
    // 2: delivery reads a destination's rows in id order; with this index
    // it walks them instead of sorting every due row on each read.
    r#"
    CREATE INDEX outbox_order ON outbox (destination, id);
    "#,
    // 3: delivery walks `outbox_order` past the rows in flight; `outbox_due`
    //    only cost a third B-tree on every enqueue, retry and delete.
    r#"
    DROP INDEX outbox_due;
    "#,
    // 4: the outbox holds one row per request and destination (a pack of
    //    events) instead of one per event; see `storage::outbox`.
    r#"
    CREATE TABLE outbox_packs (
        id               INTEGER PRIMARY KEY,
        destination      TEXT NOT NULL,
        source           TEXT NOT NULL,
        events           TEXT NOT NULL,
        indices          TEXT NOT NULL,
        remaining        INTEGER NOT NULL,
        enqueued_at_ms   INTEGER NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms  INTEGER NOT NULL DEFAULT 0,
        last_error       TEXT
    );
    CREATE INDEX outbox_packs_order ON outbox_packs (destination, id);
    INSERT INTO outbox_packs
        (id, destination, source, events, indices, remaining, enqueued_at_ms, attempts, next_attempt_ms, last_error)
    SELECT id, destination, source,
           json_array(json_object('i', 0, 'm', message_id, 'e', json(event))),
           '0', 1, enqueued_at_ms, attempts, next_attempt_ms, last_error
    FROM outbox;
    DROP TABLE outbox;
    "#,
    // 5: pack ids are never reused (`AUTOINCREMENT`), so the in-memory pack
    //    cache can key on them, and `events` is the last column, so reading
    //    a pack's other columns leaves its overflow pages alone
    //    (see `storage::pack_cache`).
    r#"
    CREATE TABLE outbox_packs_v5 (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        destination      TEXT NOT NULL,
        source           TEXT NOT NULL,
        indices          TEXT NOT NULL,
        remaining        INTEGER NOT NULL,
        enqueued_at_ms   INTEGER NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms  INTEGER NOT NULL DEFAULT 0,
        last_error       TEXT,
        events           TEXT NOT NULL
    );
    INSERT INTO outbox_packs_v5
        (id, destination, source, indices, remaining, enqueued_at_ms, attempts, next_attempt_ms, last_error, events)
    SELECT id, destination, source, indices, remaining, enqueued_at_ms, attempts, next_attempt_ms, last_error, events
    FROM outbox_packs;
    DROP TABLE outbox_packs;
    ALTER TABLE outbox_packs_v5 RENAME TO outbox_packs;
    CREATE INDEX outbox_packs_order ON outbox_packs (destination, id);
    "#,
    // 6: ids first seen by an ingest commit are logged in one row per
    //    commit and folded into `dedup` later, in key order (see `storage::dedup`).
    r#"
    CREATE TABLE dedup_log (
        id          INTEGER PRIMARY KEY,
        seen_at_ms  INTEGER NOT NULL,
        ids         BLOB NOT NULL
    );
    "#,
    // 7: dedup keeps 16-byte keys (a hash of source and id) in a rowid
    //    table appended in fold order, with one index, on the key; the log
    //    holds keys too (see `storage::dedup`).
    r#"
    CREATE TABLE dedup_keys (
        id          INTEGER PRIMARY KEY,
        key         BLOB NOT NULL UNIQUE,
        seen_at_ms  INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO dedup_keys (key, seen_at_ms)
        SELECT waymark_dedup_key(source, message_id), seen_at_ms
        FROM dedup ORDER BY seen_at_ms;
    DROP TABLE dedup;
    UPDATE dedup_log SET ids = waymark_dedup_log_keys(ids);
    "#,
    // 8: folded dedup keys are sorted runs of blocks, merged in the
    //    background and dropped whole (see `storage::dedup::runs`); the keys
    //    of `dedup_keys` become one run ([`MIGRATION_CODE`]).
    r#"
    CREATE TABLE dedup_runs (
        run        INTEGER PRIMARY KEY,
        state      INTEGER NOT NULL,
        keys       INTEGER NOT NULL,
        oldest_ms  INTEGER NOT NULL,
        newest_ms  INTEGER NOT NULL
    );
    CREATE TABLE dedup_blocks (
        id         INTEGER PRIMARY KEY,
        run        INTEGER NOT NULL,
        first_key  BLOB NOT NULL,
        keys       BLOB NOT NULL
    );
    CREATE UNIQUE INDEX dedup_blocks_key ON dedup_blocks (run, first_key);
    "#,
    // 9: a folded run is a file of sorted keys beside the database, listed
    //    here once live (see `storage::dedup::runs`); the runs of
    //    migration 8 are written to files ([`MIGRATION_CODE`]).
    r#"
    CREATE TABLE dedup_run_files (
        run        INTEGER PRIMARY KEY,
        keys       INTEGER NOT NULL,
        oldest_ms  INTEGER NOT NULL,
        newest_ms  INTEGER NOT NULL
    );
    "#,
];

/// A migration's step in code, run in its transaction after its SQL: the
/// migration's number and the step.
type MigrationCode = (usize, fn(&Connection) -> Result<(), super::StorageError>);

/// The migrations that also run code.
const MIGRATION_CODE: &[MigrationCode] = &[
    (8, super::dedup::convert_v7_keys),
    (9, super::dedup::convert_v8_runs),
];

/// Applies the migrations that have not run yet.
/// Every module's migrations, in the order the store applies them at open.
pub(crate) fn migrate_all(conn: &mut Connection) -> Result<(), super::StorageError> {
    migrate(conn)?;
    migrate_module(conn, "identity", super::sqlite::identity::MIGRATIONS)?;
    migrate_module(conn, "delivery", super::delivery::MIGRATIONS)?;
    migrate_module(conn, "syncs", super::sqlite::syncs::MIGRATIONS)?;
    Ok(())
}

pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let done: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    super::dedup::register_migration_functions(conn)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        for (_, code) in MIGRATION_CODE.iter().filter(|(n, _)| *n == i + 1) {
            code(&tx).map_err(|e| rusqlite::Error::UserFunctionError(e.to_string().into()))?;
        }
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Applies an extra migration set owned by another module (identity,
/// delivery), tracked in its own row of `schema_versions`.
pub(crate) fn migrate_module(
    conn: &mut Connection,
    module: &str,
    migrations: &[&str],
) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_versions (module TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    )?;
    let done: usize = conn
        .query_row(
            "SELECT version FROM schema_versions WHERE module = ?1",
            [module],
            |r| r.get(0),
        )
        .unwrap_or(0);
    for (i, sql) in migrations.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_versions (module, version) VALUES (?1, ?2)
             ON CONFLICT (module) DO UPDATE SET version = excluded.version",
            rusqlite::params![module, i + 1],
        )?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_waiting_in_the_old_outbox_are_packed_by_migration_4() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO outbox (destination, source, message_id, event, enqueued_at_ms, attempts, next_attempt_ms)
             VALUES ('d', 'web', 'm1', '{\"messageId\":\"m1\"}', 5, 2, 0)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let due = crate::storage::outbox::due(
            &conn,
            &crate::storage::pack_cache::PackCache::new(0),
            "d",
            10,
            0,
            10,
        )
        .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (
                due[0].message_id.as_str(),
                &*due[0].json,
                due[0].attempts,
                due[0].enqueued_at_ms
            ),
            ("m1", r#"{"messageId":"m1"}"#, 2, 5)
        );
    }
}
