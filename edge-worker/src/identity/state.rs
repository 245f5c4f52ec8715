//! In-memory state kept beside the identity graph: bounded caches of hot
//! lookups and counters that let lookups which cannot hit be skipped.

use std::sync::Arc;

use hashlink::LruCache;
use rusqlite::Connection;

use super::graph::BatchReport;
use super::store::{self, SessionRow};
use crate::storage::StorageError;

/// In-memory state kept beside the graph: bounded caches and counters.
///
/// Only write jobs touch it (they run one at a time on the writer thread).
/// Any failed job clears it, because its rows were rolled back.
pub(crate) struct GraphState {
    /// Node key → profile id, least recently used evicted.
    pub(super) nodes: LruCache<String, Arc<str>>,
    /// Session key → session, least recently used evicted.
    pub(super) sessions: LruCache<String, SessionRow>,
    /// Rows in `identity_suppressions` and `identity_blocks`, loaded on first
    /// use so lookups that cannot hit are skipped.
    counts: Option<(u64, u64)>,
}

impl GraphState {
    /// Empty caches holding at most `entries` nodes and as many sessions.
    pub(crate) fn new(entries: usize) -> GraphState {
        GraphState {
            nodes: LruCache::new(entries.max(16)),
            sessions: LruCache::new(entries.max(16)),
            counts: None,
        }
    }

    /// Forgets everything (after a failed job, or a privacy operation).
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.sessions.clear();
        self.counts = None;
    }

    /// Forgets one node (deleted or moved by an admin operation).
    pub(crate) fn forget_node(&mut self, key: &str) {
        self.nodes.remove(key);
        self.sessions.remove(key);
    }

    /// Records that suppressions or blocks were added.
    pub(crate) fn added(&mut self, suppressions: u64, blocks: u64) {
        if let Some((s, b)) = self.counts.as_mut() {
            *s += suppressions;
            *b += blocks;
        }
    }

    pub(super) fn counts(&mut self, conn: &Connection) -> Result<(u64, u64), StorageError> {
        if let Some(counts) = self.counts {
            return Ok(counts);
        }
        let counts = (
            store::count(conn, "identity_suppressions")?,
            store::count(conn, "identity_blocks")?,
        );
        self.counts = Some(counts);
        Ok(counts)
    }

    /// The profile of a node: the cache, then the store.
    pub(super) fn lookup(
        &mut self,
        conn: &Connection,
        key: &str,
        report: &mut BatchReport,
    ) -> Result<Option<Arc<str>>, StorageError> {
        if let Some(p) = self.nodes.get(key) {
            report.cache_hits += 1;
            return Ok(Some(Arc::clone(p)));
        }
        report.cache_misses += 1;
        let found: Option<Arc<str>> = store::node_profile(conn, key)?.map(Arc::from);
        if let Some(p) = &found {
            self.nodes.insert(key.to_owned(), Arc::clone(p));
        }
        Ok(found)
    }

    /// Points every cached node of `absorbed` at `survivor`.
    pub(super) fn repoint(&mut self, keys: &[String], survivor: &Arc<str>) {
        for key in keys {
            if let Some(p) = self.nodes.peek_mut(key.as_str()) {
                *p = Arc::clone(survivor);
            }
        }
    }
}
