//! The one error type of the HTTP front end: an error kind shared with the socket protocol
//! (`ErrorKind`) plus a message, answered with the HTTP status that fits the kind and a JSON
//! body in the caller's dialect (AUTOMATIC1111's `{"error", "detail", "errors"}` or OpenAI's
//! `{"error": {"message", "type", "code"}}`). A full queue answers 503 with `Retry-After`.
//! Never echoes request bodies, prompts or secrets.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::messages::session::ErrorKind;
use crate::protocol::error::RequestError;

/// Seconds a client should wait before retrying a refused (`busy`) request.
pub(crate) const RETRY_AFTER_SECS: u32 = 5;

/// Which API family's error body to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    A1111,
    OpenAi,
}

#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    pub(crate) dialect: Dialect,
    /// A status other than the kind's (a peer outside the allow-list gets 403).
    pub(crate) status: Option<StatusCode>,
}

impl ApiError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            dialect: Dialect::A1111,
            status: None,
        }
    }

    /// A refusal no credentials can lift.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        ApiError {
            status: Some(StatusCode::FORBIDDEN),
            ..ApiError::new(ErrorKind::Unauthorized, message)
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::BadRequest, message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::InvalidField, message)
    }

    pub(crate) fn in_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// The status a client of either API expects for this kind.
    pub(crate) fn status(&self) -> StatusCode {
        if let Some(s) = self.status {
            return s;
        }
        match self.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::InvalidField => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::UnknownAction => StatusCode::NOT_FOUND,
            ErrorKind::ModelNotFound => StatusCode::NOT_FOUND,
            ErrorKind::ForbiddenPath => StatusCode::FORBIDDEN,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Busy | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body in the error's dialect.
    pub(crate) fn body(&self) -> serde_json::Value {
        match self.dialect {
            Dialect::A1111 => json!({
                "error": self.kind.as_str(),
                "detail": self.message,
                "errors": self.message,
            }),
            Dialect::OpenAi => json!({"error": {
                "message": self.message,
                "type": openai_type(self.kind),
                "param": null,
                "code": self.kind.as_str(),
            }}),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError::new(e.code, e.message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// OpenAI's `type` for an error kind.
fn openai_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unauthorized => "authentication_error",
        ErrorKind::Busy | ErrorKind::Unavailable | ErrorKind::Internal => "server_error",
        _ => "invalid_request_error",
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status()).json(self.body());
        let headers = res.headers_mut();
        if self.kind == ErrorKind::Busy {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if self.status() == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"runai\""),
            );
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_fitting_statuses() {
        let status = |k| ApiError::new(k, "x").status().as_u16();
        assert_eq!(status(ErrorKind::BadRequest), 400);
        assert_eq!(status(ErrorKind::InvalidField), 422);
        assert_eq!(status(ErrorKind::ForbiddenPath), 403);
        assert_eq!(status(ErrorKind::TooLarge), 413);
        assert_eq!(status(ErrorKind::Busy), 503);
        assert_eq!(status(ErrorKind::Unauthorized), 401);
        let busy = ApiError::new(ErrorKind::Busy, "full").error_response();
        assert_eq!(busy.headers().get(header::RETRY_AFTER).unwrap(), "5");
    }
}
