//! The one place where errors become gRPC statuses.

use tonic::{Code, Status};

use super::pool::PoolError;
use crate::hash::ImageError;
use crate::index::IndexError;
use crate::matcher::MatchError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing, malformed or out of range.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("image: {0}")]
    Image(#[from] ImageError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A status received from the transport (e.g. a message over the size limit).
    #[error("{}", .0.message())]
    Transport(Status),
}

impl From<MatchError> for ApiError {
    fn from(e: MatchError) -> ApiError {
        match e {
            MatchError::Image(e) => ApiError::Image(e),
            MatchError::Index(e) => ApiError::Index(e),
            MatchError::InvalidArgument(m) => ApiError::InvalidArgument(m),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) | ApiError::Image(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::Index(e) => match e {
                IndexError::InvalidArgument(_) => Code::InvalidArgument,
                IndexError::Corrupt { .. } => Code::DataLoss,
                IndexError::Io { error, .. } if is_disk_full(error) => Code::ResourceExhausted,
                IndexError::Sqlite { error, .. } if is_sqlite_full(error) => Code::ResourceExhausted,
                _ => Code::Internal,
            },
            ApiError::Pool(PoolError::Busy { .. }) => Code::ResourceExhausted,
            ApiError::Pool(PoolError::DeadlineExceeded) => Code::DeadlineExceeded,
            ApiError::Pool(PoolError::Panicked) => Code::Internal,
            ApiError::Transport(s) => transport_code(s),
        }
    }

    /// The status sent to the client. Internal details stay in the log: the client gets a
    /// generic message for INTERNAL.
    pub fn to_status(&self) -> Status {
        let code = self.code();
        match code {
            Code::Internal => {
                tracing::error!(error = %self, "internal error");
                Status::internal("internal error (logged on the server)")
            }
            Code::DataLoss => {
                tracing::error!(error = %self, "index data is damaged");
                Status::data_loss(self.to_string())
            }
            Code::ResourceExhausted if matches!(self, ApiError::Index(_)) => {
                tracing::error!(error = %self, "storage is full");
                Status::resource_exhausted(format!(
                    "storage is full; the write may be incomplete, and resending it is safe \
                     (what was stored is reported as already present): {self}"
                ))
            }
            _ => Status::new(code, self.to_string()),
        }
    }

    /// The error of one stream item.
    pub fn to_item(&self) -> super::pb::ItemError {
        let status = self.to_status();
        super::pb::ItemError { code: status.code() as i32, message: status.message().to_string() }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.to_status()
    }
}

/// tonic's own statuses for bad requests, corrected: a message over the size limit is
/// OUT_OF_RANGE in tonic, RESOURCE_EXHAUSTED in the gRPC spec and other implementations; a
/// message that does not decode (e.g. invalid UTF-8 in a string field) is INTERNAL in
/// tonic, but it is the client's fault: INVALID_ARGUMENT.
pub(crate) fn corrected_code(code: Code, message: &str) -> Code {
    match code {
        Code::OutOfRange if message.contains("message length too large") => Code::ResourceExhausted,
        Code::Internal if message.starts_with("failed to decode Protobuf message") => Code::InvalidArgument,
        other => other,
    }
}

fn transport_code(s: &Status) -> Code {
    corrected_code(s.code(), s.message())
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

fn is_sqlite_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}
