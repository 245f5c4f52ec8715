//! [`IdentityTx`] on PostgreSQL: the statements of the SQLite store in
//! PostgreSQL's dialect (arrays instead of `json_each`, `LEAST`/`GREATEST`).

use tokio_postgres::Row;

use super::{PersonEventTables, PgConn};
use crate::storage::identity::{
    AuditRow, DeletedEvents, IdentityTx, MergeEntry, MergeRecord, NodeRow, NodeStats, PersonEvents,
    PersonMatch, RefusalEntry, SessionRow, TraitRow,
};
use crate::storage::StorageError;

/// One job's transaction.
pub(super) struct PgTx<'a> {
    pub(super) conn: &'a PgConn<'a>,
    pub(super) events: &'a dyn PersonEventTables,
}

const MERGE_COLUMNS: &str = "id, at_ms, survivor, absorbed, cause, message_id, identifiers, link_id, absorbed_node, actor, split_at_ms";

fn merge_entry(r: &Row) -> MergeEntry {
    MergeEntry {
        id: r.get(0),
        at_ms: r.get(1),
        survivor: r.get(2),
        absorbed: r.get(3),
        cause: r.get(4),
        message_id: r.get(5),
        identifiers: r.get(6),
        link_id: r.get(7),
        absorbed_node: r.get(8),
        actor: r.get(9),
        split_at_ms: r.get(10),
    }
}

fn strings(rows: Vec<Row>) -> Vec<String> {
    rows.iter().map(|r| r.get(0)).collect()
}

impl IdentityTx for PgTx<'_> {
    fn node_profile(&self, key: &str) -> Result<Option<String>, StorageError> {
        let found = self.conn.query_opt(
            "SELECT profile_id FROM identity_nodes WHERE key = $1",
            &[&key],
        )?;
        if found.is_some() {
            self.conn.nodes_new([key])?;
        }
        Ok(found.map(|r| r.get(0)))
    }

    fn node_profiles(&self, keys: &[String]) -> Result<Vec<(String, String)>, StorageError> {
        let rows = self.conn.query(
            "SELECT key, profile_id FROM identity_nodes WHERE key = ANY($1)",
            &[&keys],
        )?;
        let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        self.conn.nodes_new(found.iter().map(|(k, _)| k.as_str()))?;
        Ok(found)
    }

    fn profile_created(&self, id: &str) -> Result<i64, StorageError> {
        Ok(self
            .conn
            .query_opt(
                "SELECT created_ms FROM identity_profiles WHERE id = $1",
                &[&id],
            )?
            .map_or(i64::MAX, |r| r.get(0)))
    }

    fn insert_profile(&self, id: &str, now_ms: i64) -> Result<(), StorageError> {
        // Sent with the next statement (`PgConn` says why).
        self.conn.defer_profile(id, now_ms);
        Ok(())
    }

    fn insert_node(&self, key: &str, profile: &str, now_ms: i64) -> Result<(), StorageError> {
        // Sent with the next statement; a node that exists fails it, and
        // with it the job.
        self.conn.defer_node(key, profile, now_ms);
        Ok(())
    }

    fn insert_link(
        &self,
        a: &str,
        b: &str,
        cause: &str,
        message_id: Option<&str>,
        now_ms: i64,
    ) -> Result<i64, StorageError> {
        let rows = self.conn.query(
            "INSERT INTO identity_links (a, b, cause, message_id, created_ms)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&a, &b, &cause, &message_id, &now_ms],
        )?;
        returned_id(rows)
    }

    fn has_user(&self, profile: &str) -> Result<bool, StorageError> {
        Ok(self
            .conn
            .query_opt(
                "SELECT 1 FROM identity_nodes WHERE profile_id = $1 AND key >= 'user:' AND key < 'user;' LIMIT 1",
                &[&profile],
            )?
            .is_some())
    }

    fn is_blocked(&self, p: &str, q: &str) -> Result<bool, StorageError> {
        Ok(self
            .conn
            .query_opt(
                "SELECT 1 FROM identity_blocks
                 WHERE (x IN (SELECT id FROM identity_profiles WHERE id = $1 OR merged_into = $1)
                        AND y IN (SELECT id FROM identity_profiles WHERE id = $2 OR merged_into = $2))
                    OR (x IN (SELECT id FROM identity_profiles WHERE id = $2 OR merged_into = $2)
                        AND y IN (SELECT id FROM identity_profiles WHERE id = $1 OR merged_into = $1))
                 LIMIT 1",
                &[&p, &q],
            )?
            .is_some())
    }

    fn is_suppressed(&self, hash: &str) -> Result<bool, StorageError> {
        Ok(self
            .conn
            .query_opt(
                "SELECT 1 FROM identity_suppressions WHERE hash = $1",
                &[&hash],
            )?
            .is_some())
    }

    fn suppressed_among(&self, hashes: &[String]) -> Result<Vec<String>, StorageError> {
        Ok(strings(self.conn.query(
            "SELECT hash FROM identity_suppressions WHERE hash = ANY($1)",
            &[&hashes],
        )?))
    }

    fn guard_counts(&self) -> Result<(u64, u64), StorageError> {
        let rows = self.conn.query(
            "SELECT (SELECT count(*) FROM identity_suppressions), (SELECT count(*) FROM identity_blocks)",
            &[],
        )?;
        let row = rows
            .first()
            .ok_or_else(|| StorageError::Sql("postgres: no counts returned".into()))?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    fn profile_nodes(&self, profile: &str) -> Result<Vec<String>, StorageError> {
        Ok(strings(self.conn.query(
            "SELECT key FROM identity_nodes WHERE profile_id = $1 ORDER BY key",
            &[&profile],
        )?))
    }

    fn profile_ids(&self, profile: &str) -> Result<Vec<String>, StorageError> {
        Ok(strings(self.conn.query(
            "SELECT id FROM identity_profiles WHERE id = $1 OR merged_into = $1 ORDER BY created_ms, id",
            &[&profile],
        )?))
    }

    fn current_profile(&self, id: &str) -> Result<Option<String>, StorageError> {
        Ok(self
            .conn
            .query_opt(
                "SELECT COALESCE(merged_into, id) FROM identity_profiles WHERE id = $1",
                &[&id],
            )?
            .map(|r| r.get(0)))
    }

    fn merge_profiles(&self, survivor: &str, absorbed: &str) -> Result<(), StorageError> {
        self.conn.execute(
            "UPDATE identity_nodes SET profile_id = $1 WHERE profile_id = $2",
            &[&survivor, &absorbed],
        )?;
        self.conn.execute(
            "UPDATE identity_profiles SET merged_into = $1 WHERE id = $2 OR merged_into = $2",
            &[&survivor, &absorbed],
        )?;
        Ok(())
    }

    fn insert_merge(&self, m: &MergeRecord<'_>, now_ms: i64) -> Result<i64, StorageError> {
        let rows = self.conn.query(
            "INSERT INTO identity_merges
               (at_ms, survivor, absorbed, cause, message_id, identifiers, link_id, absorbed_node, actor)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &now_ms,
                &m.survivor,
                &m.absorbed,
                &m.cause,
                &m.message_id,
                &m.identifiers,
                &m.link_id,
                &m.absorbed_node,
                &m.actor,
            ],
        )?;
        returned_id(rows)
    }

    fn insert_refusal(
        &self,
        message_id: Option<&str>,
        kept: &str,
        refused: &str,
        identifiers: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.conn.execute(
            "INSERT INTO identity_refusals (at_ms, message_id, kept, refused, identifiers, reason)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&now_ms, &message_id, &kept, &refused, &identifiers, &reason],
        )?;
        Ok(())
    }

    fn bump_node(&self, key: &str, s: &NodeStats) -> Result<(), StorageError> {
        let c = &s.counts;
        self.conn.execute(
            "UPDATE identity_nodes SET
               n_track = n_track + $2, n_page = n_page + $3, n_screen = n_screen + $4,
               n_identify = n_identify + $5, n_group = n_group + $6, n_alias = n_alias + $7,
               first_seen_ms = LEAST(COALESCE(first_seen_ms, $8), $8),
               last_seen_ms = GREATEST(COALESCE(last_seen_ms, $9), $9)
             WHERE key = $1",
            &[
                &key,
                &c[0],
                &c[1],
                &c[2],
                &c[3],
                &c[4],
                &c[5],
                &s.first_seen_ms,
                &s.last_seen_ms,
            ],
        )?;
        Ok(())
    }

    fn bump_nodes(&self, stats: &[(String, NodeStats)]) -> Result<(), StorageError> {
        if stats.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = stats.iter().map(|(k, _)| k.as_str()).collect();
        let count = |i: usize| -> Vec<i64> { stats.iter().map(|(_, s)| s.counts[i]).collect() };
        let (t, p, sc, id, g, al) = (count(0), count(1), count(2), count(3), count(4), count(5));
        let first: Vec<i64> = stats.iter().map(|(_, s)| s.first_seen_ms).collect();
        let last: Vec<i64> = stats.iter().map(|(_, s)| s.last_seen_ms).collect();
        // One statement per flush, rows in key order (the caller sorts), so
        // two workers' flushes lock shared rows in the same order.
        self.conn.execute(
            r#"UPDATE identity_nodes n SET
                 n_track = n.n_track + u.t, n_page = n.n_page + u.p, n_screen = n.n_screen + u.s,
                 n_identify = n.n_identify + u.i, n_group = n.n_group + u.g, n_alias = n.n_alias + u.a,
                 first_seen_ms = LEAST(COALESCE(n.first_seen_ms, u.f), u.f),
                 last_seen_ms = GREATEST(COALESCE(n.last_seen_ms, u.l), u.l)
               FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
                           $6::int8[], $7::int8[], $8::int8[], $9::int8[])
                    AS u(key, t, p, s, i, g, a, f, l)
               WHERE n.key = u.key COLLATE "C""#,
            &[&keys, &t, &p, &sc, &id, &g, &al, &first, &last],
        )?;
        Ok(())
    }

    fn upsert_trait(
        &self,
        node: &str,
        key: &str,
        value: &str,
        updated_ms: i64,
    ) -> Result<(), StorageError> {
        self.conn.execute(
            "INSERT INTO identity_traits (node, key, value, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (node, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms
             WHERE excluded.updated_ms >= identity_traits.updated_ms",
            &[&node, &key, &value, &updated_ms],
        )?;
        Ok(())
    }

    fn session(&self, key: &str) -> Result<Option<SessionRow>, StorageError> {
        let found = self.conn.query_opt(
            "SELECT session_id, count, last_activity_ms FROM identity_sessions WHERE key = $1",
            &[&key],
        )?;
        self.conn.sessions_new(usize::from(found.is_some()))?;
        Ok(found.map(|r| SessionRow {
            session_id: r.get(0),
            count: r.get(1),
            last_activity_ms: r.get(2),
        }))
    }

    fn put_session(&self, key: &str, s: &SessionRow) -> Result<(), StorageError> {
        self.conn.execute(
            "INSERT INTO identity_sessions (key, session_id, count, last_activity_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET session_id = excluded.session_id,
               count = excluded.count, last_activity_ms = excluded.last_activity_ms",
            &[&key, &s.session_id, &s.count, &s.last_activity_ms],
        )?;
        Ok(())
    }

    fn put_sessions(&self, rows: &[(String, SessionRow)]) -> Result<(), StorageError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (k, id, n, at) = session_columns(rows);
        // One statement, rows in key order (the caller sorts), so two jobs
        // storing shared sessions lock them in the same order. A job over
        // new identifiers found none of them: one another job created
        // meanwhile is a unique violation, which runs it as a serializable
        // job on that row.
        let sql = if self.conn.is_new() {
            "INSERT INTO identity_sessions (key, session_id, count, last_activity_ms)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[])"
        } else {
            "INSERT INTO identity_sessions (key, session_id, count, last_activity_ms)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[])
             ON CONFLICT (key) DO UPDATE SET session_id = excluded.session_id,
               count = excluded.count, last_activity_ms = excluded.last_activity_ms"
        };
        self.conn.execute(sql, &[&k, &id, &n, &at])?;
        Ok(())
    }

    fn lock_sessions(&self, keys: &[String]) -> Result<Vec<(String, SessionRow)>, StorageError> {
        // Locked in key order, so jobs over overlapping keys never deadlock.
        let rows = self.conn.query(
            "SELECT key, session_id, count, last_activity_ms FROM identity_sessions
             WHERE key = ANY($1) ORDER BY key FOR UPDATE",
            &[&keys],
        )?;
        self.conn.sessions_new(rows.len())?;
        Ok(rows.iter().map(keyed_session).collect())
    }

    fn store_sessions(
        &self,
        moved: &[(String, SessionRow)],
        created: &[(String, SessionRow)],
    ) -> Result<(), StorageError> {
        let columns = session_columns;
        if !moved.is_empty() {
            let (k, id, n, at) = columns(moved);
            self.conn.execute(
                r#"UPDATE identity_sessions s SET
                     session_id = u.id, count = u.n, last_activity_ms = u.at
                   FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS u(key, id, n, at)
                   WHERE s.key = u.key COLLATE "C""#,
                &[&k, &id, &n, &at],
            )?;
        }
        if !created.is_empty() {
            // No ON CONFLICT: a session another job created meanwhile is a
            // unique violation, which runs this job again on that row.
            let (k, id, n, at) = columns(created);
            self.conn.execute(
                "INSERT INTO identity_sessions (key, session_id, count, last_activity_ms)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[])",
                &[&k, &id, &n, &at],
            )?;
        }
        Ok(())
    }

    fn profile_is_current(&self, id: &str) -> Result<bool, StorageError> {
        Ok(self
            .conn
            .query_opt(
                "SELECT 1 FROM identity_profiles WHERE id = $1 AND merged_into IS NULL",
                &[&id],
            )?
            .is_some())
    }

    fn profile_node_rows(&self, id: &str) -> Result<Vec<NodeRow>, StorageError> {
        let rows = self.conn.query(
            "SELECT key, first_seen_ms, last_seen_ms, n_track, n_page, n_screen, n_identify, n_group, n_alias
             FROM identity_nodes WHERE profile_id = $1 ORDER BY created_ms, key",
            &[&id],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut counts = [0i64; 6];
                for (i, c) in counts.iter_mut().enumerate() {
                    *c = r.get(3 + i);
                }
                NodeRow {
                    key: r.get(0),
                    first_seen_ms: r.get(1),
                    last_seen_ms: r.get(2),
                    counts,
                }
            })
            .collect())
    }

    fn profile_traits(&self, id: &str) -> Result<Vec<(String, String)>, StorageError> {
        // The latest value per key (ties: the greatest value, deterministically).
        let rows = self.conn.query(
            "SELECT DISTINCT ON (t.key) t.key, t.value FROM identity_traits t
             JOIN identity_nodes n ON n.key = t.node
             WHERE n.profile_id = $1 ORDER BY t.key, t.updated_ms DESC, t.value DESC",
            &[&id],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn merges_of(&self, id: &str) -> Result<Vec<MergeEntry>, StorageError> {
        let rows = self.conn.query(
            &format!(
                "SELECT {MERGE_COLUMNS} FROM identity_merges WHERE survivor = $1 OR absorbed = $1"
            ),
            &[&id],
        )?;
        Ok(rows.iter().map(merge_entry).collect())
    }

    fn refusals_of(&self, id: &str) -> Result<Vec<RefusalEntry>, StorageError> {
        let rows = self.conn.query(
            "SELECT id, at_ms, message_id, kept, refused, identifiers, reason
             FROM identity_refusals WHERE kept = $1 OR refused = $1 ORDER BY id DESC LIMIT 100",
            &[&id],
        )?;
        Ok(rows
            .iter()
            .map(|r| RefusalEntry {
                id: r.get(0),
                at_ms: r.get(1),
                message_id: r.get(2),
                kept: r.get(3),
                refused: r.get(4),
                identifiers: r.get(5),
                reason: r.get(6),
            })
            .collect())
    }

    fn first_node(&self, profile: &str) -> Result<Option<String>, StorageError> {
        Ok(self
            .conn
            .query_opt(
                "SELECT key FROM identity_nodes WHERE profile_id = $1 ORDER BY created_ms, key LIMIT 1",
                &[&profile],
            )?
            .map(|r| r.get(0)))
    }

    fn merge_entry(&self, id: i64) -> Result<Option<MergeEntry>, StorageError> {
        Ok(self
            .conn
            .query_opt(
                &format!("SELECT {MERGE_COLUMNS} FROM identity_merges WHERE id = $1"),
                &[&id],
            )?
            .map(|r| merge_entry(&r)))
    }

    fn active_links(
        &self,
        profile: &str,
        except_link: i64,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let rows = self.conn.query(
            "SELECT l.a, l.b FROM identity_links l JOIN identity_nodes n ON n.key = l.a
             WHERE n.profile_id = $1 AND l.active = 1 AND l.id != $2",
            &[&profile, &except_link],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn undo_merge(&self, link_id: i64, merge_id: i64, now_ms: i64) -> Result<(), StorageError> {
        self.conn.execute(
            "UPDATE identity_links SET active = 0 WHERE id = $1",
            &[&link_id],
        )?;
        self.conn.execute(
            "UPDATE identity_merges SET split_at_ms = $2 WHERE id = $1",
            &[&merge_id, &now_ms],
        )?;
        Ok(())
    }

    fn set_merged_into(&self, id: &str, into: Option<&str>) -> Result<(), StorageError> {
        self.conn.execute(
            "UPDATE identity_profiles SET merged_into = $2 WHERE id = $1",
            &[&id, &into],
        )?;
        Ok(())
    }

    fn move_node(&self, key: &str, profile: &str) -> Result<(), StorageError> {
        self.conn.execute(
            "UPDATE identity_nodes SET profile_id = $2 WHERE key = $1",
            &[&key, &profile],
        )?;
        Ok(())
    }

    fn last_absorbed_node(&self, profile: &str) -> Result<Option<String>, StorageError> {
        Ok(self
            .conn
            .query_opt(
                "SELECT absorbed_node FROM identity_merges WHERE absorbed = $1 ORDER BY id DESC LIMIT 1",
                &[&profile],
            )?
            .and_then(|r| r.get::<_, Option<String>>(0)))
    }

    fn insert_block(&self, x: &str, y: &str, merge_id: i64) -> Result<(), StorageError> {
        self.conn.execute(
            "INSERT INTO identity_blocks (x, y, merge_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&x, &y, &merge_id],
        )?;
        Ok(())
    }

    fn node_traits(&self, nodes: &[String]) -> Result<Vec<TraitRow>, StorageError> {
        let rows = self.conn.query(
            "SELECT node, key, value, updated_ms FROM identity_traits
             WHERE node = ANY($1) ORDER BY node, key",
            &[&nodes],
        )?;
        Ok(rows
            .iter()
            .map(|r| TraitRow {
                node: r.get(0),
                key: r.get(1),
                value: r.get(2),
                updated_ms: r.get(3),
            })
            .collect())
    }

    fn node_sessions(&self, nodes: &[String]) -> Result<Vec<(String, SessionRow)>, StorageError> {
        let rows = self.conn.query(
            "SELECT key, session_id, count, last_activity_ms FROM identity_sessions
             WHERE key = ANY($1) ORDER BY key",
            &[&nodes],
        )?;
        self.conn.sessions_new(rows.len())?;
        Ok(rows.iter().map(keyed_session).collect())
    }

    fn person_events(&self, person: &PersonMatch) -> Result<PersonEvents, StorageError> {
        self.events.person_events(self.conn, person)
    }

    fn delete_person_events(&self, person: &PersonMatch) -> Result<DeletedEvents, StorageError> {
        self.events.delete_person_events(self.conn, person)
    }

    fn delete_graph(&self, profile_ids: &[String], nodes: &[String]) -> Result<(), StorageError> {
        for (sql, arg) in [
            ("DELETE FROM identity_traits WHERE node = ANY($1)", nodes),
            ("DELETE FROM identity_sessions WHERE key = ANY($1)", nodes),
            (
                "DELETE FROM identity_links WHERE a = ANY($1) OR b = ANY($1)",
                nodes,
            ),
            (
                "DELETE FROM identity_merges WHERE survivor = ANY($1) OR absorbed = ANY($1)",
                profile_ids,
            ),
            (
                "DELETE FROM identity_refusals WHERE kept = ANY($1) OR refused = ANY($1)",
                profile_ids,
            ),
            (
                "DELETE FROM identity_blocks WHERE x = ANY($1) OR y = ANY($1)",
                profile_ids,
            ),
            ("DELETE FROM identity_nodes WHERE key = ANY($1)", nodes),
            (
                "DELETE FROM identity_profiles WHERE id = ANY($1)",
                profile_ids,
            ),
        ] {
            self.conn.execute(sql, &[&arg])?;
        }
        Ok(())
    }

    fn exclude_new_links(&self) -> Result<(), StorageError> {
        // LOCK takes no snapshot: as the job's first statement, it leaves
        // the job's snapshot to its next, after every job over new
        // identifiers that held the gate has committed.
        self.conn
            .batch("LOCK TABLE identity_link_gate IN EXCLUSIVE MODE")
    }

    fn suppress(&self, hashes: &[String], now_ms: i64, audit_id: i64) -> Result<(), StorageError> {
        self.conn.execute(
            "INSERT INTO identity_suppressions (hash, created_ms, audit_id)
             SELECT h, $2, $3 FROM unnest($1::text[]) AS h
             ON CONFLICT (hash) DO NOTHING",
            &[&hashes, &now_ms, &audit_id],
        )?;
        Ok(())
    }

    fn insert_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<i64, StorageError> {
        let rows = self.conn.query(
            "INSERT INTO identity_audit (at_ms, actor, action, target, detail)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&now_ms, &actor, &action, &target, &detail],
        )?;
        returned_id(rows)
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRow>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.conn.query(
            "SELECT id, at_ms, actor, action, target, detail FROM identity_audit ORDER BY id DESC LIMIT $1",
            &[&limit],
        )?;
        Ok(rows
            .iter()
            .map(|r| AuditRow {
                id: r.get(0),
                at_ms: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                detail: r.get(5),
            })
            .collect())
    }
}

fn returned_id(rows: Vec<Row>) -> Result<i64, StorageError> {
    rows.first()
        .map(|r| r.get(0))
        .ok_or_else(|| StorageError::Sql("postgres: INSERT returned no id".into()))
}

/// Sessions as the columns of an `unnest`.
fn session_columns(rows: &[(String, SessionRow)]) -> (Vec<&str>, Vec<i64>, Vec<i64>, Vec<i64>) {
    (
        rows.iter().map(|(k, _)| k.as_str()).collect(),
        rows.iter().map(|(_, r)| r.session_id).collect(),
        rows.iter().map(|(_, r)| r.count).collect(),
        rows.iter().map(|(_, r)| r.last_activity_ms).collect(),
    )
}

/// A `(key, session_id, count, last_activity_ms)` row as its key and session.
fn keyed_session(r: &tokio_postgres::Row) -> (String, SessionRow) {
    (
        r.get(0),
        SessionRow {
            session_id: r.get(1),
            count: r.get(2),
            last_activity_ms: r.get(3),
        },
    )
}
