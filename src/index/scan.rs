//! Exact XOR+popcount kernels over packed 256-bit codes.
//!
//! Every kernel checks all query codes (typically the 8 PDQ orientations of one image)
//! against each stored code in one pass, so the codes stream through memory once per
//! query image rather than once per orientation.
//!
//! Codes are taken in blocks of [`BLOCK`]. A block kernel marks, in a bitmask, the codes
//! that are within a threshold of some query; only those are looked at again (exactly,
//! with [`best_of`]). With AVX-512 VPOPCNTDQ (detected at run time) the block kernel
//! compares one code with 8 query codes in one 512-bit register (for a single query code:
//! two stored codes per register); elsewhere a portable loop does the same work.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::hash::Hash256;

#[cfg(not(target_endian = "little"))]
compile_error!("the on-disk code layout is little-endian; big-endian targets are not supported");

/// View a byte slice of packed little-endian codes as `[u64; 4]` words.
///
/// Panics if the slice is not 8-byte aligned or not a whole number of codes; the
/// record files guarantee both (page-aligned map, 32-byte records).
pub fn as_codes(bytes: &[u8]) -> &[[u64; 4]] {
    // SAFETY: `[u64; 4]` has no invalid bit patterns; `align_to` only yields the middle
    // part at a correct alignment, and we check that nothing was left over on either side.
    let (head, codes, tail) = unsafe { bytes.align_to::<[u64; 4]>() };
    assert!(head.is_empty() && tail.is_empty(), "code bytes misaligned or not a multiple of 32");
    codes
}

#[inline(always)]
fn distance(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    (a[0] ^ b[0]).count_ones() + (a[1] ^ b[1]).count_ones() + (a[2] ^ b[2]).count_ones() + (a[3] ^ b[3]).count_ones()
}

/// Smallest distance from `code` to any of `queries`, and the index of that query (the
/// first one on ties). `(u32::MAX, 0)` without queries.
#[inline(always)]
pub fn best_of(code: &[u64; 4], queries: &[Hash256]) -> (u32, u8) {
    // Distance in the high half, query index in the low half: the minimum is the
    // smallest distance, then the first query. No data-dependent branches.
    let mut best = u64::MAX;
    for (qi, q) in queries.iter().enumerate() {
        best = best.min(u64::from(distance(code, &q.0)) << 32 | qi as u64);
    }
    if best == u64::MAX {
        return (u32::MAX, 0);
    }
    ((best >> 32) as u32, best as u8)
}

/// A code within range: its position, distance and which query matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScanHit {
    pub distance: u32,
    pub record: u32,
    pub query: u8,
}

/// Codes per block kernel call.
const BLOCK: usize = 256;
/// One bit per code of a block.
type Marks = [u64; BLOCK / 64];

/// Queries prepared for the block kernels.
struct Prepared<'a> {
    queries: &'a [Hash256],
    #[cfg(target_arch = "x86_64")]
    avx512: Option<avx512::Queries>,
}

impl<'a> Prepared<'a> {
    fn new(queries: &'a [Hash256]) -> Self {
        Prepared {
            queries,
            #[cfg(target_arch = "x86_64")]
            avx512: avx512::Queries::new(queries),
        }
    }

    /// Without the SIMD kernels (to test the portable loop on any machine).
    #[cfg(test)]
    fn portable(queries: &'a [Hash256]) -> Self {
        Prepared {
            queries,
            #[cfg(target_arch = "x86_64")]
            avx512: None,
        }
    }

    /// Set bit `i` of `marks` (and clear the others) when `codes[i]` is within `threshold`
    /// of some query. `codes` holds at most [`BLOCK`] codes.
    #[inline]
    fn mark(&self, codes: &[[u64; 4]], threshold: u32, marks: &mut Marks) {
        debug_assert!(codes.len() <= BLOCK);
        *marks = [0; BLOCK / 64];
        #[cfg(target_arch = "x86_64")]
        if let Some(q) = &self.avx512 {
            return q.mark(codes, threshold, marks);
        }
        for (i, c) in codes.iter().enumerate() {
            let min = self.queries.iter().map(|q| distance(c, &q.0)).min().unwrap_or(u32::MAX);
            marks[i / 64] |= u64::from(min <= threshold) << (i % 64);
        }
    }
}

/// Call `f` with the index of every set bit, in increasing order.
#[inline(always)]
fn for_each_mark(marks: &Marks, mut f: impl FnMut(usize)) {
    for (w, &word) in marks.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            f(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
}

/// Every code in `codes` within `radius` of any query; `first_record` is the record
/// number of `codes[0]`.
pub fn scan_radius(codes: &[[u64; 4]], first_record: u32, queries: &[Hash256], radius: u32, out: &mut Vec<ScanHit>) {
    radius_with(&Prepared::new(queries), codes, first_record, radius, out)
}

fn radius_with(prepared: &Prepared<'_>, codes: &[[u64; 4]], first_record: u32, radius: u32, out: &mut Vec<ScanHit>) {
    let queries = prepared.queries;
    if queries.is_empty() {
        return;
    }
    let mut marks = [0u64; BLOCK / 64];
    for (b, block) in codes.chunks(BLOCK).enumerate() {
        prepared.mark(block, radius, &mut marks);
        for_each_mark(&marks, |i| {
            let (d, qi) = best_of(&block[i], queries);
            if d <= radius {
                out.push(ScanHit { distance: d, record: first_record + (b * BLOCK + i) as u32, query: qi });
            }
        });
    }
}

/// The `k` codes nearest to any query (ties broken by record number), accepting only
/// records for which `keep` is true.
pub fn scan_nearest(
    codes: &[[u64; 4]],
    first_record: u32,
    queries: &[Hash256],
    k: usize,
    keep: &dyn Fn(u32) -> bool,
    heap: &mut BinaryHeap<ScanHit>,
) {
    nearest_with(&Prepared::new(queries), codes, first_record, k, keep, heap)
}

fn nearest_with(
    prepared: &Prepared<'_>,
    codes: &[[u64; 4]],
    first_record: u32,
    k: usize,
    keep: &dyn Fn(u32) -> bool,
    heap: &mut BinaryHeap<ScanHit>,
) {
    let queries = prepared.queries;
    if k == 0 {
        return;
    }
    let offer = |heap: &mut BinaryHeap<ScanHit>, i: usize, code: &[u64; 4]| {
        let (d, qi) = best_of(code, queries);
        if heap.len() == k && d >= heap.peek().map_or(u32::MAX, |h| h.distance) {
            return;
        }
        let record = first_record + i as u32;
        if !keep(record) {
            return;
        }
        heap.push(ScanHit { distance: d, record, query: qi });
        if heap.len() > k {
            heap.pop();
        }
    };
    if queries.is_empty() {
        for (i, code) in codes.iter().enumerate() {
            offer(heap, i, code);
        }
        return;
    }
    let mut marks = [0u64; BLOCK / 64];
    for (b, block) in codes.chunks(BLOCK).enumerate() {
        // Only a code nearer than the current k-th can enter (a tie loses: its record
        // number is higher); the threshold can only fall within the block, so codes
        // marked with this one are a superset, checked again exactly by `offer`.
        let threshold = match heap.peek() {
            _ if heap.len() < k => u32::MAX,
            Some(worst) if worst.distance > 0 => worst.distance - 1,
            _ => return,
        };
        prepared.mark(block, threshold, &mut marks);
        for_each_mark(&marks, |i| offer(heap, b * BLOCK + i, &block[i]));
    }
}

/// Drain a nearest-heap into ascending order.
pub fn into_sorted(heap: BinaryHeap<ScanHit>) -> Vec<ScanHit> {
    let mut v: Vec<ScanHit> = heap.into_iter().map(Reverse).map(|Reverse(h)| h).collect();
    v.sort();
    v
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Marks, BLOCK};
    use crate::hash::Hash256;

    /// Query codes laid out for the AVX-512 kernels.
    pub enum Queries {
        /// One query code, twice (two stored codes per register).
        One([u64; 8]),
        /// Groups of 8 query codes: `[word][lane]`, unused lanes repeating the group's first.
        Groups(Vec<[[u64; 8]; 4]>),
    }

    impl Queries {
        /// `None` when the CPU lacks AVX-512 VPOPCNTDQ (or there are no queries).
        pub fn new(queries: &[Hash256]) -> Option<Queries> {
            if queries.is_empty()
                || !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vpopcntdq"))
            {
                return None;
            }
            if let [q] = queries {
                let w = q.0;
                return Some(Queries::One([w[0], w[1], w[2], w[3], w[0], w[1], w[2], w[3]]));
            }
            let groups = queries
                .chunks(8)
                .map(|group| {
                    std::array::from_fn(|word| std::array::from_fn(|lane| group.get(lane).unwrap_or(&group[0]).0[word]))
                })
                .collect();
            Some(Queries::Groups(groups))
        }

        #[inline]
        pub fn mark(&self, codes: &[[u64; 4]], threshold: u32, marks: &mut Marks) {
            // A threshold over 256 marks everything; clamp so it fits the compare.
            let threshold = threshold.min(256);
            // SAFETY: `new` returned `Some` only after detecting both features.
            unsafe {
                match self {
                    Queries::One(q) => mark_one(codes, q, threshold, marks),
                    Queries::Groups(groups) => match groups.as_slice() {
                        [g] => mark_group(codes, g, threshold, marks),
                        many => mark_groups(codes, many, threshold, marks),
                    },
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load(words: &[u64; 8]) -> __m512i {
        // SAFETY: reads 64 bytes from a 64-byte array; unaligned loads are allowed.
        unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
    }

    /// Distances from `code` to the 8 query codes of a group, one per 64-bit lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    fn distances8(code: &[u64; 4], q: &[__m512i; 4]) -> __m512i {
        let word = |w: usize| _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_set1_epi64(code[w] as i64), q[w]));
        _mm512_add_epi64(_mm512_add_epi64(word(0), word(1)), _mm512_add_epi64(word(2), word(3)))
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    fn mark_group(codes: &[[u64; 4]], group: &[[u64; 8]; 4], threshold: u32, marks: &mut Marks) {
        let q = [load(&group[0]), load(&group[1]), load(&group[2]), load(&group[3])];
        let t = _mm512_set1_epi64(i64::from(threshold));
        for (i, code) in codes.iter().enumerate() {
            let m = _mm512_cmple_epu64_mask(distances8(code, &q), t);
            marks[i / 64] |= u64::from(m != 0) << (i % 64);
        }
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    fn mark_groups(codes: &[[u64; 4]], groups: &[[[u64; 8]; 4]], threshold: u32, marks: &mut Marks) {
        let t = _mm512_set1_epi64(i64::from(threshold));
        for group in groups {
            let q = [load(&group[0]), load(&group[1]), load(&group[2]), load(&group[3])];
            for (i, code) in codes.iter().enumerate() {
                let m = _mm512_cmple_epu64_mask(distances8(code, &q), t);
                marks[i / 64] |= u64::from(m != 0) << (i % 64);
            }
        }
    }

    /// One query code against two stored codes per register: popcount the 8 words, then
    /// sum each code's 4 lanes with two in-register swaps.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    fn mark_one(codes: &[[u64; 4]], q: &[u64; 8], threshold: u32, marks: &mut Marks) {
        debug_assert!(codes.len() <= BLOCK);
        let qq = load(q);
        let t = _mm512_set1_epi64(i64::from(threshold));
        let pairs = codes.len() / 2;
        let base: *const __m512i = codes.as_ptr().cast();
        for p in 0..pairs {
            // SAFETY: codes 2p and 2p + 1 are in bounds: 64 contiguous bytes.
            let x = _mm512_xor_si512(unsafe { _mm512_loadu_si512(base.add(p).cast()) }, qq);
            let c = _mm512_popcnt_epi64(x);
            let s = _mm512_add_epi64(c, _mm512_shuffle_epi32::<_MM_PERM_BADC>(c));
            let s = _mm512_add_epi64(s, _mm512_permutex_epi64::<0x4E>(s));
            // Every lane of a code now holds its distance: lane 0 for code 2p, lane 4 for 2p + 1.
            let m = u64::from(_mm512_cmple_epu64_mask(s, t));
            let i = 2 * p;
            marks[i / 64] |= ((m & 1) | (m >> 3 & 2)) << (i % 64);
        }
        if codes.len() % 2 == 1 {
            let i = codes.len() - 1;
            let d = super::distance(&codes[i], &[q[0], q[1], q[2], q[3]]);
            marks[i / 64] |= u64::from(d <= threshold) << (i % 64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(n: usize, seed: u64) -> Vec<[u64; 4]> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut next = move || rng.random::<u64>();
        (0..n).map(|_| [next(), next(), next(), next()]).collect()
    }

    fn plain_radius(codes: &[[u64; 4]], queries: &[Hash256], radius: u32) -> Vec<ScanHit> {
        let mut out = Vec::new();
        for (i, c) in codes.iter().enumerate() {
            let (mut d, mut q) = (u32::MAX, 0u8);
            for (qi, x) in queries.iter().enumerate() {
                let e = distance(c, &x.0);
                if e < d {
                    (d, q) = (e, qi as u8);
                }
            }
            if d <= radius {
                out.push(ScanHit { distance: d, record: 7 + i as u32, query: q });
            }
        }
        out
    }

    /// Every kernel (one query, one group, several groups) against a plain loop, at
    /// sizes that are not multiples of the block, with codes planted near the queries.
    #[test]
    fn kernels_match_a_plain_loop() {
        let mut data = codes(1000, 1);
        let qs: Vec<Hash256> = codes(20, 2).into_iter().map(Hash256).collect();
        for (i, d) in data.iter_mut().enumerate().step_by(7) {
            let q = qs[i % qs.len()].0;
            let flips = (i % 60) as u32;
            *d = q;
            for b in 0..flips {
                let bit = (b * 37 + i as u32) % 256;
                d[bit as usize / 64] ^= 1 << (bit % 64);
            }
        }
        for (nq, portable) in [0, 1, 2, 8, 9, 20].into_iter().flat_map(|nq| [(nq, false), (nq, true)]) {
            let prepared = if portable { Prepared::portable(&qs[..nq]) } else { Prepared::new(&qs[..nq]) };
            for n in [0, 1, 255, 256, 257, 999, 1000] {
                for radius in [0, 15, 31, 45, 300] {
                    let mut got = Vec::new();
                    radius_with(&prepared, &data[..n], 7, radius, &mut got);
                    assert_eq!(got, plain_radius(&data[..n], &qs[..nq], radius), "nq {nq} n {n} r {radius}");
                }
                for k in [1, 5, 50] {
                    let mut heap = BinaryHeap::new();
                    nearest_with(&prepared, &data[..n], 7, k, &|r| r % 3 != 0, &mut heap);
                    let mut want: Vec<ScanHit> = plain_radius(&data[..n], &qs[..nq], u32::MAX)
                        .into_iter()
                        .filter(|h| h.record % 3 != 0)
                        .collect();
                    want.sort();
                    want.truncate(k);
                    if nq == 0 {
                        want = (0..n as u32)
                            .map(|i| 7 + i)
                            .filter(|r| r % 3 != 0)
                            .take(k)
                            .map(|record| ScanHit { distance: u32::MAX, record, query: 0 })
                            .collect();
                    }
                    assert_eq!(into_sorted(heap), want, "nearest nq {nq} n {n} k {k}");
                }
            }
        }
    }

    /// The portable block kernel and the runtime-detected one (AVX-512 where the CPU has
    /// it) mark exactly the codes whose scalar `best_of` distance is within the threshold,
    /// on random codes and on codes near the queries, for every query count up to 17.
    #[test]
    fn block_kernels_agree_with_best_of_on_random_data() {
        let mut data = codes(4 * BLOCK + 37, 11);
        let qs: Vec<Hash256> = codes(17, 12).into_iter().map(Hash256).collect();
        for (i, d) in data.iter_mut().enumerate().step_by(3) {
            *d = qs[i % qs.len()].0;
            for b in 0..(i as u32 % 140) {
                let bit = (b * 53 + 3 * i as u32) % 256;
                d[bit as usize / 64] ^= 1 << (bit % 64);
            }
        }
        for nq in 1..=qs.len() {
            for prepared in [Prepared::portable(&qs[..nq]), Prepared::new(&qs[..nq])] {
                let mut marks = [0u64; BLOCK / 64];
                for block in data.chunks(BLOCK) {
                    for threshold in [0, 31, 64, 100, 128, 256, u32::MAX] {
                        prepared.mark(block, threshold, &mut marks);
                        for (i, c) in block.iter().enumerate() {
                            let want = best_of(c, &qs[..nq]).0 <= threshold;
                            assert_eq!(marks[i / 64] >> (i % 64) & 1 == 1, want, "nq {nq} t {threshold} i {i}");
                        }
                        for i in block.len()..BLOCK {
                            assert_eq!(marks[i / 64] >> (i % 64) & 1, 0, "mark past the block's end");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn best_of_prefers_the_first_query_on_ties() {
        let c = [1u64, 2, 3, 4];
        let qs = [Hash256([0, 2, 3, 4]), Hash256([1, 2, 3, 5]), Hash256(c)];
        assert_eq!(best_of(&c, &qs), (0, 2));
        assert_eq!(best_of(&c, &qs[..2]), (1, 0));
        assert_eq!(best_of(&c, &[]), (u32::MAX, 0));
    }
}
