//! Exact multi-index hashing (Norouzi et al.) over the mapped codes.
//!
//! The 256 bits are split into `m` contiguous chunks; chunk `i` has `w_i` bits. For a
//! radius `r`, each chunk gets a probe depth `t_i` (−1: not probed) with
//! `Σ (t_i + 1) ≥ r + 1`. If two codes are within `r`, some chunk differs in at most `t_i`
//! bits — otherwise every chunk differs in `t_i + 1` or more and the total exceeds `r`
//! (the generalised pigeonhole principle). So for each probed chunk we look up every
//! `w_i`-bit value within `t_i` bits of the query's chunk and gather the records filed
//! under it; the caller verifies each candidate with a full XOR+popcount. Nothing within
//! `r` is missed. Depths are chosen per query radius, cheapest first.
//!
//! On disk each chunk's table is a sorted bucket array (CSR): `2^w + 1` offsets (`u32`),
//! then the bucket entries grouped by chunk value, memory-mapped. The file covers the
//! first `records` codes; codes appended later are scanned linearly until the next
//! rebuild. Two versions:
//!
//! - **Version 1**: 16 chunks of 16 bits; an entry is a record number (`u32`). Every
//!   record of a probed bucket is a candidate, so the caller fetches its code from the
//!   codes file — a random memory access per candidate, ~150 of them per bucket at 10M
//!   records. Still written below [`SKETCH_FROM_RECORDS`] records, byte for byte as before.
//! - **Version 2**: the chunk widths are listed in the header, and an entry is a record
//!   number plus a 96-bit *sketch*: three 32-bit words of the code that do not overlap the
//!   chunk. The sketch's distance to the query plus the probe's flipped bits is a lower
//!   bound of the full distance, so a bucket is filtered as it is read (sequentially):
//!   a random code passes at radius 31 with probability ~3·10⁻⁴ (0.3 at radius 45). The
//!   caller then only fetches the codes of near matches. Entries cost 16 bytes per
//!   record per chunk.
//!
//! [`Layout::for_records`] picks the chunk count from the number of records with a cost
//! model (bucket look-ups, bucket reads, entries filtered): 16 chunks of 16 bits up to a
//! few million records (about 15 entries per bucket at 1M), 11 chunks of 23–24 bits at
//! 10M. The same model chooses the probe depths per radius, and tells the caller when a
//! scan is cheaper (radius 45 at 1M: the sketches filter too little). The manifest's
//! `mih_chunks` (16) is the version-1 chunk count it has always recorded; a table file's
//! own header is what states its layout.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{io_err, sync_dir, IndexError};
use crate::hash::Hash256;

/// Chunk count of the version-1 layout (16 × 16 bits), which the manifest records.
pub const CHUNKS: usize = 16;
const MAGIC: [u8; 8] = *b"LKMIH\0\0\x01";
/// 16 chunks of 16 bits, record numbers only.
const VERSION_1: u32 = 1;
/// Chunk widths in the header; entries with sketches.
const VERSION_2: u32 = 2;
const HEADER_BYTES: usize = 4096;
/// Header bytes used. Both versions: magic, version, chunks, widest chunk, records, body
/// checksum (bytes 0–31) and their checksum (32–35), so a reader of version 1 only
/// reaches the version check and says the file is too new. Version 2 adds the entry size
/// (36–39), one width byte per chunk (40–71) and a checksum of bytes 36–71 (72–75).
const HEADER_USED: usize = 76;
const WIDTHS_AT: usize = 40;
const MAX_CHUNKS: usize = 32;
const MIN_WIDTH: u32 = 8;
const MAX_WIDTH: u32 = 28;
/// Bytes of a version-2 entry: record number and three sketch words.
const ENTRY_BYTES: u32 = 16;
/// From this many records on, tables are built in version 2 (with sketches). Below it
/// the version-1 tables are small (4 MiB of offsets, 64 bytes per record) and fast
/// enough: their buckets hold under one record each.
pub const SKETCH_FROM_RECORDS: u64 = 1 << 16;

/// How the 256 bits are cut into chunks, and what a bucket entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    widths: Vec<u32>,
    /// Entries carry a 96-bit sketch (version 2).
    sketch: bool,
}

/// Costs measured on the 2-core AVX-512 development machine (thread CPU time, 1M and
/// 10M random codes, 8 query codes), in nanoseconds: a bucket look-up (random access to
/// the offsets, many in flight), the first line of a non-empty bucket (random,
/// prefetched), one entry filtered by its sketch (read sequentially), one candidate the
/// caller verifies (a random access to the codes file, version 1), and one code of a
/// plain 8-query scan. Only their ratios matter: they choose the layout, the probe
/// depths, and between the tables and a scan.
const PROBE_NS: f64 = 20.0;
const BUCKET_NS: f64 = 20.0;
const ENTRY_NS: f64 = 3.5;
const VERIFY_NS: f64 = 150.0;
const SCAN_NS_PER_CODE: f64 = 2.0;

impl Layout {
    fn version_1() -> Layout {
        Layout { widths: vec![16; CHUNKS], sketch: false }
    }

    /// `m` chunks with sketches, as even as possible (the wider ones first).
    fn even(m: usize) -> Layout {
        let (w, wider) = (256 / m as u32, 256 % m as u32);
        Layout { widths: (0..m as u32).map(|i| w + u32::from(i < wider)).collect(), sketch: true }
    }

    /// The layout with the lowest expected cost of a radius-31 query for `records` codes
    /// (version 1 below [`SKETCH_FROM_RECORDS`]). Bucket arrays are kept within 4
    /// offsets per record.
    fn for_records(records: u64) -> Layout {
        if records < SKETCH_FROM_RECORDS {
            return Layout::version_1();
        }
        let mut best: Option<(f64, Layout)> = None;
        for m in (256 / MAX_WIDTH as usize + 1..=CHUNKS).rev() {
            let layout = Layout::even(m);
            if layout.widths.iter().any(|&w| w > MAX_WIDTH || (1u64 << w) > 4 * records) {
                continue;
            }
            let cost = layout.cost(&layout.plan(31, records), records, 31);
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, layout));
            }
        }
        best.map_or_else(|| Layout::even(CHUNKS), |(_, l)| l)
    }

    /// First bit of each chunk.
    fn starts(&self) -> Vec<u32> {
        self.widths.iter().scan(0, |s, &w| Some(std::mem::replace(s, *s + w))).collect()
    }

    fn entry_bytes(&self) -> u64 {
        if self.sketch {
            u64::from(ENTRY_BYTES)
        } else {
            4
        }
    }

    /// Bytes of one chunk's table for `records` codes.
    fn table_bytes(&self, width: u32, records: u64) -> u64 {
        ((1u64 << width) + 1) * 4 + records * self.entry_bytes()
    }

    /// Expected nanoseconds of one probe (look-up, bucket, its entries) at `width` bits
    /// for a query of `radius`: with sketches, the entries that pass the filter are
    /// candidates the caller verifies.
    fn probe_ns(&self, width: u32, records: u64, radius: u32) -> f64 {
        let per_bucket = records as f64 / (1u64 << width) as f64;
        let per_entry = if self.sketch { ENTRY_NS + sketch_pass_rate(radius) * VERIFY_NS } else { VERIFY_NS };
        PROBE_NS + BUCKET_NS * (1.0 - (-per_bucket).exp()) + per_entry * per_bucket
    }

    /// Expected nanoseconds of one query code of `radius` with these probe depths.
    fn cost(&self, depths: &[i32], records: u64, radius: u32) -> f64 {
        self.widths
            .iter()
            .zip(depths)
            .map(|(&w, &t)| values_within(w, t) as f64 * self.probe_ns(w, records, radius))
            .sum()
    }

    /// Probe depth of each chunk for `radius` over `records` codes: starting from no
    /// probes at all, add one to the depth whose next step costs least, until the depths
    /// plus one sum past the radius. The cost of a step grows with the depth (up to half
    /// the width), so this is optimal.
    fn plan(&self, radius: u32, records: u64) -> Vec<i32> {
        let mut depths = vec![-1i32; self.widths.len()];
        let mut covered = 0u32;
        while covered < radius.saturating_add(1) {
            let step = |i: usize| {
                let (w, t) = (self.widths[i], depths[i]);
                (t < w as i32).then(|| binomial(w, (t + 1) as u32) as f64 * self.probe_ns(w, records, radius))
            };
            let Some(i) = (0..depths.len())
                .filter_map(|i| step(i).map(|c| (c, i)))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, i)| i)
            else {
                break; // every chunk fully enumerated: all records are candidates
            };
            depths[i] += 1;
            covered += 1;
        }
        depths
    }
}

/// Share of unrelated codes (random bits) whose 96-bit sketch is within `radius` of the
/// query's: P(Binomial(96, ½) ≤ radius). About 3·10⁻⁴ at 31, 0.31 at 45.
fn sketch_pass_rate(radius: u32) -> f64 {
    let mut term = 0.5f64.powi(96); // C(96, 0) / 2^96
    let mut sum = 0.0;
    for k in 0..=radius.min(96) {
        sum += term;
        term *= f64::from(96 - k) / f64::from(k + 1);
    }
    sum.min(1.0)
}

fn binomial(n: u32, k: u32) -> u64 {
    if k > n {
        return 0;
    }
    (0..u64::from(k)).fold(1u64, |acc, i| acc * (u64::from(n) - i) / (i + 1))
}

/// Number of `w`-bit values within `t` bits of a given one: Σ C(w, i), i ≤ t.
fn values_within(w: u32, t: i32) -> u64 {
    (0..=t).map(|i| binomial(w, i as u32)).sum()
}

/// Every `w`-bit mask with at most `t` bits set, fewest bits first.
fn masks(w: u32, t: i32) -> Vec<u32> {
    let mut out = Vec::with_capacity(values_within(w, t) as usize);
    if t < 0 {
        return out;
    }
    out.push(0);
    for k in 1..=t.min(w as i32) as u32 {
        // Gosper's hack: the next larger value with the same number of set bits.
        let mut v: u64 = (1 << k) - 1;
        while v < 1 << w {
            out.push(v as u32);
            let c = v & v.wrapping_neg();
            let r = v + c;
            v = (((r ^ v) >> 2) / c) | r;
        }
    }
    out
}

/// The `width` bits of `code` from bit `start` (bit `k` is bit `k % 64` of word `k / 64`).
#[inline(always)]
fn chunk(code: &[u64; 4], start: u32, width: u32) -> u32 {
    let (word, shift) = ((start / 64) as usize, start % 64);
    let mut v = code[word] >> shift;
    if shift + width > 64 {
        v |= code[word + 1] << (64 - shift);
    }
    (v & ((1u64 << width) - 1)) as u32
}

/// 32-bit word `k` (0–7) of a code.
#[inline(always)]
fn word32(code: &[u64; 4], k: usize) -> u32 {
    (code[k / 2] >> (32 * (k % 2))) as u32
}

/// The sketch of a chunk: the three 32-bit words after the chunk's last word
/// (cyclically), which a chunk of at most 28 bits (two words) never overlaps.
#[inline(always)]
fn sketch(code: &[u64; 4], start: u32, width: u32) -> [u32; 3] {
    let last = ((start + width - 1) / 32) as usize;
    [word32(code, (last + 1) % 8), word32(code, (last + 2) % 8), word32(code, (last + 3) % 8)]
}

/// A mapped multi-index table file.
pub struct Mih {
    path: PathBuf,
    map: Mmap,
    records: u64,
    layout: Layout,
    /// Byte offset of each chunk's table in the map.
    table_at: Vec<usize>,
    starts: Vec<u32>,
}

impl Mih {
    /// Build the tables over `codes` and write them durably to `path` (via a temporary
    /// file renamed into place), in the layout [`Layout::for_records`] picks.
    pub fn build(path: &Path, codes: &[[u64; 4]]) -> Result<(), IndexError> {
        Self::build_with(path, codes, &Layout::for_records(codes.len() as u64))
    }

    fn build_with(path: &Path, codes: &[[u64; 4]], layout: &Layout) -> Result<(), IndexError> {
        let records = codes.len() as u64;
        assert!(records < u64::from(u32::MAX), "record numbers are u32");
        let tmp = path.with_extension("tmp");
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        out.write_all(&[0u8; HEADER_BYTES]).map_err(io_err(&tmp))?;
        let mut crc = crc32fast::Hasher::new();
        let widest = layout.widths.iter().copied().max().unwrap_or(16);
        let words_per_entry = layout.entry_bytes() as usize / 4;
        let mut offsets = vec![0u32; (1 << widest) + 1];
        let mut entries = vec![0u32; codes.len() * words_per_entry];
        let mut cursor = vec![0u32; 1 << widest];
        for (&width, start) in layout.widths.iter().zip(layout.starts()) {
            let buckets = 1usize << width;
            let offsets = &mut offsets[..buckets + 1];
            offsets.iter_mut().for_each(|o| *o = 0);
            for code in codes {
                offsets[chunk(code, start, width) as usize + 1] += 1;
            }
            for b in 0..buckets {
                offsets[b + 1] += offsets[b];
            }
            cursor[..buckets].copy_from_slice(&offsets[..buckets]);
            for (r, code) in codes.iter().enumerate() {
                let b = chunk(code, start, width) as usize;
                let at = cursor[b] as usize * words_per_entry;
                cursor[b] += 1;
                entries[at] = r as u32;
                if layout.sketch {
                    entries[at + 1..at + 4].copy_from_slice(&sketch(code, start, width));
                }
            }
            for part in [&offsets[..], &entries[..]] {
                // SAFETY: u32 slices viewed as bytes; any alignment is fine for u8.
                let (_, bytes, _) = unsafe { part.align_to::<u8>() };
                crc.update(bytes);
                out.write_all(bytes).map_err(io_err(&tmp))?;
            }
        }
        out.flush().map_err(io_err(&tmp))?;
        drop(out);
        let mut header = [0u8; HEADER_USED];
        header[0..8].copy_from_slice(&MAGIC);
        let version = if layout.sketch { VERSION_2 } else { VERSION_1 };
        assert!(layout.sketch || *layout == Layout::version_1(), "version 1 is 16 × 16 bits only");
        header[8..12].copy_from_slice(&version.to_le_bytes());
        header[12..16].copy_from_slice(&(layout.widths.len() as u32).to_le_bytes());
        header[16..20].copy_from_slice(&widest.to_le_bytes());
        header[20..28].copy_from_slice(&records.to_le_bytes());
        header[28..32].copy_from_slice(&crc.finalize().to_le_bytes());
        let header_crc = crc32fast::hash(&header[0..32]);
        header[32..36].copy_from_slice(&header_crc.to_le_bytes());
        if version == VERSION_2 {
            header[36..40].copy_from_slice(&ENTRY_BYTES.to_le_bytes());
            for (i, &w) in layout.widths.iter().enumerate() {
                header[WIDTHS_AT + i] = w as u8;
            }
            let layout_crc = crc32fast::hash(&header[36..72]);
            header[72..76].copy_from_slice(&layout_crc.to_le_bytes());
        }
        let header = if version == VERSION_1 { &header[..36] } else { &header[..] };
        file.write_all_at(header, 0).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    }

    /// Map an existing table file; with `verify`, check the body's checksum.
    pub fn open(path: &Path, verify: bool) -> Result<Mih, IndexError> {
        let file = File::open(path).map_err(io_err(path))?;
        let corrupt = |what: String| IndexError::Corrupt { path: path.to_owned(), what };
        let mut header = [0u8; HEADER_USED];
        file.read_exact_at(&mut header, 0).map_err(|e| corrupt(format!("cannot read the header: {e}")))?;
        if header[0..8] != MAGIC {
            return Err(corrupt("wrong magic number: not a lookalike multi-index table".into()));
        }
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
        let version = word(8);
        if crc32fast::hash(&header[0..32]) != word(32)
            || (version == VERSION_2 && crc32fast::hash(&header[36..72]) != word(72))
        {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let (chunks, bits) = (word(12), word(16));
        let layout = match version {
            VERSION_1 if chunks as usize == CHUNKS && bits == 16 => Layout::version_1(),
            VERSION_2 if (1..=MAX_CHUNKS).contains(&(chunks as usize)) && word(36) == ENTRY_BYTES => Layout {
                widths: header[WIDTHS_AT..WIDTHS_AT + chunks as usize].iter().map(|&w| u32::from(w)).collect(),
                sketch: true,
            },
            _ => {
                return Err(IndexError::Incompatible(format!(
                    "{}: multi-index version {version} with {chunks} chunks of up to {bits} bits; this lookalike reads \
                     version {VERSION_1} ({CHUNKS}×16 bits) and version {VERSION_2} ({ENTRY_BYTES}-byte entries)",
                    path.display()
                )))
            }
        };
        if layout.widths.iter().sum::<u32>() != 256
            || layout.widths.iter().any(|w| !(MIN_WIDTH..=MAX_WIDTH).contains(w))
        {
            return Err(IndexError::Incompatible(format!(
                "{}: unsupported multi-index chunk widths {:?}",
                path.display(),
                layout.widths
            )));
        }
        let records = u64::from_le_bytes(header[20..28].try_into().expect("8 bytes"));
        let body: u64 = layout.widths.iter().map(|&w| layout.table_bytes(w, records)).sum();
        let len = file.metadata().map_err(io_err(path))?.len();
        if len != HEADER_BYTES as u64 + body {
            return Err(corrupt(format!(
                "file is {len} bytes, expected {} for {records} records",
                HEADER_BYTES as u64 + body
            )));
        }
        if verify {
            let mut crc = crc32fast::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut offset = HEADER_BYTES as u64;
            while offset < len {
                let n = (len - offset).min(buf.len() as u64) as usize;
                file.read_exact_at(&mut buf[..n], offset).map_err(io_err(path))?;
                crc.update(&buf[..n]);
                offset += n as u64;
            }
            if crc.finalize() != word(28) {
                return Err(corrupt("checksum mismatch over the tables (damaged data)".into()));
            }
        }
        // SAFETY: table files are written once (to a temporary name, then renamed) and
        // never modified afterwards; a rebuild writes a new file.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
        let table_at = layout
            .widths
            .iter()
            .scan(HEADER_BYTES, |at, &w| Some(std::mem::replace(at, *at + layout.table_bytes(w, records) as usize)))
            .collect();
        let starts = layout.starts();
        Ok(Mih { path: path.to_owned(), map, records, layout, table_at, starts })
    }

    /// Number of leading codes the tables cover.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Path of the table file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bucket offsets and entries (as `u32` words) of chunk `c`.
    fn table(&self, c: usize) -> (&[u32], &[u32]) {
        let width = self.layout.widths[c];
        let bytes =
            &self.map[self.table_at[c]..self.table_at[c] + self.layout.table_bytes(width, self.records) as usize];
        // SAFETY: the map is page-aligned and every table starts at a multiple of 4 bytes.
        let (head, words, _) = unsafe { bytes.align_to::<u32>() };
        debug_assert!(head.is_empty());
        words.split_at((1 << width) + 1)
    }

    /// Expected cost of a radius query with these tables, in the unit the caller
    /// compares with a quarter of the number of records (it scans instead when this is
    /// larger): the expected time (bucket look-ups, entries, candidates to verify)
    /// divided by 4 × the time to scan one code. So the tables are used when they are
    /// expected to beat a scan.
    pub fn expected_candidates(&self, queries: usize, radius: u32) -> f64 {
        let ns = queries as f64 * self.layout.cost(&self.layout.plan(radius, self.records), self.records, radius);
        // A scan checks 8 query codes per pass at about the cost of one.
        let scan_ns_per_code = SCAN_NS_PER_CODE * queries.div_ceil(8).max(1) as f64;
        ns / scan_ns_per_code / 4.0
    }

    /// Every covered record that may be within `radius` of a query (a superset of the
    /// true answer: verify each). Appended to `out` sorted and without duplicates.
    pub fn candidates(&self, queries: &[Hash256], radius: u32, out: &mut Vec<u32>) {
        let first = out.len();
        let depths = self.layout.plan(radius, self.records);
        let mut mask_sets: Vec<((u32, i32), Vec<u32>)> = Vec::new();
        // (first entry, end, bits the probe flipped)
        let mut ranges: Vec<(u32, u32, u32)> = Vec::new();
        for (c, (&width, &depth)) in self.layout.widths.iter().zip(&depths).enumerate() {
            if depth < 0 {
                continue;
            }
            let set = match mask_sets.iter().position(|(key, _)| *key == (width, depth)) {
                Some(i) => i,
                None => {
                    mask_sets.push(((width, depth), masks(width, depth)));
                    mask_sets.len() - 1
                }
            };
            let masks = &mask_sets[set].1;
            let (offsets, entries) = self.table(c);
            let start = self.starts[c];
            for q in queries {
                let v = chunk(&q.0, start, width);
                // Look every bucket up first: independent loads with no branches between
                // them, so many are in flight at once; ask for each bucket's first line.
                ranges.clear();
                ranges.extend(masks.iter().map(|&m| {
                    let b = (v ^ m) as usize;
                    let (lo, hi) = (offsets[b], offsets[b + 1]);
                    prefetch(entries, lo as usize * self.layout.entry_bytes() as usize / 4);
                    (lo, hi, m.count_ones())
                }));
                if self.layout.sketch {
                    let s = sketch(&q.0, start, width);
                    let s01 = u64::from(s[0]) | u64::from(s[1]) << 32;
                    for &(lo, hi, flipped) in &ranges {
                        let Some(bucket) = entries.get(lo as usize * 4..hi as usize * 4) else { continue };
                        let Some(budget) = radius.checked_sub(flipped) else { continue };
                        for e in bucket.chunks_exact(4) {
                            let d = ((u64::from(e[1]) | u64::from(e[2]) << 32) ^ s01).count_ones()
                                + (e[3] ^ s[2]).count_ones();
                            if d <= budget {
                                out.push(e[0]);
                            }
                        }
                    }
                } else {
                    for &(lo, hi, _) in &ranges {
                        if let Some(bucket) = entries.get(lo as usize..hi as usize) {
                            out.extend_from_slice(bucket);
                        }
                    }
                }
            }
        }
        let key_bits = u64::BITS - self.records.saturating_sub(1).leading_zeros();
        sort_dedup(out, first, key_bits);
    }
}

/// Hint that `words[at]` will be read soon.
#[inline(always)]
fn prefetch(words: &[u32], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(w) = words.get(at) {
        // SAFETY: a prefetch has no architectural effect; the pointer is in bounds.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((w as *const u32).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (words, at);
}

/// Sort `v[first..]` and drop duplicates; every value is below `2^key_bits`. An LSD
/// radix sort when there are many: linear in the number of candidates.
fn sort_dedup(v: &mut Vec<u32>, first: usize, key_bits: u32) {
    let n = v.len() - first;
    if n < 1024 {
        v[first..].sort_unstable();
    } else {
        let passes = key_bits.div_ceil(12).max(1);
        let digit = key_bits.div_ceil(passes);
        let mask = (1u32 << digit) - 1;
        let mut counts = vec![0u32; 1 << digit];
        let mut src = v.split_off(first);
        let mut dst = vec![0u32; n];
        for pass in 0..passes {
            let shift = pass * digit;
            counts.iter_mut().for_each(|c| *c = 0);
            for &x in &src {
                counts[(x >> shift & mask) as usize] += 1;
            }
            let mut sum = 0;
            for c in counts.iter_mut() {
                sum += std::mem::replace(c, sum);
            }
            for &x in &src {
                let d = (x >> shift & mask) as usize;
                dst[counts[d] as usize] = x;
                counts[d] += 1;
            }
            std::mem::swap(&mut src, &mut dst);
        }
        v.extend_from_slice(&src);
    }
    let mut kept = first;
    for i in first..v.len() {
        if kept == first || v[i] != v[kept - 1] {
            v[kept] = v[i];
            kept += 1;
        }
    }
    v.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_every_value_within_the_depth_once() {
        for (w, t) in [(16, 0), (16, 1), (16, 2), (20, 2), (23, 3), (9, 9)] {
            let m = masks(w, t);
            assert_eq!(m.len() as u64, values_within(w, t), "w {w} t {t}");
            let mut seen = std::collections::HashSet::new();
            for &x in &m {
                assert!(x < 1 << w && x.count_ones() as i32 <= t);
                assert!(seen.insert(x), "{x:#x} twice");
            }
        }
        assert!(masks(16, -1).is_empty() && values_within(16, -1) == 0);
    }

    #[test]
    fn plans_cover_the_radius() {
        for m in 10..=16 {
            let layout = Layout::even(m);
            assert_eq!(layout.widths.iter().sum::<u32>(), 256);
            for radius in [0, 1, 7, 15, 31, 45, 128] {
                let depths = layout.plan(radius, 1 << 20);
                let covered: i32 = depths.iter().map(|t| t + 1).sum();
                assert!(covered as u32 > radius, "m {m} r {radius}: {depths:?}");
            }
        }
        // 16 × 16 at radius 31: one bit per chunk, as before.
        assert_eq!(Layout::even(16).plan(31, 1 << 20), vec![1; 16]);
        assert_eq!(Layout::for_records(20_000), Layout::version_1());
        assert!(Layout::for_records(1_000_000).sketch);
    }

    #[test]
    fn sketch_pass_rates() {
        assert!((sketch_pass_rate(31) - 3.37e-4).abs() < 1e-6, "{}", sketch_pass_rate(31));
        assert!((sketch_pass_rate(45) - 0.305).abs() < 1e-3);
        assert_eq!(sketch_pass_rate(96), 1.0);
        // Radius 45 over 1M records: the sketches filter too little, a scan is cheaper.
        let layout = Layout::for_records(1 << 20);
        assert!(layout.cost(&layout.plan(45, 1 << 20), 1 << 20, 45) * 8.0 > SCAN_NS_PER_CODE * (1 << 20) as f64);
        assert!(layout.cost(&layout.plan(31, 1 << 20), 1 << 20, 31) * 8.0 < SCAN_NS_PER_CODE * (1 << 18) as f64);
    }

    #[test]
    fn chunks_read_the_right_bits() {
        let code = [0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210, 0x1111_2222_3333_4444, 0x5555_6666_7777_8888];
        for c in 0..16 {
            assert_eq!(chunk(&code, c * 16, 16), (code[c as usize / 4] >> ((c % 4) * 16)) as u16 as u32);
        }
        let h = Hash256(code);
        for (start, width) in [(50u32, 23u32), (60, 24), (233, 23), (0, 28)] {
            let v = chunk(&code, start, width);
            for b in 0..width {
                assert_eq!(v >> b & 1 == 1, h.bit((start + b) as usize), "start {start} width {width} bit {b}");
            }
        }
    }

    #[test]
    fn sort_dedup_sorts_and_drops_repeats() {
        let mut v: Vec<u32> = vec![9, 9];
        let mut x = 12345u32;
        for _ in 0..5000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.push(x % 3000);
        }
        let mut want = v[2..].to_vec();
        want.sort_unstable();
        want.dedup();
        sort_dedup(&mut v, 2, 12);
        assert_eq!(&v[..2], &[9, 9]);
        assert_eq!(&v[2..], &want[..]);
    }

    /// Candidates are a superset of the true answer, in every layout, at every radius.
    #[test]
    fn candidates_cover_every_code_within_the_radius() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut next = move || rng.random::<u64>();
        let queries: Vec<Hash256> = (0..3).map(|_| Hash256([next(), next(), next(), next()])).collect();
        let mut codes: Vec<[u64; 4]> = Vec::new();
        for i in 0..3000u64 {
            let mut c = queries[(i % 3) as usize].0;
            for _ in 0..(i % 50) {
                let b = next() % 256;
                c[(b / 64) as usize] ^= 1 << (b % 64);
            }
            codes.push(if i % 4 == 0 { [next(), next(), next(), next()] } else { c });
        }
        let dir = tempfile::tempdir().unwrap();
        // 16 × 16 with sketches and without (version 1); 12 × 20 + 16; narrow chunks that
        // straddle words in odd places.
        let layouts = [
            Layout::even(16),
            Layout::version_1(),
            Layout { widths: [vec![20; 12], vec![16]].concat(), sketch: true },
            Layout { widths: [vec![11; 20], vec![12; 3]].concat(), sketch: true },
        ];
        for (m, layout) in layouts.iter().enumerate() {
            let path = dir.path().join(format!("mih-{m}.bin"));
            Mih::build_with(&path, &codes, layout).unwrap();
            let mih = Mih::open(&path, true).unwrap();
            assert_eq!(&mih.layout, layout);
            for radius in [0, 5, 15, 31, 45] {
                let mut cands = Vec::new();
                mih.candidates(&queries, radius, &mut cands);
                assert!(cands.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
                for (r, c) in codes.iter().enumerate() {
                    if queries.iter().any(|q| Hash256(*c).distance(q) <= radius) {
                        assert!(cands.binary_search(&(r as u32)).is_ok(), "m {m} r {radius}: record {r} missed");
                    }
                }
            }
        }
    }

    /// A version-2 header: its layout bytes are checksummed, and its first 36 bytes are
    /// what a version-1 reader checks before it looks at the version.
    #[test]
    fn version_2_headers_are_checked() {
        let codes: Vec<[u64; 4]> = (0..100u64).map(|i| [i, i * 3, i * 5, i * 7]).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mih.bin");
        Mih::build_with(&path, &codes, &Layout { widths: [vec![11; 20], vec![12; 3]].concat(), sketch: true }).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), VERSION_2);
        assert_eq!(crc32fast::hash(&bytes[0..32]), u32::from_le_bytes(bytes[32..36].try_into().unwrap()));
        assert_eq!(Mih::open(&path, true).unwrap().records(), 100);
        let mut damaged = bytes.clone();
        damaged[WIDTHS_AT + 3] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        assert!(matches!(Mih::open(&path, false), Err(IndexError::Corrupt { .. })));
        let mut future = bytes.clone();
        future[8] = 3;
        let crc = crc32fast::hash(&future[0..32]);
        future[32..36].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &future).unwrap();
        assert!(matches!(Mih::open(&path, false), Err(IndexError::Incompatible(_))));
    }

    /// The 16 × 16 layout is still written as a version-1 file, byte for byte.
    #[test]
    fn sixteen_by_sixteen_is_version_1() {
        let codes: Vec<[u64; 4]> = (0..100u64).map(|i| [i, i * 3, i * 5, i * 7]).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mih.bin");
        Mih::build(&path, &codes).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), VERSION_1);
        assert_eq!(bytes.len(), HEADER_BYTES + 16 * (65_537 + 100) * 4);
        assert_eq!(crc32fast::hash(&bytes[0..32]), u32::from_le_bytes(bytes[32..36].try_into().unwrap()));
    }
}
