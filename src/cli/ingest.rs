//! `lookalike index`: walk, hash on all cores, write in batches, report.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use super::{open_writable, read_input, IndexArgs, EXIT_OK, EXIT_PARTIAL};
use crate::hash::{self, DecodeLimits, ImageError};
use crate::index::{AddOutcome, Label, NewEntry, StoredFiles};

/// Brands with more stored entries than this are not listed up front by `index` (see
/// [`run`]).
const PRECHECK_LIMIT: u64 = 4_000_000;

/// What the manifest CSV says about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub external_id: String,
    pub label: Option<Label>,
    pub note: Option<String>,
}

/// Read `path,external_id[,label][,note]` rows; paths are resolved against the CSV's
/// folder and canonicalised, so they can be compared with walked files.
pub fn read_manifest(csv_path: &Path) -> Result<Vec<(PathBuf, ManifestRow)>> {
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(csv_path)
        .with_context(|| format!("opening manifest {}", csv_path.display()))?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 1;
        let record = record.with_context(|| format!("{}: line {line}", csv_path.display()))?;
        if i == 0 && record.get(0).is_some_and(|f| f.eq_ignore_ascii_case("path")) {
            continue;
        }
        if record.len() < 2 || record.len() > 4 {
            bail!(
                "{}: line {line}: expected path,external_id[,label][,note], got {} fields",
                csv_path.display(),
                record.len()
            );
        }
        let path = base.join(&record[0]);
        let path =
            path.canonicalize().with_context(|| format!("{}: line {line}: {}", csv_path.display(), path.display()))?;
        let external_id = record[1].to_string();
        if external_id.is_empty() {
            bail!("{}: line {line}: empty external_id", csv_path.display());
        }
        let label = match record.get(2).filter(|s| !s.is_empty()) {
            Some(l) => {
                Some(l.parse::<Label>().map_err(|e| anyhow::anyhow!("{}: line {line}: {e}", csv_path.display()))?)
            }
            None => None,
        };
        let note = record.get(3).filter(|s| !s.is_empty()).map(str::to_string);
        rows.push((path, ManifestRow { external_id, label, note }));
    }
    Ok(rows)
}

/// Every regular file under `paths` (directories walked recursively, sorted).
fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if meta.is_dir() {
            for item in walkdir::WalkDir::new(p).follow_links(true).sort_by_file_name() {
                let item = item.with_context(|| format!("walking {}", p.display()))?;
                if item.file_type().is_file() {
                    files.push(item.into_path());
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

enum Prepared {
    Entry(Box<NewEntry>),
    /// Already stored for this brand and label (same SHA-256): not hashed again.
    Present,
    NotImage(String),
    Failed(String),
}

#[derive(Default)]
struct Tally {
    added: u64,
    present: u64,
    skipped: u64,
    failed: Vec<PathBuf>,
}

/// The files to index and what the manifest says about them.
pub struct Plan {
    pub files: Vec<PathBuf>,
    by_path: HashMap<PathBuf, ManifestRow>,
}

impl Plan {
    pub fn new(args: &IndexArgs) -> Result<Plan> {
        if args.brand.trim().is_empty() {
            bail!("--brand is empty");
        }
        if args.batch == 0 {
            bail!("--batch must be at least 1");
        }
        let manifest = match &args.manifest {
            Some(csv) => read_manifest(csv)?,
            None => Vec::new(),
        };
        let files = if args.paths.is_empty() {
            if manifest.is_empty() {
                bail!("nothing to index: give image files or folders, or a --manifest");
            }
            manifest.iter().map(|(p, _)| p.clone()).collect()
        } else {
            collect_files(&args.paths)?
        };
        Ok(Plan { files, by_path: manifest.into_iter().collect() })
    }

    /// The manifest row of a file, if it has one.
    pub fn row(&self, path: &Path) -> Option<&ManifestRow> {
        path.canonicalize().ok().and_then(|c| self.by_path.get(&c))
    }
}

/// The external id of a file: the manifest's, or the file stem.
pub fn external_id(path: &Path, row: Option<&ManifestRow>) -> String {
    row.map_or_else(
        || path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        |r| r.external_id.clone(),
    )
}

pub fn run(data: &Path, args: &IndexArgs, limits: &DecodeLimits) -> Result<u8> {
    let plan = Plan::new(args)?;
    let files = &plan.files;
    let mut index = open_writable(data)?;
    let audit =
        crate::audit::AuditLog::open(data).with_context(|| format!("opening the audit log in {}", data.display()))?;
    let actor = crate::audit::local_actor();
    let progress = progress_bar(files.len() as u64, args.quiet);
    let default_label = Label::from(args.label);
    // A run that was interrupted is simply run again: what it stored is skipped after
    // reading and a SHA-256, before any decoding (for brands of up to PRECHECK_LIMIT
    // entries, ~40 bytes each in memory; beyond, the catalog still finds duplicates,
    // after hashing).
    let stored = index
        .stored_files(&args.brand, PRECHECK_LIMIT)
        .context("listing the brand's stored files")?
        .unwrap_or_default();
    // The next batch is hashed on all cores while this thread's writer commits the last
    // one (fsyncs included), so the cores do not wait for the disk.
    let (batches, written) = std::sync::mpsc::sync_channel::<Vec<(PathBuf, Prepared)>>(1);
    let tally = std::thread::scope(|scope| -> Result<Tally> {
        let writer = scope.spawn(|| -> Result<Tally> {
            let mut tally = Tally::default();
            for prepared in written {
                let count = prepared.len() as u64;
                let mut entries = Vec::new();
                for (path, p) in prepared {
                    match p {
                        Prepared::Entry(e) => entries.push(*e),
                        Prepared::Present => tally.present += 1,
                        Prepared::NotImage(reason) => {
                            tally.skipped += 1;
                            if !args.quiet {
                                progress.suspend(|| eprintln!("skipped {}: {reason}", path.display()));
                            }
                        }
                        Prepared::Failed(reason) => {
                            progress.suspend(|| eprintln!("lookalike: {}: {reason}", path.display()));
                            tally.failed.push(path);
                        }
                    }
                }
                let outcomes = index.add(&entries).context("writing a batch to the index")?;
                audit
                    .added(&actor, &entries, &outcomes)
                    .with_context(|| format!("writing {}", audit.path().display()))?;
                for o in outcomes {
                    match o {
                        AddOutcome::Added(_) => tally.added += 1,
                        AddOutcome::AlreadyPresent(_) => tally.present += 1,
                    }
                }
                progress.inc(count);
            }
            index.refresh().context("updating the multi-index tables")?;
            Ok(tally)
        });
        for chunk in files.chunks(args.batch) {
            let prepared: Vec<(PathBuf, Prepared)> = chunk
                .par_iter()
                .map(|path| (path.clone(), prepare(path, plan.row(path), &args.brand, default_label, &stored, limits)))
                .collect();
            if batches.send(prepared).is_err() {
                break; // the writer stopped on an error, which its result carries
            }
        }
        drop(batches);
        writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    progress.finish_and_clear();
    outln!(
        "indexed {} new, {} already present, {} skipped (not images), {} failed — brand {}, into {}",
        tally.added,
        tally.present,
        tally.skipped,
        tally.failed.len(),
        args.brand,
        data.display()
    );
    if tally.failed.is_empty() {
        Ok(EXIT_OK)
    } else {
        eprintln!("lookalike: {} file(s) failed (listed above)", tally.failed.len());
        Ok(EXIT_PARTIAL)
    }
}

fn prepare(
    path: &Path,
    row: Option<&ManifestRow>,
    brand: &str,
    label: Label,
    stored: &StoredFiles,
    limits: &DecodeLimits,
) -> Prepared {
    let bytes = match read_input(path, limits) {
        Ok(b) => b,
        Err(e) => return Prepared::Failed(format!("{e:#}")),
    };
    let label = row.and_then(|r| r.label).unwrap_or(label);
    let sha256 = hash::sha256(&bytes);
    if stored.contains(&(label, sha256)) {
        return Prepared::Present;
    }
    let (hashes, thumbnail, features) = match hash::index_image(&bytes, limits) {
        Ok(h) => h,
        Err(ImageError::UnknownFormat(reason)) => return Prepared::NotImage(format!("not an image ({reason})")),
        Err(ImageError::Empty) => return Prepared::NotImage("empty file".into()),
        Err(e) => return Prepared::Failed(e.to_string()),
    };
    Prepared::Entry(Box::new(NewEntry {
        brand: brand.to_string(),
        label,
        external_id: external_id(path, row),
        source: path.display().to_string(),
        sha256,
        pdq: hashes.pdq.hash(),
        quality: Some(hashes.pdq.quality),
        phash: Some(hashes.phash),
        note: row.and_then(|r| r.note.clone()),
        thumbnail: Some(thumbnail),
        views: hashes.extra_views(),
        features: Some(features),
    }))
}

pub fn progress_bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images  {per_sec}  ETA {eta}",
        )
        .expect("valid template"),
    );
    bar
}
