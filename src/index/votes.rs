//! Candidate images for the local-feature check, by descriptor votes.
//!
//! A global hash says nothing useful about a crop, a screenshot or a collage: the source
//! is no nearer than any other photo. Their local features still share descriptors with
//! the source's, so each stored feature is filed under [`TABLES`] keys of [`KEY_BITS`]
//! bits, one from each 64-bit word of its 256-bit descriptor (locality-sensitive hashing
//! by bit sampling). A query feature votes for every entry filed under one of its keys;
//! entries with the most votes are the candidates that `features::verify` then checks.
//!
//! Two descriptors of the same corner, about 30 bits apart after an edit, share a given
//! 20-bit key with probability (1 - 30/256)^20 ≈ 8%: a copy that keeps 100 of the
//! source's corners collects ~30 votes over 4 tables, while any other entry collects
//! about `query features × TABLES × stored features / 2^KEY_BITS` ≈ 0.5 by chance,
//! whatever the size of the index.
//!
//! Memory: 4 bytes per stored feature per table (16 bytes per feature, ~4 KiB per entry
//! at 256 features) plus the map's overhead. Built in memory from the catalog when first
//! needed.

use std::collections::HashMap;

use super::EntryId;
use crate::features::Feature;

/// Keys per descriptor, one from each 64-bit word.
pub const TABLES: usize = 4;
/// Bits per key.
pub const KEY_BITS: u32 = 20;

/// Entries filed by descriptor keys.
#[derive(Default)]
pub struct Votes {
    tables: [HashMap<u32, Vec<EntryId>>; TABLES],
    entries: usize,
    features: usize,
}

fn key(desc: &[u64; 4], table: usize) -> u32 {
    (desc[table] & ((1 << KEY_BITS) - 1)) as u32
}

impl Votes {
    /// File the features of one entry.
    pub fn add(&mut self, entry: EntryId, features: &[Feature]) {
        for (t, table) in self.tables.iter_mut().enumerate() {
            for f in features {
                let bucket = table.entry(key(&f.desc, t)).or_default();
                // One vote per entry per key, however many of its features share it.
                if bucket.last() != Some(&entry) {
                    bucket.push(entry);
                }
            }
        }
        self.entries += 1;
        self.features += features.len();
    }

    /// Entries filed so far.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Features filed so far.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Up to `limit` entries with at least `min_votes` votes from `query`, most votes
    /// first (then lower id). Each query feature votes at most once per entry per table.
    pub fn candidates(&self, query: &[Feature], min_votes: u32, limit: usize) -> Vec<(EntryId, u32)> {
        let mut counts: HashMap<EntryId, u32> = HashMap::new();
        for (t, table) in self.tables.iter().enumerate() {
            for f in query {
                if let Some(bucket) = table.get(&key(&f.desc, t)) {
                    for &entry in bucket {
                        *counts.entry(entry).or_default() += 1;
                    }
                }
            }
        }
        let mut ranked: Vec<(EntryId, u32)> = counts.into_iter().filter(|&(_, v)| v >= min_votes).collect();
        ranked.sort_unstable_by_key(|&(id, v)| (std::cmp::Reverse(v), id));
        ranked.truncate(limit);
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(desc: [u64; 4]) -> Feature {
        Feature { x: 0, y: 0, level: 0, angle: 0, desc }
    }

    fn random_features(seed: u64, n: usize) -> Vec<Feature> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..n).map(|_| feature([next(), next(), next(), next()])).collect()
    }

    #[test]
    fn the_source_of_perturbed_features_gets_the_votes() {
        let mut votes = Votes::default();
        for id in 1..=200 {
            votes.add(id, &random_features(id, 256));
        }
        // A query sharing 80 of entry 77's features, each with 24 random bits flipped,
        // plus 176 unrelated features.
        let noise = random_features(999, 80);
        let mut query: Vec<Feature> = random_features(77, 80)
            .into_iter()
            .zip(&noise)
            .map(|(mut f, noise)| {
                for w in 0..4 {
                    // Flip 6 bits per word, at positions taken from the noise (24 or fewer in all).
                    for k in 0..6 {
                        f.desc[w] ^= 1 << ((noise.desc[w] >> (k * 6)) & 63);
                    }
                }
                f
            })
            .collect();
        query.extend(random_features(5000, 176));
        let found = votes.candidates(&query, 3, 5);
        assert_eq!(found.first().map(|c| c.0), Some(77), "{found:?}");
        // Nobody else reaches the source's count.
        assert!(found.iter().skip(1).all(|c| c.1 * 3 < found[0].1), "{found:?}");
    }

    #[test]
    fn unrelated_queries_find_nothing_above_the_floor() {
        let mut votes = Votes::default();
        for id in 1..=500 {
            votes.add(id, &random_features(id, 256));
        }
        let found = votes.candidates(&random_features(12345, 512), 4, 10);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(votes.entries(), 500);
        assert_eq!(votes.features(), 500 * 256);
    }
}
