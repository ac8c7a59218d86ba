//! One error for every use case. Each variant names the HTTP status it answers with, and a
//! stable code programs can match; internal errors are logged where they are answered, never
//! sent.

/// Why a use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// 404: no such thing, or one the caller may not see (the two look the same).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// 403: the caller may see it but not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 409: the thing is not in a state that allows this (e.g. a finished job is cancelled).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 413: more than the use case takes.
    #[error("{0}")]
    TooLarge(String),
    /// 422: the request itself is wrong.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// 500: the database failed; the details are logged, not sent.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// 500: the artifact store failed; the details are logged, not sent.
    #[error("storage: {0}")]
    Storage(String),
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

impl ServiceError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            ServiceError::NotFound(_) => 404,
            ServiceError::Forbidden(_) => 403,
            ServiceError::Conflict { .. } => 409,
            ServiceError::TooLarge(_) => 413,
            ServiceError::Invalid { .. } => 422,
            ServiceError::Database(_) | ServiceError::Storage(_) => 500,
        }
    }

    /// A stable code for programs: `not_found`, `forbidden`, `already_finished`, ...
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::NotFound(_) => "not_found",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::TooLarge(_) => "too_large",
            ServiceError::Conflict { code, .. } | ServiceError::Invalid { code, .. } => code,
            ServiceError::Database(_) | ServiceError::Storage(_) => "internal",
        }
    }

    /// What the caller is told: the message, except for internal errors.
    pub fn public_message(&self) -> String {
        match self {
            ServiceError::Database(_) | ServiceError::Storage(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}
