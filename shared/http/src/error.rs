//! The error body of api-reference §2 and the mapping of core errors onto statuses, in one
//! place: every non-2xx response of the service carries `{detail, status_code, timestamp}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use vacal_contract::ErrorResponse;
use vacal_core::domain::timestamp;
use vacal_core::validation::FieldError;
use vacal_core::ServiceError;

/// Response extension saying "the body already is a §2 error body"; the outer layer
/// rewrites the body of any error response without it (axum's 405, a panic's 500, ...).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorBodyWritten;

/// Detail of every 500: what went wrong stays in the server log, under the request id.
pub(crate) fn internal_detail(request_id: &str) -> String {
    format!("Internal server error (request id {request_id})")
}

/// The §2 body, stamped now.
pub(crate) fn error_body(status: StatusCode, detail: &str) -> ErrorResponse {
    ErrorResponse {
        detail: detail.to_string(),
        status_code: status.as_u16(),
        timestamp: timestamp(chrono::Utc::now()),
        errors: None,
    }
}

/// A JSON response with `body`, marked as carrying the error format.
pub(crate) fn error_json(status: StatusCode, body: impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(ErrorBodyWritten);
    response
}

/// A refused or failed request, rendered as the §2 body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// 422 only: the offending fields.
    pub errors: Option<Vec<FieldError>>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            errors: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, detail)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            ServiceError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            ServiceError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            ServiceError::Invalid(v) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                detail: v.detail(),
                errors: Some(v.errors),
            },
            ServiceError::Internal(m) => {
                // Logged inside the request span (which carries the request id); the client
                // gets only the id, never internals.
                tracing::error!(error = %m, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // `detail` is never empty (§2).
        let detail = if self.detail.trim().is_empty() {
            self.status.canonical_reason().unwrap_or("Error")
        } else {
            &self.detail
        };
        let body = ErrorResponse {
            errors: self.errors,
            ..error_body(self.status, detail)
        };
        error_json(self.status, body)
    }
}
