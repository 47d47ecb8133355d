//! `manifest.json`: which files are current, and the index's parameters.
//! Replaced atomically (write temporary, fsync, rename, fsync directory).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::hnsw::HnswParams;
use super::{io_err, sync_dir, IndexError};

const FORMAT: &str = "lookalike-index";
/// Bump when the layout of any file changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
pub(crate) const FILE_NAME: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MihFile {
    pub file: String,
    pub records: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswFiles {
    pub basename: String,
    pub records: u64,
    pub graph_crc: u32,
    pub data_crc: u32,
    pub params: HnswParams,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// The hash the codes hold.
    pub hash: String,
    pub code_bytes: u32,
    pub mih_chunks: u32,
    pub generation: u64,
    pub codes: String,
    pub refs: String,
    pub mih: Option<MihFile>,
    pub hnsw: Option<HnswFiles>,
    /// Counter for naming rebuilt files.
    pub next_seq: u64,
}

impl Manifest {
    pub fn new(generation: u64) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            hash: "pdq256".into(),
            code_bytes: 32,
            mih_chunks: super::mih::CHUNKS as u32,
            generation,
            codes: format!("codes-{generation}.bin"),
            refs: format!("refs-{generation}.bin"),
            mih: None,
            hnsw: None,
            next_seq: 1,
        }
    }

    /// A fresh file name for a rebuilt derived file.
    pub fn next_file_name(&mut self, prefix: &str, suffix: &str) -> String {
        let name = format!("{prefix}-{}-{}{suffix}", self.generation, self.next_seq);
        self.next_seq += 1;
        name
    }

    /// Names of every file this manifest uses.
    pub fn files(&self) -> Vec<String> {
        let mut v = vec![self.codes.clone(), self.refs.clone()];
        if let Some(m) = &self.mih {
            v.push(m.file.clone());
        }
        if let Some(h) = &self.hnsw {
            v.push(format!("{}.hnsw.graph", h.basename));
            v.push(format!("{}.hnsw.data", h.basename));
        }
        v
    }

    pub fn load(dir: &Path) -> Result<Option<Manifest>, IndexError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IndexError::Io { path, error: e }),
        };
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| IndexError::Corrupt { path: path.clone(), what: format!("not a valid manifest: {e}") })?;
        if m.format != FORMAT {
            return Err(IndexError::Incompatible(format!(
                "{}: format {:?}, expected {FORMAT:?}",
                path.display(),
                m.format
            )));
        }
        if m.format_version != FORMAT_VERSION
            || m.hash != "pdq256"
            || m.code_bytes != 32
            || m.mih_chunks != super::mih::CHUNKS as u32
        {
            return Err(IndexError::Incompatible(format!(
                "{}: format version {}, hash {} of {} bytes, {} chunks; this lookalike reads version {FORMAT_VERSION}, pdq256 of 32 bytes, {} chunks",
                path.display(),
                m.format_version,
                m.hash,
                m.code_bytes,
                m.mih_chunks,
                super::mih::CHUNKS
            )));
        }
        Ok(Some(m))
    }

    pub fn store(&self, dir: &Path) -> Result<(), IndexError> {
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(dir)
    }
}
