//! One thin handler per route: parse HTTP, call the `JobService`, render. All rules of the
//! API live in core.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vacal_core::JobService;

use crate::error::{error_body, error_json, ApiError};
use crate::extract::{JobBody, JsonObject, Params, PathId, Upload};
use crate::schema::*;

type Service = State<Arc<JobService>>;
/// A handler whose response body is a contract type.
type Typed<T> = Result<Json<T>, ApiError>;

/// The OpenAPI document, serialized once when the router is built.
#[derive(Clone)]
pub(crate) struct OpenApiJson(pub Arc<String>);

/// Public service information.
#[utoipa::path(get, path = "/", tag = "service", security(()),
    responses((status = 200, description = "Service information", body = ServiceInfo)))]
pub async fn service_info() -> Json<ServiceInfo> {
    Json(ServiceInfo {
        name: "vacal".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        engine_version: vacal_engine::ENGINE_VERSION.into(),
        status: "running".into(),
        docs: "/api/v1/openapi.json".into(),
        health: "/api/v1/jobs/health".into(),
    })
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "service",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_owned(),
    )
        .into_response()
}

/// Create one asynchronous calibration job.
#[utoipa::path(post, path = "/api/v1/calibrate/async", tag = "jobs",
    request_body(content(
        (CalibrationJobRequest = "application/json"),
        (CalibrationUpload = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Job created and queued", body = JobCreatedResponse),
        (status = 400, description = "Body missing, not JSON, or not an object", body = ErrorResponse),
        (status = 413, description = "Body larger than MAX_REQUEST_BYTES", body = ErrorResponse),
        (status = 415, description = "Content-Type is neither JSON nor multipart/form-data", body = ErrorResponse),
        (status = 422, description = "Invalid request (§4), or a file refused with its line and column", body = ErrorResponse),
    ))]
pub async fn create_job(State(s): Service, JobBody(body): JobBody) -> Typed<JobCreatedResponse> {
    Ok(Json(s.create_job(&body).await?))
}

/// Checks a request (JSON or an upload) without running it: per algorithm the data read, the
/// causes that will not be calibrated and why, the resolved settings and the warnings known
/// before sampling. Invalid requests are a 200 with `valid: false` and their errors.
#[utoipa::path(post, path = "/api/v1/validate", tag = "jobs",
    request_body(content(
        (CalibrationJobRequest = "application/json"),
        (CalibrationUpload = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "The preview", body = ValidationPreview),
        (status = 400, description = "Body missing, not JSON, or not an object", body = ErrorResponse),
        (status = 413, description = "Body larger than MAX_REQUEST_BYTES", body = ErrorResponse),
        (status = 415, description = "Content-Type is neither JSON nor multipart/form-data", body = ErrorResponse),
        (status = 422, description = "A multipart body with an unknown part or a request part that is not a JSON object", body = ErrorResponse),
    ))]
pub async fn validate(State(s): Service, upload: Upload) -> Json<ValidationPreview> {
    Json(vacal_core::preview::preview(
        upload.request,
        &upload.files,
        s.config(),
    ))
}

/// Status, progress, metadata and logs of a job.
#[utoipa::path(get, path = "/api/v1/calibrate/{job_id}/status", tag = "jobs",
    params(("job_id" = String, Path, description = "Job ID (`job_` + 12 hex)"), StatusParams),
    responses(
        (status = 200, description = "Job status", body = JobStatusResponse),
        (status = 404, description = "Unknown job", body = ErrorResponse),
        (status = 422, description = "Bad query parameter (checked before the job is looked up)", body = ErrorResponse),
    ))]
pub async fn job_status(
    State(s): Service,
    PathId(id): PathId,
    Params(q): Params<StatusParams>,
) -> Typed<JobStatusResponse> {
    Ok(Json(s.job_status(&id, &q).await?))
}

/// Result of a finished job.
#[utoipa::path(get, path = "/api/v1/calibrate/{job_id}/result", tag = "jobs",
    params(("job_id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "Result of a success, failed or timed-out job", body = JobResultResponse),
        (status = 400, description = "Job not completed (pending, running or cancelled)", body = ErrorResponse),
        (status = 404, description = "Unknown job", body = ErrorResponse),
    ))]
pub async fn job_result(State(s): Service, PathId(id): PathId) -> Typed<JobResultResponse> {
    Ok(Json(s.job_result(&id).await?))
}

/// What a request can name: age groups and their causes, algorithms, countries, matrix
/// types, rules and defaults.
#[utoipa::path(get, path = "/api/v1/reference", tag = "reference",
    responses((status = 200, description = "Reference data", body = ReferenceResponse)))]
pub async fn reference() -> Json<ReferenceResponse> {
    Json(vacal_core::reference::reference())
}

/// How CCVA output labels map to the broad causes of an age group.
#[utoipa::path(get, path = "/api/v1/reference/cause-map/{age_group}", tag = "reference",
    params(("age_group" = String, Path, description = "`neonate` or `child`")),
    responses(
        (status = 200, description = "Label → broad cause", body = CauseMapResponse),
        (status = 404, description = "Unknown age group", body = ErrorResponse),
    ))]
pub async fn cause_map(PathId(age_group): PathId) -> Typed<CauseMapResponse> {
    vacal_core::reference::cause_map(&age_group)
        .map(Json)
        .ok_or_else(|| {
            ApiError::from(vacal_core::ServiceError::NotFound(format!(
                "Unknown age group '{age_group}': use neonate or child"
            )))
        })
}

/// A file of a result: its media type, and whether browsers should save it.
fn file(content_type: &'static str, filename: String, download: bool, body: String) -> Response {
    let disposition = if download { "attachment" } else { "inline" };
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type.to_string()),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("{disposition}; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The result of a successful job as CSV: one line per algorithm (and ensemble) × cause.
#[utoipa::path(get, path = "/api/v1/calibrate/{job_id}/result.csv", tag = "results",
    params(("job_id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "algorithm,cause,calibrated,uncalibrated_csmf,calibrated_mean,calibrated_lower,calibrated_upper,uncalibrated_deaths,calibrated_deaths", content_type = "text/csv"),
        (status = 400, description = "Job not completed (pending, running or cancelled)", body = ErrorResponse),
        (status = 404, description = "Unknown job", body = ErrorResponse),
        (status = 409, description = "Job failed or timed out: no result", body = ErrorResponse),
    ))]
pub async fn result_csv(State(s): Service, PathId(id): PathId) -> Result<Response, ApiError> {
    let result = s.successful_result(&id).await?;
    let csv = vacal_core::export::result_csv(&result.output);
    Ok(file(
        "text/csv; charset=utf-8",
        format!("{id}.csv"),
        true,
        csv,
    ))
}

/// The figure of a successful job: one panel per algorithm and the ensemble.
#[utoipa::path(get, path = "/api/v1/calibrate/{job_id}/plot.svg", tag = "results",
    params(("job_id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "SVG figure; every bar carries data-algorithm, data-cause, data-mean, data-lower and data-upper", content_type = "image/svg+xml"),
        (status = 400, description = "Job not completed (pending, running or cancelled)", body = ErrorResponse),
        (status = 404, description = "Unknown job", body = ErrorResponse),
        (status = 409, description = "Job failed or timed out: no result", body = ErrorResponse),
    ))]
pub async fn plot_svg(State(s): Service, PathId(id): PathId) -> Result<Response, ApiError> {
    let result = s.successful_result(&id).await?;
    let svg = vacal_core::export::plot_svg(&result);
    Ok(file("image/svg+xml", format!("{id}.svg"), false, svg))
}

/// A self-contained report of a successful job (inputs, table, figure, diagnostics,
/// warnings, citation); prints to PDF.
#[utoipa::path(get, path = "/api/v1/calibrate/{job_id}/report.html", tag = "results",
    params(("job_id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "HTML page with inline CSS and figure", content_type = "text/html"),
        (status = 400, description = "Job not completed (pending, running or cancelled)", body = ErrorResponse),
        (status = 404, description = "Unknown job", body = ErrorResponse),
        (status = 409, description = "Job failed or timed out: no result", body = ErrorResponse),
    ))]
pub async fn report_html(State(s): Service, PathId(id): PathId) -> Result<Response, ApiError> {
    let result = s.successful_result(&id).await?;
    let html = vacal_core::export::report_html(&id, &result);
    Ok(file(
        "text/html; charset=utf-8",
        format!("{id}.html"),
        false,
        html,
    ))
}

/// The results of a batch's successful members as one CSV, with the job ID first.
#[utoipa::path(get, path = "/api/v1/calibrate/batch/{batch_id}/result.csv", tag = "results",
    params(("batch_id" = String, Path, description = "Batch ID")),
    responses(
        (status = 200, description = "job_id, then the columns of a job's result.csv", content_type = "text/csv"),
        (status = 404, description = "Unknown batch", body = ErrorResponse),
    ))]
pub async fn batch_result_csv(State(s): Service, PathId(id): PathId) -> Result<Response, ApiError> {
    let members = s.batch_results(&id).await?;
    let csv =
        vacal_core::export::batch_csv(members.iter().map(|(job, output)| (job.as_str(), output)));
    Ok(file(
        "text/csv; charset=utf-8",
        format!("{id}.csv"),
        true,
        csv,
    ))
}

/// Cancel a pending or running job.
#[utoipa::path(delete, path = "/api/v1/calibrate/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "Job cancelled", body = CancelResponse),
        (status = 404, description = "Unknown job", body = ErrorResponse),
        (status = 409, description = "Job already terminal", body = ErrorResponse),
    ))]
pub async fn cancel_job(State(s): Service, PathId(id): PathId) -> Typed<CancelResponse> {
    Ok(Json(s.cancel_job(&id).await?))
}

/// Create a batch of jobs (all or nothing).
#[utoipa::path(post, path = "/api/v1/calibrate/batch", tag = "batches",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Batch created", body = BatchCreatedResponse),
        (status = 400, description = "Body missing, not JSON, or not an object", body = ErrorResponse),
        (status = 413, description = "Body larger than MAX_REQUEST_BYTES", body = ErrorResponse),
        (status = 415, description = "Content-Type is not JSON", body = ErrorResponse),
        (status = 422, description = "Invalid batch or member (`jobs[i].field`)", body = ErrorResponse),
    ))]
pub async fn create_batch(
    State(s): Service,
    JsonObject(body): JsonObject,
) -> Typed<BatchCreatedResponse> {
    Ok(Json(s.create_batch(&body).await?))
}

/// Aggregated status of a batch.
#[utoipa::path(get, path = "/api/v1/calibrate/batch/{batch_id}/status", tag = "batches",
    params(("batch_id" = String, Path, description = "Batch ID (`batch_` + 12 hex)")),
    responses(
        (status = 200, description = "Batch status", body = BatchStatusResponse),
        (status = 404, description = "Unknown batch", body = ErrorResponse),
    ))]
pub async fn batch_status(State(s): Service, PathId(id): PathId) -> Typed<BatchStatusResponse> {
    Ok(Json(s.batch_status(&id).await?))
}

/// List jobs with filters and pagination.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, description = "One page of jobs, newest first", body = JobListResponse),
        (status = 422, description = "Bad query parameter", body = ErrorResponse),
    ))]
pub async fn list_jobs(State(s): Service, Params(q): Params<ListParams>) -> Typed<JobListResponse> {
    Ok(Json(s.list_jobs(&q).await?))
}

/// Result-cache statistics.
#[utoipa::path(get, path = "/api/v1/cache/stats", tag = "cache",
    responses((status = 200, description = "Cache statistics", body = CacheStatsResponse)))]
pub async fn cache_stats(State(s): Service) -> Typed<CacheStatsResponse> {
    Ok(Json(s.cache_stats().await?))
}

/// Clear cached results.
#[utoipa::path(delete, path = "/api/v1/cache/clear", tag = "cache",
    params(CacheClearParams),
    responses(
        (status = 200, description = "Entries removed", body = CacheClearResponse),
        (status = 400, description = "confirm=true missing", body = ErrorResponse),
        (status = 422, description = "Bad query parameter", body = ErrorResponse),
    ))]
pub async fn clear_cache(
    State(s): Service,
    Params(q): Params<CacheClearParams>,
) -> Typed<CacheClearResponse> {
    Ok(Json(s.clear_cache(&q).await?))
}

/// Job-system health.
#[utoipa::path(get, path = "/api/v1/jobs/health", tag = "service",
    responses(
        (status = 200, description = "The API can serve (possibly degraded)", body = HealthResponse),
        (status = 503, description = "Storage unreachable", body = HealthUnavailableResponse),
    ))]
pub async fn health(State(s): Service) -> Response {
    match s.health().await {
        Ok(body) => Json(body).into_response(),
        Err(e) => {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            let reason = e.to_string();
            let error = error_body(status, &format!("Job system unavailable: {reason}"));
            let body = HealthUnavailableResponse {
                detail: error.detail,
                status_code: error.status_code,
                timestamp: error.timestamp,
                status: "unhealthy".into(),
                error: reason,
            };
            error_json(status, body)
        }
    }
}

/// Job metrics over a time window.
#[utoipa::path(get, path = "/api/v1/jobs/metrics", tag = "service",
    params(MetricsParams),
    responses(
        (status = 200, description = "Metrics", body = MetricsResponse),
        (status = 422, description = "Unknown time_range", body = ErrorResponse),
    ))]
pub async fn metrics(
    State(s): Service,
    Params(q): Params<MetricsParams>,
) -> Typed<MetricsResponse> {
    Ok(Json(s.metrics(&q).await?))
}

/// Delete a job and all its data (cancelling it first if unfinished).
#[utoipa::path(delete, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "Job deleted", body = DeleteJobResponse),
        (status = 404, description = "Unknown job", body = ErrorResponse),
    ))]
pub async fn delete_job(State(s): Service, PathId(id): PathId) -> Typed<DeleteJobResponse> {
    Ok(Json(s.delete_job(&id).await?))
}

/// Delete many jobs at once.
#[utoipa::path(delete, path = "/api/v1/jobs/clear/all", tag = "jobs",
    params(BulkDeleteParams),
    responses(
        (status = 200, description = "Jobs deleted", body = BulkDeleteResponse),
        (status = 400, description = "confirm=true missing", body = ErrorResponse),
        (status = 422, description = "Bad query parameter", body = ErrorResponse),
    ))]
pub async fn delete_all(
    State(s): Service,
    Params(q): Params<BulkDeleteParams>,
) -> Typed<BulkDeleteResponse> {
    Ok(Json(s.delete_all(&q).await?))
}

/// Re-run a failed or timed-out job as a new job.
#[utoipa::path(post, path = "/api/v1/jobs/retry/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "Job ID of a failed or timed-out job"), RetryParams),
    responses(
        (status = 200, description = "New job created", body = RetryResponse),
        (status = 404, description = "Unknown job", body = ErrorResponse),
        (status = 409, description = "Job is not failed or timed out", body = ErrorResponse),
        (status = 422, description = "Bad query parameter", body = ErrorResponse),
    ))]
pub async fn retry_job(
    State(s): Service,
    PathId(id): PathId,
    Params(q): Params<RetryParams>,
) -> Typed<RetryResponse> {
    Ok(Json(s.retry_job(&id, &q).await?))
}

/// Unknown routes: 404 in the error format.
pub async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("Not found: no route for {method} {}", uri.path()))
}
