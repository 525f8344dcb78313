//! Service configuration (api-reference §11): one struct, read once at start-up.

use std::collections::HashMap;
use std::time::Duration;

/// Configuration of the job service. `from_env` reads the guide's variables; anything not
/// set keeps the documented default.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Cache entry lifetime (`CACHE_TTL`, seconds).
    pub cache_ttl: Duration,
    /// Lifetime of jobs, logs, batches and results (`JOB_RETENTION_SECONDS`).
    pub job_retention: Duration,
    pub max_log_entries: u64,
    pub batch_max_size: usize,
    pub default_timeout_minutes: u32,
    pub max_timeout_minutes: u32,
    pub default_parallel_limit: u32,
    pub max_parallel_limit: u32,
    pub max_deaths_per_request: u64,
    pub max_request_bytes: usize,
    /// How long a worker holds a claimed job before another may take it over.
    pub lease: Duration,
    /// Requests per minute per client; 0 disables the limit.
    pub rate_limit_per_minute: u32,
    /// `Some` when API-key authentication is on.
    pub api_keys: Option<Vec<String>>,
    /// Allowed CORS origins; `["*"]` allows all.
    pub cors_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_ttl: Duration::from_secs(3600),
            job_retention: Duration::from_secs(86_400),
            max_log_entries: 1000,
            batch_max_size: 50,
            default_timeout_minutes: 30,
            max_timeout_minutes: 120,
            default_parallel_limit: 5,
            max_parallel_limit: 10,
            max_deaths_per_request: 10_000,
            max_request_bytes: 5 * 1024 * 1024,
            lease: Duration::from_secs(300),
            rate_limit_per_minute: 0,
            api_keys: None,
            cors_origins: vec!["*".to_string()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("configuration {name}: {message}")]
pub struct ConfigError {
    pub name: String,
    pub message: String,
}

fn number<T>(
    vars: &HashMap<String, String>,
    name: &str,
    min: T,
    max: T,
) -> Result<Option<T>, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = vars.get(name) else {
        return Ok(None);
    };
    let parsed: T = raw.trim().parse().map_err(|_| ConfigError {
        name: name.to_string(),
        message: format!("'{raw}' is not a number"),
    })?;
    if parsed < min || parsed > max {
        return Err(ConfigError {
            name: name.to_string(),
            message: format!("{parsed} is outside {min}..={max}"),
        });
    }
    Ok(Some(parsed))
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&std::env::vars().collect())
    }

    /// Reads configuration variables from a map (the environment, or a test's).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(s) = number::<u64>(vars, "CACHE_TTL", 1, 365 * 86_400)? {
            c.cache_ttl = Duration::from_secs(s);
        }
        if let Some(s) = number::<u64>(vars, "JOB_RETENTION_SECONDS", 60, 365 * 86_400)? {
            c.job_retention = Duration::from_secs(s);
        }
        if let Some(n) = number::<u64>(vars, "MAX_LOG_ENTRIES", 1, 1_000_000)? {
            c.max_log_entries = n;
        }
        if let Some(n) = number::<usize>(vars, "BATCH_MAX_SIZE", 1, 1000)? {
            c.batch_max_size = n;
        }
        if let Some(n) = number::<u32>(vars, "MAX_TIMEOUT_MINUTES", 1, 24 * 60)? {
            c.max_timeout_minutes = n;
        }
        if let Some(n) = number::<u32>(vars, "DEFAULT_TIMEOUT_MINUTES", 1, 24 * 60)? {
            c.default_timeout_minutes = n;
        }
        if c.default_timeout_minutes > c.max_timeout_minutes {
            return Err(ConfigError {
                name: "DEFAULT_TIMEOUT_MINUTES".into(),
                message: "must not exceed MAX_TIMEOUT_MINUTES".into(),
            });
        }
        if let Some(n) = number::<u32>(vars, "MAX_PARALLEL_LIMIT", 1, 1000)? {
            c.max_parallel_limit = n;
        }
        if let Some(n) = number::<u32>(vars, "DEFAULT_PARALLEL_LIMIT", 1, 1000)? {
            c.default_parallel_limit = n;
        }
        if let Some(n) = number::<u64>(vars, "MAX_DEATHS_PER_REQUEST", 1, 10_000_000)? {
            c.max_deaths_per_request = n;
        }
        if let Some(n) = number::<usize>(vars, "MAX_REQUEST_BYTES", 1024, 64 * 1024 * 1024)? {
            c.max_request_bytes = n;
        }
        if let Some(s) = number::<u64>(vars, "JOB_LEASE_SECONDS", 5, 86_400)? {
            c.lease = Duration::from_secs(s);
        }
        if let Some(n) = number::<u32>(vars, "RATE_LIMIT_PER_MINUTE", 0, 1_000_000)? {
            c.rate_limit_per_minute = n;
        }
        let auth = vars
            .get("ENABLE_API_KEY_AUTH")
            .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
            .unwrap_or(false);
        if auth {
            let keys: Vec<String> = vars
                .get("API_KEYS")
                .map(|k| {
                    k.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            if keys.is_empty() {
                return Err(ConfigError {
                    name: "API_KEYS".into(),
                    message: "ENABLE_API_KEY_AUTH is on but no keys are configured".into(),
                });
            }
            c.api_keys = Some(keys);
        }
        if let Some(origins) = vars.get("CORS_ORIGINS") {
            // Accepts `*`, a comma list, or the guide's JSON list form `["*"]`.
            let parsed: Vec<String> =
                serde_json::from_str::<Vec<String>>(origins).unwrap_or_else(|_| {
                    origins
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                });
            if !parsed.is_empty() {
                c.cors_origins = parsed;
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_follow_the_guide() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.cache_ttl, Duration::from_secs(3600));
        assert_eq!(c.batch_max_size, 50);
        assert_eq!(c.max_timeout_minutes, 120);
        assert_eq!(c.cors_origins, vec!["*"]);
        assert!(c.api_keys.is_none());
    }

    #[test]
    fn variables_override_and_bad_values_are_refused() {
        let c = Config::from_vars(&vars(&[
            ("CACHE_TTL", "60"),
            ("BATCH_MAX_SIZE", "7"),
            ("CORS_ORIGINS", r#"["https://a.example"]"#),
            ("ENABLE_API_KEY_AUTH", "true"),
            ("API_KEYS", "k1, k2"),
        ]))
        .unwrap();
        assert_eq!(c.cache_ttl, Duration::from_secs(60));
        assert_eq!(c.batch_max_size, 7);
        assert_eq!(c.cors_origins, vec!["https://a.example"]);
        assert_eq!(c.api_keys, Some(vec!["k1".to_string(), "k2".to_string()]));
        let err = Config::from_vars(&vars(&[("CACHE_TTL", "soon")])).unwrap_err();
        assert_eq!(err.name, "CACHE_TTL");
        assert!(Config::from_vars(&vars(&[("ENABLE_API_KEY_AUTH", "1")])).is_err());
    }
}
