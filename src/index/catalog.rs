//! The catalog: one SQLite database, the source of truth for every entry.
//!
//! WAL journal with `synchronous = FULL`: a transaction that returned from `COMMIT` is
//! on disk. The record files and tables beside it are derived from these rows and can
//! be rebuilt from them.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{EntryId, IndexError, Label};
use crate::hash::Hash256;

const SCHEMA_VERSION: i64 = 2;

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub id: EntryId,
    pub brand: String,
    pub label: Label,
    pub external_id: String,
    pub source: String,
    #[serde(serialize_with = "hex_bytes")]
    pub sha256: [u8; 32],
    #[serde(serialize_with = "display")]
    pub pdq: Hash256,
    pub quality: Option<u8>,
    #[serde(serialize_with = "opt_hex64")]
    pub phash: Option<u64>,
    pub note: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub added_at_ms: i64,
    /// When it was deleted (tombstoned), if it was.
    pub deleted_at_ms: Option<i64>,
    /// Brand number used in the record files.
    #[serde(skip)]
    pub brand_no: u32,
    /// PDQ hashes of the entry's extra views, view 1 onwards (see [`NewEntry::views`]).
    #[serde(skip)]
    pub views: Vec<Hash256>,
}

fn hex_bytes<S: serde::Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}
fn display<S: serde::Serializer>(h: &Hash256, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&h.to_string())
}
fn opt_hex64<S: serde::Serializer>(h: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(v) => s.serialize_str(&format!("{v:016x}")),
        None => s.serialize_none(),
    }
}

/// An entry to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub brand: String,
    pub label: Label,
    pub external_id: String,
    pub source: String,
    pub sha256: [u8; 32],
    pub pdq: Hash256,
    pub quality: Option<u8>,
    pub phash: Option<u64>,
    pub note: Option<String>,
    /// A small JPEG of the image for people to look at (see `hash::THUMBNAIL_SIDE`).
    pub thumbnail: Option<Vec<u8>>,
    /// PDQ hashes of extra views of the image, stored as views 1, 2, …: e.g. its content
    /// with uniform borders trimmed (`hash::ImageHashes::views`). At most [`MAX_VIEWS`].
    pub views: Vec<Hash256>,
    /// The image's local features in their stored form (`features::to_bytes`), for the
    /// verification stage that catches crops, screenshots and collages. At most
    /// [`MAX_FEATURE_BYTES`].
    pub features: Option<Vec<u8>>,
}

/// Largest stored feature blob accepted (512 features).
pub const MAX_FEATURE_BYTES: usize = crate::features::HEADER_BYTES + 512 * crate::features::BYTES_PER_FEATURE;

/// Most extra views an entry may have.
pub const MAX_VIEWS: usize = 8;

/// What adding one entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// Stored under this new id.
    Added(EntryId),
    /// The same bytes were already stored for this brand and label, under this id.
    AlreadyPresent(EntryId),
}

impl AddOutcome {
    pub fn id(self) -> EntryId {
        match self {
            AddOutcome::Added(id) | AddOutcome::AlreadyPresent(id) => id,
        }
    }
}

pub struct Catalog {
    /// Behind a mutex so an `Index` can be shared between reader threads.
    conn: Mutex<Connection>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

const ENTRY_COLUMNS: &str = "e.id, b.name, e.label, e.external_id, e.source, e.sha256, e.pdq, e.quality, e.phash, e.note, e.added_at, e.deleted_at, e.brand_id, e.views";

fn row_to_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let label: String = row.get(2)?;
    let sha: Vec<u8> = row.get(5)?;
    let pdq: Vec<u8> = row.get(6)?;
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            format!("catalog row has a bad {what}").into(),
        )
    };
    Ok(Entry {
        id: row.get::<_, i64>(0)? as EntryId,
        brand: row.get(1)?,
        label: label.parse().map_err(|_| bad("label"))?,
        external_id: row.get(3)?,
        source: row.get(4)?,
        sha256: sha.try_into().map_err(|_| bad("sha256"))?,
        pdq: Hash256::from_le_bytes(&pdq.try_into().map_err(|_| bad("pdq hash"))?),
        quality: row.get::<_, Option<i64>>(7)?.map(|q| q.clamp(0, 100) as u8),
        phash: row.get::<_, Option<i64>>(8)?.map(|p| p as u64),
        note: row.get(9)?,
        added_at_ms: row.get(10)?,
        deleted_at_ms: row.get(11)?,
        brand_no: row.get::<_, i64>(12)? as u32,
        views: match row.get::<_, Option<Vec<u8>>>(13)? {
            None => Vec::new(),
            Some(b) if b.len() % 32 == 0 => {
                b.chunks_exact(32).map(|c| Hash256::from_le_bytes(c.try_into().expect("32 bytes"))).collect()
            }
            Some(_) => return Err(bad("views")),
        },
    })
}

impl Catalog {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn conn_mut(&mut self) -> &mut Connection {
        self.conn.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn open(path: &Path, writable: bool) -> Result<Catalog, IndexError> {
        let flags = if writable {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        };
        let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| IndexError::sqlite(format!("opening {}", path.display()), e))?;
        let ctx = |what: &'static str| move |e| IndexError::sqlite(what, e);
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(ctx("setting busy timeout"))?;
        if writable {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(ctx("enabling WAL"))?;
            conn.pragma_update(None, "synchronous", "FULL").map_err(ctx("setting synchronous"))?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS brands (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
                 CREATE TABLE IF NOT EXISTS entries (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     brand_id INTEGER NOT NULL REFERENCES brands(id),
                     label TEXT NOT NULL CHECK (label IN ('authentic', 'known_fake')),
                     external_id TEXT NOT NULL,
                     source TEXT NOT NULL,
                     sha256 BLOB NOT NULL CHECK (length(sha256) = 32),
                     pdq BLOB NOT NULL CHECK (length(pdq) = 32),
                     quality INTEGER,
                     phash INTEGER,
                     note TEXT,
                     added_at INTEGER NOT NULL,
                     deleted_at INTEGER,
                     views BLOB
                 );
                 CREATE UNIQUE INDEX IF NOT EXISTS entries_identity
                     ON entries (brand_id, label, sha256) WHERE deleted_at IS NULL;
                 CREATE INDEX IF NOT EXISTS entries_external ON entries (brand_id, external_id);
                 CREATE INDEX IF NOT EXISTS entries_deleted ON entries (deleted_at) WHERE deleted_at IS NOT NULL;
                 CREATE INDEX IF NOT EXISTS entries_browse ON entries (brand_id, label, id) WHERE deleted_at IS NULL;
                 CREATE TABLE IF NOT EXISTS thumbnails (entry_id INTEGER PRIMARY KEY, jpeg BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS features (entry_id INTEGER PRIMARY KEY, data BLOB NOT NULL);",
            )
            .map_err(ctx("creating the schema"))?;
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )
            .map_err(ctx("writing the schema version"))?;
        }
        let read_version = |conn: &Connection| {
            conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get::<_, String>(0))
                .optional()
                .map_err(ctx("reading the schema version"))
        };
        let mut version = read_version(&conn)?;
        if writable && version.as_deref() == Some("1") {
            // Version 2 adds the hashes of each entry's extra views (e.g. trimmed borders).
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 ALTER TABLE entries ADD COLUMN views BLOB;
                 UPDATE meta SET value = '2' WHERE key = 'schema_version';
                 COMMIT;",
            )
            .map_err(ctx("upgrading the catalog to schema version 2"))?;
            version = read_version(&conn)?;
        }
        match version.as_deref().map(str::parse::<i64>) {
            Some(Ok(SCHEMA_VERSION)) => {}
            Some(Ok(1)) => {
                return Err(IndexError::Incompatible(format!(
                    "{}: catalog schema version 1 predates stored views; open it once with a writing command \
                     (e.g. `lookalike serve` or `lookalike compact`) to upgrade it in place",
                    path.display()
                )))
            }
            other => {
                return Err(IndexError::Incompatible(format!(
                    "{}: catalog schema version {other:?}; this lookalike reads version {SCHEMA_VERSION}",
                    path.display()
                )))
            }
        }
        Ok(Catalog { conn: Mutex::new(conn) })
    }

    /// Add entries in one durable transaction. Entries whose bytes are already stored
    /// (same brand, label and SHA-256, not deleted) are reported, not duplicated.
    pub fn add(&mut self, entries: &[NewEntry]) -> Result<Vec<(AddOutcome, u32)>, IndexError> {
        let ctx = |what: &'static str| move |e| IndexError::sqlite(what, e);
        let tx = self.conn_mut().transaction().map_err(ctx("starting a transaction"))?;
        let mut out = Vec::with_capacity(entries.len());
        {
            let mut brand_get = tx.prepare_cached("SELECT id FROM brands WHERE name = ?1").map_err(ctx("preparing"))?;
            let mut brand_put = tx.prepare_cached("INSERT INTO brands (name) VALUES (?1)").map_err(ctx("preparing"))?;
            let mut existing = tx
                .prepare_cached(
                    "SELECT id FROM entries WHERE brand_id = ?1 AND label = ?2 AND sha256 = ?3 AND deleted_at IS NULL",
                )
                .map_err(ctx("preparing"))?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO entries (brand_id, label, external_id, source, sha256, pdq, quality, phash, note, added_at, views)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(ctx("preparing"))?;
            let mut thumb = tx
                .prepare_cached("INSERT OR REPLACE INTO thumbnails (entry_id, jpeg) VALUES (?1, ?2)")
                .map_err(ctx("preparing"))?;
            let mut feats = tx
                .prepare_cached("INSERT OR REPLACE INTO features (entry_id, data) VALUES (?1, ?2)")
                .map_err(ctx("preparing"))?;
            let now = now_ms();
            let mut brand_cache: BTreeMap<&str, i64> = BTreeMap::new();
            for e in entries {
                let brand_id = match brand_cache.get(e.brand.as_str()) {
                    Some(&id) => id,
                    None => {
                        let id = match brand_get
                            .query_row([&e.brand], |r| r.get(0))
                            .optional()
                            .map_err(ctx("looking up a brand"))?
                        {
                            Some(id) => id,
                            None => {
                                brand_put.execute([&e.brand]).map_err(ctx("adding a brand"))?;
                                tx.last_insert_rowid()
                            }
                        };
                        brand_cache.insert(&e.brand, id);
                        id
                    }
                };
                let label = e.label.as_str();
                let found: Option<i64> = existing
                    .query_row(params![brand_id, label, &e.sha256[..]], |r| r.get(0))
                    .optional()
                    .map_err(ctx("checking for an existing entry"))?;
                let outcome = match found {
                    Some(id) => AddOutcome::AlreadyPresent(id as EntryId),
                    None => {
                        insert
                            .execute(params![
                                brand_id,
                                label,
                                e.external_id,
                                e.source,
                                &e.sha256[..],
                                &e.pdq.to_le_bytes()[..],
                                e.quality.map(i64::from),
                                e.phash.map(|p| p as i64),
                                e.note,
                                now,
                                (!e.views.is_empty()).then(|| e
                                    .views
                                    .iter()
                                    .flat_map(|v| v.to_le_bytes())
                                    .collect::<Vec<u8>>())
                            ])
                            .map_err(ctx("inserting an entry"))?;
                        let id = tx.last_insert_rowid();
                        if let Some(jpeg) = &e.thumbnail {
                            thumb.execute(params![id, jpeg]).map_err(ctx("storing a thumbnail"))?;
                        }
                        if let Some(data) = &e.features {
                            feats.execute(params![id, data]).map_err(ctx("storing features"))?;
                        }
                        AddOutcome::Added(id as EntryId)
                    }
                };
                out.push((outcome, brand_id as u32));
            }
        }
        tx.commit().map_err(ctx("committing"))?;
        Ok(out)
    }

    /// Tombstone the live entries matching; returns their ids.
    pub fn delete(&mut self, selector: &Selector) -> Result<Vec<EntryId>, IndexError> {
        let now = now_ms();
        let ctx = |e| IndexError::sqlite("deleting", e);
        let conn = self.conn_mut();
        let ids: Vec<EntryId> = match selector {
            Selector::Id(id) => {
                let mut stmt = conn
                    .prepare("UPDATE entries SET deleted_at = ?1 WHERE id = ?2 AND deleted_at IS NULL RETURNING id")
                    .map_err(ctx)?;
                let rows = stmt.query_map(params![now, *id as i64], |r| r.get::<_, i64>(0)).map_err(ctx)?;
                rows.map(|r| r.map(|v| v as EntryId)).collect::<Result<_, _>>().map_err(ctx)?
            }
            Selector::External { brand, external_id } => {
                let mut stmt = conn
                    .prepare(
                        "UPDATE entries SET deleted_at = ?1
                         WHERE brand_id = (SELECT id FROM brands WHERE name = ?2) AND external_id = ?3 AND deleted_at IS NULL
                         RETURNING id",
                    )
                    .map_err(ctx)?;
                let rows = stmt.query_map(params![now, brand, external_id], |r| r.get::<_, i64>(0)).map_err(ctx)?;
                rows.map(|r| r.map(|v| v as EntryId)).collect::<Result<_, _>>().map_err(ctx)?
            }
        };
        Ok(ids)
    }

    /// Drop the thumbnails and features of deleted entries (thumbnails stay viewable until
    /// compaction).
    pub fn drop_deleted_extras(&mut self) -> Result<(), IndexError> {
        self.conn_mut()
            .execute_batch(
                "DELETE FROM thumbnails WHERE entry_id IN (SELECT id FROM entries WHERE deleted_at IS NOT NULL);
                 DELETE FROM features WHERE entry_id IN (SELECT id FROM entries WHERE deleted_at IS NOT NULL);",
            )
            .map_err(|e| IndexError::sqlite("dropping thumbnails and features of deleted entries", e))
    }

    /// Entries matching a selector, deleted ones included.
    pub fn find(&self, selector: &Selector) -> Result<Vec<Entry>, IndexError> {
        let conn = self.conn();
        let ctx = |e| IndexError::sqlite("reading entries", e);
        let base = format!("SELECT {ENTRY_COLUMNS} FROM entries e JOIN brands b ON b.id = e.brand_id");
        match selector {
            Selector::Id(id) => {
                let mut stmt = conn.prepare_cached(&format!("{base} WHERE e.id = ?1")).map_err(ctx)?;
                let rows = stmt.query_map([*id as i64], row_to_entry).map_err(ctx)?;
                rows.collect::<Result<_, _>>().map_err(ctx)
            }
            Selector::External { brand, external_id } => {
                let mut stmt = conn
                    .prepare_cached(&format!("{base} WHERE b.name = ?1 AND e.external_id = ?2 ORDER BY e.id"))
                    .map_err(ctx)?;
                let rows = stmt.query_map(params![brand, external_id], row_to_entry).map_err(ctx)?;
                rows.collect::<Result<_, _>>().map_err(ctx)
            }
        }
    }

    /// Entries with these ids (deleted ones included), in one query.
    pub fn entries_by_id(&self, ids: &[EntryId]) -> Result<Vec<Entry>, IndexError> {
        let ctx = |e| IndexError::sqlite("reading entries", e);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn();
        let placeholders = vec!["?"; ids.len()].join(",");
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM entries e JOIN brands b ON b.id = e.brand_id WHERE e.id IN ({placeholders})"
            ))
            .map_err(ctx)?;
        let rows =
            stmt.query_map(rusqlite::params_from_iter(ids.iter().map(|&id| id as i64)), row_to_entry).map_err(ctx)?;
        rows.collect::<Result<_, _>>().map_err(ctx)
    }

    /// The thumbnail of an entry, if one was stored.
    pub fn thumbnail(&self, id: EntryId) -> Result<Option<Vec<u8>>, IndexError> {
        let conn = self.conn();
        let found = conn
            .prepare_cached("SELECT jpeg FROM thumbnails WHERE entry_id = ?1")
            .and_then(|mut stmt| stmt.query_row([id as i64], |r| r.get::<_, Vec<u8>>(0)).optional());
        match found {
            Ok(jpeg) => Ok(jpeg),
            // An index created before thumbnails existed, opened read-only: none stored.
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => Ok(None),
            Err(e) => Err(IndexError::sqlite("reading a thumbnail", e)),
        }
    }

    /// The stored features of these entries (those that have any).
    pub fn features(&self, ids: &[EntryId]) -> Result<Vec<(EntryId, Vec<u8>)>, IndexError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn();
        let placeholders = vec!["?"; ids.len()].join(",");
        let found = conn
            .prepare_cached(&format!("SELECT entry_id, data FROM features WHERE entry_id IN ({placeholders})"))
            .and_then(|mut stmt| {
                let rows = stmt.query_map(rusqlite::params_from_iter(ids.iter().map(|&id| id as i64)), |r| {
                    Ok((r.get::<_, i64>(0)? as EntryId, r.get::<_, Vec<u8>>(1)?))
                })?;
                rows.collect::<Result<Vec<_>, _>>()
            });
        match found {
            Ok(rows) => Ok(rows),
            // An index created before features were stored, opened read-only: none stored.
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => Ok(Vec::new()),
            Err(e) => Err(IndexError::sqlite("reading features", e)),
        }
    }

    /// Calls `each` with the stored features of every live entry, in id order.
    pub fn for_each_features(&self, mut each: impl FnMut(EntryId, &[u8])) -> Result<(), IndexError> {
        let conn = self.conn();
        let result = conn
            .prepare(
                "SELECT f.entry_id, f.data FROM features f JOIN entries e ON e.id = f.entry_id
                 WHERE e.deleted_at IS NULL ORDER BY f.entry_id",
            )
            .and_then(|mut stmt| {
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let id = row.get::<_, i64>(0)? as EntryId;
                    each(id, row.get_ref(1)?.as_blob()?);
                }
                Ok(())
            });
        match result {
            Ok(()) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => Ok(()),
            Err(e) => Err(IndexError::sqlite("reading features", e)),
        }
    }

    /// Live entries, optionally of one brand and label, newest first: the total and one page.
    pub fn list(
        &self,
        brand: Option<&str>,
        label: Option<Label>,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Entry>), IndexError> {
        let ctx = |e| IndexError::sqlite("listing entries", e);
        let conn = self.conn();
        let filter = "e.deleted_at IS NULL AND (?1 IS NULL OR b.name = ?1) AND (?2 IS NULL OR e.label = ?2)";
        let label = label.map(Label::as_str);
        let total: i64 = conn
            .prepare_cached(&format!(
                "SELECT COUNT(*) FROM entries e JOIN brands b ON b.id = e.brand_id WHERE {filter}"
            ))
            .and_then(|mut stmt| stmt.query_row(params![brand, label], |r| r.get(0)))
            .map_err(ctx)?;
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM entries e JOIN brands b ON b.id = e.brand_id WHERE {filter}
                 ORDER BY e.id DESC LIMIT ?3 OFFSET ?4"
            ))
            .map_err(ctx)?;
        let rows = stmt
            .query_map(
                params![brand, label, limit.min(i64::MAX as u64) as i64, offset.min(i64::MAX as u64) as i64],
                row_to_entry,
            )
            .map_err(ctx)?;
        let entries = rows.collect::<Result<_, _>>().map_err(ctx)?;
        Ok((total as u64, entries))
    }

    /// Entries with ids greater than `after`, in id order (for catching up the record files).
    pub fn entries_after(
        &self,
        after: EntryId,
        f: &mut dyn FnMut(Entry) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let conn = self.conn();
        let ctx = |e| IndexError::sqlite("reading entries", e);
        let mut stmt = conn
            .prepare(&format!("SELECT {ENTRY_COLUMNS} FROM entries e JOIN brands b ON b.id = e.brand_id WHERE e.id > ?1 ORDER BY e.id"))
            .map_err(ctx)?;
        let mut rows = stmt.query([after as i64]).map_err(ctx)?;
        while let Some(row) = rows.next().map_err(ctx)? {
            f(row_to_entry(row).map_err(ctx)?)?;
        }
        Ok(())
    }

    /// Ids of every deleted entry.
    pub fn deleted_ids(&self) -> Result<Vec<EntryId>, IndexError> {
        let conn = self.conn();
        let ctx = |e| IndexError::sqlite("reading tombstones", e);
        let mut stmt = conn.prepare("SELECT id FROM entries WHERE deleted_at IS NOT NULL").map_err(ctx)?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).map_err(ctx)?;
        rows.map(|r| r.map(|v| v as EntryId)).collect::<Result<_, _>>().map_err(ctx)
    }

    /// Live entry counts by brand and label, and the number of deleted entries.
    pub fn counts(&self) -> Result<Counts, IndexError> {
        let conn = self.conn();
        let ctx = |e| IndexError::sqlite("counting entries", e);
        let mut stmt = conn
            .prepare(
                "SELECT b.name, e.label, COUNT(*) FROM entries e JOIN brands b ON b.id = e.brand_id
                 WHERE e.deleted_at IS NULL GROUP BY b.name, e.label ORDER BY b.name, e.label",
            )
            .map_err(ctx)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))
            .map_err(ctx)?;
        let mut out = Vec::new();
        for row in rows {
            let (brand, label, n) = row.map_err(ctx)?;
            let label = label.parse().map_err(|_| IndexError::Corrupt {
                path: "catalog".into(),
                what: format!("unknown label {label:?} in the catalog"),
            })?;
            out.push((brand, label, n as u64));
        }
        let deleted = conn
            .query_row("SELECT COUNT(*) FROM entries WHERE deleted_at IS NOT NULL", [], |r| r.get::<_, i64>(0))
            .map_err(ctx)?;
        Ok((out, deleted as u64))
    }

    /// The label and SHA-256 of every live entry of a brand, unless it has more than
    /// `limit` of them.
    pub fn stored_files(&self, brand: &str, limit: u64) -> Result<Option<StoredFiles>, IndexError> {
        let ctx = |e| IndexError::sqlite("listing a brand's files", e);
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT e.label, e.sha256 FROM entries e JOIN brands b ON e.brand_id = b.id
                 WHERE b.name = ?1 AND e.deleted_at IS NULL",
            )
            .map_err(ctx)?;
        let rows = stmt.query_map([brand], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))).map_err(ctx)?;
        let mut out = HashSet::new();
        for (read, row) in rows.enumerate() {
            if read as u64 >= limit {
                return Ok(None);
            }
            let (label, sha) = row.map_err(ctx)?;
            if let (Ok(label), Ok(sha)) = (label.parse(), <[u8; 32]>::try_from(sha)) {
                out.insert((label, sha));
            }
        }
        Ok(Some(out))
    }

    /// Brand number for a name, if the brand exists.
    pub fn brand_no(&self, name: &str) -> Result<Option<u32>, IndexError> {
        let conn = self.conn();
        conn.query_row("SELECT id FROM brands WHERE name = ?1", [name], |r| r.get::<_, i64>(0))
            .optional()
            .map(|v| v.map(|v| v as u32))
            .map_err(|e| IndexError::sqlite("looking up a brand", e))
    }
}

/// The (label, SHA-256) of stored files: what re-indexing would find present.
pub type StoredFiles = HashSet<(Label, [u8; 32])>;

/// Live entries per (brand, label), and the number of deleted entries.
pub type Counts = (Vec<(String, Label, u64)>, u64);

/// Which entries an operation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One entry by internal id.
    Id(EntryId),
    /// Every entry of a brand with this external id.
    External { brand: String, external_id: String },
}
