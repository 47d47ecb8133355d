//! Append-only files of fixed-size records, memory-mapped for reading.
//!
//! Layout: a 4096-byte header page, then `count` records of `record_size` bytes.
//! The header holds a magic number naming the file's kind, the format version, the
//! record size, the committed record count, a CRC-32 of all committed records and a
//! CRC-32 of the header itself. Bytes past the committed count (a torn append) are
//! ignored and overwritten by the next append.
//!
//! An append writes the records, syncs them, then writes and syncs the new header: a
//! crash at any point leaves either the old or the new count, both consistent.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{io_err, IndexError};

/// Size of the header page; records start here, page-aligned for the map.
pub const HEADER_BYTES: u64 = 4096;
/// Version of this file layout.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_USED: usize = 32;

/// One append-only record file.
pub struct RecordFile {
    path: PathBuf,
    file: File,
    map: Option<Mmap>,
    magic: [u8; 8],
    record_size: usize,
    count: u64,
    crc: u32,
}

impl RecordFile {
    /// Create a new, empty file, durable before returning. A file already at `path` is
    /// replaced: callers only create files no manifest refers to (leftovers of an
    /// interrupted creation or rebuild).
    pub fn create(path: &Path, magic: [u8; 8], record_size: usize) -> Result<RecordFile, IndexError> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).map_err(io_err(path))?;
        let mut rf = RecordFile { path: path.to_owned(), file, map: None, magic, record_size, count: 0, crc: 0 };
        rf.file.set_len(HEADER_BYTES).map_err(io_err(path))?;
        rf.write_header()?;
        Ok(rf)
    }

    /// Open an existing file, checking its header; with `verify`, also read every
    /// record and check the CRC (through `read`, so the map's pages stay untouched).
    pub fn open(
        path: &Path,
        magic: [u8; 8],
        record_size: usize,
        verify: bool,
        writable: bool,
    ) -> Result<RecordFile, IndexError> {
        let file = OpenOptions::new().read(true).write(writable).open(path).map_err(io_err(path))?;
        let mut header = [0u8; HEADER_USED];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| IndexError::Corrupt { path: path.to_owned(), what: format!("cannot read the header: {e}") })?;
        let corrupt = |what: String| IndexError::Corrupt { path: path.to_owned(), what };
        if header[0..8] != magic {
            return Err(corrupt(format!(
                "wrong magic number {:?} (expected {:?}): not a lookalike file of this kind",
                String::from_utf8_lossy(&header[0..8]),
                String::from_utf8_lossy(&magic)
            )));
        }
        let stored_header_crc = u32::from_le_bytes(header[28..32].try_into().expect("4 bytes"));
        if crc32fast::hash(&header[0..28]) != stored_header_crc {
            return Err(corrupt("header checksum mismatch (torn or damaged header)".into()));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(IndexError::Incompatible(format!(
                "{} has format version {version}; this lookalike reads version {FORMAT_VERSION}",
                path.display()
            )));
        }
        let stored_size = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")) as usize;
        if stored_size != record_size {
            return Err(IndexError::Incompatible(format!(
                "{} holds {stored_size}-byte records; expected {record_size}",
                path.display()
            )));
        }
        let count = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
        let len = file.metadata().map_err(io_err(path))?.len();
        let needed = HEADER_BYTES + count * record_size as u64;
        if len < needed {
            return Err(corrupt(format!(
                "file is {len} bytes but its header commits {count} records ({needed} bytes): truncated"
            )));
        }
        let mut rf = RecordFile { path: path.to_owned(), file, map: None, magic, record_size, count, crc };
        if verify {
            rf.verify()?;
        }
        rf.remap()?;
        Ok(rf)
    }

    /// Treat only the first `count` committed records as present, in memory only (a
    /// reader facing a half-finished append it may not repair).
    pub fn hide_after(&mut self, count: u64) {
        self.count = self.count.min(count);
    }

    /// Re-read all committed records and compare with the header's CRC.
    pub fn verify(&self) -> Result<(), IndexError> {
        let mut hasher = crc32fast::Hasher::new();
        let mut remaining = self.count * self.record_size as u64;
        let mut offset = HEADER_BYTES;
        let mut buf = vec![0u8; 1 << 20];
        while remaining > 0 {
            let n = remaining.min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], offset).map_err(io_err(&self.path))?;
            hasher.update(&buf[..n]);
            remaining -= n as u64;
            offset += n as u64;
        }
        if hasher.finalize() != self.crc {
            return Err(IndexError::Corrupt {
                path: self.path.clone(),
                what: format!("checksum mismatch over its {} records (damaged data)", self.count),
            });
        }
        Ok(())
    }

    /// Committed record count.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// The committed records as one byte slice.
    pub fn bytes(&self) -> &[u8] {
        match &self.map {
            Some(map) => &map[HEADER_BYTES as usize..HEADER_BYTES as usize + self.count as usize * self.record_size],
            None => &[],
        }
    }

    /// Forget committed records past `count` (undoing a half-finished append of a
    /// pair of files): recompute the checksum of the kept prefix and rewrite the header.
    pub fn truncate_to(&mut self, count: u64) -> Result<(), IndexError> {
        assert!(count <= self.count, "truncate_to can only shrink");
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.bytes()[..count as usize * self.record_size]);
        self.count = count;
        self.crc = hasher.finalize();
        self.write_header()?;
        self.remap()
    }

    /// Append whole records (`bytes.len()` a multiple of the record size) durably.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), IndexError> {
        assert_eq!(bytes.len() % self.record_size, 0, "partial record appended");
        if bytes.is_empty() {
            return Ok(());
        }
        let offset = HEADER_BYTES + self.count * self.record_size as u64;
        self.file.write_all_at(bytes, offset).map_err(io_err(&self.path))?;
        self.file.sync_data().map_err(io_err(&self.path))?;
        let mut hasher = crc32fast::Hasher::new_with_initial(self.crc);
        hasher.update(bytes);
        let (old_count, old_crc) = (self.count, self.crc);
        self.count += (bytes.len() / self.record_size) as u64;
        self.crc = hasher.finalize();
        if let Err(e) = self.write_header() {
            // The on-disk header still commits the old count; keep memory in step with it.
            self.count = old_count;
            self.crc = old_crc;
            return Err(e);
        }
        self.remap()
    }

    fn write_header(&mut self) -> Result<(), IndexError> {
        let mut header = [0u8; HEADER_USED];
        header[0..8].copy_from_slice(&self.magic);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&(self.record_size as u32).to_le_bytes());
        header[16..24].copy_from_slice(&self.count.to_le_bytes());
        header[24..28].copy_from_slice(&self.crc.to_le_bytes());
        let header_crc = crc32fast::hash(&header[0..28]);
        header[28..32].copy_from_slice(&header_crc.to_le_bytes());
        self.file.write_all_at(&header, 0).map_err(io_err(&self.path))?;
        self.file.sync_data().map_err(io_err(&self.path))
    }

    fn remap(&mut self) -> Result<(), IndexError> {
        if self.count == 0 {
            self.map = None;
            return Ok(());
        }
        // SAFETY: the file is only ever appended to past the committed count (by this
        // process, which holds the index lock exclusively while writing) and is never
        // truncated while open, so the mapped committed range is never modified under us.
        let map = unsafe { Mmap::map(&self.file) }.map_err(io_err(&self.path))?;
        self.map = Some(map);
        Ok(())
    }
}

/// Read a whole small file into memory (used for checksumming derived files).
pub fn read_all(path: &Path) -> Result<Vec<u8>, IndexError> {
    let mut buf = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut buf)).map_err(io_err(path))?;
    Ok(buf)
}
