//! In-memory state kept beside the identity graph: bounded caches of hot
//! lookups, counters that let lookups which cannot hit be skipped, and the
//! activity (node counters, sessions) not yet written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hashlink::LruCache;

use super::graph::BatchReport;
use crate::storage::identity::{IdentityTx, KnownQuery, NodeStats, SessionRow};
use crate::storage::StorageError;

/// Pending activity entries (counters plus sessions) that make the next
/// link job write them out inline, bounding the memory they take.
pub(crate) const MAX_PENDING: usize = 8_192;

/// In-memory state kept beside the graph: bounded caches and counters.
///
/// Write jobs and the cached fast path ([`super::Identity::link`]) touch it
/// under one lock. Any failed job clears the caches, because its rows were
/// rolled back; pending activity survives that (see [`Pending`]).
pub(crate) struct GraphState {
    /// Node key → profile id, least recently used evicted.
    pub(super) nodes: LruCache<String, Arc<str>>,
    /// Session key → session, least recently used evicted.
    pub(super) sessions: LruCache<String, SessionRow>,
    /// Rows in `identity_suppressions` and `identity_blocks`, loaded on first
    /// use so lookups that cannot hit are skipped.
    counts: Option<(u64, u64)>,
    /// Activity recorded but not yet written.
    pub(super) pending: Pending,
    /// The store has several writers: nothing above may be kept (see
    /// `crate::storage::identity`), and activity is written at once.
    shared: bool,
    /// What one job on a shared store read, kept for that job alone
    /// ([`GraphState::job`]); `None` elsewhere.
    job: Option<JobReads>,
}

/// One graph job's reads on a shared store, valid inside its transaction:
/// the store's rows do not change under it (its snapshot), and the job's
/// own writes go through the same caches as on a single writer.
#[derive(Debug, Default)]
struct JobReads {
    /// Keys read and found not to be nodes; a key leaves when the job creates it.
    absent_nodes: HashSet<String>,
    /// Session keys read and found without a stored session.
    absent_sessions: HashSet<String>,
    /// Whether [`GraphState::prefetch`] ran (it reads once per job).
    read: bool,
    /// Keys whose suppression was read up front: absent then, `true` when suppressed.
    suppression: HashMap<String, bool>,
}

/// Node counters and sessions recorded but not yet written (write-behind).
///
/// # Design
/// Links, new nodes, merges and traits are written before the ack. Event
/// counts, first/last seen and session rows are derived activity that every
/// event touches, so they are coalesced here and written by
/// [`super::Identity::flush`] once a second, before every admin operation
/// and at shutdown, and by [`GraphState::flush`] inside a link job whenever
/// [`MAX_PENDING`] entries wait. A crash loses at
/// most that second of counter increments, never an event or a link.
///
/// On a shared store only the counters of requests that changed nothing in
/// the graph wait here (sessions are written before the ack, see
/// [`super::activity::link_known`]); they are added, never set, so each
/// worker's flush adds its own, and a profile read on another worker lags
/// by at most the flush interval.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    stats: HashMap<String, NodeStats>,
    sessions: HashMap<String, SessionRow>,
}

impl Pending {
    /// Entries waiting.
    pub(crate) fn len(&self) -> usize {
        self.stats.len() + self.sessions.len()
    }

    /// Writes every entry; returns how many.
    pub(crate) fn write(&self, conn: &dyn IdentityTx) -> Result<usize, StorageError> {
        let mut stats: Vec<(String, NodeStats)> =
            self.stats.iter().map(|(k, s)| (k.clone(), *s)).collect();
        stats.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        conn.bump_nodes(&stats)?;
        for (key, row) in &self.sessions {
            conn.put_session(key, row)?;
        }
        Ok(self.len())
    }
}

impl GraphState {
    /// Empty caches holding at most `entries` nodes and as many sessions.
    pub(crate) fn new(entries: usize) -> GraphState {
        GraphState {
            nodes: LruCache::new(entries.max(16)),
            sessions: LruCache::new(entries.max(16)),
            counts: None,
            pending: Pending::default(),
            shared: false,
            job: None,
        }
    }

    /// State for a store several workers write: no caches, no write-behind.
    pub(crate) fn shared() -> GraphState {
        GraphState {
            shared: true,
            ..GraphState::new(0)
        }
    }

    /// Scratch for one graph job on a store several workers write: as
    /// [`GraphState::shared`], but lookups are cached for the job, whose
    /// transaction sees no other writer's rows, so the job reads each key
    /// once and can read them all at the start ([`GraphState::prefetch`]).
    /// Dropped with the job; never outlives its transaction.
    pub(crate) fn job(keys: usize) -> GraphState {
        GraphState {
            shared: true,
            job: Some(JobReads::default()),
            ..GraphState::new(keys)
        }
    }

    /// Whether this is one job's scratch (see [`GraphState::job`]).
    pub(crate) fn is_job(&self) -> bool {
        self.job.is_some()
    }

    /// Whether the store has several writers (see [`GraphState::shared`]).
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// Caches a node's profile (single writer, or one job's scratch).
    pub(super) fn cache_node(&mut self, key: &str, profile: &Arc<str>) {
        if !self.shared || self.job.is_some() {
            self.nodes.insert(key.to_owned(), Arc::clone(profile));
        }
        if let Some(job) = &mut self.job {
            job.absent_nodes.remove(key);
        }
    }

    /// Reads every node and session a job's events name, one statement
    /// each, and, when `suppression` is asked, which of the keys that are
    /// not nodes are suppressed (job scratch only; elsewhere a no-op).
    pub(super) fn prefetch(
        &mut self,
        conn: &dyn IdentityTx,
        mut node_keys: Vec<String>,
        mut session_keys: Vec<String>,
        suppression: bool,
    ) -> Result<(), StorageError> {
        if self.job.as_ref().is_none_or(|j| j.read) {
            return Ok(());
        }
        node_keys.sort_unstable();
        node_keys.dedup();
        session_keys.sort_unstable();
        session_keys.dedup();
        let found = if node_keys.is_empty() {
            Vec::new()
        } else {
            conn.node_profiles(&node_keys)?
        };
        let sessions = if session_keys.is_empty() {
            Vec::new()
        } else {
            conn.node_sessions(&session_keys)?
        };
        let found: HashMap<String, String> = found.into_iter().collect();
        let mut absent = HashSet::new();
        for key in node_keys {
            match found.get(&key) {
                Some(profile) => {
                    self.nodes.insert(key, Arc::from(profile.as_str()));
                }
                None => {
                    absent.insert(key);
                }
            }
        }
        let mut read = HashMap::new();
        if suppression && !absent.is_empty() {
            let by_hash: HashMap<String, &String> = absent
                .iter()
                .map(|k| (super::key::suppression_hash(k), k))
                .collect();
            let hashes: Vec<String> = by_hash.keys().cloned().collect();
            let suppressed: HashSet<String> = conn.suppressed_among(&hashes)?.into_iter().collect();
            for (hash, key) in by_hash {
                read.insert(key.clone(), suppressed.contains(&hash));
            }
        }
        let mut absent_sessions: HashSet<String> = session_keys.into_iter().collect();
        for (key, row) in sessions {
            absent_sessions.remove(&key);
            self.sessions.insert(key, row);
        }
        self.job = Some(JobReads {
            absent_nodes: absent,
            absent_sessions,
            suppression: read,
            read: true,
        });
        Ok(())
    }

    /// Whether `query` is known by this job's prefetch (see
    /// [`KnownQuery::is_known`]); `None` when it did not read every key the
    /// query needs.
    pub(crate) fn known_from_reads(&self, query: &KnownQuery) -> Option<bool> {
        let job = self.job.as_ref().filter(|j| j.read)?;
        let mut sessions = HashMap::new();
        for key in &query.required_sessions {
            match self.sessions.peek(key.as_str()) {
                Some(row) => {
                    sessions.insert(key.as_str(), *row);
                }
                None if job.absent_sessions.contains(key) => {}
                None => return None,
            }
        }
        let mut nodes = HashMap::new();
        for key in &query.node_keys {
            match self.nodes.peek(key.as_str()) {
                Some(profile) => {
                    nodes.insert(key.as_str(), &**profile);
                }
                None if job.absent_nodes.contains(key) => {}
                None => return None,
            }
        }
        Some(query.is_known(&sessions, &nodes))
    }

    /// Whether a key that is not a node is suppressed, when this job read
    /// it in its prefetch (`None`: ask the store).
    pub(super) fn prefetched_suppression(&self, key: &str) -> Option<bool> {
        self.job.as_ref()?.suppression.get(key).copied()
    }

    /// Forgets every cached lookup (after a failed job, or a privacy
    /// operation). Pending activity is kept: it adds to rows by key, and a
    /// row that was rolled back makes its update a no-op.
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

    /// Drops the pending activity of a deleted node, so no session row
    /// comes back for it.
    pub(crate) fn forget_activity(&mut self, key: &str) {
        self.pending.stats.remove(key);
        self.pending.sessions.remove(key);
    }

    /// Adds one request's counts for a node to the pending activity.
    pub(super) fn record_stats(&mut self, key: &str, s: NodeStats) {
        match self.pending.stats.get_mut(key) {
            Some(p) => {
                for (total, n) in p.counts.iter_mut().zip(s.counts) {
                    *total += n;
                }
                p.first_seen_ms = p.first_seen_ms.min(s.first_seen_ms);
                p.last_seen_ms = p.last_seen_ms.max(s.last_seen_ms);
            }
            None => {
                self.pending.stats.insert(key.to_owned(), s);
            }
        }
    }

    /// Records a visitor's session: pending until written, and cached.
    pub(super) fn record_session(&mut self, key: &str, row: SessionRow) {
        self.pending.sessions.insert(key.to_owned(), row);
        self.sessions.insert(key.to_owned(), row);
    }

    /// A visitor's session from memory alone: `None` when only the store knows.
    pub(super) fn cached_session(&mut self, key: &str) -> Option<SessionRow> {
        match self.pending.sessions.get(key) {
            Some(row) => Some(*row),
            None => self.sessions.get(key).copied(),
        }
    }

    /// A visitor's session: memory, then the store.
    pub(super) fn session(
        &mut self,
        conn: &dyn IdentityTx,
        key: &str,
    ) -> Result<Option<SessionRow>, StorageError> {
        match self.cached_session(key) {
            Some(row) => Ok(Some(row)),
            None if self
                .job
                .as_ref()
                .is_some_and(|j| j.absent_sessions.contains(key)) =>
            {
                Ok(None)
            }
            None => conn.session(key),
        }
    }

    /// Writes the pending activity; it is forgotten only once written, so a
    /// failed write leaves it for the next flush.
    pub(crate) fn flush(&mut self, conn: &dyn IdentityTx) -> Result<usize, StorageError> {
        let written = self.pending.write(conn)?;
        self.pending = Pending::default();
        Ok(written)
    }

    /// Takes the pending activity out, to be written without holding the
    /// state (the cached path keeps linking meanwhile).
    pub(crate) fn take_pending(&mut self) -> Pending {
        std::mem::take(&mut self.pending)
    }

    /// Puts back activity whose write failed: counts add up again, and a
    /// session recorded since is newer than the one put back.
    pub(crate) fn restore_pending(&mut self, taken: Pending) {
        for (key, s) in taken.stats {
            self.record_stats(&key, s);
        }
        for (key, row) in taken.sessions {
            self.pending.sessions.entry(key).or_insert(row);
        }
    }

    /// Records that suppressions or blocks were added.
    pub(crate) fn added(&mut self, suppressions: u64, blocks: u64) {
        if let Some((s, b)) = self.counts.as_mut() {
            *s += suppressions;
            *b += blocks;
        }
    }

    pub(super) fn counts(&mut self, conn: &dyn IdentityTx) -> Result<(u64, u64), StorageError> {
        if let Some(counts) = self.counts {
            return Ok(counts);
        }
        if self.shared {
            // Another worker may add a suppression or a barrier at any time.
            return Ok((u64::MAX, u64::MAX));
        }
        let counts = conn.guard_counts()?;
        self.counts = Some(counts);
        Ok(counts)
    }

    /// The profile of a node: the cache, then the store.
    pub(super) fn lookup(
        &mut self,
        conn: &dyn IdentityTx,
        key: &str,
        report: &mut BatchReport,
    ) -> Result<Option<Arc<str>>, StorageError> {
        if let Some(p) = self.nodes.get(key) {
            report.cache_hits += 1;
            return Ok(Some(Arc::clone(p)));
        }
        if let Some(job) = &self.job {
            if job.absent_nodes.contains(key) {
                report.cache_hits += 1;
                return Ok(None);
            }
        }
        report.cache_misses += 1;
        let found: Option<Arc<str>> = conn.node_profile(key)?.map(Arc::from);
        match &found {
            Some(p) => self.cache_node(key, p),
            None => {
                if let Some(job) = &mut self.job {
                    job.absent_nodes.insert(key.to_owned());
                }
            }
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
