//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and
//! the types of `schema`. Responses every route can give (429, 500, and with API keys on
//! 401/403) are added here rather than repeated on each handler.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, ResponseBuilder};
use utoipa::OpenApi;

use crate::handlers;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vacal",
        description = "Calibration of verbal-autopsy cause-specific mortality fractions as a \
                       job service (VA-Calibration Job Management API).",
    ),
    paths(
        handlers::service_info,
        handlers::openapi_json,
        handlers::create_job,
        handlers::job_status,
        handlers::job_result,
        handlers::result_csv,
        handlers::plot_svg,
        handlers::report_html,
        handlers::cancel_job,
        handlers::create_batch,
        handlers::batch_status,
        handlers::batch_result_csv,
        handlers::list_jobs,
        handlers::cache_stats,
        handlers::clear_cache,
        handlers::health,
        handlers::metrics,
        handlers::delete_job,
        handlers::delete_all,
        handlers::retry_job,
        handlers::reference,
        handlers::cause_map,
        handlers::validate,
    ),
    components(schemas(
        crate::schema::ErrorResponse,
        crate::schema::FitDiagnostics,
        crate::schema::PathCorrection
    )),
    tags(
        (name = "jobs", description = "Calibration jobs"),
        (name = "results", description = "Results as files: CSV, SVG figure, HTML report"),
        (name = "batches", description = "Batches of jobs"),
        (name = "cache", description = "Result cache"),
        (name = "reference", description = "Age groups, causes, countries, rules, defaults and cause maps"),
        (name = "service", description = "Service information, health and metrics"),
    ),
)]
struct ApiDoc;

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorResponse")))
                .build(),
        )
        .build()
}

fn operations(doc: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = (&str, &mut Operation)> {
    doc.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            item.get.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.put.as_mut(),
            item.patch.as_mut(),
        ]
        .into_iter()
        .flatten()
        .map(move |op| (path.as_str(), op))
    })
}

/// The document for a deployment; `auth` says whether API keys are required.
pub fn document(auth: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    for (path, op) in operations(&mut doc) {
        let responses = &mut op.responses.responses;
        let mut add = |code: &str, description: &str| {
            responses
                .entry(code.to_string())
                .or_insert_with(|| error_response(description).into());
        };
        add("429", "Rate limit exceeded (see Retry-After)");
        add("500", "Internal failure; the detail carries a request id");
        if auth && path != "/" {
            add("401", "API key missing");
            add("403", "API key invalid");
        }
    }
    if auth {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "api_key_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("api_key"))),
        );
        doc.security = Some(vec![
            SecurityRequirement::new("api_key_header", Vec::<String>::new()),
            SecurityRequirement::new("api_key_query", Vec::<String>::new()),
        ]);
    } else {
        // Without keys, no operation needs one: drop the per-operation "optional" marker.
        for (_, op) in operations(&mut doc) {
            op.security = None;
        }
    }
    doc
}
