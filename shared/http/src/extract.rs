//! Request parsing done by hand, so that no framework rejection (with its own status and
//! plain-text body) can leak out: JSON bodies from raw bytes, query strings into their
//! contract types,
//! path IDs that are "not found" whenever they are odd.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};
use vacal_contract::{FromQuery, Query, QueryLimits};
use vacal_core::validation::ValidationError;
use vacal_core::{JobService, ServiceError};

use crate::error::ApiError;

/// The body of a POST: a JSON object (api-reference §1, §2).
///
/// - Content-Type, when present, must be JSON (else 415). A missing one is accepted:
///   API Gateway and some clients drop it.
/// - More than `max_request_bytes` → 413, checked on Content-Length first and again while
///   reading (the header may be absent or lie).
/// - Empty, not JSON, or not an object → 400.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonObject(pub Value);

/// Whether a Content-Type names JSON: `application/json` or `application/<x>+json`, in UTF-8
/// when a charset is given.
pub fn is_json_content_type(raw: &str) -> bool {
    let mut parts = raw.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    let utf8 = parts.all(|p| {
        let Some((name, value)) = p.split_once('=') else {
            return true;
        };
        !name.trim().eq_ignore_ascii_case("charset")
            || matches!(
                value.trim().trim_matches('"').to_ascii_lowercase().as_str(),
                "utf-8" | "utf8"
            )
    });
    json && utf8
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(raw) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let text = raw.to_str().unwrap_or("");
    if is_json_content_type(text) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Unsupported Content-Type '{text}': request bodies must be application/json"),
        ))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request body is larger than the limit of {limit} bytes"),
    )
}

/// Reads at most `limit` bytes of `body`.
async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Err(e) => {
            // A client that hangs up mid-body; nothing the service did wrong.
            tracing::debug!(error = %e, "could not read the request body");
            Err(ApiError::bad_request("Could not read the request body"))
        }
    }
}

/// Parses `bytes` as the JSON object a POST needs.
pub fn parse_json_object(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "Request body is required: send a JSON object",
        ));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("Request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("Request body must be a JSON object"));
    }
    Ok(value)
}

impl FromRequest<Arc<JobService>> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<JobService>) -> Result<Self, ApiError> {
        let limit = state.config().max_request_bytes;
        check_content_type(req.headers())?;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let bytes = read_limited(req.into_body(), limit).await?;
        parse_json_object(&bytes).map(JsonObject)
    }
}

/// The query string decoded into a map. A repeated parameter keeps its last value, as
/// FastAPI did for scalar parameters.
/// The body of a job request: a JSON object, or `multipart/form-data` with an optional
/// `request` part (the JSON body) and one file part `va_data.<algorithm>` per algorithm.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub request: Map<String, Value>,
    pub files: Vec<(String, Vec<u8>)>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::from(ServiceError::Invalid(ValidationError::single(
        field, message,
    )))
}

async fn multipart_upload(bytes: bytes::Bytes, boundary: String) -> Result<Upload, ApiError> {
    let unreadable = |e: multer::Error| {
        ApiError::bad_request(format!("Could not read the multipart/form-data body: {e}"))
    };
    let stream =
        futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut request = None;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        let name = field.name().unwrap_or("").to_string();
        let data = field.bytes().await.map_err(unreadable)?.to_vec();
        let is_file = name.strip_prefix("va_data.").is_some_and(|a| !a.is_empty());
        if name == "request" && request.is_none() {
            request = Some(data);
        } else if is_file && !files.iter().any(|(n, _)| *n == name) {
            files.push((name, data));
        } else if name == "request" || is_file {
            return Err(invalid(&name, "is sent twice: send each part once"));
        } else {
            return Err(invalid(
                if name.is_empty() { "body" } else { &name },
                "unknown part: send an optional `request` part (the JSON body) and one file \
                 part `va_data.<algorithm>` per algorithm",
            ));
        }
    }
    let request = vacal_core::upload::request_part(request.as_deref())
        .map_err(|e| ApiError::from(ServiceError::Invalid(e)))?;
    Ok(Upload { request, files })
}

impl FromRequest<Arc<JobService>> for Upload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<JobService>) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let is_multipart = content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/form-data");
        if !is_multipart {
            let JsonObject(body) = JsonObject::from_request(req, state).await?;
            let Value::Object(request) = body else {
                unreachable!("JsonObject holds an object")
            };
            return Ok(Upload {
                request,
                files: Vec::new(),
            });
        }
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            ApiError::bad_request("multipart/form-data needs a boundary in its Content-Type")
        })?;
        let limit = state.config().max_request_bytes;
        let bytes = read_limited(req.into_body(), limit).await?;
        multipart_upload(bytes, boundary).await
    }
}

/// A job request's JSON body, from a JSON body or an upload whose files are read into it
/// (a bad file is a 422 naming its line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct JobBody(pub Value);

impl FromRequest<Arc<JobService>> for JobBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<JobService>) -> Result<Self, ApiError> {
        let Upload { request, files } = Upload::from_request(req, state).await?;
        vacal_core::upload::body_from_parts(request, &files)
            .map(JobBody)
            .map_err(|e| ApiError::from(ServiceError::Invalid(e)))
    }
}

pub fn parse_query(query: Option<&str>) -> Query {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A route's query parameters as their contract type; a bad one is a 422 naming it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params<T>(pub T);

impl<T: FromQuery> FromRequestParts<Arc<JobService>> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<JobService>,
    ) -> Result<Self, ApiError> {
        let limits = QueryLimits {
            max_timeout_minutes: state.config().max_timeout_minutes,
        };
        T::from_query(&parse_query(parts.uri.query()), limits)
            .map(Params)
            .map_err(|e| ServiceError::from(ValidationError::from(e)).into())
    }
}

/// The one path parameter of a route (a job or batch ID). One that cannot even be decoded
/// is "not found" like any other odd ID (§1), never a 400 or 422.
#[derive(Debug, Clone, PartialEq)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| PathId(id))
            .map_err(|_| ApiError::not_found(format!("Resource {} not found", parts.uri.path())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=UTF-8"));
        assert!(is_json_content_type("application/vnd.api+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/x-www-form-urlencoded"));
        assert!(!is_json_content_type("application/json; charset=latin1"));
        assert!(!is_json_content_type(""));
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(parse_json_object(b"{\"a\": 1}").is_ok());
        for bad in [&b""[..], b"  \n", b"{", b"[1]", b"null", b"\"x\""] {
            assert_eq!(
                parse_json_object(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST
            );
        }
    }

    #[test]
    fn queries_decode_and_keep_the_last_value() {
        let q = parse_query(Some("a=1&b=x%20y&a=2&c=2024-01-15T14%3A25%3A00%2B02%3A00"));
        assert_eq!(q["a"], "2");
        assert_eq!(q["b"], "x y");
        assert_eq!(q["c"], "2024-01-15T14:25:00+02:00");
        assert!(parse_query(None).is_empty());
    }
}
