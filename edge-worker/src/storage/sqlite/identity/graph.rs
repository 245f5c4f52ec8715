//! [`IdentityTx`] for a SQLite connection: the graph, activity, profile
//! reads and repairs. Privacy statements are in `privacy.rs`.

use rusqlite::{params, Connection, OptionalExtension};

use crate::storage::identity::{
    AuditRow, DeletedEvents, IdentityTx, MergeEntry, MergeRecord, NodeRow, NodeStats, PersonEvents,
    PersonMatch, RefusalEntry, SessionRow, TraitRow,
};
use crate::storage::StorageError;

const MERGE_COLUMNS: &str = "id, at_ms, survivor, absorbed, cause, message_id, identifiers, link_id, absorbed_node, actor, split_at_ms";

fn merge_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<MergeEntry> {
    Ok(MergeEntry {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        survivor: r.get(2)?,
        absorbed: r.get(3)?,
        cause: r.get(4)?,
        message_id: r.get(5)?,
        identifiers: r.get(6)?,
        link_id: r.get(7)?,
        absorbed_node: r.get(8)?,
        actor: r.get(9)?,
        split_at_ms: r.get(10)?,
    })
}

fn count(conn: &Connection, table: &str) -> Result<u64, StorageError> {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    Ok(conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64)
}

impl IdentityTx for Connection {
    fn node_profile(&self, key: &str) -> Result<Option<String>, StorageError> {
        let mut stmt =
            self.prepare_cached("SELECT profile_id FROM identity_nodes WHERE key = ?1")?;
        Ok(stmt.query_row([key], |r| r.get(0)).optional()?)
    }

    fn profile_created(&self, id: &str) -> Result<i64, StorageError> {
        let mut stmt =
            self.prepare_cached("SELECT created_ms FROM identity_profiles WHERE id = ?1")?;
        Ok(stmt
            .query_row([id], |r| r.get(0))
            .optional()?
            .unwrap_or(i64::MAX))
    }

    fn insert_profile(&self, id: &str, now_ms: i64) -> Result<(), StorageError> {
        let mut stmt =
            self.prepare_cached("INSERT INTO identity_profiles (id, created_ms) VALUES (?1, ?2)")?;
        stmt.execute(params![id, now_ms])?;
        Ok(())
    }

    fn insert_node(&self, key: &str, profile: &str, now_ms: i64) -> Result<(), StorageError> {
        let mut stmt = self.prepare_cached(
            "INSERT INTO identity_nodes (key, profile_id, created_ms) VALUES (?1, ?2, ?3)",
        )?;
        stmt.execute(params![key, profile, now_ms])?;
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
        let mut stmt = self.prepare_cached(
            "INSERT INTO identity_links (a, b, cause, message_id, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        stmt.execute(params![a, b, cause, message_id, now_ms])?;
        Ok(self.last_insert_rowid())
    }

    fn has_user(&self, profile: &str) -> Result<bool, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT 1 FROM identity_nodes WHERE profile_id = ?1 AND key >= 'user:' AND key < 'user;'",
        )?;
        Ok(stmt.exists([profile])?)
    }

    fn is_blocked(&self, p: &str, q: &str) -> Result<bool, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT 1 FROM identity_blocks
             WHERE (x IN (SELECT id FROM identity_profiles WHERE id = ?1 OR merged_into = ?1)
                    AND y IN (SELECT id FROM identity_profiles WHERE id = ?2 OR merged_into = ?2))
                OR (x IN (SELECT id FROM identity_profiles WHERE id = ?2 OR merged_into = ?2)
                    AND y IN (SELECT id FROM identity_profiles WHERE id = ?1 OR merged_into = ?1))",
        )?;
        Ok(stmt.exists([p, q])?)
    }

    fn is_suppressed(&self, hash: &str) -> Result<bool, StorageError> {
        let mut stmt =
            self.prepare_cached("SELECT 1 FROM identity_suppressions WHERE hash = ?1")?;
        Ok(stmt.exists([hash])?)
    }

    fn guard_counts(&self) -> Result<(u64, u64), StorageError> {
        Ok((
            count(self, "identity_suppressions")?,
            count(self, "identity_blocks")?,
        ))
    }

    fn profile_nodes(&self, profile: &str) -> Result<Vec<String>, StorageError> {
        let mut stmt = self
            .prepare_cached("SELECT key FROM identity_nodes WHERE profile_id = ?1 ORDER BY key")?;
        let rows = stmt.query_map([profile], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn profile_ids(&self, profile: &str) -> Result<Vec<String>, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT id FROM identity_profiles WHERE id = ?1 OR merged_into = ?1 ORDER BY created_ms, id",
        )?;
        let rows = stmt.query_map([profile], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn current_profile(&self, id: &str) -> Result<Option<String>, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT COALESCE(merged_into, id) FROM identity_profiles WHERE id = ?1",
        )?;
        Ok(stmt.query_row([id], |r| r.get(0)).optional()?)
    }

    fn merge_profiles(&self, survivor: &str, absorbed: &str) -> Result<(), StorageError> {
        let mut nodes =
            self.prepare_cached("UPDATE identity_nodes SET profile_id = ?1 WHERE profile_id = ?2")?;
        nodes.execute([survivor, absorbed])?;
        let mut chain = self.prepare_cached(
            "UPDATE identity_profiles SET merged_into = ?1 WHERE id = ?2 OR merged_into = ?2",
        )?;
        chain.execute([survivor, absorbed])?;
        Ok(())
    }

    fn insert_merge(&self, m: &MergeRecord<'_>, now_ms: i64) -> Result<i64, StorageError> {
        let mut stmt = self.prepare_cached(
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
        Ok(self.last_insert_rowid())
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
        let mut stmt = self.prepare_cached(
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

    fn bump_node(&self, key: &str, s: &NodeStats) -> Result<(), StorageError> {
        let mut stmt = self.prepare_cached(
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

    fn upsert_trait(
        &self,
        node: &str,
        key: &str,
        value: &str,
        updated_ms: i64,
    ) -> Result<(), StorageError> {
        let mut stmt = self.prepare_cached(
            "INSERT INTO identity_traits (node, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (node, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms
             WHERE excluded.updated_ms >= identity_traits.updated_ms",
        )?;
        stmt.execute(params![node, key, value, updated_ms])?;
        Ok(())
    }

    fn session(&self, key: &str) -> Result<Option<SessionRow>, StorageError> {
        let mut stmt = self.prepare_cached(
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

    fn put_session(&self, key: &str, s: &SessionRow) -> Result<(), StorageError> {
        let mut stmt = self.prepare_cached(
            "INSERT INTO identity_sessions (key, session_id, count, last_activity_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET session_id = excluded.session_id,
               count = excluded.count, last_activity_ms = excluded.last_activity_ms",
        )?;
        stmt.execute(params![key, s.session_id, s.count, s.last_activity_ms])?;
        Ok(())
    }

    fn profile_is_current(&self, id: &str) -> Result<bool, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT 1 FROM identity_profiles WHERE id = ?1 AND merged_into IS NULL",
        )?;
        Ok(stmt.exists([id])?)
    }

    fn profile_node_rows(&self, id: &str) -> Result<Vec<NodeRow>, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT key, first_seen_ms, last_seen_ms, n_track, n_page, n_screen, n_identify, n_group, n_alias
             FROM identity_nodes WHERE profile_id = ?1 ORDER BY created_ms, key",
        )?;
        let rows = stmt.query_map([id], |r| {
            let mut counts = [0i64; 6];
            for (i, c) in counts.iter_mut().enumerate() {
                *c = r.get(3 + i)?;
            }
            Ok(NodeRow {
                key: r.get(0)?,
                first_seen_ms: r.get(1)?,
                last_seen_ms: r.get(2)?,
                counts,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn profile_traits(&self, id: &str) -> Result<Vec<(String, String)>, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT t.key, t.value, max(t.updated_ms) FROM identity_traits t
             JOIN identity_nodes n ON n.key = t.node
             WHERE n.profile_id = ?1 GROUP BY t.key ORDER BY t.key",
        )?;
        let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn merges_of(&self, id: &str) -> Result<Vec<MergeEntry>, StorageError> {
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {MERGE_COLUMNS} FROM identity_merges WHERE survivor = ?1 OR absorbed = ?1"
        ))?;
        let rows = stmt.query_map([id], merge_entry)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn refusals_of(&self, id: &str) -> Result<Vec<RefusalEntry>, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT id, at_ms, message_id, kept, refused, identifiers, reason
             FROM identity_refusals WHERE kept = ?1 OR refused = ?1 ORDER BY id DESC LIMIT 100",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(RefusalEntry {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                message_id: r.get(2)?,
                kept: r.get(3)?,
                refused: r.get(4)?,
                identifiers: r.get(5)?,
                reason: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn first_node(&self, profile: &str) -> Result<Option<String>, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT key FROM identity_nodes WHERE profile_id = ?1 ORDER BY created_ms, key LIMIT 1",
        )?;
        Ok(stmt.query_row([profile], |r| r.get(0)).optional()?)
    }

    fn merge_entry(&self, id: i64) -> Result<Option<MergeEntry>, StorageError> {
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {MERGE_COLUMNS} FROM identity_merges WHERE id = ?1"
        ))?;
        Ok(stmt.query_row([id], merge_entry).optional()?)
    }

    fn active_links(
        &self,
        profile: &str,
        except_link: i64,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT l.a, l.b FROM identity_links l JOIN identity_nodes n ON n.key = l.a
             WHERE n.profile_id = ?1 AND l.active = 1 AND l.id != ?2",
        )?;
        let rows = stmt.query_map(params![profile, except_link], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn undo_merge(&self, link_id: i64, merge_id: i64, now_ms: i64) -> Result<(), StorageError> {
        self.execute(
            "UPDATE identity_links SET active = 0 WHERE id = ?1",
            [link_id],
        )?;
        self.execute(
            "UPDATE identity_merges SET split_at_ms = ?2 WHERE id = ?1",
            params![merge_id, now_ms],
        )?;
        Ok(())
    }

    fn set_merged_into(&self, id: &str, into: Option<&str>) -> Result<(), StorageError> {
        self.execute(
            "UPDATE identity_profiles SET merged_into = ?2 WHERE id = ?1",
            params![id, into],
        )?;
        Ok(())
    }

    fn move_node(&self, key: &str, profile: &str) -> Result<(), StorageError> {
        let mut stmt =
            self.prepare_cached("UPDATE identity_nodes SET profile_id = ?2 WHERE key = ?1")?;
        stmt.execute(params![key, profile])?;
        Ok(())
    }

    fn last_absorbed_node(&self, profile: &str) -> Result<Option<String>, StorageError> {
        Ok(self
            .query_row(
                "SELECT absorbed_node FROM identity_merges WHERE absorbed = ?1 ORDER BY id DESC LIMIT 1",
                [profile],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    fn insert_block(&self, x: &str, y: &str, merge_id: i64) -> Result<(), StorageError> {
        self.execute(
            "INSERT INTO identity_blocks (x, y, merge_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![x, y, merge_id],
        )?;
        Ok(())
    }

    fn node_traits(&self, nodes: &[String]) -> Result<Vec<TraitRow>, StorageError> {
        super::privacy::node_traits(self, nodes)
    }

    fn node_sessions(&self, nodes: &[String]) -> Result<Vec<(String, SessionRow)>, StorageError> {
        super::privacy::node_sessions(self, nodes)
    }

    fn person_events(&self, person: &PersonMatch) -> Result<PersonEvents, StorageError> {
        super::privacy::person_events(self, person)
    }

    fn delete_person_events(&self, person: &PersonMatch) -> Result<DeletedEvents, StorageError> {
        super::privacy::delete_person_events(self, person)
    }

    fn delete_graph(&self, profile_ids: &[String], nodes: &[String]) -> Result<(), StorageError> {
        super::privacy::delete_graph(self, profile_ids, nodes)
    }

    fn suppress(&self, hashes: &[String], now_ms: i64, audit_id: i64) -> Result<(), StorageError> {
        let mut stmt = self.prepare_cached(
            "INSERT INTO identity_suppressions (hash, created_ms, audit_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (hash) DO NOTHING",
        )?;
        for hash in hashes {
            stmt.execute(params![hash, now_ms, audit_id])?;
        }
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
        self.execute(
            "INSERT INTO identity_audit (at_ms, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now_ms, actor, action, target, detail],
        )?;
        Ok(self.last_insert_rowid())
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRow>, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT id, at_ms, actor, action, target, detail FROM identity_audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                detail: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
