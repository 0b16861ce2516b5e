//! Reading request bodies within the size limit (413 as soon as `Content-Length` or the
//! bytes received pass it, before anything is parsed) and parsing a JSON object out of
//! them (400 for anything else). Never buffers more than the limit.

use actix_web::http::header;
use actix_web::web::{Bytes, Payload};
use actix_web::HttpRequest;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::messages::session::ErrorKind;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorKind::TooLarge,
        format!("request body exceeds the limit of {limit} bytes (max_message_bytes)"),
    )
}

/// The whole body, at most `limit` bytes.
pub(crate) async fn read(
    req: &HttpRequest,
    payload: Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
        Err(_) => Err(too_large(limit)),
    }
}

/// The body, at most `limit` bytes, as a JSON object.
pub(crate) async fn read_json(
    req: &HttpRequest,
    payload: Payload,
    limit: usize,
) -> Result<Map<String, Value>, ApiError> {
    json_object(&read(req, payload, limit).await?)
}

/// A JSON object body.
pub(crate) fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}
