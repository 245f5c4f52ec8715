//! The tracked state of one sync, held compactly for one run's diff.
//!
//! # Design
//! A run holds every key of the sync's state (and each key it meets) at
//! once, so the table must stay small at a million keys. Keys are written
//! end to end into one arena string; each key's slot (offset, length, the
//! 16-byte row hash, status and flags: 32 bytes) sits in one vector; the
//! hash table holds only a slot's 4-byte index (5 bytes a bucket with its
//! control byte). About 45 bytes per key plus the key's text, and a
//! state reserved for the expected number of keys never grows (so never
//! holds an old and a new table at once). Whole rows are never kept.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use crate::storage::syncs::{KeyStatus, RowHash, TrackedKey};

/// One key's slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Where the key starts in the arena.
    at: usize,
    /// The key's length in bytes.
    len: u32,
    /// The tracked row hash (for fresh keys, the current one).
    hash: RowHash,
    /// The tracked status.
    status: KeyStatus,
    /// `SEEN` and `FRESH` bits.
    flags: u8,
}

/// The current run has met this key.
const SEEN: u8 = 1;
/// The key is not in the stored state (met first in this run).
const FRESH: u8 = 2;

/// What the state says about a key the run meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visit {
    /// Not in the state: a new key.
    Fresh,
    /// In the state with this hash and status.
    Tracked(RowHash, KeyStatus),
    /// Met earlier in this run.
    Duplicate,
}

/// A sync's tracked keys, their row hashes and statuses.
pub struct TrackedState {
    /// Indexes into `slots`, hashed by key.
    table: HashTable<u32>,
    slots: Vec<Slot>,
    keys: String,
    build: DefaultHashBuilder,
    tracked: usize,
}

impl Default for TrackedState {
    fn default() -> Self {
        TrackedState::new()
    }
}

/// The key of `slot` in `keys`.
fn key_of<'k>(keys: &'k str, slot: &Slot) -> &'k str {
    &keys[slot.at..slot.at + slot.len as usize]
}

impl TrackedState {
    /// An empty state (a sync's first run); [`reserve`](Self::reserve)
    /// sizes it.
    pub fn new() -> TrackedState {
        TrackedState {
            table: HashTable::new(),
            slots: Vec::new(),
            keys: String::new(),
            build: DefaultHashBuilder::default(),
            tracked: 0,
        }
    }

    /// Makes room for `keys` more keys of `key_bytes` bytes in all.
    pub fn reserve(&mut self, keys: usize, key_bytes: usize) {
        let (slots, arena, build) = (&self.slots, &self.keys, &self.build);
        self.table
            .reserve(keys, |&i| build.hash_one(key_of(arena, &slots[i as usize])));
        self.slots.reserve(keys);
        self.keys.reserve(key_bytes);
    }

    /// Keys loaded from the store.
    pub fn len(&self) -> usize {
        self.tracked
    }

    /// Whether no key was loaded.
    pub fn is_empty(&self) -> bool {
        self.tracked == 0
    }

    /// Heap bytes held (table, slots and key arena), for logs and metrics.
    pub fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.keys.capacity()
    }

    /// Adds a page of keys read from the store
    /// (`SyncStore::state_page`).
    pub fn extend(&mut self, page: &[TrackedKey]) {
        for k in page {
            self.insert(&k.key, k.hash, k.status);
        }
    }

    fn find(&self, h: u64, key: &str) -> Option<usize> {
        let (slots, keys) = (&self.slots, &self.keys);
        self.table
            .find(h, |&i| key_of(keys, &slots[i as usize]) == key)
            .map(|&i| i as usize)
    }

    /// Adds (or replaces) one stored key.
    pub fn insert(&mut self, key: &str, hash: RowHash, status: KeyStatus) {
        let h = self.build.hash_one(key);
        if let Some(i) = self.find(h, key) {
            let slot = &mut self.slots[i];
            slot.hash = hash;
            slot.status = status;
            return;
        }
        self.push(h, key, hash, status, 0);
        self.tracked += 1;
    }

    fn push(&mut self, h: u64, key: &str, hash: RowHash, status: KeyStatus, flags: u8) {
        let at = self.keys.len();
        self.keys.push_str(key);
        // More than 4 G keys cannot be held in memory anyway.
        let index = self.slots.len() as u32;
        self.slots.push(Slot {
            at,
            len: key.len().min(u32::MAX as usize) as u32,
            hash,
            status,
            flags,
        });
        let (slots, keys, build) = (&self.slots, &self.keys, &self.build);
        self.table.insert_unique(h, index, |&i| {
            build.hash_one(key_of(keys, &slots[i as usize]))
        });
    }

    /// Marks `key` met by the current run with row hash `hash`, and says
    /// what the state knew of it.
    pub(crate) fn visit(&mut self, key: &str, hash: RowHash) -> Visit {
        let h = self.build.hash_one(key);
        if let Some(i) = self.find(h, key) {
            let slot = &mut self.slots[i];
            if slot.flags & SEEN != 0 {
                return Visit::Duplicate;
            }
            slot.flags |= SEEN;
            return Visit::Tracked(slot.hash, slot.status);
        }
        self.push(h, key, hash, KeyStatus::Synced, SEEN | FRESH);
        Visit::Fresh
    }

    /// The stored keys the run has not met, with their hash and status.
    pub(crate) fn unseen(&self) -> impl Iterator<Item = (&str, RowHash, KeyStatus)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.flags & (SEEN | FRESH) == 0)
            .map(|s| (key_of(&self.keys, s), s.hash, s.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_marked_and_left_over() {
        let mut s = TrackedState::new();
        s.extend(&[
            TrackedKey {
                key: "a".into(),
                hash: RowHash([1; 16]),
                status: KeyStatus::Synced,
                attempts: 0,
                last_error: None,
                run: 1,
            },
            TrackedKey {
                key: "b".into(),
                hash: RowHash([2; 16]),
                status: KeyStatus::Failed,
                attempts: 1,
                last_error: None,
                run: 1,
            },
        ]);
        s.insert("a", RowHash([3; 16]), KeyStatus::Synced);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.visit("a", RowHash([9; 16])),
            Visit::Tracked(RowHash([3; 16]), KeyStatus::Synced)
        );
        assert_eq!(s.visit("a", RowHash([9; 16])), Visit::Duplicate);
        assert_eq!(s.visit("c", RowHash([9; 16])), Visit::Fresh);
        assert_eq!(s.visit("c", RowHash([9; 16])), Visit::Duplicate);
        let left: Vec<_> = s.unseen().collect();
        assert_eq!(left, [("b", RowHash([2; 16]), KeyStatus::Failed)]);
        assert_eq!(s.len(), 2, "fresh keys are not tracked ones");
    }

    #[test]
    fn many_keys_survive_growth() {
        let mut s = TrackedState::new();
        for i in 0..50_000 {
            s.insert(
                &format!("k{i}"),
                RowHash([(i % 251) as u8; 16]),
                KeyStatus::Synced,
            );
        }
        for i in (0..50_000).step_by(7) {
            assert_eq!(
                s.visit(&format!("k{i}"), RowHash::default()),
                Visit::Tracked(RowHash([(i % 251) as u8; 16]), KeyStatus::Synced)
            );
        }
        assert_eq!(s.unseen().count(), 50_000 - 50_000usize.div_ceil(7));
    }
}
