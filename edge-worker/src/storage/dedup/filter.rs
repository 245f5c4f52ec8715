//! A Bloom filter of the keys dedup has seen, so a key seen for the first
//! time (nearly every event) skips the lookup in `dedup_keys`.
//!
//! # Design
//! A split-block Bloom filter, the layout Parquet specifies: 256-bit
//! blocks of eight 32-bit words, and a key sets one bit in each word of
//! one block, so a lookup touches one cache line. Keys are already uniform
//! hashes ([`DedupHash`]): the high 64 bits pick the block, the low 32 bits
//! the bits. At 10 bits a key about 1% of new keys still look.
//!
//! Keys are never removed from a Bloom filter, so two generations keep the
//! memory fixed: the current one takes every admitted key; when it has run
//! longer than the dedup window, the previous one (all of whose keys are
//! older than the window) is dropped and the current one takes its place.
//! A key in `dedup_keys` is always in one of them, so the filter only
//! answers "maybe" or "certainly not"; a "maybe" is looked up as before.

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

/// The two generations ([module docs](self)).
pub(crate) struct SeenFilter {
    /// Bytes of one generation; `0` turns the filter off (every key looks).
    bytes: usize,
    current: Option<BlockFilter>,
    /// When the current generation started taking keys.
    current_since_ms: i64,
    previous: Option<BlockFilter>,
}

impl SeenFilter {
    /// A filter of `total_bytes` in all (two generations), empty, whose
    /// current generation starts at `now_ms`.
    pub(crate) fn new(total_bytes: usize, now_ms: i64) -> SeenFilter {
        let bytes = total_bytes / 2;
        SeenFilter {
            bytes,
            current: (bytes > 0).then(|| BlockFilter::new(bytes)),
            current_since_ms: now_ms,
            previous: None,
        }
    }

    pub(crate) fn insert(&mut self, key: DedupHash) {
        if let Some(f) = &mut self.current {
            f.insert(key);
        }
    }

    /// `false` only for a key never inserted since the last rotation but one.
    pub(crate) fn may_contain(&self, key: DedupHash) -> bool {
        let Some(current) = &self.current else {
            return true;
        };
        current.may_contain(key) || self.previous.as_ref().is_some_and(|p| p.may_contain(key))
    }

    /// Drops the previous generation once every key in it was first seen
    /// before `cutoff_ms` (the oldest time dedup still remembers); the
    /// current one becomes the previous, and a new one starts at `now_ms`.
    pub(crate) fn rotate(&mut self, cutoff_ms: i64, now_ms: i64) -> bool {
        if self.current.is_none() || self.current_since_ms > cutoff_ms {
            return false;
        }
        // The old previous is freed before the new one is made: two at most.
        self.previous = self.current.take();
        self.current = Some(BlockFilter::new(self.bytes));
        self.current_since_ms = now_ms;
        true
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
            f.insert(k);
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
        f.insert(old);
        // The current generation started at 1 000: not before the cutoff.
        assert!(!f.rotate(999, 2_000));
        assert!(f.rotate(1_000, 2_000));
        let new = dedup_hash("web", "new");
        f.insert(new);
        assert!(f.may_contain(old) && f.may_contain(new));
        assert!(!f.rotate(1_999, 3_000));
        // Everything `old`'s generation held is past the window now.
        assert!(f.rotate(2_000, 3_000));
        assert!(!f.may_contain(old));
        assert!(f.may_contain(new));
    }

    #[test]
    fn a_filter_of_no_bytes_sends_every_key_to_the_lookup() {
        let mut f = SeenFilter::new(0, 0);
        f.insert(dedup_hash("web", "a"));
        assert!(f.may_contain(dedup_hash("web", "b")));
        assert!(!f.rotate(i64::MAX, 0));
    }
}
