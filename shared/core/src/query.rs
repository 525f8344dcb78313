//! Query parameters of the API (§5.3, §7.4, §9, §10.2, §5.1 extras), validated into types.
//! Invalid values are 422s that name the parameter.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::domain::{JobStatus, LogLevel};
use crate::ports::JobFilter;
use crate::validation::ValidationError;

type Params = HashMap<String, String>;

fn invalid(name: &str, message: impl Into<String>) -> ValidationError {
    ValidationError::single(format!("query.{name}"), message)
}

fn integer(
    params: &Params,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ValidationError> {
    match params.get(name) {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(invalid(
                name,
                format!("must be an integer from {min} to {max}"),
            )),
        },
    }
}

fn boolean(params: &Params, name: &str) -> Result<bool, ValidationError> {
    match params.get(name).map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(s) if s == "true" || s == "1" => Ok(true),
        Some(s) if s == "false" || s == "0" => Ok(false),
        Some(_) => Err(invalid(name, "must be true, false, 1 or 0")),
    }
}

fn status(params: &Params) -> Result<Option<JobStatus>, ValidationError> {
    params
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

fn age_group(params: &Params) -> Result<Option<String>, ValidationError> {
    match params.get("age_group").map(String::as_str) {
        None => Ok(None),
        Some(a @ ("neonate" | "child")) => Ok(Some(a.to_string())),
        Some(_) => Err(invalid("age_group", "must be neonate or child")),
    }
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
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn timestamp(params: &Params, name: &str) -> Result<Option<DateTime<Utc>>, ValidationError> {
    params
        .get(name)
        .map(|raw| {
            parse_timestamp(raw).ok_or_else(|| invalid(name, "must be an ISO 8601 timestamp"))
        })
        .transpose()
}

pub struct StatusQuery {
    pub log_level: Option<LogLevel>,
    pub log_limit: u64,
    pub log_offset: u64,
}

pub fn status_query(params: &Params) -> Result<StatusQuery, ValidationError> {
    let log_level = params
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
    Ok(StatusQuery {
        log_level,
        log_limit: integer(params, "log_limit", 100, 1, 1000)?,
        log_offset: integer(params, "log_offset", 0, 0, u64::MAX / 2)?,
    })
}

pub struct ListQuery {
    pub filter: JobFilter,
    pub page: u64,
    pub page_size: u64,
}

pub fn list_query(params: &Params) -> Result<ListQuery, ValidationError> {
    Ok(ListQuery {
        filter: JobFilter {
            status: status(params)?,
            job_type: params.get("job_type").cloned(),
            age_group: age_group(params)?,
            country: params.get("country").cloned(),
            created_after: timestamp(params, "created_after")?,
            created_before: timestamp(params, "created_before")?,
            batch_id: None,
        },
        page: integer(params, "page", 1, 1, 1_000_000)?,
        page_size: integer(params, "page_size", 20, 1, 100)?,
    })
}

pub struct BulkDeleteQuery {
    pub confirm: bool,
    pub status: Option<JobStatus>,
    pub age_group: Option<String>,
}

pub fn bulk_delete_query(params: &Params) -> Result<BulkDeleteQuery, ValidationError> {
    Ok(BulkDeleteQuery {
        confirm: boolean(params, "confirm")?,
        status: status(params)?,
        age_group: age_group(params)?,
    })
}

pub struct RetryQuery {
    pub new_priority: Option<u8>,
    pub new_timeout: Option<u32>,
}

pub fn retry_query(params: &Params, max_timeout: u32) -> Result<RetryQuery, ValidationError> {
    boolean(params, "modify_params")?;
    Ok(RetryQuery {
        new_priority: params
            .contains_key("new_priority")
            .then(|| integer(params, "new_priority", 5, 1, 10).map(|n| n as u8))
            .transpose()?,
        new_timeout: params
            .contains_key("new_timeout")
            .then(|| {
                integer(params, "new_timeout", 30, 1, u64::from(max_timeout)).map(|n| n as u32)
            })
            .transpose()?,
    })
}

pub struct CacheClearQuery {
    pub confirm: bool,
    pub age_group: Option<String>,
    pub country: Option<String>,
}

pub fn cache_clear_query(params: &Params) -> Result<CacheClearQuery, ValidationError> {
    Ok(CacheClearQuery {
        confirm: boolean(params, "confirm")?,
        age_group: age_group(params)?,
        country: params.get("country").cloned(),
    })
}

/// The metrics window: its label and length.
pub fn metrics_query(params: &Params) -> Result<(String, chrono::Duration), ValidationError> {
    let label = params.get("time_range").map_or("24h", String::as_str);
    let window = match label {
        "1h" => chrono::Duration::hours(1),
        "24h" => chrono::Duration::hours(24),
        "7d" => chrono::Duration::days(7),
        "30d" => chrono::Duration::days(30),
        _ => return Err(invalid("time_range", "must be 1h, 24h, 7d or 30d")),
    };
    Ok((label.to_string(), window))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
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
    fn bad_parameters_name_themselves() {
        let field = |r: Result<(), ValidationError>| r.unwrap_err().errors[0].field.clone();
        assert_eq!(
            field(status_query(&params(&[("log_limit", "0")])).map(|_| ())),
            "query.log_limit"
        );
        assert_eq!(
            field(status_query(&params(&[("log_level", "loud")])).map(|_| ())),
            "query.log_level"
        );
        assert_eq!(
            field(list_query(&params(&[("page_size", "101")])).map(|_| ())),
            "query.page_size"
        );
        assert_eq!(
            field(list_query(&params(&[("created_after", "soon")])).map(|_| ())),
            "query.created_after"
        );
        assert_eq!(
            field(cache_clear_query(&params(&[("confirm", "maybe")])).map(|_| ())),
            "query.confirm"
        );
        assert_eq!(
            field(metrics_query(&params(&[("time_range", "2h")])).map(|_| ())),
            "query.time_range"
        );
        assert!(
            cache_clear_query(&params(&[("confirm", "TRUE")]))
                .unwrap()
                .confirm
        );
    }
}
