//! Entries ↔ hashes ↔ metadata, on disk, durable.
//!
//! A data directory holds:
//!
//! | file | what | role |
//! |---|---|---|
//! | `catalog.sqlite` | every entry's metadata and hashes (SQLite, WAL) | source of truth |
//! | `codes-G.bin` | 32-byte PDQ codes, one per record, append-only, mapped | searched |
//! | `refs-G.bin` | 16-byte record → entry/brand/label, append-only, mapped | searched |
//! | `mih-G-S.bin` | multi-index tables over the first N codes | searched |
//! | `hnsw-G-S.hnsw.{graph,data}` | optional HNSW graph over the first N codes | explored |
//! | `manifest.json` | which of the above are current, and the index parameters | replaced atomically |
//! | `LOCK` | advisory lock: one writer, or any number of readers | |
//!
//! `G` is the generation (bumped by compaction and repair, which rewrite the record
//! files) and `S` a sequence number for rebuilt tables. A write commits to the
//! catalog first, then appends records; on open, any catalog entries missing from the
//! record files (a crash between the two) are appended again, so nothing acknowledged
//! is lost and nothing needs a rebuild.

mod catalog;
mod hnsw;
mod manifest;
mod mih;
mod records;
pub mod scan;
mod votes;

use std::collections::{BinaryHeap, HashMap};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

pub use catalog::{AddOutcome, Entry, NewEntry, Selector, StoredFiles, MAX_FEATURE_BYTES, MAX_VIEWS};
pub use hnsw::HnswParams;
pub use manifest::Manifest;

use crate::hash::Hash256;
use catalog::Catalog;
use hnsw::HnswGraph;
use mih::Mih;
use records::RecordFile;
use scan::ScanHit;

/// Internal entry id: dense, assigned by the catalog, never reused.
pub type EntryId = u64;

/// What a registered image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// A brand's genuine photo.
    Authentic,
    /// A photo of a seized counterfeit.
    KnownFake,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Authentic => "authentic",
            Label::KnownFake => "known_fake",
        }
    }
    fn code(self) -> u8 {
        match self {
            Label::Authentic => 1,
            Label::KnownFake => 2,
        }
    }
    fn from_code(c: u8) -> Option<Label> {
        match c {
            1 => Some(Label::Authentic),
            2 => Some(Label::KnownFake),
            _ => None,
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Label {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "authentic" => Ok(Label::Authentic),
            "known_fake" | "known-fake" => Ok(Label::KnownFake),
            other => Err(format!("unknown label {other:?}: expected authentic or known_fake")),
        }
    }
}

/// Everything that can go wrong in the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("catalog: {context}: {error}")]
    Sqlite { context: String, error: rusqlite::Error },
    #[error("{}: {what}; run `lookalike repair` to rebuild the derived files from the catalog", path.display())]
    Corrupt { path: PathBuf, what: String },
    #[error("incompatible index: {0}")]
    Incompatible(String),
    #[error("{} is in use by another lookalike process ({mode} lock held); stop it, or query it with --server", path.display())]
    Locked { path: PathBuf, mode: &'static str },
    #[error("no index at {}: create one with `lookalike index`", .0.display())]
    Missing(PathBuf),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("hnsw: {0}")]
    Hnsw(String),
}

impl IndexError {
    fn sqlite(context: impl Into<String>, source: rusqlite::Error) -> IndexError {
        IndexError::Sqlite { context: context.into(), error: source }
    }
}

/// Wrap an I/O error with the path it concerns.
pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> IndexError + '_ {
    move |error| IndexError::Io { path: path.to_owned(), error }
}

/// Make a directory's entries (new or renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// How to open an index.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Open for writing (exclusive lock), creating the directory and files if missing.
    pub writable: bool,
    /// Check every file's checksum on open (reads them once, through `read`).
    pub verify: bool,
    /// Rebuild the multi-index tables once this many records are past them.
    pub mih_tail_limit: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { writable: false, verify: true, mih_tail_limit: 65_536 }
    }
}

impl OpenOptions {
    pub fn writable() -> Self {
        OpenOptions { writable: true, ..Self::default() }
    }
}

/// A search result: one entry, its best distance, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub entry: EntryId,
    pub label: Label,
    pub brand_no: u32,
    pub distance: u32,
    /// Index into the query slice that matched (for PDQ orientations: the orientation).
    pub query: u8,
    /// Which stored view of the entry matched (0: the whole image).
    pub view: u8,
}

/// Which records a search may return, beyond not being deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub brand_no: Option<u32>,
    pub label: Option<Label>,
}

/// Engine for k-nearest queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NearestEngine {
    /// Exact: a full scan (every orientation per code in one pass).
    #[default]
    Exact,
    /// The HNSW graph (approximate), plus an exact scan of records added since it was built.
    Hnsw { ef: usize },
}

/// Facts about the index, for `stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub dir: PathBuf,
    pub by_brand_label: Vec<(String, Label, u64)>,
    pub live: u64,
    pub deleted: u64,
    pub records: u64,
    pub mih_records: u64,
    pub hnsw_points: Option<u64>,
    pub files: Vec<(String, u64)>,
    pub bytes_on_disk: u64,
    pub manifest: Manifest,
}

/// Below this many records no multi-index tables are built: their fixed cost (16 ×
/// 256 KiB of bucket offsets) buys nothing over a scan of so few codes.
pub const MIN_MIH_RECORDS: u64 = 16_384;

/// Record layout of `refs-G.bin`: entry id, brand number, label code, view.
const REF_BYTES: usize = 16;
const CODE_BYTES: usize = 32;
const CODES_MAGIC: [u8; 8] = *b"LKCODES\x01";
const REFS_MAGIC: [u8; 8] = *b"LKREFS\0\x01";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ref {
    entry: EntryId,
    brand_no: u32,
    label: Label,
    view: u8,
}

impl Ref {
    fn to_bytes(self) -> [u8; REF_BYTES] {
        let mut b = [0u8; REF_BYTES];
        b[0..8].copy_from_slice(&self.entry.to_le_bytes());
        b[8..12].copy_from_slice(&self.brand_no.to_le_bytes());
        b[12] = self.label.code();
        b[13] = self.view;
        b
    }
    fn from_bytes(b: &[u8]) -> Option<Ref> {
        Some(Ref {
            entry: u64::from_le_bytes(b[0..8].try_into().ok()?),
            brand_no: u32::from_le_bytes(b[8..12].try_into().ok()?),
            label: Label::from_code(b[12])?,
            view: b[13],
        })
    }
}

/// An open index.
pub struct Index {
    dir: PathBuf,
    options: OpenOptions,
    catalog: Catalog,
    manifest: Manifest,
    codes: RecordFile,
    refs: RecordFile,
    mih: Option<Mih>,
    hnsw: Option<HnswGraph>,
    deleted: Tombstones,
    /// Stored features filed for candidate votes, built from the catalog on first use.
    votes: std::sync::OnceLock<votes::Votes>,
    _lock: File,
}

/// Deleted entry ids, as a bitset.
#[derive(Default)]
struct Tombstones(Vec<u64>);

impl Tombstones {
    fn insert(&mut self, id: EntryId) {
        let (w, b) = ((id / 64) as usize, id % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << b;
    }
    fn contains(&self, id: EntryId) -> bool {
        self.0.get((id / 64) as usize).is_some_and(|w| w >> (id % 64) & 1 == 1)
    }
}

impl Index {
    /// Open (or, when writable, create) the index in `dir`.
    pub fn open(dir: &Path, options: OpenOptions) -> Result<Index, IndexError> {
        if !dir.exists() {
            if !options.writable {
                return Err(IndexError::Missing(dir.to_owned()));
            }
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let lock = Self::lock(dir, options.writable)?;
        let catalog_path = dir.join("catalog.sqlite");
        if !options.writable && !catalog_path.exists() {
            return Err(IndexError::Missing(dir.to_owned()));
        }
        let catalog = Catalog::open(&catalog_path, options.writable)?;
        let manifest = match Manifest::load(dir)? {
            Some(m) => m,
            None if options.writable => {
                let m = Manifest::new(1);
                Self::create_record_files(dir, &m)?;
                m.store(dir)?;
                m
            }
            None => return Err(IndexError::Missing(dir.to_owned())),
        };
        let codes =
            RecordFile::open(&dir.join(&manifest.codes), CODES_MAGIC, CODE_BYTES, options.verify, options.writable)
                .map_err(|e| missing_is_damage(dir, e))?;
        let refs = RecordFile::open(&dir.join(&manifest.refs), REFS_MAGIC, REF_BYTES, options.verify, options.writable)
            .map_err(|e| missing_is_damage(dir, e))?;
        let mut index = Index {
            dir: dir.to_owned(),
            options,
            catalog,
            manifest,
            codes,
            refs,
            mih: None,
            hnsw: None,
            deleted: Tombstones::default(),
            votes: std::sync::OnceLock::new(),
            _lock: lock,
        };
        index.check_records()?;
        if index.options.writable {
            index.catch_up()?;
            index.remove_stale_files();
        }
        index.open_derived()?;
        for id in index.catalog.deleted_ids()? {
            index.deleted.insert(id);
        }
        Ok(index)
    }

    fn lock(dir: &Path, exclusive: bool) -> Result<File, IndexError> {
        let path = dir.join("LOCK");
        let file = if exclusive {
            File::options().create(true).truncate(false).write(true).open(&path)
        } else {
            File::open(&path).or_else(|_| File::options().create(true).truncate(false).write(true).open(&path))
        }
        .map_err(io_err(&path))?;
        let res = if exclusive { file.try_lock() } else { file.try_lock_shared() };
        match res {
            Ok(()) => Ok(file),
            Err(TryLockError::WouldBlock) => Err(IndexError::Locked {
                path: dir.to_owned(),
                mode: if exclusive { "a reader's or writer's" } else { "a writer's" },
            }),
            Err(TryLockError::Error(e)) => Err(IndexError::Io { path, error: e }),
        }
    }

    fn create_record_files(dir: &Path, m: &Manifest) -> Result<(), IndexError> {
        RecordFile::create(&dir.join(&m.codes), CODES_MAGIC, CODE_BYTES)?;
        RecordFile::create(&dir.join(&m.refs), REFS_MAGIC, REF_BYTES)?;
        sync_dir(dir)
    }

    /// The two record files must agree, and the last record must match the catalog.
    fn check_records(&mut self) -> Result<(), IndexError> {
        let (mut nc, nr) = (self.codes.len(), self.refs.len());
        if nc > nr {
            // A crash between committing the codes and the refs of one append: the
            // extra codes were never acknowledged, and a writer's catch-up re-appends
            // their entries from the catalog. A reader just ignores them.
            if self.options.writable {
                tracing::warn!(codes = nc, refs = nr, "dropping codes of an interrupted append");
                self.codes.truncate_to(nr)?;
            } else {
                self.codes.hide_after(nr);
            }
            nc = nr;
        }
        if nc != nr {
            return Err(IndexError::Corrupt {
                path: self.dir.clone(),
                what: format!("the codes file has {nc} records but the refs file {nr}"),
            });
        }
        if let Some(last) = nc.checked_sub(1) {
            let r = self.record_ref(last as u32);
            let entry = self.catalog.find(&Selector::Id(r.entry))?;
            let code = Hash256(self.code_slice()[last as usize]);
            match entry.first() {
                Some(e) if r.view != 0 || e.pdq == code => {}
                _ => {
                    return Err(IndexError::Corrupt {
                        path: self.dir.join(&self.manifest.codes),
                        what: format!("record {last} (entry {}) does not match the catalog", r.entry),
                    })
                }
            }
        }
        Ok(())
    }

    /// Append records for catalog entries the record files do not have yet.
    fn catch_up(&mut self) -> Result<(), IndexError> {
        let mut pending = Vec::new();
        // The last entry's views may have been cut short by an interrupted append: its
        // records run at the end of the files, views in order, so the missing ones are
        // those past the last view stored.
        let last = self.refs.len().checked_sub(1).map(|last| self.record_ref(last as u32));
        if let Some(r) = last {
            if let Some(e) = self.catalog.find(&Selector::Id(r.entry))?.into_iter().next() {
                if e.deleted_at_ms.is_none() {
                    let all = view_records(e.id, e.brand_no, e.label, e.pdq, &e.views);
                    pending.extend(all.into_iter().skip(usize::from(r.view) + 1));
                }
            }
        }
        self.catalog.entries_after(last.map_or(0, |r| r.entry), &mut |e| {
            // Deleted entries are left out: compaction may have dropped them already.
            if e.deleted_at_ms.is_none() {
                pending.extend(view_records(e.id, e.brand_no, e.label, e.pdq, &e.views));
            }
            Ok(())
        })?;
        if !pending.is_empty() {
            tracing::info!(entries = pending.len(), "appending catalog entries missing from the record files");
            self.append_records(&pending)?;
        }
        Ok(())
    }

    fn open_derived(&mut self) -> Result<(), IndexError> {
        if let Some(m) = &self.manifest.mih {
            let mih =
                Mih::open(&self.dir.join(&m.file), self.options.verify).map_err(|e| missing_is_damage(&self.dir, e))?;
            if mih.records() > self.codes.len() {
                return Err(IndexError::Corrupt {
                    path: mih.path().to_owned(),
                    what: format!("covers {} records but only {} exist", mih.records(), self.codes.len()),
                });
            }
            self.mih = Some(mih);
        }
        if let Some(h) = &self.manifest.hnsw {
            if self.options.verify {
                for (path, want) in hnsw::files(&self.dir, &h.basename).iter().zip([h.graph_crc, h.data_crc]) {
                    let got = crc32fast::hash(&records::read_all(path)?);
                    if got != want {
                        return Err(IndexError::Corrupt { path: path.clone(), what: "checksum mismatch".into() });
                    }
                }
            }
            let graph = HnswGraph::load(&self.dir, &h.basename)?;
            if graph.points() as u64 != h.records || h.records > self.codes.len() {
                return Err(IndexError::Corrupt {
                    path: self.dir.join(&h.basename),
                    what: format!("graph has {} points, manifest says {}", graph.points(), h.records),
                });
            }
            self.hnsw = Some(graph);
        }
        Ok(())
    }

    /// Delete files of other generations or sequences left by an interrupted rebuild.
    fn remove_stale_files(&self) {
        let keep = self.manifest.files();
        let Ok(listing) = std::fs::read_dir(&self.dir) else { return };
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let ours = ["codes-", "refs-", "mih-", "hnsw-"].iter().any(|p| name.starts_with(p));
            if ours && !keep.contains(&name) {
                tracing::debug!(file = %name, "removing a stale index file");
                let _ = std::fs::remove_file(item.path());
            }
        }
    }

    fn code_slice(&self) -> &[[u64; 4]] {
        scan::as_codes(self.codes.bytes())
    }

    fn record_ref(&self, record: u32) -> Ref {
        let at = record as usize * REF_BYTES;
        Ref::from_bytes(&self.refs.bytes()[at..at + REF_BYTES]).expect("refs records are validated when written")
    }

    fn append_records(&mut self, items: &[(Hash256, Ref)]) -> Result<(), IndexError> {
        append_pair(&mut self.codes, &mut self.refs, items)
    }

    /// Directory of this index.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Add entries: one catalog transaction, then the record files; durable on return.
    pub fn add(&mut self, entries: &[NewEntry]) -> Result<Vec<AddOutcome>, IndexError> {
        self.require_writable()?;
        for e in entries {
            validate_entry(e)?;
        }
        // An earlier add whose record append failed (a full disk) left catalog entries the
        // record files lack: append them first, or they would never be searchable.
        self.catch_up()?;
        let outcomes = self.catalog.add(entries)?;
        let new: Vec<(Hash256, Ref)> = outcomes
            .iter()
            .zip(entries)
            .filter_map(|((o, brand_no), e)| match o {
                AddOutcome::Added(id) => Some(view_records(*id, *brand_no, e.label, e.pdq, &e.views)),
                AddOutcome::AlreadyPresent(_) => None,
            })
            .flatten()
            .collect();
        if let Err(e) = self.append_records(&new) {
            // The catalog has the entries; the next open (or write) re-appends them.
            tracing::error!(error = %e, "appending records failed after the catalog commit");
            return Err(e);
        }
        if let Some(votes) = self.votes.get_mut() {
            for ((o, _), e) in outcomes.iter().zip(entries) {
                if let (AddOutcome::Added(id), Some(data)) = (o, &e.features) {
                    if let Ok(features) = crate::features::from_bytes(data) {
                        votes.add(*id, &features);
                    }
                }
            }
        }
        self.refresh_if_needed()?;
        Ok(outcomes.into_iter().map(|(o, _)| o).collect())
    }

    fn require_writable(&self) -> Result<(), IndexError> {
        if self.options.writable {
            Ok(())
        } else {
            Err(IndexError::InvalidArgument("index was opened read-only".into()))
        }
    }

    /// Tombstone entries; returns the ids deleted.
    pub fn delete(&mut self, selector: &Selector) -> Result<Vec<EntryId>, IndexError> {
        self.require_writable()?;
        let ids = self.catalog.delete(selector)?;
        for &id in &ids {
            self.deleted.insert(id);
        }
        Ok(ids)
    }

    /// Entries matching a selector (deleted ones included, flagged).
    pub fn find(&self, selector: &Selector) -> Result<Vec<Entry>, IndexError> {
        self.catalog.find(selector)
    }

    /// Metadata of the given entries.
    pub fn entries(&self, ids: &[EntryId]) -> Result<HashMap<EntryId, Entry>, IndexError> {
        Ok(self.catalog.entries_by_id(ids)?.into_iter().map(|e| (e.id, e)).collect())
    }

    /// Live entries whose stored features share the most descriptor keys with `query`:
    /// up to `limit` of them with at least `min_votes` votes, most first. The first call
    /// files every stored feature (a pass over the catalog); later adds are filed as
    /// they come.
    pub fn feature_candidates(
        &self,
        query: &[crate::features::Feature],
        min_votes: u32,
        limit: usize,
    ) -> Result<Vec<(EntryId, u32)>, IndexError> {
        let votes = match self.votes.get() {
            Some(v) => v,
            None => {
                let started = std::time::Instant::now();
                let mut built = votes::Votes::default();
                let mut unreadable = 0usize;
                self.catalog.for_each_features(|id, data| match crate::features::from_bytes(data) {
                    Ok(features) => built.add(id, &features),
                    Err(_) => unreadable += 1,
                })?;
                if unreadable > 0 {
                    tracing::warn!(unreadable, "stored features that could not be read were skipped");
                }
                tracing::info!(
                    entries = built.entries(),
                    features = built.features(),
                    ms = started.elapsed().as_millis() as u64,
                    "filed stored features for the local-feature check"
                );
                self.votes.get_or_init(|| built)
            }
        };
        // Ask for more than `limit`: deleted entries are dropped after counting.
        let mut found = votes.candidates(query, min_votes, limit * 2 + 8);
        found.retain(|(id, _)| !self.deleted.contains(*id));
        found.truncate(limit);
        Ok(found)
    }

    /// The stored features of these entries (those that have readable ones).
    pub fn features(&self, ids: &[EntryId]) -> Result<HashMap<EntryId, Vec<crate::features::Feature>>, IndexError> {
        Ok(self
            .catalog
            .features(ids)?
            .into_iter()
            .filter_map(|(id, data)| Some((id, crate::features::from_bytes(&data).ok()?)))
            .collect())
    }

    /// The stored thumbnail of an entry, if any.
    pub fn thumbnail(&self, id: EntryId) -> Result<Option<Vec<u8>>, IndexError> {
        self.catalog.thumbnail(id)
    }

    /// Live entries (optionally of one brand and label), newest first: the total and a page.
    pub fn list(
        &self,
        brand: Option<&str>,
        label: Option<Label>,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Entry>), IndexError> {
        self.catalog.list(brand, label, offset, limit)
    }

    /// The label and SHA-256 of every live entry of `brand`, unless it has more than
    /// `limit`: what re-indexing would find already present (so `lookalike index` can
    /// skip those files before hashing them).
    pub fn stored_files(&self, brand: &str, limit: u64) -> Result<Option<StoredFiles>, IndexError> {
        self.catalog.stored_files(brand, limit)
    }

    /// Brand number of a brand name (for filters), if the brand exists.
    pub fn brand_no(&self, brand: &str) -> Result<Option<u32>, IndexError> {
        self.catalog.brand_no(brand)
    }

    /// Whether an HNSW graph has been built.
    pub fn has_hnsw(&self) -> bool {
        self.hnsw.is_some()
    }

    /// Number of records (codes) in the files, deleted ones included until compaction.
    pub fn records(&self) -> u64 {
        self.codes.len()
    }

    fn keep(&self, record: u32, filter: &Filter) -> Option<Ref> {
        let r = self.record_ref(record);
        let ok = !self.deleted.contains(r.entry)
            && filter.brand_no.is_none_or(|b| b == r.brand_no)
            && filter.label.is_none_or(|l| l == r.label);
        ok.then_some(r)
    }

    /// Every live entry with a code within `radius` of any of `queries`, best distance
    /// per entry, sorted by distance. Exact: nothing within the radius is missed.
    pub fn search_radius(&self, queries: &[Hash256], radius: u32, filter: &Filter) -> Vec<Hit> {
        let codes = self.code_slice();
        let mut hits: Vec<ScanHit> = Vec::new();
        let covered = match &self.mih {
            Some(mih) if mih.expected_candidates(queries.len(), radius) < (mih.records() as f64) / 4.0 => {
                let mut cands = Vec::new();
                // Sorted and unique already (`candidates`' contract), so every record is
                // verified once.
                mih.candidates(queries, radius, &mut cands);
                debug_assert!(cands.windows(2).all(|w| w[0] < w[1]), "MIH candidates must be sorted and unique");
                for r in cands {
                    let (d, q) = scan::best_of(&codes[r as usize], queries);
                    if d <= radius {
                        hits.push(ScanHit { distance: d, record: r, query: q });
                    }
                }
                mih.records() as usize
            }
            _ => 0,
        };
        scan::scan_radius(&codes[covered..], covered as u32, queries, radius, &mut hits);
        self.merge(hits, filter, usize::MAX)
    }

    /// The `k` live entries nearest to any of `queries`.
    pub fn search_nearest(
        &self,
        queries: &[Hash256],
        k: usize,
        filter: &Filter,
        engine: NearestEngine,
    ) -> Result<Vec<Hit>, IndexError> {
        let codes = self.code_slice();
        let keep = |r: u32| self.keep(r, filter).is_some();
        let mut heap = BinaryHeap::new();
        match engine {
            NearestEngine::Exact => scan::scan_nearest(codes, 0, queries, k, &keep, &mut heap),
            NearestEngine::Hnsw { ef } => {
                let graph = self.hnsw.as_ref().ok_or_else(|| {
                    IndexError::InvalidArgument("this index has no HNSW graph: build it with `lookalike hnsw`".into())
                })?;
                let covered = graph.points();
                // Every record is acceptable when nothing is deleted and no brand or
                // label is asked for: the graph then searches unfiltered (`merge` keeps
                // checking).
                let all = self.deleted.0.is_empty() && filter.brand_no.is_none() && filter.label.is_none();
                let keep_record = |r: usize| keep(r as u32);
                let graph_keep: Option<&dyn Fn(usize) -> bool> = if all { None } else { Some(&keep_record) };
                for (qi, q) in queries.iter().enumerate() {
                    for (record, d) in graph.search(&q.to_le_bytes(), k, ef, graph_keep) {
                        heap.push(ScanHit { distance: d, record, query: qi as u8 });
                        if heap.len() > k {
                            heap.pop();
                        }
                    }
                }
                scan::scan_nearest(&codes[covered..], covered as u32, queries, k, &keep, &mut heap);
            }
        }
        Ok(self.merge(scan::into_sorted(heap), filter, k))
    }

    /// Keep live, filtered records; one hit per entry (its best); sorted; at most `k`.
    fn merge(&self, mut hits: Vec<ScanHit>, filter: &Filter, k: usize) -> Vec<Hit> {
        hits.sort_unstable();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for h in hits {
            let Some(r) = self.keep(h.record, filter) else { continue };
            if seen.insert(r.entry) {
                out.push(Hit {
                    entry: r.entry,
                    label: r.label,
                    brand_no: r.brand_no,
                    distance: h.distance,
                    query: h.query,
                    view: r.view,
                });
                if out.len() == k {
                    break;
                }
            }
        }
        out
    }

    /// Rebuild the multi-index tables if too many records are past them.
    fn refresh_if_needed(&mut self) -> Result<(), IndexError> {
        let covered = self.mih.as_ref().map_or(0, |m| m.records());
        if self.codes.len() - covered > self.options.mih_tail_limit && self.codes.len() >= MIN_MIH_RECORDS {
            self.rebuild_mih()?;
        }
        Ok(())
    }

    /// Bring the derived tables up to date with every record (end of a bulk load).
    /// Small indexes have none: below [`MIN_MIH_RECORDS`] a scan is as fast.
    pub fn refresh(&mut self) -> Result<(), IndexError> {
        self.require_writable()?;
        let covered = self.mih.as_ref().map_or(0, |m| m.records());
        if covered < self.codes.len() && self.codes.len() >= MIN_MIH_RECORDS {
            self.rebuild_mih()?;
        }
        Ok(())
    }

    fn rebuild_mih(&mut self) -> Result<(), IndexError> {
        let started = std::time::Instant::now();
        let mut next = self.manifest.clone();
        let file = next.next_file_name("mih", ".bin");
        Mih::build(&self.dir.join(&file), self.code_slice())?;
        next.mih = Some(manifest::MihFile { file, records: self.codes.len() });
        self.switch_manifest(next)?;
        tracing::info!(
            records = self.codes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rebuilt multi-index tables"
        );
        Ok(())
    }

    /// Build (or rebuild) the HNSW graph over every record.
    pub fn build_hnsw(&mut self, params: HnswParams) -> Result<(), IndexError> {
        self.require_writable()?;
        let mut next = self.manifest.clone();
        let basename = next.next_file_name("hnsw", "");
        hnsw::build(&self.dir, &basename, self.codes.bytes(), params)?;
        let [graph, data] = hnsw::files(&self.dir, &basename);
        let graph_crc = crc32fast::hash(&records::read_all(&graph)?);
        let data_crc = crc32fast::hash(&records::read_all(&data)?);
        for f in [&graph, &data] {
            File::open(f).and_then(|f| f.sync_all()).map_err(io_err(f))?;
        }
        sync_dir(&self.dir)?;
        next.hnsw = Some(manifest::HnswFiles { basename, records: self.codes.len(), graph_crc, data_crc, params });
        self.switch_manifest(next)
    }

    /// Make `next` current: store it atomically, reopen derived files, delete old ones.
    fn switch_manifest(&mut self, next: Manifest) -> Result<(), IndexError> {
        next.store(&self.dir)?;
        self.manifest = next;
        self.mih = None;
        self.hnsw = None;
        let verify = std::mem::replace(&mut self.options.verify, false);
        let res = self.open_derived();
        self.options.verify = verify;
        res?;
        self.remove_stale_files();
        Ok(())
    }

    /// Rewrite the record files without deleted entries (a new generation), then
    /// rebuild the tables. Returns the number of records dropped.
    pub fn compact(&mut self) -> Result<u64, IndexError> {
        self.require_writable()?;
        self.catalog.drop_deleted_extras()?;
        let mut items = Vec::new();
        let codes = self.code_slice();
        for record in 0..self.codes.len() as u32 {
            let r = self.record_ref(record);
            if !self.deleted.contains(r.entry) {
                items.push((Hash256(codes[record as usize]), r));
            }
        }
        let dropped = self.codes.len() - items.len() as u64;
        self.rewrite(items)?;
        Ok(dropped)
    }

    /// Rebuild every derived file from the catalog (after damage).
    pub fn repair(dir: &Path) -> Result<u64, IndexError> {
        let lock = Self::lock(dir, true)?;
        let catalog = Catalog::open(&dir.join("catalog.sqlite"), true)?;
        let mut items = Vec::new();
        catalog.entries_after(0, &mut |e| {
            if e.deleted_at_ms.is_none() {
                items.extend(view_records(e.id, e.brand_no, e.label, e.pdq, &e.views));
            }
            Ok(())
        })?;
        // A generation above any present, even if the manifest itself is damaged.
        let generation = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("codes-")?.strip_suffix(".bin")?.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(0)
            + 1;
        let next = Manifest::new(generation);
        let n = items.len() as u64;
        Self::write_generation(dir, &next, &items)?;
        next.store(dir)?;
        drop(catalog);
        drop(lock);
        let mut index = Index::open(dir, OpenOptions::writable())?;
        index.refresh()?;
        Ok(n)
    }

    /// Write a new generation's record files holding `items` (durable; the manifest is
    /// not switched to them yet).
    fn write_generation(
        dir: &Path,
        next: &Manifest,
        items: &[(Hash256, Ref)],
    ) -> Result<(RecordFile, RecordFile), IndexError> {
        Self::create_record_files(dir, next)?;
        let mut codes = RecordFile::open(&dir.join(&next.codes), CODES_MAGIC, CODE_BYTES, false, true)?;
        let mut refs = RecordFile::open(&dir.join(&next.refs), REFS_MAGIC, REF_BYTES, false, true)?;
        append_pair(&mut codes, &mut refs, items)?;
        Ok((codes, refs))
    }

    fn rewrite(&mut self, items: Vec<(Hash256, Ref)>) -> Result<(), IndexError> {
        let had_hnsw = self.manifest.hnsw.as_ref().map(|h| h.params);
        let next = Manifest::new(self.manifest.generation + 1);
        let (codes, refs) = Self::write_generation(&self.dir, &next, &items)?;
        self.codes = codes;
        self.refs = refs;
        self.switch_manifest(next)?;
        self.refresh()?;
        if let Some(params) = had_hnsw {
            self.build_hnsw(params)?;
        }
        Ok(())
    }

    /// Counts, sizes and parameters.
    pub fn stats(&self) -> Result<Stats, IndexError> {
        let (by_brand_label, deleted) = self.catalog.counts()?;
        let live = by_brand_label.iter().map(|(_, _, n)| n).sum();
        let mut files = Vec::new();
        let mut names =
            vec!["catalog.sqlite".to_string(), "catalog.sqlite-wal".to_string(), "manifest.json".to_string()];
        names.extend(self.manifest.files());
        for name in names {
            if let Ok(meta) = std::fs::metadata(self.dir.join(&name)) {
                files.push((name, meta.len()));
            }
        }
        let bytes_on_disk = files.iter().map(|(_, n)| n).sum();
        Ok(Stats {
            dir: self.dir.clone(),
            by_brand_label,
            live,
            deleted,
            records: self.codes.len(),
            mih_records: self.mih.as_ref().map_or(0, |m| m.records()),
            hnsw_points: self.hnsw.as_ref().map(|h| h.points() as u64),
            files,
            bytes_on_disk,
            manifest: self.manifest.clone(),
        })
    }
}

/// Append records to a codes/refs pair: codes first, so a crash in between leaves
/// extra codes (which [`Index::check_records`] drops), never refs without codes.
fn append_pair(codes: &mut RecordFile, refs: &mut RecordFile, items: &[(Hash256, Ref)]) -> Result<(), IndexError> {
    let mut code_bytes = Vec::with_capacity(items.len() * CODE_BYTES);
    let mut ref_bytes = Vec::with_capacity(items.len() * REF_BYTES);
    for (code, r) in items {
        code_bytes.extend_from_slice(&code.to_le_bytes());
        ref_bytes.extend_from_slice(&r.to_bytes());
    }
    codes.append(&code_bytes)?;
    refs.append(&ref_bytes)
}

/// A file the manifest names but that does not exist: the manifest or the directory is
/// damaged (a plain "No such file" would name a file that may never have existed).
fn missing_is_damage(dir: &Path, e: IndexError) -> IndexError {
    match e {
        IndexError::Io { path, error } if error.kind() == std::io::ErrorKind::NotFound => IndexError::Corrupt {
            path: dir.join(manifest::FILE_NAME),
            what: format!("names {}, which does not exist", path.display()),
        },
        other => other,
    }
}

/// Check an entry's text fields (what `add` accepts), so callers can refuse one bad item
/// before hashing it instead of failing a whole batch.
pub fn validate_entry(e: &NewEntry) -> Result<(), IndexError> {
    validate_text("brand", &e.brand, MAX_BRAND_BYTES)?;
    if e.brand.trim() != e.brand {
        return Err(IndexError::InvalidArgument(format!("brand {:?} has leading or trailing spaces", e.brand)));
    }
    validate_text("external id", &e.external_id, MAX_EXTERNAL_ID_BYTES)?;
    validate_text("source", &e.source, 4096)?;
    if let Some(n) = &e.note {
        validate_text_allow_empty("note", n, MAX_NOTE_BYTES)?;
    }
    if let Some(data) = &e.features {
        if data.len() > MAX_FEATURE_BYTES {
            return Err(IndexError::InvalidArgument(format!(
                "{} bytes of features, over the limit of {MAX_FEATURE_BYTES}",
                data.len()
            )));
        }
        crate::features::from_bytes(data)
            .map_err(|e| IndexError::InvalidArgument(format!("unreadable features: {e}")))?;
    }
    if e.views.len() > MAX_VIEWS {
        return Err(IndexError::InvalidArgument(format!(
            "{} extra views, over the limit of {MAX_VIEWS}",
            e.views.len()
        )));
    }
    Ok(())
}

/// The records of one entry: its whole-image hash as view 0, then its extra views.
fn view_records(entry: EntryId, brand_no: u32, label: Label, pdq: Hash256, views: &[Hash256]) -> Vec<(Hash256, Ref)> {
    std::iter::once(pdq)
        .chain(views.iter().copied())
        .enumerate()
        .map(|(view, code)| (code, Ref { entry, brand_no, label, view: view as u8 }))
        .collect()
}

/// Longest brand name accepted, in bytes.
pub const MAX_BRAND_BYTES: usize = 200;
/// Longest external id accepted, in bytes.
pub const MAX_EXTERNAL_ID_BYTES: usize = 500;
/// Longest note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 4096;

fn validate_text_allow_empty(what: &str, value: &str, max: usize) -> Result<(), IndexError> {
    if value.len() > max {
        return Err(IndexError::InvalidArgument(format!("{what} is {} bytes, over the limit of {max}", value.len())));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(IndexError::InvalidArgument(format!("{what} contains control characters")));
    }
    Ok(())
}

fn validate_text(what: &str, value: &str, max: usize) -> Result<(), IndexError> {
    if value.trim().is_empty() {
        return Err(IndexError::InvalidArgument(format!("{what} is empty")));
    }
    validate_text_allow_empty(what, value, max)
}

// The server shares one `Index` between reader threads behind an `RwLock`.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Index>();
};
