//! Recently committed outbox packs, kept in memory so that delivery reads
//! only a pack's small columns from SQLite.
//!
//! # Design
//! A destination's worker reads each pack moments after ingest committed
//! it. Reading the `events` column again meant fetching the pack's overflow
//! pages through a reader connection (whose page cache SQLite resets
//! whenever the WAL changed) and parsing the pack's JSON: about a tenth of
//! the worker's CPU under load (issue #2). The cache is sound without any
//! invalidation because:
//! - an event's text inside a pack never changes while the pack exists
//!   (events only ever leave a pack);
//! - pack ids are never reused (`AUTOINCREMENT`), and a pack enters the
//!   cache only after its commit, so an id never names other content;
//! - which events of a pack still wait always comes from SQLite (`indices`).
//!
//! Entries leave when their pack is emptied, or oldest first once the cache
//! holds [`PackCache::new`]'s byte budget. A miss costs only the old read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One event of a cached pack.
#[derive(Debug, Clone)]
pub(crate) struct CachedEvent {
    /// The event's `messageId`.
    pub message_id: Arc<str>,
    /// The purposes the edge granted.
    pub granted: crate::consent::GrantedPurposes,
    /// The event as JSON.
    pub json: Arc<str>,
}

/// A pack's events as committed; the event with index `i` is at position `i`.
pub(crate) type CachedPack = Arc<[CachedEvent]>;

/// Packs by id, within a byte budget.
pub(crate) struct PackCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    packs: BTreeMap<i64, (CachedPack, usize)>,
    bytes: usize,
}

impl PackCache {
    /// An empty cache holding at most about `max_bytes` of event text.
    pub(crate) fn new(max_bytes: usize) -> PackCache {
        PackCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Remembers a committed pack. Call only once its commit is durable.
    pub(crate) fn insert(&self, id: i64, pack: CachedPack) {
        let size = pack
            .iter()
            .map(|e| e.json.len() + e.message_id.len())
            .sum::<usize>();
        if size > self.max_bytes {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some((_, old)) = inner.packs.insert(id, (pack, size)) {
            inner.bytes -= old;
        }
        inner.bytes += size;
        // Oldest first: a destination that is behind reads its backlog from disk.
        while inner.bytes > self.max_bytes {
            match inner.packs.pop_first() {
                Some((_, (_, n))) => inner.bytes -= n,
                None => break,
            }
        }
    }

    /// The pack with `id`, if cached.
    pub(crate) fn get(&self, id: i64) -> Option<CachedPack> {
        let inner = self.inner.lock().ok()?;
        inner.packs.get(&id).map(|(pack, _)| Arc::clone(pack))
    }

    /// Forgets packs that left the outbox.
    pub(crate) fn forget(&self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for id in ids {
            if let Some((_, n)) = inner.packs.remove(id) {
                inner.bytes -= n;
            }
        }
    }

    /// Forgets every pack (after a privacy deletion).
    pub(crate) fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            *inner = Inner::default();
        }
    }

    /// Bytes of event text held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: usize, json_len: usize) -> CachedPack {
        (0..n)
            .map(|i| CachedEvent {
                message_id: Arc::from(format!("m{i}")),
                granted: Default::default(),
                json: Arc::from("x".repeat(json_len)),
            })
            .collect()
    }

    #[test]
    fn packs_are_found_until_forgotten() {
        let cache = PackCache::new(1 << 20);
        cache.insert(7, pack(2, 10));
        assert_eq!(cache.get(7).map(|p| p.len()), Some(2));
        assert!(cache.get(8).is_none());
        cache.forget(&[7]);
        assert!(cache.get(7).is_none());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn the_oldest_packs_leave_first_over_the_budget() {
        let cache = PackCache::new(250);
        for id in 1..=3 {
            cache.insert(id, pack(1, 98));
        }
        assert!(cache.get(1).is_none(), "the oldest pack was evicted");
        assert!(cache.get(2).is_some() && cache.get(3).is_some());
        assert_eq!(cache.bytes(), 200);
        // A pack larger than the whole budget is not cached at all.
        cache.insert(4, pack(3, 100));
        assert!(cache.get(4).is_none());
        assert!(cache.get(3).is_some());
    }
}
