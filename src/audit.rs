//! The audit log: every write and delete, who did it and when, one JSON object per line,
//! appended to `audit.jsonl` in the data directory and synced to disk before the
//! operation is acknowledged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::index::{AddOutcome, NewEntry};

/// File name of the audit log inside the data directory.
pub const FILE_NAME: &str = "audit.jsonl";

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl AuditLog {
    /// Open (create) the log in data directory `dir`, for appending.
    pub fn open(dir: &Path) -> std::io::Result<AuditLog> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(AuditLog { path, file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one line per event (each gets `at_ms`, `actor` and `action`), then sync.
    pub fn record(&self, actor: &str, action: &str, events: impl IntoIterator<Item = Value>) -> std::io::Result<()> {
        let at_ms = now_ms();
        let mut text = String::new();
        for mut event in events {
            if let Value::Object(map) = &mut event {
                map.insert("at_ms".into(), json!(at_ms));
                map.insert("actor".into(), json!(actor));
                map.insert("action".into(), json!(action));
            }
            text.push_str(&event.to_string());
            text.push('\n');
        }
        if text.is_empty() {
            return Ok(());
        }
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = file.metadata()?.len();
        let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_data());
        if written.is_err() {
            // Never leave part of a line behind: the next line would be glued onto it.
            let _ = file.set_len(before).and_then(|()| file.sync_data());
        }
        written
    }

    /// Record the entries an add stored (entries already present changed nothing).
    pub fn added(&self, actor: &str, entries: &[NewEntry], outcomes: &[AddOutcome]) -> std::io::Result<()> {
        let events = entries.iter().zip(outcomes).filter_map(|(e, o)| match o {
            AddOutcome::Added(id) => Some(json!({
                "id": id,
                "brand": e.brand,
                "label": e.label.as_str(),
                "external_id": e.external_id,
                "source": e.source,
                "pdq": e.pdq.to_string(),
            })),
            AddOutcome::AlreadyPresent(_) => None,
        });
        self.record(actor, "add", events)
    }

    /// Record a delete and what it removed.
    pub fn deleted(&self, actor: &str, selector: &crate::index::Selector, ids: &[u64]) -> std::io::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let target = match selector {
            crate::index::Selector::Id(id) => json!({"id": id}),
            crate::index::Selector::External { brand, external_id } => {
                json!({"brand": brand, "external_id": external_id})
            }
        };
        self.record(actor, "delete", [json!({"target": target, "deleted_ids": ids})])
    }
}

/// The actor name for commands run locally.
pub fn local_actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}
