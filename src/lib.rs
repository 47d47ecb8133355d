//! lookalike: catch counterfeit marketplace listings by image.
//!
//! # Layout
//! Each layer points only downward; none of `hash`, `index` or `matcher` knows about
//! command lines or network protocols.
//!
//! - [`hash`]: bytes → bounded decode (byte and pixel limits checked before decoding,
//!   EXIF orientation applied) → luminance → PDQ (Meta's 256-bit hash, its quality and
//!   its 8 rotations/mirrors from one DCT) and a 64-bit pHash. Pure functions.
//! - [`index`]: entries ↔ hashes ↔ metadata on disk. A SQLite catalog is the source of
//!   truth; append-only memory-mapped record files and multi-index hashing tables answer
//!   exact radius queries; an optional HNSW graph answers approximate k-nearest ones.
//!   Every acknowledged write survives a crash; damaged files are detected by checksum.
//! - [`features`]: local features (oriented FAST + steered BRIEF) and their geometric
//!   verification, for what a global hash misses: crops, collages, screenshots, rotations.
//! - [`matcher`]: query policy: search all orientations, merge per entry, apply the
//!   flag/review distances and the quality floor, and give a verdict.
//! - [`grpc`]: the tonic service (`Catalog`, `Matcher`, health, reflection). Its
//!   `Engine` owns the index behind a reader/writer lock and a bounded pool that runs image
//!   work off the async workers; `convert` checks requests; one function maps errors to
//!   statuses; `auth` holds API keys and roles.
//! - [`web`]: the moderator page, its JSON API, `/metrics` and `/healthz` (axum, sharing
//!   the gRPC engine).
//! - [`metrics`], [`audit`]: Prometheus counters and the append-only audit log.
//! - [`cli`]: the `lookalike` command line, a thin shell over the above (locally, or
//!   against a server with `--server`).

pub mod audit;
pub mod cli;
pub mod features;
pub mod grpc;
pub mod hash;
pub mod index;
pub mod matcher;
pub mod metrics;
pub mod web;
