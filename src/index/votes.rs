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
use std::hash::{BuildHasherDefault, Hasher};

use super::EntryId;
use crate::features::Feature;

/// Keys per descriptor, one from each 64-bit word.
pub const TABLES: usize = 4;
/// Bits per key.
pub const KEY_BITS: u32 = 20;

/// Hasher for the tables' keys, which are already bits of a descriptor: one multiply
/// spreads them over the map's bits, where SipHash cost more than the rest of a lookup.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        let h = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

/// Entries filed by descriptor keys. Buckets hold slots (the order entries were first
/// filed in), so that a query counts votes in a plain array rather than a map: common
/// keys (flat or striped patches) are filed under most entries, and a query's features
/// cast tens of thousands of votes.
#[derive(Default)]
pub struct Votes {
    tables: [HashMap<u32, Vec<u32>, BuildHasherDefault<KeyHasher>>; TABLES],
    /// Entry of each slot.
    ids: Vec<EntryId>,
    /// Slot of each entry.
    slots: HashMap<EntryId, u32>,
    entries: usize,
    features: usize,
}

fn key(desc: &[u64; 4], table: usize) -> u32 {
    (desc[table] & ((1 << KEY_BITS) - 1)) as u32
}

impl Votes {
    /// File the features of one entry.
    pub fn add(&mut self, entry: EntryId, features: &[Feature]) {
        let next = u32::try_from(self.ids.len()).expect("fewer than 2^32 entries");
        let slot = *self.slots.entry(entry).or_insert(next);
        if slot == next {
            self.ids.push(entry);
        }
        for (t, table) in self.tables.iter_mut().enumerate() {
            for f in features {
                let bucket = table.entry(key(&f.desc, t)).or_default();
                // One vote per entry per key, however many of its features share it.
                if bucket.last() != Some(&slot) {
                    bucket.push(slot);
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
        let mut counts = vec![0u32; self.ids.len()];
        for (t, table) in self.tables.iter().enumerate() {
            for f in query {
                if let Some(bucket) = table.get(&key(&f.desc, t)) {
                    for &slot in bucket {
                        counts[slot as usize] += 1;
                    }
                }
            }
        }
        let floor = min_votes.max(1);
        let mut ranked: Vec<(EntryId, u32)> =
            counts.iter().zip(&self.ids).filter(|&(&v, _)| v >= floor).map(|(&v, &id)| (id, v)).collect();
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
    fn counts_agree_with_a_plain_map_of_votes() {
        // Entries filed out of id order, one of them twice, and keys shared by many
        // entries (only 6 low bits vary), as flat patches are in real images.
        let shared = |seed: u64, n: usize| -> Vec<Feature> {
            random_features(seed, n).into_iter().map(|f| feature(f.desc.map(|w| w & !0xF_FFC0))).collect()
        };
        let mut votes = Votes::default();
        let mut filed: Vec<(EntryId, Vec<Feature>)> = Vec::new();
        for id in (1..=60u64).rev().chain([17]) {
            let fs = shared(id, 40);
            votes.add(id, &fs);
            filed.push((id, fs));
        }
        let query = shared(4242, 30);
        for min_votes in [0, 1, 5, 40] {
            let mut counts: HashMap<EntryId, u32> = HashMap::new();
            for t in 0..TABLES {
                for q in &query {
                    // Each filing of an entry under a key is one vote, as `add` files them.
                    let mut under: Vec<EntryId> = Vec::new();
                    for (id, fs) in &filed {
                        for f in fs {
                            if key(&f.desc, t) == key(&q.desc, t) && under.last() != Some(id) {
                                under.push(*id);
                            }
                        }
                    }
                    for id in under {
                        *counts.entry(id).or_default() += 1;
                    }
                }
            }
            let mut expected: Vec<(EntryId, u32)> = counts.into_iter().filter(|&(_, v)| v >= min_votes).collect();
            expected.sort_unstable_by_key(|&(id, v)| (std::cmp::Reverse(v), id));
            expected.truncate(25);
            assert!(!expected.is_empty());
            assert_eq!(votes.candidates(&query, min_votes, 25), expected, "min_votes {min_votes}");
        }
        assert_eq!(votes.entries(), 61);
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
