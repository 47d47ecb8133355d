//! Rendering results as text tables and JSON lines.

use std::fmt::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::hash::{ImageHashes, Orientation};
use crate::index::Stats;
use crate::matcher::{Closeness, MatchResult};

/// One JSON object for one queried image (the `query --json` contract).
pub fn match_json(path: &Path, r: &MatchResult) -> Value {
    let matches: Vec<Value> = r
        .matches
        .iter()
        .map(|m| {
            json!({
                "id": m.entry.id,
                "external_id": m.entry.external_id,
                "brand": m.entry.brand,
                "label": m.entry.label.as_str(),
                "distance": m.distance,
                "orientation": m.orientation.name(),
                "view": m.view,
                "query_view": m.query_view,
                "closeness": m.closeness,
                "verified": m.verified,
                "replaced": m.replaced,
                "parts": m.parts,
                "confidence": m.confidence,
                "evidence": m.evidence,
                "source": m.entry.source,
                "note": m.entry.note,
            })
        })
        .collect();
    json!({
        "path": path.display().to_string(),
        "pdq": r.pdq.to_string(),
        "quality": r.quality,
        "phash": r.phash.map(|p| format!("{p:016x}")),
        "verdict": r.verdict.as_str(),
        "matches": matches,
        "hash_ms": r.hash_time.as_secs_f64() * 1e3,
        "search_ms": r.search_time.as_secs_f64() * 1e3,
    })
}

/// A readable table for one queried image.
pub fn match_table(path: &Path, r: &MatchResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {}  (PDQ quality {}, {} match{})",
        path.display(),
        r.verdict.as_str(),
        r.quality,
        r.matches.len(),
        if r.matches.len() == 1 { "" } else { "es" }
    );
    if r.matches.is_empty() {
        return s;
    }
    let rows: Vec<[String; 7]> = r
        .matches
        .iter()
        .map(|m| {
            [
                m.distance.to_string(),
                match m.closeness {
                    Closeness::Flag => "flag",
                    Closeness::Review => "review",
                    Closeness::Beyond => "-",
                }
                .to_string(),
                m.entry.label.as_str().to_string(),
                m.entry.brand.clone(),
                m.entry.external_id.clone(),
                m.describe(),
                m.entry.source.clone(),
            ]
        })
        .collect();
    let header = ["DIST", "LEVEL", "LABEL", "BRAND", "EXTERNAL ID", "VIEW", "SOURCE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(l, "{cell:>w$}  ");
            } else if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(s, "{}", line(&header.map(String::from)));
    for row in &rows {
        let _ = writeln!(s, "{}", line(row));
    }
    s
}

pub fn hash_json(path: &Path, h: &ImageHashes, orientations: bool) -> Value {
    let mut v = json!({
        "path": path.display().to_string(),
        "pdq": h.pdq.hash().to_string(),
        "quality": h.pdq.quality,
        "phash": format!("{:016x}", h.phash),
        "width": h.width,
        "height": h.height,
        "format": h.format,
    });
    if orientations {
        let o: serde_json::Map<String, Value> = Orientation::ALL
            .iter()
            .map(|o| (o.name().to_string(), Value::String(h.pdq.dihedral[*o as usize].to_string())))
            .collect();
        v["orientations"] = Value::Object(o);
    }
    v
}

pub fn hash_text(path: &Path, h: &ImageHashes, orientations: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", path.display());
    let _ = writeln!(s, "  pdq      {}", h.pdq.hash());
    let _ = writeln!(s, "  quality  {}", h.pdq.quality);
    let _ = writeln!(s, "  phash    {:016x}", h.phash);
    let _ = writeln!(s, "  size     {}×{} {}", h.width, h.height, h.format);
    if orientations {
        for o in Orientation::ALL {
            let _ = writeln!(s, "  {:<10} {}", o.name(), h.pdq.dihedral[o as usize]);
        }
    }
    s
}

pub fn stats_text(st: &Stats) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "index {}", st.dir.display());
    let _ = writeln!(s, "  entries   {} live, {} deleted (records in files: {})", st.live, st.deleted, st.records);
    if !st.by_brand_label.is_empty() {
        let _ = writeln!(s, "  by brand and label:");
        let w = st.by_brand_label.iter().map(|(b, _, _)| b.chars().count()).max().unwrap_or(5);
        for (brand, label, n) in &st.by_brand_label {
            let _ = writeln!(s, "    {brand:<w$}  {:<10}  {n}", label.as_str());
        }
    }
    let _ = writeln!(
        s,
        "  engine    exact multi-index hashing ({} chunks) over {} records, linear scan of {} newer",
        st.manifest.mih_chunks,
        st.mih_records,
        st.records - st.mih_records
    );
    match st.hnsw_points {
        Some(n) => {
            let p = st.manifest.hnsw.as_ref().map(|h| h.params);
            let _ = writeln!(s, "  hnsw      {n} points {p:?}");
        }
        None => {
            let _ = writeln!(s, "  hnsw      none (build with `lookalike hnsw`)");
        }
    }
    let _ = writeln!(
        s,
        "  format    {} v{}, {} codes, generation {}",
        st.manifest.format, st.manifest.format_version, st.manifest.hash, st.manifest.generation
    );
    let _ = writeln!(s, "  on disk   {} bytes", st.bytes_on_disk);
    for (name, size) in &st.files {
        let _ = writeln!(s, "    {name:<28} {size}");
    }
    s
}
