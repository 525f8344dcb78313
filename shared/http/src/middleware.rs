//! Cross-cutting HTTP concerns: request ids and spans, the error format on every error
//! response, security headers (api-reference §1), API keys, rate limiting and CORS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tracing::Instrument;
use vacal_core::Config;

use crate::error::{error_body, error_json, internal_detail, ApiError, ErrorBodyWritten};
use crate::extract::parse_query;
use crate::rate_limit::{Decision, FixedWindowLimiter};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const RATE_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const RATE_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RATE_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The original's security headers, kept on every response (§1).
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("x-xss-protection", "1; mode=block"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("referrer-policy", "strict-origin-when-cross-origin"),
];

/// The id of the current request, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A caller's id is kept when it is short and plain (it ends up in logs and headers);
/// otherwise a fresh one is made.
fn request_id_of(headers: &HeaderMap) -> String {
    let incoming = headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            (1..=128).contains(&s.len())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        });
    match incoming {
        Some(id) => id.to_string(),
        None => {
            use rand::RngExt;
            let bytes: [u8; 8] = rand::rng().random();
            format!("req_{}", hex::encode(bytes))
        }
    }
}

/// The detail of an error response that a layer or axum itself produced without our body.
fn default_detail(status: StatusCode, method: &Method, path: &str) -> String {
    match status {
        StatusCode::NOT_FOUND => format!("Not found: no route for {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => format!("Method {method} is not allowed on {path}"),
        StatusCode::PAYLOAD_TOO_LARGE => "Request body is too large".into(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "Unsupported Content-Type: request bodies must be application/json".into()
        }
        other => other.canonical_reason().unwrap_or("Error").to_string(),
    }
}

/// Gives an error response the §2 body, keeping its status and headers (e.g. `Allow` of a
/// 405). Every 500 loses its body: a panic message or internal error never reaches a client.
fn ensure_error_body(response: Response, method: &Method, path: &str, id: &str) -> Response {
    let status = response.status();
    let ours = response.extensions().get::<ErrorBodyWritten>().is_some();
    if ours && status != StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let detail = if status == StatusCode::INTERNAL_SERVER_ERROR {
        internal_detail(id)
    } else {
        default_detail(status, method, path)
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(CONTENT_TYPE);
    let fresh = error_json(status, error_body(status, &detail));
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.extend(fresh_parts.headers);
    parts.extensions.insert(ErrorBodyWritten);
    Response::from_parts(parts, body)
}

/// Outermost layer: request id, tracing span, error bodies, security headers.
pub(crate) async fn request_context(mut req: Request, next: Next) -> Response {
    let id = request_id_of(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    // The path only: the query may hold an api_key.
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("request", %method, %path, request_id = %id);
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        response = ensure_error_body(response, &method, &path, &id);
    }
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    span.in_scope(|| {
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), millis, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), millis, "request done");
        }
    });
    response
}

/// API keys and the rate limiter, built once from the configuration.
#[derive(Debug)]
pub(crate) struct Access {
    keys: Option<Vec<String>>,
    limiter: Option<FixedWindowLimiter>,
}

impl Access {
    pub(crate) fn new(config: &Config) -> Self {
        Access {
            keys: config.api_keys.clone(),
            limiter: (config.rate_limit_per_minute > 0)
                .then(|| FixedWindowLimiter::new(config.rate_limit_per_minute)),
        }
    }

    fn is_valid(&self, key: &str) -> bool {
        self.keys
            .as_ref()
            .is_some_and(|keys| keys.iter().any(|k| same_secret(k, key)))
    }
}

/// Comparison whose time does not depend on where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The key a client sent: header `X-API-Key`, else query `api_key`.
fn supplied_key(req: &Request) -> Option<String> {
    req.headers()
        .get(&API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parse_query(req.uri().query()).remove("api_key"))
        .filter(|k| !k.is_empty())
}

/// The client's address: the socket peer in local mode; behind API Gateway the last
/// `X-Forwarded-For` entry, the one the gateway appended (earlier ones are client-supplied).
fn client_ip(req: &Request) -> String {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        return addr.ip().to_string();
    }
    req.headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(|ip| ip.trim().to_string())
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn rate_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert(RATE_LIMIT, HeaderValue::from(d.limit));
    headers.insert(RATE_REMAINING, HeaderValue::from(d.remaining));
    headers.insert(RATE_RESET, HeaderValue::from(d.reset_at));
}

/// Rate limit, then API key. The limit comes first so that a flood of bad keys is limited
/// too; it counts per valid key, otherwise per client IP (an invalid key must not buy a
/// fresh window).
pub(crate) async fn access_control(
    State(access): State<Arc<Access>>,
    req: Request,
    next: Next,
) -> Response {
    let key = supplied_key(&req);
    let valid_key = key.as_deref().filter(|k| access.is_valid(k));
    let mut decision = None;
    if let Some(limiter) = &access.limiter {
        let client = match valid_key {
            Some(k) => format!("key:{k}"),
            None => format!("ip:{}", client_ip(&req)),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let d = limiter.check(&client, now);
        if !d.allowed {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Rate limit exceeded: at most {} requests per minute; retry in {} s",
                    d.limit, d.retry_after
                ),
            )
            .into_response();
            rate_headers(response.headers_mut(), &d);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(d.retry_after),
            );
            return response;
        }
        decision = Some(d);
    }
    // `/` (exact path) stays public (§1).
    let public = req.uri().path() == "/" && matches!(*req.method(), Method::GET | Method::HEAD);
    if access.keys.is_some() && !public && valid_key.is_none() {
        let error = match key {
            None => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "API key required: send it as header X-API-Key or query parameter api_key",
            ),
            Some(_) => ApiError::new(StatusCode::FORBIDDEN, "Invalid API key"),
        };
        let mut response = error.into_response();
        if let Some(d) = &decision {
            rate_headers(response.headers_mut(), d);
        }
        return response;
    }
    let mut response = next.run(req).await;
    if let Some(d) = &decision {
        rate_headers(response.headers_mut(), d);
    }
    response
}

/// CORS from `CORS_ORIGINS`: `*` allows any origin, method and header (the original's
/// behaviour, without credentials, which browsers refuse together with `*`); a list allows
/// those origins with the API's methods and any requested header.
pub(crate) fn cors(origins: &[String]) -> CorsLayer {
    let exposed = [
        REQUEST_ID,
        RATE_LIMIT,
        RATE_REMAINING,
        RATE_RESET,
        axum::http::header::RETRY_AFTER,
    ];
    if origins.iter().any(|o| o.trim() == "*") {
        return CorsLayer::new()
            .allow_origin(Any)
            .allow_methods(Any)
            .allow_headers(Any)
            .expose_headers(exposed);
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o.trim()) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "ignoring an unusable CORS origin");
                None
            }
        })
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::OPTIONS,
            Method::HEAD,
        ])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .expose_headers(exposed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id_of(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("a b"));
        assert!(request_id_of(&h).starts_with("req_"));
        assert!(request_id_of(&HeaderMap::new()).starts_with("req_"));
    }
}
