//! Exact XOR+popcount kernels over packed 256-bit codes.
//!
//! Every kernel checks all query codes (typically the 8 PDQ orientations of one image)
//! against each stored code in one pass, so the codes stream through memory once per
//! query image rather than once per orientation.

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

/// Smallest distance from `code` to any of `queries`, and the index of that query.
#[inline(always)]
pub fn best_of(code: &[u64; 4], queries: &[Hash256]) -> (u32, u8) {
    let mut best = (u32::MAX, 0u8);
    for (qi, q) in queries.iter().enumerate() {
        let d = distance(code, &q.0);
        if d < best.0 {
            best = (d, qi as u8);
        }
    }
    best
}

/// A code within range: its position, distance and which query matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScanHit {
    pub distance: u32,
    pub record: u32,
    pub query: u8,
}

/// Every code in `codes` within `radius` of any query; `first_record` is the record
/// number of `codes[0]`.
pub fn scan_radius(codes: &[[u64; 4]], first_record: u32, queries: &[Hash256], radius: u32, out: &mut Vec<ScanHit>) {
    for (i, code) in codes.iter().enumerate() {
        let (d, qi) = best_of(code, queries);
        if d <= radius {
            out.push(ScanHit { distance: d, record: first_record + i as u32, query: qi });
        }
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
    if k == 0 {
        return;
    }
    for (i, code) in codes.iter().enumerate() {
        let (d, qi) = best_of(code, queries);
        if heap.len() == k && d >= heap.peek().map_or(u32::MAX, |h| h.distance) {
            continue;
        }
        let record = first_record + i as u32;
        if !keep(record) {
            continue;
        }
        heap.push(ScanHit { distance: d, record, query: qi });
        if heap.len() > k {
            heap.pop();
        }
    }
}

/// Drain a nearest-heap into ascending order.
pub fn into_sorted(heap: BinaryHeap<ScanHit>) -> Vec<ScanHit> {
    let mut v: Vec<ScanHit> = heap.into_iter().map(Reverse).map(|Reverse(h)| h).collect();
    v.sort();
    v
}
