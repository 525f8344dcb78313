//! Query parameters (api-reference §5.3, §7.4, §9, §10.2, §5.1 extras). Each type documents
//! its parameters for OpenAPI and parses them from the decoded query string by hand, so that
//! every refusal names its parameter (`query.log_limit`) and says what is accepted.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{AgeGroup, FieldError, JobStatus, LogLevel};

/// A query string, decoded: parameter → value (a repeated parameter keeps its last value).
pub type Query = HashMap<String, String>;

/// The limits of this deployment that bound a query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// `MAX_TIMEOUT_MINUTES`: the most a retried job's `new_timeout` may ask.
    pub max_timeout_minutes: u32,
}

/// A query-parameter type, read from a decoded query string.
pub trait FromQuery: Sized {
    fn from_query(query: &Query, limits: QueryLimits) -> Result<Self, FieldError>;
}

fn invalid(name: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: format!("query.{name}"),
        message: message.into(),
    }
}

fn integer(query: &Query, name: &str, min: u64, max: u64) -> Result<Option<u64>, FieldError> {
    query
        .get(name)
        .map(|raw| match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(invalid(
                name,
                format!("must be an integer from {min} to {max}"),
            )),
        })
        .transpose()
}

fn flag(query: &Query, name: &str) -> Result<Option<bool>, FieldError> {
    query
        .get(name)
        .map(|raw| match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(invalid(name, "must be true, false, 1 or 0")),
        })
        .transpose()
}

fn status(query: &Query) -> Result<Option<JobStatus>, FieldError> {
    query
        .get("status")
        .map(|s| {
            JobStatus::parse(s).ok_or_else(|| {
                invalid(
                    "status",
                    "must be pending, running, success, failed, cancelled or timeout",
                )
            })
        })
        .transpose()
}

fn age_group(query: &Query) -> Result<Option<AgeGroup>, FieldError> {
    query
        .get("age_group")
        .map(|a| match a.as_str() {
            "neonate" => Ok(AgeGroup::Neonate),
            "child" => Ok(AgeGroup::Child),
            _ => Err(invalid("age_group", "must be neonate or child")),
        })
        .transpose()
}

fn timestamp(query: &Query, name: &str) -> Result<Option<DateTime<Utc>>, FieldError> {
    query
        .get(name)
        .map(|raw| {
            parse_timestamp(raw).ok_or_else(|| invalid(name, "must be an ISO 8601 timestamp"))
        })
        .transpose()
}

/// A timestamp with `Z`, an explicit offset, or no zone (taken as UTC).
pub fn parse_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    // A '+' in a query string may arrive decoded as a space.
    if let Ok(t) = DateTime::parse_from_rfc3339(&raw.replacen(' ', "+", 1)) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Query of `GET /api/v1/calibrate/{job_id}/status`; validated before the job is looked up.
#[derive(Debug, Clone, Default, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusParams {
    /// Only entries of exactly this level.
    pub log_level: Option<LogLevel>,
    /// 1–1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub log_limit: Option<u32>,
    /// ≥ 0, default 0.
    #[param(minimum = 0)]
    pub log_offset: Option<u64>,
}

impl StatusParams {
    pub fn log_limit(&self) -> u64 {
        self.log_limit.map_or(100, u64::from)
    }

    pub fn log_offset(&self) -> u64 {
        self.log_offset.unwrap_or(0)
    }
}

impl FromQuery for StatusParams {
    fn from_query(query: &Query, _: QueryLimits) -> Result<Self, FieldError> {
        let log_level = query
            .get("log_level")
            .map(|l| {
                LogLevel::parse(l).ok_or_else(|| {
                    invalid(
                        "log_level",
                        "must be debug, info, warning, error or critical",
                    )
                })
            })
            .transpose()?;
        Ok(StatusParams {
            log_level,
            log_limit: integer(query, "log_limit", 1, 1000)?.map(|n| n as u32),
            log_offset: integer(query, "log_offset", 0, u64::MAX / 2)?,
        })
    }
}

/// Query of `GET /api/v1/jobs`. Filters combine with AND.
#[derive(Debug, Clone, Default, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    pub status: Option<JobStatus>,
    /// Exact match (`calibration`, `batch_calibration`).
    pub job_type: Option<String>,
    pub age_group: Option<AgeGroup>,
    /// Case-insensitive equality.
    pub country: Option<String>,
    /// Inclusive; `Z`, an offset, or no zone (UTC).
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_after: Option<DateTime<Utc>>,
    /// Inclusive; `Z`, an offset, or no zone (UTC).
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_before: Option<DateTime<Utc>>,
    /// ≥ 1, default 1.
    #[param(minimum = 1)]
    pub page: Option<u64>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u64>,
}

impl ListParams {
    pub fn page(&self) -> u64 {
        self.page.unwrap_or(1)
    }

    pub fn page_size(&self) -> u64 {
        self.page_size.unwrap_or(20)
    }
}

impl FromQuery for ListParams {
    fn from_query(query: &Query, _: QueryLimits) -> Result<Self, FieldError> {
        Ok(ListParams {
            status: status(query)?,
            job_type: query.get("job_type").cloned(),
            age_group: age_group(query)?,
            country: query.get("country").cloned(),
            created_after: timestamp(query, "created_after")?,
            created_before: timestamp(query, "created_before")?,
            page: integer(query, "page", 1, 1_000_000)?,
            page_size: integer(query, "page_size", 1, 100)?,
        })
    }
}

/// Query of `DELETE /api/v1/cache/clear`.
#[derive(Debug, Clone, Default, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CacheClearParams {
    /// Must be `true` (or `1`), else 400.
    pub confirm: Option<bool>,
    /// Only entries of this age group.
    pub age_group: Option<AgeGroup>,
    /// Only entries of this country.
    pub country: Option<String>,
}

impl FromQuery for CacheClearParams {
    fn from_query(query: &Query, _: QueryLimits) -> Result<Self, FieldError> {
        Ok(CacheClearParams {
            confirm: flag(query, "confirm")?,
            age_group: age_group(query)?,
            country: query.get("country").cloned(),
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum TimeRange {
    #[serde(rename = "1h")]
    Hour,
    #[default]
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
}

impl TimeRange {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeRange::Hour => "1h",
            TimeRange::Day => "24h",
            TimeRange::Week => "7d",
            TimeRange::Month => "30d",
        }
    }

    pub fn duration(self) -> chrono::Duration {
        match self {
            TimeRange::Hour => chrono::Duration::hours(1),
            TimeRange::Day => chrono::Duration::hours(24),
            TimeRange::Week => chrono::Duration::days(7),
            TimeRange::Month => chrono::Duration::days(30),
        }
    }
}

/// Query of `GET /api/v1/jobs/metrics`.
#[derive(Debug, Clone, Default, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsParams {
    /// Default `24h`.
    pub time_range: Option<TimeRange>,
}

impl FromQuery for MetricsParams {
    fn from_query(query: &Query, _: QueryLimits) -> Result<Self, FieldError> {
        let time_range = query
            .get("time_range")
            .map(|label| {
                [
                    TimeRange::Hour,
                    TimeRange::Day,
                    TimeRange::Week,
                    TimeRange::Month,
                ]
                .into_iter()
                .find(|r| r.as_str() == label)
                .ok_or_else(|| invalid("time_range", "must be 1h, 24h, 7d or 30d"))
            })
            .transpose()?;
        Ok(MetricsParams { time_range })
    }
}

/// Query of `DELETE /api/v1/jobs/clear/all`.
#[derive(Debug, Clone, Default, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BulkDeleteParams {
    /// Must be `true` (or `1`), else 400.
    pub confirm: Option<bool>,
    pub status: Option<JobStatus>,
    pub age_group: Option<AgeGroup>,
}

impl FromQuery for BulkDeleteParams {
    fn from_query(query: &Query, _: QueryLimits) -> Result<Self, FieldError> {
        Ok(BulkDeleteParams {
            confirm: flag(query, "confirm")?,
            status: status(query)?,
            age_group: age_group(query)?,
        })
    }
}

/// Query of `POST /api/v1/jobs/retry/{job_id}`.
#[derive(Debug, Clone, Default, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetryParams {
    /// Accepted for compatibility; the new values alone decide.
    pub modify_params: Option<bool>,
    /// 1–10; default: the original job's.
    #[param(minimum = 1, maximum = 10)]
    pub new_priority: Option<u8>,
    /// 1–`MAX_TIMEOUT_MINUTES` (120 unless configured); default: the original job's.
    #[param(minimum = 1, maximum = 120)]
    pub new_timeout: Option<u32>,
}

impl FromQuery for RetryParams {
    fn from_query(query: &Query, limits: QueryLimits) -> Result<Self, FieldError> {
        Ok(RetryParams {
            modify_params: flag(query, "modify_params")?,
            new_priority: integer(query, "new_priority", 1, 10)?.map(|n| n as u8),
            new_timeout: integer(
                query,
                "new_timeout",
                1,
                u64::from(limits.max_timeout_minutes),
            )?
            .map(|n| n as u32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueryLimits = QueryLimits {
        max_timeout_minutes: 120,
    };

    fn query(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn refusal<T: FromQuery + std::fmt::Debug>(pairs: &[(&str, &str)]) -> FieldError {
        T::from_query(&query(pairs), LIMITS).unwrap_err()
    }

    #[test]
    fn timestamps_accept_z_offsets_and_no_zone() {
        let z = parse_timestamp("2024-01-15T14:25:00Z").unwrap();
        assert_eq!(parse_timestamp("2024-01-15T16:25:00+02:00"), Some(z));
        assert_eq!(parse_timestamp("2024-01-15T16:25:00 02:00"), Some(z));
        assert_eq!(parse_timestamp("2024-01-15T14:25:00"), Some(z));
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn bad_parameters_name_themselves_and_what_is_accepted() {
        let e = refusal::<StatusParams>(&[("log_limit", "0")]);
        assert_eq!(e.field, "query.log_limit");
        assert_eq!(e.message, "must be an integer from 1 to 1000");
        assert_eq!(
            refusal::<StatusParams>(&[("log_level", "loud")]).field,
            "query.log_level"
        );
        assert_eq!(
            refusal::<ListParams>(&[("page_size", "101")]).field,
            "query.page_size"
        );
        assert_eq!(
            refusal::<ListParams>(&[("created_after", "soon")]).field,
            "query.created_after"
        );
        assert_eq!(
            refusal::<CacheClearParams>(&[("confirm", "maybe")]).message,
            "must be true, false, 1 or 0"
        );
        assert_eq!(
            refusal::<MetricsParams>(&[("time_range", "2h")]).field,
            "query.time_range"
        );
        let e = refusal::<RetryParams>(&[("new_timeout", "121")]);
        assert_eq!(e.message, "must be an integer from 1 to 120");
    }

    #[test]
    fn good_parameters_parse_and_absent_ones_take_their_defaults() {
        let confirm = CacheClearParams::from_query(&query(&[("confirm", "TRUE")]), LIMITS);
        assert_eq!(confirm.unwrap().confirm, Some(true));
        let list = ListParams::from_query(
            &query(&[
                ("status", "failed"),
                ("age_group", "child"),
                ("page", " 3 "),
            ]),
            LIMITS,
        )
        .unwrap();
        assert_eq!(list.status, Some(JobStatus::Failed));
        assert_eq!(list.age_group, Some(AgeGroup::Child));
        assert_eq!((list.page(), list.page_size()), (3, 20));
        let status = StatusParams::from_query(&Query::new(), LIMITS).unwrap();
        assert_eq!((status.log_limit(), status.log_offset()), (100, 0));
        let metrics = MetricsParams::from_query(&query(&[("time_range", "7d")]), LIMITS);
        assert_eq!(metrics.unwrap().time_range, Some(TimeRange::Week));
        let generous = QueryLimits {
            max_timeout_minutes: 240,
        };
        let retry = RetryParams::from_query(&query(&[("new_timeout", "200")]), generous);
        assert_eq!(retry.unwrap().new_timeout, Some(200));
    }
}
