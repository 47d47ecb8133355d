//! The engine behind the services: one index shared by readers and writers, the decode
//! limits, and the pool that runs image work. Every method here blocks; the services call
//! them through the pool or `spawn_blocking`, never on an async worker.

use std::path::Path;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::auth::{Auth, Principal, Role};
use super::error::ApiError;
use super::pool::{PoolError, WorkPool};
use crate::audit::AuditLog;
use crate::hash::{self, DecodeLimits, Hash256};
use crate::index::{AddOutcome, Entry, EntryId, Index, IndexError, Label, NewEntry, OpenOptions, Selector, Stats};
use crate::matcher::{self, MatchResult, Query};
use crate::metrics::Metrics;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub limits: DecodeLimits,
    /// Image jobs running at once.
    pub max_in_flight: usize,
    /// Image jobs waiting for a slot before new ones are refused.
    pub max_queued: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        EngineOptions { limits: DecodeLimits::default(), max_in_flight: cores * 2, max_queued: cores * 8 }
    }
}

/// What a request carries: image bytes, or a hash computed by the caller.
#[derive(Debug, Clone)]
pub enum Content {
    Image(Vec<u8>),
    Hash { pdq: Hash256, quality: Option<u8> },
}

/// The hashes of one item to add, ready for the index (everything but its metadata).
#[derive(Debug, Clone)]
pub struct Hashed {
    pub sha256: [u8; 32],
    pub pdq: Hash256,
    pub quality: Option<u8>,
    pub phash: Option<u64>,
    pub thumbnail: Option<Vec<u8>>,
    /// Local features in stored form (images only).
    pub features: Option<Vec<u8>>,
    /// Extra views (see `NewEntry::views`).
    pub views: Vec<Hash256>,
    pub hash_time: Duration,
}

pub struct Engine {
    index: RwLock<Index>,
    audit: AuditLog,
    auth: Auth,
    limits: DecodeLimits,
    pool: WorkPool,
    metrics: Metrics,
}

impl Engine {
    /// Open (or create) the index in `dir` for writing. An existing index is opened as it
    /// is: nothing is rebuilt.
    pub fn open(dir: &Path, options: EngineOptions) -> Result<Engine, IndexError> {
        let index = Index::open(dir, OpenOptions::writable())?;
        let audit = AuditLog::open(dir).map_err(io_err(dir))?;
        let pool = WorkPool::new(options.max_in_flight, options.max_queued);
        Ok(Engine {
            index: RwLock::new(index),
            audit,
            auth: Auth::open(),
            limits: options.limits,
            metrics: Metrics::new(pool.rejected_counter()),
            pool,
        })
    }

    /// Require API keys from now on (before the engine is shared).
    pub fn set_auth(&mut self, auth: Auth) {
        self.auth = auth;
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The caller of a request, from its `authorization` value.
    pub fn principal(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        self.auth.authenticate(authorization)
    }

    pub fn pool(&self) -> &WorkPool {
        &self.pool
    }

    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics in Prometheus text format, with the gauges read now.
    pub fn render_metrics(&self) -> Result<String, IndexError> {
        let stats = self.stats()?;
        let mut by_label = [(Label::Authentic.as_str(), 0u64), (Label::KnownFake.as_str(), 0u64)];
        for (_, label, n) in &stats.by_brand_label {
            if let Some(slot) = by_label.iter_mut().find(|(l, _)| *l == label.as_str()) {
                slot.1 += n;
            }
        }
        Ok(self.metrics.render(&by_label, self.pool.in_flight(), self.pool.queued()))
    }

    /// Readers share the index; a panic in another thread does not make it unusable (every
    /// write is durable before it is visible, so there is no half-applied state to fear).
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hash an item to add.
    pub fn hash(&self, content: &Content) -> Result<Hashed, ApiError> {
        let started = Instant::now();
        match content {
            Content::Image(bytes) => {
                let (h, thumbnail, features) = hash::index_image(bytes, &self.limits)?;
                self.metrics.image_hashed();
                Ok(Hashed {
                    thumbnail: Some(thumbnail),
                    features: Some(features),
                    sha256: hash::sha256(bytes),
                    pdq: h.pdq.hash(),
                    quality: Some(h.pdq.quality),
                    phash: Some(h.phash),
                    views: h.extra_views(),
                    hash_time: started.elapsed(),
                })
            }
            Content::Hash { pdq, quality } => Ok(Hashed {
                // Keyed on the hash itself, so sending the same hash twice is idempotent.
                sha256: hash::sha256(&pdq.to_le_bytes()),
                pdq: *pdq,
                quality: *quality,
                phash: None,
                thumbnail: None,
                features: None,
                views: Vec::new(),
                hash_time: Duration::ZERO,
            }),
        }
    }

    /// Match an image (all eight orientations) or a hash (its own orientation only). With a
    /// deadline, the search is skipped if hashing ran past it.
    pub fn match_content(
        &self,
        content: &Content,
        query: &Query,
        deadline: Option<Instant>,
    ) -> Result<MatchResult, ApiError> {
        match content {
            Content::Image(bytes) => {
                let started = Instant::now();
                let analysis = hash::analyze(bytes, &self.limits)?;
                self.metrics.image_hashed();
                let hash_time = started.elapsed();
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(PoolError::DeadlineExceeded.into());
                }
                let mut result = matcher::match_analysis(&self.read(), &analysis, query)?;
                result.hash_time = hash_time;
                Ok(result)
            }
            // Unknown quality: do not judge the query low-quality.
            Content::Hash { pdq, quality } => {
                Ok(matcher::match_hash(&self.read(), *pdq, quality.unwrap_or(100), query)?)
            }
        }
    }

    /// Add entries durably (one catalog transaction, then the record files), and record
    /// them in the audit log as done by `actor`.
    pub fn add(&self, entries: &[NewEntry], actor: &str) -> Result<Vec<AddOutcome>, IndexError> {
        let outcomes = self.write().add(entries)?;
        self.audit.added(actor, entries, &outcomes).map_err(io_err(self.audit.path()))?;
        Ok(outcomes)
    }

    /// Delete entries, recorded in the audit log as done by `actor`.
    pub fn delete(&self, selector: &Selector, actor: &str) -> Result<Vec<u64>, IndexError> {
        let ids = self.write().delete(selector)?;
        self.audit.deleted(actor, selector, &ids).map_err(io_err(self.audit.path()))?;
        Ok(ids)
    }

    pub fn find(&self, selector: &Selector) -> Result<Vec<Entry>, IndexError> {
        self.read().find(selector)
    }

    /// The entries a selector names, if `who` may read them (its brands only, unless admin).
    pub fn find_for(&self, who: &Principal, selector: &Selector) -> Result<Vec<Entry>, ApiError> {
        if let Selector::External { brand, .. } = selector {
            who.may_manage(brand)?;
        }
        let entries = self.find(selector)?;
        entries.iter().try_for_each(|e| who.may_manage(&e.brand))?;
        Ok(entries)
    }

    /// Delete what a selector names, if `who` may (its brands only, unless admin); the
    /// audit log records `who`.
    pub fn delete_for(&self, who: &Principal, selector: &Selector) -> Result<Vec<u64>, ApiError> {
        who.may_write()?;
        match selector {
            Selector::External { brand, .. } => who.may_manage(brand)?,
            Selector::Id(_) if who.role == Role::Admin => {}
            Selector::Id(_) => self.find(selector)?.iter().try_for_each(|e| who.may_manage(&e.brand))?,
        }
        Ok(self.delete(selector, &who.name)?)
    }

    pub fn stats(&self) -> Result<Stats, IndexError> {
        self.read().stats()
    }

    pub fn thumbnail(&self, id: EntryId) -> Result<Option<Vec<u8>>, IndexError> {
        self.read().thumbnail(id)
    }

    pub fn list(
        &self,
        brand: Option<&str>,
        label: Option<Label>,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Entry>), IndexError> {
        self.read().list(brand, label, offset, limit)
    }

    /// Wait for any write in progress to finish (used at shutdown).
    pub fn quiesce(&self) {
        drop(self.write());
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> IndexError + '_ {
    move |error| IndexError::Io { path: path.to_path_buf(), error }
}
