//! The OpenAPI document matches the router: the same (method, path) set, and real responses
//! satisfy the documented schemas (required fields, types, enums).

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use common::{App, SMALL_JOB};
use serde_json::{json, Value};
use vacal_core::Config;

const METHODS: [&str; 5] = ["GET", "POST", "DELETE", "PUT", "PATCH"];

async fn document(app: &App) -> Value {
    let r = app.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    r.body
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if METHODS.contains(&method.to_uppercase().as_str()) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// A concrete URI for a templated path.
fn concrete(path: &str) -> String {
    path.replace("{job_id}", "job_000000000000")
        .replace("{batch_id}", "batch_000000000000")
}

fn is_fallback(r: &common::Reply) -> bool {
    r.status == StatusCode::NOT_FOUND && r.detail().starts_with("Not found: no route")
}

#[tokio::test]
async fn the_document_and_the_router_have_the_same_routes() {
    let app = App::new();
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let documented = documented_routes(&doc);
    let declared: BTreeSet<(String, String)> = vacal_http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, declared);

    // The §5.1 table plus `/`, the document itself and the result files, written out
    // independently.
    let reference: BTreeSet<(String, String)> = [
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
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(documented, reference);

    // On every documented path, exactly the documented methods are served; the others are
    // a 405 (the path exists), never the unknown-route 404.
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in METHODS {
            let served = documented.contains(&(method.to_string(), path.clone()));
            let body = (method == "POST").then_some("{}");
            let r = app
                .send(method.parse().unwrap(), &concrete(path), body)
                .await;
            if served {
                assert!(
                    !is_fallback(&r) && r.status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but not served: {} {}",
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
            }
        }
    }
    assert!(is_fallback(&app.get("/api/v1/unknown").await));
}

#[tokio::test]
async fn the_document_describes_api_keys_only_when_they_are_on() {
    let app = App::new();
    let doc = document(&app).await;
    assert!(doc.get("security").is_none());
    assert!(doc["paths"]["/api/v1/jobs"]["get"]["responses"]["401"].is_null());
    assert!(!doc["paths"]["/api/v1/jobs"]["get"]["responses"]["429"].is_null());

    let app = App::with_config(Config {
        api_keys: Some(vec!["k".into()]),
        ..Config::default()
    });
    let r = app.get("/api/v1/openapi.json?api_key=k").await;
    let doc = r.body;
    assert!(doc["components"]["securitySchemes"]["api_key_header"].is_object());
    assert!(doc["paths"]["/api/v1/jobs"]["get"]["responses"]["401"].is_object());
    assert!(doc["paths"]["/"]["get"]["responses"]["401"].is_null());
}

/// Resolves `{"$ref": "#/components/schemas/X"}`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

/// A small JSON-schema check: `$ref`, `type`, `enum`, `required`, `properties`,
/// `additionalProperties`, `items`, `oneOf`/`anyOf` (any branch) and `allOf`.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = branches
                .iter()
                .filter_map(|b| check(doc, b, v, at).err())
                .collect();
            if errors.len() == branches.len() {
                return Err(format!("{at}: no branch of {key} matches: {errors:?}"));
            }
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(doc, s, v, at)?;
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.iter().any(|t| type_matches(t, v)) {
            return Err(format!("{at}: {v} is not of type {t}"));
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !v.is_null() && !values.contains(v) {
            return Err(format!("{at}: {v} is not one of {values:?}"));
        }
    }
    if let Some(obj) = v.as_object() {
        for field in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = field.as_str().unwrap();
            if !obj.contains_key(field) {
                return Err(format!("{at}: required field {field} is missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, value) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, value, &format!("{at}.{k}"))?,
                None => {
                    if let Some(extra) =
                        schema.get("additionalProperties").filter(|s| s.is_object())
                    {
                        check(doc, extra, value, &format!("{at}.{k}"))?;
                    }
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Checks a real response against the document's schema for its route and status.
async fn conforms(
    app: &App,
    doc: &Value,
    method: Method,
    uri: &str,
    route: &str,
    body: Option<&str>,
) -> Value {
    let r = app.send(method.clone(), uri, body).await;
    let op = &doc["paths"][route][method.as_str().to_lowercase()];
    assert!(op.is_object(), "{method} {route} is not documented");
    let documented = &op["responses"][r.status.as_str()];
    assert!(
        documented.is_object(),
        "{method} {uri} answered {} which is not documented: {}",
        r.status,
        r.body
    );
    let schema = &documented["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {route} {} has no schema",
        r.status
    );
    if let Err(e) = check(doc, schema, &r.body, "body") {
        panic!("{method} {uri} ({}): {e}\n{}", r.status, r.body);
    }
    r.body
}

#[tokio::test]
async fn real_responses_carry_the_documented_fields() {
    let app = App::new();
    let doc = document(&app).await;
    let created = conforms(
        &app,
        &doc,
        Method::POST,
        "/api/v1/calibrate/async",
        "/api/v1/calibrate/async",
        Some(SMALL_JOB),
    )
    .await;
    let id = created["job_id"].as_str().unwrap().to_string();
    let status_route = "/api/v1/calibrate/{job_id}/status";
    let result_route = "/api/v1/calibrate/{job_id}/result";
    conforms(
        &app,
        &doc,
        Method::GET,
        &format!("/api/v1/calibrate/{id}/status"),
        status_route,
        None,
    )
    .await;
    // 400 (unfinished), 404, 422 and 405-free error bodies are documented too.
    conforms(
        &app,
        &doc,
        Method::GET,
        &format!("/api/v1/calibrate/{id}/result"),
        result_route,
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::GET,
        "/api/v1/calibrate/job_000000000000/status",
        status_route,
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::GET,
        &format!("/api/v1/calibrate/{id}/status?log_limit=0"),
        status_route,
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::POST,
        "/api/v1/calibrate/async",
        "/api/v1/calibrate/async",
        Some(r#"{"va_data": {}}"#),
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::POST,
        "/api/v1/calibrate/async",
        "/api/v1/calibrate/async",
        Some("nope"),
    )
    .await;

    app.run(&id).await;
    conforms(
        &app,
        &doc,
        Method::GET,
        &format!("/api/v1/calibrate/{id}/status"),
        status_route,
        None,
    )
    .await;
    let result = conforms(
        &app,
        &doc,
        Method::GET,
        &format!("/api/v1/calibrate/{id}/result"),
        result_route,
        None,
    )
    .await;
    assert_eq!(result["result"]["status"], "success");
    conforms(
        &app,
        &doc,
        Method::DELETE,
        &format!("/api/v1/calibrate/{id}"),
        "/api/v1/calibrate/{job_id}",
        None,
    )
    .await;

    let other = app.create("{}").await;
    conforms(
        &app,
        &doc,
        Method::DELETE,
        &format!("/api/v1/calibrate/{other}"),
        "/api/v1/calibrate/{job_id}",
        None,
    )
    .await;
    app.time_out(&app.create("{}").await).await;

    let batch = conforms(
        &app,
        &doc,
        Method::POST,
        "/api/v1/calibrate/batch",
        "/api/v1/calibrate/batch",
        Some(&json!({"jobs": [{}, {"age_group": "child"}], "batch_name": "b"}).to_string()),
    )
    .await;
    let batch_id = batch["batch_id"].as_str().unwrap();
    conforms(
        &app,
        &doc,
        Method::GET,
        &format!("/api/v1/calibrate/batch/{batch_id}/status"),
        "/api/v1/calibrate/batch/{batch_id}/status",
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::GET,
        "/api/v1/jobs",
        "/api/v1/jobs",
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::GET,
        "/api/v1/cache/stats",
        "/api/v1/cache/stats",
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::DELETE,
        "/api/v1/cache/clear?confirm=true",
        "/api/v1/cache/clear",
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::GET,
        "/api/v1/jobs/health",
        "/api/v1/jobs/health",
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::GET,
        "/api/v1/jobs/metrics?time_range=7d",
        "/api/v1/jobs/metrics",
        None,
    )
    .await;
    conforms(&app, &doc, Method::GET, "/", "/", None).await;

    let listed = app.get("/api/v1/jobs?status=timeout").await;
    let failed = listed.body["jobs"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    conforms(
        &app,
        &doc,
        Method::GET,
        &format!("/api/v1/calibrate/{failed}/result"),
        result_route,
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::GET,
        &format!("/api/v1/calibrate/{failed}/status"),
        status_route,
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::POST,
        &format!("/api/v1/jobs/retry/{failed}"),
        "/api/v1/jobs/retry/{job_id}",
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::DELETE,
        &format!("/api/v1/jobs/{other}"),
        "/api/v1/jobs/{job_id}",
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::DELETE,
        "/api/v1/jobs/clear/all?confirm=true",
        "/api/v1/jobs/clear/all",
        None,
    )
    .await;
    conforms(
        &app,
        &doc,
        Method::DELETE,
        "/api/v1/jobs/clear/all",
        "/api/v1/jobs/clear/all",
        None,
    )
    .await;
}
