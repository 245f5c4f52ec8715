//! The suite's short smoke run of every fuzz target (issue 13 point 10).
//!
//! `cargo xtask fuzz` runs the targets under libFuzzer with coverage
//! guidance; that needs a second, instrumented build of every crate (about
//! 17 minutes on 2 cores), too much for each test run. This smoke run uses
//! the ordinary build instead: each target gets its seeds and a fixed number
//! of inputs mutated from them (bit flips, byte replacements, truncations,
//! insertions, splices between seeds) by a seeded generator, so a target that
//! panics on an input near its seeds fails here first. It is not
//! coverage-guided; the bounded `cargo xtask fuzz` run is.

#[path = "../src/targets/mod.rs"]
mod targets;

use std::path::Path;

/// Mutated inputs per target.
const MUTATIONS: usize = 20_000;

/// A small xorshift generator: the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the parsers: separators, quotes, digits, base64url.
const INTERESTING: &[u8] = b",;=\"'[]:.-_ 0123456789ABCDEFabcdef\x00\xff\n/";

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => data.truncate(rng.below(data.len() + 1)),
            3 => {
                let i = rng.below(data.len() + 1);
                let b = INTERESTING[rng.below(INTERESTING.len())];
                data.insert(i, b);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(data.len() + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                // Repeat a slice: long inputs and deep nesting.
                if !data.is_empty() {
                    let a = rng.below(data.len());
                    let b = (a + 1 + rng.below(16)).min(data.len());
                    let piece = data[a..b].to_vec();
                    for _ in 0..rng.below(64) {
                        data.extend_from_slice(&piece);
                    }
                }
            }
        }
    }
    data
}

fn seeds(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(name);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|f| std::fs::read(f.path()).expect("a seed file"))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
    seeds.push(Vec::new());
    seeds
}

#[test]
fn every_target_survives_its_seeds_and_their_mutations() {
    for (name, run) in targets::ALL {
        let seeds = seeds(name);
        for seed in &seeds {
            run(seed);
        }
        let mut rng = Rng(0x5741_594d_4152_4b00 ^ name.len() as u64);
        for _ in 0..MUTATIONS {
            run(&mutate(&mut rng, &seeds));
        }
    }
}
