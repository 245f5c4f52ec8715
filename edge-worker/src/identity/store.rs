//! The identity tables and the statements on them.
//!
//! # Design
//! The graph lives on disk so resident memory does not grow with the number
//! of profiles (issue #4). Per-node rows carry everything that must follow a
//! node through merges and splits (its profile, event counts, first and last
//! seen, traits), so merging two profiles rewrites only `profile_id`, and a
//! split only moves nodes: a profile's counts and traits are always derived
//! from its nodes.

use rusqlite::{params, Connection, OptionalExtension};

use crate::storage::StorageError;

/// Migrations of the `identity` module, applied by `SqliteStorage::open`
/// through `schema::migrate_module`. Released entries never change.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: graph, profiles, traits, sessions, merge log, privacy.
    r#"
    CREATE TABLE identity_profiles (
        id           TEXT PRIMARY KEY,
        created_ms   INTEGER NOT NULL,
        merged_into  TEXT
    ) WITHOUT ROWID;
    CREATE INDEX identity_profiles_merged ON identity_profiles (merged_into)
        WHERE merged_into IS NOT NULL;

    CREATE TABLE identity_nodes (
        key            TEXT PRIMARY KEY,
        profile_id     TEXT NOT NULL,
        created_ms     INTEGER NOT NULL,
        first_seen_ms  INTEGER,
        last_seen_ms   INTEGER,
        n_track        INTEGER NOT NULL DEFAULT 0,
        n_page         INTEGER NOT NULL DEFAULT 0,
        n_screen       INTEGER NOT NULL DEFAULT 0,
        n_identify     INTEGER NOT NULL DEFAULT 0,
        n_group        INTEGER NOT NULL DEFAULT 0,
        n_alias        INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX identity_nodes_profile ON identity_nodes (profile_id, key);

    CREATE TABLE identity_links (
        id          INTEGER PRIMARY KEY,
        a           TEXT NOT NULL,
        b           TEXT NOT NULL,
        cause       TEXT NOT NULL,
        message_id  TEXT,
        created_ms  INTEGER NOT NULL,
        active      INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX identity_links_a ON identity_links (a);
    CREATE INDEX identity_links_b ON identity_links (b);

    CREATE TABLE identity_merges (
        id             INTEGER PRIMARY KEY,
        at_ms          INTEGER NOT NULL,
        survivor       TEXT NOT NULL,
        absorbed       TEXT NOT NULL,
        cause          TEXT NOT NULL,
        message_id     TEXT,
        identifiers    TEXT NOT NULL,
        link_id        INTEGER,
        absorbed_node  TEXT,
        actor          TEXT,
        split_at_ms    INTEGER
    );
    CREATE INDEX identity_merges_survivor ON identity_merges (survivor);
    CREATE INDEX identity_merges_absorbed ON identity_merges (absorbed);

    CREATE TABLE identity_refusals (
        id           INTEGER PRIMARY KEY,
        at_ms        INTEGER NOT NULL,
        message_id   TEXT,
        kept         TEXT NOT NULL,
        refused      TEXT NOT NULL,
        identifiers  TEXT NOT NULL,
        reason       TEXT NOT NULL
    );
    CREATE INDEX identity_refusals_kept ON identity_refusals (kept);
    CREATE INDEX identity_refusals_refused ON identity_refusals (refused);

    CREATE TABLE identity_blocks (
        x  TEXT NOT NULL,
        y  TEXT NOT NULL,
        merge_id  INTEGER,
        PRIMARY KEY (x, y)
    ) WITHOUT ROWID;

    CREATE TABLE identity_traits (
        node        TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        updated_ms  INTEGER NOT NULL,
        PRIMARY KEY (node, key)
    ) WITHOUT ROWID;

    CREATE TABLE identity_sessions (
        key               TEXT PRIMARY KEY,
        session_id        INTEGER NOT NULL,
        count             INTEGER NOT NULL,
        last_activity_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE identity_suppressions (
        hash        TEXT PRIMARY KEY,
        created_ms  INTEGER NOT NULL,
        audit_id    INTEGER
    ) WITHOUT ROWID;

    CREATE TABLE identity_audit (
        id      INTEGER PRIMARY KEY,
        at_ms   INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        target  TEXT NOT NULL,
        detail  TEXT NOT NULL
    );
    "#,
];

/// The profile a node belongs to.
pub(crate) fn node_profile(conn: &Connection, key: &str) -> Result<Option<String>, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT profile_id FROM identity_nodes WHERE key = ?1")?;
    Ok(stmt.query_row([key], |r| r.get(0)).optional()?)
}

/// Whether a hashed identifier is suppressed.
pub(crate) fn is_suppressed(conn: &Connection, hash: &str) -> Result<bool, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM identity_suppressions WHERE hash = ?1")?;
    Ok(stmt.exists([hash])?)
}

/// Rows in a small table, to skip lookups that cannot hit.
pub(crate) fn count(conn: &Connection, table: &str) -> Result<u64, StorageError> {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    Ok(conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64)
}

/// Creates a profile.
pub(crate) fn insert_profile(conn: &Connection, id: &str, now_ms: i64) -> Result<(), StorageError> {
    let mut stmt =
        conn.prepare_cached("INSERT INTO identity_profiles (id, created_ms) VALUES (?1, ?2)")?;
    stmt.execute(params![id, now_ms])?;
    Ok(())
}

/// When a profile was created, for "the older id survives".
pub(crate) fn profile_created(conn: &Connection, id: &str) -> Result<i64, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT created_ms FROM identity_profiles WHERE id = ?1")?;
    Ok(stmt
        .query_row([id], |r| r.get(0))
        .optional()?
        .unwrap_or(i64::MAX))
}

/// Creates a node in `profile`.
pub(crate) fn insert_node(
    conn: &Connection,
    key: &str,
    profile: &str,
    now_ms: i64,
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO identity_nodes (key, profile_id, created_ms) VALUES (?1, ?2, ?3)",
    )?;
    stmt.execute(params![key, profile, now_ms])?;
    Ok(())
}

/// Records a link between two nodes; returns its id.
pub(crate) fn insert_link(
    conn: &Connection,
    a: &str,
    b: &str,
    cause: &str,
    message_id: Option<&str>,
    now_ms: i64,
) -> Result<i64, StorageError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO identity_links (a, b, cause, message_id, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    stmt.execute(params![a, b, cause, message_id, now_ms])?;
    Ok(conn.last_insert_rowid())
}

/// Whether a profile holds a `user:` node (the merge guard's question).
pub(crate) fn has_user(conn: &Connection, profile: &str) -> Result<bool, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM identity_nodes WHERE profile_id = ?1 AND key >= 'user:' AND key < 'user;'",
    )?;
    Ok(stmt.exists([profile])?)
}

/// Whether an admin split put a barrier between the two profiles (or any
/// profile merged into either).
pub(crate) fn is_blocked(conn: &Connection, p: &str, q: &str) -> Result<bool, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM identity_blocks
         WHERE (x IN (SELECT id FROM identity_profiles WHERE id = ?1 OR merged_into = ?1)
                AND y IN (SELECT id FROM identity_profiles WHERE id = ?2 OR merged_into = ?2))
            OR (x IN (SELECT id FROM identity_profiles WHERE id = ?2 OR merged_into = ?2)
                AND y IN (SELECT id FROM identity_profiles WHERE id = ?1 OR merged_into = ?1))",
    )?;
    Ok(stmt.exists([p, q])?)
}

/// Node keys of a profile.
pub(crate) fn profile_nodes(conn: &Connection, profile: &str) -> Result<Vec<String>, StorageError> {
    let mut stmt =
        conn.prepare_cached("SELECT key FROM identity_nodes WHERE profile_id = ?1 ORDER BY key")?;
    let rows = stmt.query_map([profile], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A profile id and every id merged into it.
pub(crate) fn profile_ids(conn: &Connection, profile: &str) -> Result<Vec<String>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM identity_profiles WHERE id = ?1 OR merged_into = ?1 ORDER BY created_ms, id",
    )?;
    let rows = stmt.query_map([profile], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Follows a merged profile id to the profile that absorbed it. `None` for
/// an unknown (or deleted) id.
pub(crate) fn current_profile(conn: &Connection, id: &str) -> Result<Option<String>, StorageError> {
    let mut stmt = conn
        .prepare_cached("SELECT COALESCE(merged_into, id) FROM identity_profiles WHERE id = ?1")?;
    Ok(stmt.query_row([id], |r| r.get(0)).optional()?)
}

/// Moves every node of `absorbed` into `survivor` and points `absorbed`
/// (and every id already merged into it) at `survivor`.
pub(crate) fn merge_profiles(
    conn: &Connection,
    survivor: &str,
    absorbed: &str,
) -> Result<(), StorageError> {
    let mut nodes =
        conn.prepare_cached("UPDATE identity_nodes SET profile_id = ?1 WHERE profile_id = ?2")?;
    nodes.execute([survivor, absorbed])?;
    let mut chain = conn.prepare_cached(
        "UPDATE identity_profiles SET merged_into = ?1 WHERE id = ?2 OR merged_into = ?2",
    )?;
    chain.execute([survivor, absorbed])?;
    Ok(())
}

/// One merge-log entry to write.
pub(crate) struct MergeRecord<'a> {
    pub survivor: &'a str,
    pub absorbed: &'a str,
    pub cause: &'a str,
    pub message_id: Option<&'a str>,
    /// JSON array of the node keys involved.
    pub identifiers: &'a str,
    pub link_id: Option<i64>,
    pub absorbed_node: Option<&'a str>,
    pub actor: Option<&'a str>,
}

/// Appends to the merge log; returns the entry's id.
pub(crate) fn insert_merge(
    conn: &Connection,
    m: &MergeRecord<'_>,
    now_ms: i64,
) -> Result<i64, StorageError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO identity_merges
           (at_ms, survivor, absorbed, cause, message_id, identifiers, link_id, absorbed_node, actor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    stmt.execute(params![
        now_ms,
        m.survivor,
        m.absorbed,
        m.cause,
        m.message_id,
        m.identifiers,
        m.link_id,
        m.absorbed_node,
        m.actor
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Logs a link the guards refused.
pub(crate) fn insert_refusal(
    conn: &Connection,
    message_id: Option<&str>,
    kept: &str,
    refused: &str,
    identifiers: &str,
    reason: &str,
    now_ms: i64,
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO identity_refusals (at_ms, message_id, kept, refused, identifiers, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    stmt.execute(params![
        now_ms,
        message_id,
        kept,
        refused,
        identifiers,
        reason
    ])?;
    Ok(())
}

/// Event counts and times to add to one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NodeStats {
    /// Per call type, in `EventType::ALL` order.
    pub counts: [i64; 6],
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// Adds a request's counts to a node.
pub(crate) fn bump_node(conn: &Connection, key: &str, s: &NodeStats) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE identity_nodes SET
           n_track = n_track + ?2, n_page = n_page + ?3, n_screen = n_screen + ?4,
           n_identify = n_identify + ?5, n_group = n_group + ?6, n_alias = n_alias + ?7,
           first_seen_ms = min(COALESCE(first_seen_ms, ?8), ?8),
           last_seen_ms = max(COALESCE(last_seen_ms, ?9), ?9)
         WHERE key = ?1",
    )?;
    let c = &s.counts;
    stmt.execute(params![
        key,
        c[0],
        c[1],
        c[2],
        c[3],
        c[4],
        c[5],
        s.first_seen_ms,
        s.last_seen_ms
    ])?;
    Ok(())
}

/// Sets a trait on a node unless a newer value is already there.
pub(crate) fn upsert_trait(
    conn: &Connection,
    node: &str,
    key: &str,
    value: &str,
    updated_ms: i64,
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO identity_traits (node, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (node, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms
         WHERE excluded.updated_ms >= identity_traits.updated_ms",
    )?;
    stmt.execute(params![node, key, value, updated_ms])?;
    Ok(())
}

/// A visitor's session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionRow {
    /// Start of the current session, in Unix milliseconds; doubles as its id.
    pub session_id: i64,
    /// Sessions so far, this one included.
    pub count: i64,
    /// Latest activity seen, in Unix milliseconds.
    pub last_activity_ms: i64,
}

/// The stored session of a visitor.
pub(crate) fn session(conn: &Connection, key: &str) -> Result<Option<SessionRow>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT session_id, count, last_activity_ms FROM identity_sessions WHERE key = ?1",
    )?;
    Ok(stmt
        .query_row([key], |r| {
            Ok(SessionRow {
                session_id: r.get(0)?,
                count: r.get(1)?,
                last_activity_ms: r.get(2)?,
            })
        })
        .optional()?)
}

/// Stores a visitor's session.
pub(crate) fn put_session(
    conn: &Connection,
    key: &str,
    s: &SessionRow,
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO identity_sessions (key, session_id, count, last_activity_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET session_id = excluded.session_id,
           count = excluded.count, last_activity_ms = excluded.last_activity_ms",
    )?;
    stmt.execute(params![key, s.session_id, s.count, s.last_activity_ms])?;
    Ok(())
}

/// Appends to the audit log; returns the entry's id.
pub(crate) fn insert_audit(
    conn: &Connection,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    now_ms: i64,
) -> Result<i64, StorageError> {
    conn.execute(
        "INSERT INTO identity_audit (at_ms, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_ms, actor, action, target, detail],
    )?;
    Ok(conn.last_insert_rowid())
}
