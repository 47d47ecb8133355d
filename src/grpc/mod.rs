//! The gRPC service: `lookalike.v1.Catalog` and `lookalike.v1.Matcher` (from
//! `proto/lookalike/v1/lookalike.proto`), beside the standard health and reflection services.
//!
//! This layer is thin. `convert` validates requests and turns them into engine calls and
//! back; `engine` owns the index and the bounded pool that runs image work off the async
//! workers; `error` is the one place where errors become gRPC statuses; `server` wires the
//! services, limits and graceful shutdown together.

pub mod auth;
pub mod client;
pub mod convert;
mod engine;
mod error;
mod pool;
mod server;
mod service;

pub(crate) use service::{blocking, record};

pub use engine::{Content, Engine, EngineOptions};
pub use error::ApiError;
pub use pool::{PoolError, WorkPool};
pub use server::{serve, ServeOptions};

/// Code generated from the proto at build time (see `build.rs`).
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("lookalike.v1");

    /// Encoded descriptors of `lookalike.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lookalike_descriptor.bin"));
}
