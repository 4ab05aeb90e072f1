//! The error every service's domain returns: a small set of outcomes a caller
//! can act on, each with a message that says what was wrong and what to do,
//! turned into the matching gRPC status at the edge and nowhere else.

/// What went wrong, in the caller's terms.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// No such resource in the caller's team (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is fine but the resource is not in a state to take it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A dependency is down; retrying later is the right move (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            ApiError::NotFound(m) => tonic::Status::not_found(m),
            ApiError::AlreadyExists(m) => tonic::Status::already_exists(m),
            ApiError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            ApiError::PermissionDenied(m) => tonic::Status::permission_denied(m),
            ApiError::Unavailable(m) => tonic::Status::unavailable(m),
            ApiError::Internal(m) => tonic::Status::internal(m),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        tracing::error!(%error, "database error");
        ApiError::Unavailable("the service's database did not answer; try again".to_owned())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(error: std::io::Error) -> Self {
        ApiError::Internal(error.to_string())
    }
}

impl From<tonic::Status> for ApiError {
    /// A write the identity does not allow (from [`crate::Identity::require_write`]).
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::PermissionDenied => ApiError::PermissionDenied(status.message().to_owned()),
            tonic::Code::Unauthenticated | tonic::Code::Unavailable => {
                ApiError::Unavailable(status.message().to_owned())
            }
            _ => ApiError::Internal(status.message().to_owned()),
        }
    }
}

/// A protobuf timestamp from Unix milliseconds (how every time is stored).
pub fn timestamp(ms: i64) -> strata_proto::pbjson_types::Timestamp {
    strata_proto::pbjson_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// Checks a resource name (app, database, ...): a DNS label of 1 to 40
/// lowercase letters, digits and hyphens, starting with a letter and not
/// ending with a hyphen. Names are shown in URLs and hostnames, and never
/// reach SQL or a shell as they are.
pub fn validate_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "invalid {kind} name {name:?}: use 1 to 40 lowercase letters, digits and hyphens, \
             starting with a letter and not ending with a hyphen (e.g. `billing-api`)"
        )))
    }
}
