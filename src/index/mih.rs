//! Exact multi-index hashing (Norouzi et al.) over the mapped codes.
//!
//! The 256 bits are split into `CHUNKS` chunks of 16 bits. If two codes are within
//! distance `r`, then by the pigeonhole principle at least one chunk differs in at most
//! `⌊r / CHUNKS⌋` bits. So for each chunk we look up every 16-bit value within that
//! many bits of the query's chunk, gather the codes filed under it, and verify each
//! candidate with a full XOR+popcount. Nothing within `r` is missed.
//!
//! On disk each chunk's table is a sorted bucket array (CSR): `2^16 + 1` offsets, then
//! the record numbers grouped by chunk value, all `u32`, memory-mapped. The file covers
//! the first `records` codes; codes appended later are scanned linearly until the next
//! rebuild.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{io_err, sync_dir, IndexError};
use crate::hash::Hash256;

/// Number of chunks the code is split into.
pub const CHUNKS: usize = 16;
const CHUNK_BITS: u32 = 16;
const BUCKETS: usize = 1 << CHUNK_BITS;
const MAGIC: [u8; 8] = *b"LKMIH\0\0\x01";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 4096;
/// Bytes of one chunk's table for `records` codes.
fn table_bytes(records: u64) -> u64 {
    (BUCKETS as u64 + 1) * 4 + records * 4
}

#[inline]
fn chunk_of(code: &[u64; 4], c: usize) -> u16 {
    (code[c / 4] >> ((c % 4) * 16)) as u16
}

/// Call `f` once with every 16-bit value within `t` bits of `v` (including `v`):
/// each set of flipped bits is visited in increasing bit order, so none twice.
fn for_each_within(v: u16, t: u32, start_bit: u32, f: &mut dyn FnMut(u16)) {
    f(v);
    if t == 0 {
        return;
    }
    for bit in start_bit..CHUNK_BITS {
        for_each_within(v ^ (1 << bit), t - 1, bit + 1, f);
    }
}

/// Number of values within `t` bits of a 16-bit value: Σ C(16, i), i ≤ t.
fn probes_per_chunk(t: u32) -> u64 {
    let mut total = 0u64;
    let mut c = 1u64;
    for i in 0..=t.min(CHUNK_BITS) {
        total += c;
        c = c * u64::from(CHUNK_BITS - i) / u64::from(i + 1);
    }
    total
}

/// A mapped multi-index table file.
pub struct Mih {
    path: PathBuf,
    map: Mmap,
    records: u64,
}

impl Mih {
    /// Build the tables over `codes` and write them durably to `path` (via a temporary
    /// file renamed into place).
    pub fn build(path: &Path, codes: &[[u64; 4]]) -> Result<(), IndexError> {
        let records = codes.len() as u64;
        assert!(records < u64::from(u32::MAX), "record numbers are u32");
        let tmp = path.with_extension("tmp");
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        out.write_all(&[0u8; HEADER_BYTES]).map_err(io_err(&tmp))?;
        let mut crc = crc32fast::Hasher::new();
        let mut offsets = vec![0u32; BUCKETS + 1];
        let mut ids = vec![0u32; codes.len()];
        let mut cursor = vec![0u32; BUCKETS];
        for c in 0..CHUNKS {
            offsets.iter_mut().for_each(|o| *o = 0);
            for code in codes {
                offsets[chunk_of(code, c) as usize + 1] += 1;
            }
            for b in 0..BUCKETS {
                offsets[b + 1] += offsets[b];
            }
            cursor.copy_from_slice(&offsets[..BUCKETS]);
            for (r, code) in codes.iter().enumerate() {
                let b = chunk_of(code, c) as usize;
                ids[cursor[b] as usize] = r as u32;
                cursor[b] += 1;
            }
            for part in [&offsets[..], &ids[..]] {
                // SAFETY: u32 slices viewed as bytes; any alignment is fine for u8.
                let (_, bytes, _) = unsafe { part.align_to::<u8>() };
                crc.update(bytes);
                out.write_all(bytes).map_err(io_err(&tmp))?;
            }
        }
        out.flush().map_err(io_err(&tmp))?;
        drop(out);
        let mut header = [0u8; 40];
        header[0..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&(CHUNKS as u32).to_le_bytes());
        header[16..20].copy_from_slice(&CHUNK_BITS.to_le_bytes());
        header[20..28].copy_from_slice(&records.to_le_bytes());
        header[28..32].copy_from_slice(&crc.finalize().to_le_bytes());
        let header_crc = crc32fast::hash(&header[0..32]);
        header[32..36].copy_from_slice(&header_crc.to_le_bytes());
        file.write_all_at(&header, 0).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    }

    /// Map an existing table file; with `verify`, check the body's checksum.
    pub fn open(path: &Path, verify: bool) -> Result<Mih, IndexError> {
        let file = File::open(path).map_err(io_err(path))?;
        let corrupt = |what: String| IndexError::Corrupt { path: path.to_owned(), what };
        let mut header = [0u8; 40];
        file.read_exact_at(&mut header, 0).map_err(|e| corrupt(format!("cannot read the header: {e}")))?;
        if header[0..8] != MAGIC {
            return Err(corrupt("wrong magic number: not a lookalike multi-index table".into()));
        }
        if crc32fast::hash(&header[0..32]) != u32::from_le_bytes(header[32..36].try_into().expect("4 bytes")) {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let chunks = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        let bits = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
        if version != VERSION || chunks as usize != CHUNKS || bits != CHUNK_BITS {
            return Err(IndexError::Incompatible(format!(
                "{}: multi-index version {version} with {chunks}×{bits}-bit chunks; this lookalike uses version {VERSION}, {CHUNKS}×{CHUNK_BITS}",
                path.display()
            )));
        }
        let records = u64::from_le_bytes(header[20..28].try_into().expect("8 bytes"));
        let body = table_bytes(records) * CHUNKS as u64;
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
            if crc.finalize() != u32::from_le_bytes(header[28..32].try_into().expect("4 bytes")) {
                return Err(corrupt("checksum mismatch over the tables (damaged data)".into()));
            }
        }
        // SAFETY: table files are written once (to a temporary name, then renamed) and
        // never modified afterwards; a rebuild writes a new file.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
        Ok(Mih { path: path.to_owned(), map, records })
    }

    /// Number of leading codes the tables cover.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Path of the table file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn table(&self, c: usize) -> (&[u32], &[u32]) {
        let start = HEADER_BYTES + c * table_bytes(self.records) as usize;
        let bytes = &self.map[start..start + table_bytes(self.records) as usize];
        // SAFETY: the map is page-aligned and every table starts at a multiple of 4 bytes.
        let (head, words, _) = unsafe { bytes.align_to::<u32>() };
        debug_assert!(head.is_empty());
        words.split_at(BUCKETS + 1)
    }

    /// Expected number of candidates a radius query would touch, to decide between
    /// these tables and a linear scan.
    pub fn expected_candidates(&self, queries: usize, radius: u32) -> f64 {
        let t = radius / CHUNKS as u32;
        queries as f64 * CHUNKS as f64 * probes_per_chunk(t) as f64 * self.records as f64 / BUCKETS as f64
    }

    /// Every covered record that may be within `radius` of a query (a superset of the
    /// true answer: verify each). Appended to `out`, possibly with duplicates.
    pub fn candidates(&self, queries: &[Hash256], radius: u32, out: &mut Vec<u32>) {
        let t = radius / CHUNKS as u32;
        for c in 0..CHUNKS {
            let (offsets, ids) = self.table(c);
            for q in queries {
                for_each_within(chunk_of(&q.0, c), t, 0, &mut |v| {
                    let (lo, hi) = (offsets[v as usize] as usize, offsets[v as usize + 1] as usize);
                    out.extend_from_slice(&ids[lo..hi]);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_counts_match_enumeration() {
        for t in 0..=3 {
            let mut seen = std::collections::HashSet::new();
            for_each_within(0xa5a5, t, 0, &mut |v| {
                assert!((v ^ 0xa5a5).count_ones() <= t);
                assert!(seen.insert(v), "value {v:#x} probed twice");
            });
            assert_eq!(seen.len() as u64, probes_per_chunk(t), "t = {t}");
        }
    }
}
