//! A Bloom filter of the keys dedup has seen, so a key seen for the first
//! time (nearly every event) skips the lookup in the runs.
//!
//! # Design
//! A split-block Bloom filter, the layout Parquet specifies: 256-bit
//! blocks of eight 32-bit words, and a key sets one bit in each word of
//! one block, so a lookup touches one cache line. Keys are already uniform
//! hashes ([`DedupHash`]): the high 64 bits pick the block, the low 32 bits
//! the bits. At 10 bits a key about 1% of new keys still look.
//!
//! Keys are never removed from a Bloom filter, so the filter is a list of
//! **generations** of [`GENERATION_BYTES`] each (less for a small budget),
//! and the newest takes every admitted key. A new one starts when the
//! newest holds 10 bits' worth of keys (so at most about 1% look whatever
//! the rate) or has run longer than the dedup window; a generation is
//! dropped once the one after it started before the window's cutoff (all
//! its keys are older than dedup remembers). Memory follows the keys held
//! in the window, up to the budget; past it the newest generation takes
//! more keys than its design load and more of them look, nothing is lost.
//! A key in the log or a live run is always in one generation, so the
//! filter only answers "maybe" or "certainly not"; a "maybe" is looked up.

use super::DedupHash;

/// The salts of Parquet's split-block Bloom filter.
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// Bytes of one block.
const BLOCK_BYTES: usize = 32;

/// One generation: a fixed array of blocks.
struct BlockFilter {
    blocks: Vec<[u32; 8]>,
}

impl BlockFilter {
    fn new(bytes: usize) -> BlockFilter {
        BlockFilter {
            // Zeroed pages are mapped lazily, as keys reach them.
            blocks: vec![[0; 8]; (bytes / BLOCK_BYTES).max(1)],
        }
    }

    fn block(&self, key: DedupHash) -> usize {
        let high = (key >> 64) as u64;
        ((u128::from(high) * self.blocks.len() as u128) >> 64) as usize
    }

    fn insert(&mut self, key: DedupHash) {
        let b = self.block(key);
        let bits = mask(key as u32);
        for (word, bit) in self.blocks[b].iter_mut().zip(bits) {
            *word |= bit;
        }
    }

    fn may_contain(&self, key: DedupHash) -> bool {
        let block = &self.blocks[self.block(key)];
        block
            .iter()
            .zip(mask(key as u32))
            .all(|(w, bit)| w & bit != 0)
    }
}

/// One bit in each of the eight words.
fn mask(x: u32) -> [u32; 8] {
    SALT.map(|salt| 1 << (x.wrapping_mul(salt) >> 27))
}

/// Bytes of one generation (16 MiB): about 13 M keys at 10 bits a key.
pub(crate) const GENERATION_BYTES: usize = 16 << 20;

/// Bits a key a generation is designed for (about 1% false "maybe"s).
const BITS_PER_KEY: usize = 10;

struct Generation {
    filter: BlockFilter,
    /// When it started taking keys.
    since_ms: i64,
    keys: usize,
}

/// The generations ([module docs](self)), oldest first.
pub(crate) struct SeenFilter {
    /// Most bytes of all generations; `0` turns the filter off (every key
    /// looks).
    budget: usize,
    /// Bytes of one generation.
    bytes: usize,
    generations: Vec<Generation>,
}

impl SeenFilter {
    /// An empty filter of at most `budget` bytes, whose first generation
    /// starts at `now_ms`.
    pub(crate) fn new(budget: usize, now_ms: i64) -> SeenFilter {
        let bytes = GENERATION_BYTES.min(budget / 2);
        let mut filter = SeenFilter {
            budget,
            bytes,
            generations: Vec::new(),
        };
        if bytes > 0 {
            filter.start(now_ms);
        }
        filter
    }

    fn start(&mut self, now_ms: i64) {
        self.generations.push(Generation {
            filter: BlockFilter::new(self.bytes),
            since_ms: now_ms,
            keys: 0,
        });
    }

    /// Adds `key` (admitted at `now_ms`) to the newest generation, first
    /// starting a new one when it is full and the budget allows.
    pub(crate) fn insert(&mut self, key: DedupHash, now_ms: i64) {
        let full = self
            .generations
            .last()
            .is_some_and(|g| g.keys >= self.bytes * 8 / BITS_PER_KEY);
        if full && (self.generations.len() + 1) * self.bytes <= self.budget {
            self.start(now_ms);
        }
        if let Some(g) = self.generations.last_mut() {
            g.filter.insert(key);
            g.keys += 1;
        }
    }

    /// `false` only for a key never inserted in a generation still kept.
    pub(crate) fn may_contain(&self, key: DedupHash) -> bool {
        if self.generations.is_empty() {
            return true;
        }
        // Newest first: a duplicate is most likely recent.
        self.generations
            .iter()
            .rev()
            .any(|g| g.filter.may_contain(key))
    }

    /// Bytes the generations take.
    pub(crate) fn bytes(&self) -> usize {
        self.generations.len() * self.bytes
    }

    /// Drops the generations all of whose keys were first seen before
    /// `cutoff_ms` (the oldest time dedup still remembers), and starts a
    /// new one at `now_ms` when the newest started before it. Whether
    /// anything changed.
    pub(crate) fn rotate(&mut self, cutoff_ms: i64, now_ms: i64) -> bool {
        let Some(newest) = self.generations.last() else {
            return false;
        };
        let mut changed = false;
        if newest.since_ms <= cutoff_ms {
            self.start(now_ms);
            changed = true;
        }
        // A generation's keys all came before the next one started.
        let expired = self
            .generations
            .windows(2)
            .take_while(|w| w[1].since_ms <= cutoff_ms)
            .count();
        if expired > 0 {
            self.generations.drain(..expired);
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::dedup::dedup_hash;

    fn keys(prefix: &str, n: usize) -> Vec<DedupHash> {
        (0..n)
            .map(|i| dedup_hash("web", &format!("{prefix}{i}")))
            .collect()
    }

    #[test]
    fn inserted_keys_are_always_found_and_few_others_are() {
        let mut f = SeenFilter::new(2 * 128 * 1024, 0);
        let inserted = keys("in", 100_000);
        for &k in &inserted {
            f.insert(k, 0);
        }
        assert!(inserted.iter().all(|&k| f.may_contain(k)));
        // 128 KiB for 100 000 keys is about 10 bits a key: about 1% false.
        let false_hits = keys("out", 100_000)
            .into_iter()
            .filter(|&k| f.may_contain(k))
            .count();
        assert!(
            false_hits < 2_500,
            "{false_hits} of 100 000 unseen keys hit"
        );
    }

    #[test]
    fn a_generation_is_kept_until_its_keys_are_older_than_the_window() {
        let mut f = SeenFilter::new(64 * 1024, 1_000);
        let old = dedup_hash("web", "old");
        f.insert(old, 1_000);
        // The current generation started at 1 000: not before the cutoff.
        assert!(!f.rotate(999, 2_000));
        assert!(f.rotate(1_000, 2_000));
        let new = dedup_hash("web", "new");
        f.insert(new, 2_000);
        assert!(f.may_contain(old) && f.may_contain(new));
        assert!(!f.rotate(1_999, 3_000));
        // Everything `old`'s generation held is past the window now.
        assert!(f.rotate(2_000, 3_000));
        assert!(!f.may_contain(old));
        assert!(f.may_contain(new));
    }

    #[test]
    fn a_full_generation_starts_another_within_the_budget_and_each_expires_alone() {
        // Two generations of 32 KiB, about 26 000 keys each at 10 bits a key.
        let mut f = SeenFilter::new(2 * 32 * 1024, 0);
        let (first, second, third) = (keys("a", 30_000), keys("b", 30_000), keys("c", 30_000));
        first.iter().for_each(|&k| f.insert(k, 100));
        assert_eq!(
            f.bytes(),
            2 * 32 * 1024,
            "a second generation started at 100"
        );
        second.iter().for_each(|&k| f.insert(k, 200));
        third.iter().for_each(|&k| f.insert(k, 300));
        assert_eq!(f.bytes(), 2 * 32 * 1024, "the budget holds");
        let all = || first.iter().chain(&second).chain(&third);
        assert!(
            all().all(|&k| f.may_contain(k)),
            "over its load, still no key missed"
        );
        // The first generation's keys all came before 100: past a cutoff of
        // 100 it goes (and a new one starts, the newest being that old).
        assert!(f.rotate(100, 400));
        assert_eq!(f.bytes(), 2 * 32 * 1024);
        assert!(all().skip(26_300).all(|&k| f.may_contain(k)));
        let lost = first.iter().filter(|&&k| !f.may_contain(k)).count();
        assert!(lost > 15_000, "the first generation went ({lost} missed)");
    }

    #[test]
    fn a_filter_of_no_bytes_sends_every_key_to_the_lookup() {
        let mut f = SeenFilter::new(0, 0);
        f.insert(dedup_hash("web", "a"), 0);
        assert!(f.may_contain(dedup_hash("web", "b")));
        assert!(!f.rotate(i64::MAX, 0));
    }
}
