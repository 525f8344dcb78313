//! vacal-http: the HTTP face of the job service (api-reference §1–§10), one axum `Router`
//! for both deployments (`lambda_http::run` on AWS, `axum::serve` locally).
//!
//! Handlers are thin: they parse the request by hand (no framework rejection leaks out),
//! call the `JobService` and render its JSON. Every non-2xx response carries the error body
//! of §2, whoever produced it (a handler, axum's routing, a panic). Layers, outermost
//! first: request id + tracing span + error bodies + security headers; panic → 500; CORS;
//! rate limit + API key; routes.

pub mod error;
pub mod extract;
mod handlers;
pub mod middleware;
pub mod openapi;
pub mod rate_limit;
/// The wire types, from the contract (kept under this name for the handlers and clients).
pub use vacal_contract as schema;

use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;
use vacal_core::JobService;

pub use error::ApiError;

/// Every route of the API, as `(method, path)` in axum's syntax. The router below serves
/// exactly these, and the OpenAPI document lists exactly these (tested).
pub const ROUTES: [(&str, &str); 23] = [
    ("GET", "/"),
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/calibrate/async"),
    ("GET", "/api/v1/calibrate/{job_id}/status"),
    ("GET", "/api/v1/calibrate/{job_id}/result"),
    ("GET", "/api/v1/calibrate/{job_id}/result.csv"),
    ("GET", "/api/v1/calibrate/{job_id}/plot.svg"),
    ("GET", "/api/v1/calibrate/{job_id}/report.html"),
    ("DELETE", "/api/v1/calibrate/{job_id}"),
    ("POST", "/api/v1/calibrate/batch"),
    ("GET", "/api/v1/calibrate/batch/{batch_id}/status"),
    ("GET", "/api/v1/calibrate/batch/{batch_id}/result.csv"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/cache/stats"),
    ("DELETE", "/api/v1/cache/clear"),
    ("GET", "/api/v1/jobs/health"),
    ("GET", "/api/v1/jobs/metrics"),
    ("DELETE", "/api/v1/jobs/{job_id}"),
    ("DELETE", "/api/v1/jobs/clear/all"),
    ("POST", "/api/v1/jobs/retry/{job_id}"),
    ("GET", "/api/v1/reference"),
    ("GET", "/api/v1/reference/cause-map/{age_group}"),
    ("POST", "/api/v1/validate"),
];

/// The OpenAPI document of a router built with this configuration, as JSON.
pub fn openapi_json(config: &vacal_core::Config) -> String {
    openapi::document(config.api_keys.is_some())
        .to_json()
        .expect("the OpenAPI document serializes")
}

/// The API over `service`, configured by `service.config()` (body limit, CORS, API keys,
/// rate limit).
pub fn router(service: Arc<JobService>) -> Router {
    let config = service.config().clone();
    let doc = handlers::OpenApiJson(Arc::new(openapi_json(&config)));
    let access = Arc::new(middleware::Access::new(&config));
    // Static segments win over parameters in axum's matcher, so `/api/v1/jobs/health` and
    // `/metrics` are never taken for a job ID (and DELETE on them is a 405, not a delete).
    Router::new()
        .route("/", get(handlers::service_info))
        .route("/api/v1/openapi.json", get(handlers::openapi_json))
        .route("/api/v1/calibrate/async", post(handlers::create_job))
        .route(
            "/api/v1/calibrate/{job_id}/status",
            get(handlers::job_status),
        )
        .route(
            "/api/v1/calibrate/{job_id}/result",
            get(handlers::job_result),
        )
        .route(
            "/api/v1/calibrate/{job_id}/result.csv",
            get(handlers::result_csv),
        )
        .route(
            "/api/v1/calibrate/{job_id}/plot.svg",
            get(handlers::plot_svg),
        )
        .route(
            "/api/v1/calibrate/{job_id}/report.html",
            get(handlers::report_html),
        )
        .route("/api/v1/calibrate/{job_id}", delete(handlers::cancel_job))
        .route("/api/v1/calibrate/batch", post(handlers::create_batch))
        .route(
            "/api/v1/calibrate/batch/{batch_id}/status",
            get(handlers::batch_status),
        )
        .route(
            "/api/v1/calibrate/batch/{batch_id}/result.csv",
            get(handlers::batch_result_csv),
        )
        .route("/api/v1/jobs", get(handlers::list_jobs))
        .route("/api/v1/cache/stats", get(handlers::cache_stats))
        .route("/api/v1/cache/clear", delete(handlers::clear_cache))
        .route("/api/v1/jobs/health", get(handlers::health))
        .route("/api/v1/jobs/metrics", get(handlers::metrics))
        .route("/api/v1/jobs/{job_id}", delete(handlers::delete_job))
        .route("/api/v1/jobs/clear/all", delete(handlers::delete_all))
        .route("/api/v1/jobs/retry/{job_id}", post(handlers::retry_job))
        .route("/api/v1/reference", get(handlers::reference))
        .route("/api/v1/validate", post(handlers::validate))
        .route(
            "/api/v1/reference/cause-map/{age_group}",
            get(handlers::cause_map),
        )
        .fallback(handlers::not_found)
        .with_state(service)
        .layer(Extension(doc))
        .layer(axum::middleware::from_fn_with_state(
            access,
            middleware::access_control,
        ))
        .layer(middleware::cors(&config.cors_origins))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(middleware::request_context))
}
