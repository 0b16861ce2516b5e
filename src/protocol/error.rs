//! Wire error codes (protocol Part 2) and the error a request can end in. Every failure a
//! client can cause maps to exactly one code here; never carries image data or prompts.

use std::fmt;

/// The `code` of an `{"event": "error"}` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ErrorCode {
    BadRequest,
    UnknownAction,
    InvalidField,
    ModelNotFound,
    ForbiddenPath,
    TooLarge,
    Busy,
    Unauthorized,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::ModelNotFound => "model_not_found",
            ErrorCode::ForbiddenPath => "forbidden_path",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Busy => "busy",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that cannot be served: code plus a message for a person, and the job it was
/// about when that is known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) job_id: Option<String>,
    pub(crate) reqtype: Option<String>,
}

impl RequestError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RequestError {
            code,
            message: message.into(),
            job_id: None,
            reqtype: None,
        }
    }

    /// Names the job this error answers, so the client can match it.
    pub(crate) fn for_job(mut self, job_id: Option<String>, reqtype: Option<String>) -> Self {
        if self.job_id.is_none() {
            self.job_id = job_id;
        }
        if self.reqtype.is_none() {
            self.reqtype = reqtype;
        }
        self
    }
}
