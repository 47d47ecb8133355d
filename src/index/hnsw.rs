//! An `hnsw_rs` graph over the codes, for k-nearest exploration beyond the review
//! distance. It is approximate: the exact engine ([`super::mih`] + [`super::scan`]) is
//! what decides matches; this module exists to be measured against it (README).

use std::path::{Path, PathBuf};

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::hnswio::{HnswIo, ReloadOptions};
use hnsw_rs::prelude::{AnnT, FilterT, Hnsw};

use super::IndexError;

/// Bitwise Hamming distance over packed 256-bit codes (`hnsw_rs`'s own `DistHamming`
/// counts differing *elements*, which is meaningless on packed words).
///
/// Points are stored as 32 bytes, not 4 `u64`: `hnsw_rs`'s memory-mapped reload hands
/// out slices at arbitrary byte offsets of its data file, which is only sound for a
/// type with alignment 1.
#[derive(Debug, Default, Clone, Copy)]
pub struct Hamming256;

impl Distance<u8> for Hamming256 {
    fn eval(&self, a: &[u8], b: &[u8]) -> f32 {
        a.chunks_exact(8)
            .zip(b.chunks_exact(8))
            .map(|(x, y)| {
                let x = u64::from_le_bytes(x.try_into().expect("8 bytes"));
                let y = u64::from_le_bytes(y.try_into().expect("8 bytes"));
                (x ^ y).count_ones()
            })
            .sum::<u32>() as f32
    }
}

/// Graph construction parameters, saved in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HnswParams {
    /// Links per node per layer.
    pub max_connections: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams { max_connections: 24, ef_construction: 200 }
    }
}

/// `file_dump` refuses graphs created with any other layer count.
const MAX_LAYER: usize = 16;

/// Build a graph over `codes` (record `i` is point `i`) and dump it as
/// `dir/basename.hnsw.{graph,data}`.
pub fn build(dir: &Path, basename: &str, codes: &[u8], params: HnswParams) -> Result<(), IndexError> {
    let hnsw: Hnsw<u8, Hamming256> =
        Hnsw::new(params.max_connections, codes.len() / 32 + 1, MAX_LAYER, params.ef_construction, Hamming256);
    let points: Vec<(&[u8], usize)> = codes.chunks_exact(32).enumerate().map(|(i, c)| (c, i)).collect();
    for batch in points.chunks(10_000) {
        hnsw.parallel_insert_slice(&batch.to_vec());
    }
    let written = hnsw.file_dump(dir, basename).map_err(|e| IndexError::Hnsw(format!("dumping the graph: {e}")))?;
    if written != basename {
        return Err(IndexError::Hnsw(format!("hnsw_rs wrote {written} instead of {basename}")));
    }
    Ok(())
}

/// The two files of a dump.
pub fn files(dir: &Path, basename: &str) -> [PathBuf; 2] {
    [dir.join(format!("{basename}.hnsw.graph")), dir.join(format!("{basename}.hnsw.data"))]
}

/// A reloaded graph whose point data stays memory-mapped.
pub struct HnswGraph {
    // Declared before `_io` so it is dropped first: it borrows from the loader.
    hnsw: Hnsw<'static, u8, Hamming256>,
    _io: Box<HnswIo>,
    points: usize,
}

impl HnswGraph {
    /// Reload a dump. The caller has checked the files' checksums: `hnsw_rs` panics
    /// rather than erring on some malformed inputs.
    pub fn load(dir: &Path, basename: &str) -> Result<HnswGraph, IndexError> {
        let options = ReloadOptions::default().set_mmap(true);
        let mut io = Box::new(HnswIo::new_with_options(dir, basename, options));
        // SAFETY: `hnsw_rs` ties the graph's lifetime to a `&mut` borrow of its loader
        // (it maps the data file into the loader). The loader lives in a `Box` owned by
        // the returned struct, so its address is stable, nothing else touches it, and the
        // graph field is dropped before it.
        let io_ref: &'static mut HnswIo = unsafe { &mut *(io.as_mut() as *mut HnswIo) };
        let mut hnsw: Hnsw<'static, u8, Hamming256> =
            io_ref.load_hnsw().map_err(|e| IndexError::Hnsw(format!("reloading {basename}: {e}")))?;
        hnsw.set_searching_mode(true);
        let points = hnsw.get_nb_point();
        Ok(HnswGraph { hnsw, _io: io, points })
    }

    /// Number of points in the graph (records `0..points`).
    pub fn points(&self) -> usize {
        self.points
    }

    /// Approximate `k` nearest records to `query` among those `keep` accepts (all of
    /// them when `keep` is `None`).
    ///
    /// Without a filter the search is at least 2.3× faster at equal recall: hnsw_rs
    /// 0.3.5 never stops a filtered search early (measured at 1M codes,
    /// `tools/bench/hnsw-results.md`).
    pub fn search(
        &self,
        query: &[u8; 32],
        k: usize,
        ef: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(u32, u32)> {
        struct Keep<'a>(&'a dyn Fn(usize) -> bool);
        impl FilterT for Keep<'_> {
            fn hnsw_filter(&self, id: &usize) -> bool {
                (self.0)(*id)
            }
        }
        let found = match keep {
            Some(keep) => self.hnsw.search_filter(query, k, ef.max(k), Some(&Keep(keep))),
            None => self.hnsw.search(query, k, ef.max(k)),
        };
        found.into_iter().map(|n| (n.d_id as u32, n.distance as u32)).collect()
    }
}
