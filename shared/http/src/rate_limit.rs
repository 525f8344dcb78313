//! Fixed one-minute windows per client (api-reference §1), as the original did. The state is
//! per process: on Lambda each instance counts on its own, so the effective limit is a
//! per-instance one (API Gateway throttling is the tool for a global limit).

use std::collections::HashMap;
use std::sync::Mutex;

/// Length of a window in seconds.
pub const WINDOW_SECONDS: u64 = 60;

/// The verdict on one request, with what the X-RateLimit-* headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests left in the current window after this one.
    pub remaining: u32,
    /// Epoch second at which the window ends and the count starts over.
    pub reset_at: u64,
    /// Seconds until then (at least 1), for Retry-After.
    pub retry_after: u64,
}

#[derive(Debug)]
pub struct FixedWindowLimiter {
    limit: u32,
    /// client → (window start, requests counted in it).
    windows: Mutex<HashMap<String, (u64, u32)>>,
}

impl FixedWindowLimiter {
    pub fn new(limit_per_minute: u32) -> Self {
        FixedWindowLimiter {
            limit: limit_per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `client` at epoch second `now`.
    pub fn check(&self, client: &str, now: u64) -> Decision {
        let start = now - now % WINDOW_SECONDS;
        let reset_at = start + WINDOW_SECONDS;
        // A poisoned lock only means another request panicked while counting; the map is
        // still usable.
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        // Forget clients of past windows now and then so the map cannot grow without bound.
        if windows.len() > 10_000 {
            windows.retain(|_, (s, _)| *s == start);
        }
        let entry = windows.entry(client.to_string()).or_insert((start, 0));
        if entry.0 != start {
            *entry = (start, 0);
        }
        let allowed = entry.1 < self.limit;
        if allowed {
            entry.1 += 1;
        }
        Decision {
            allowed,
            limit: self.limit,
            remaining: self.limit.saturating_sub(entry.1),
            reset_at,
            retry_after: (reset_at - now).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_client_and_window() {
        let l = FixedWindowLimiter::new(2);
        let t = 6_000; // a window boundary
        assert!(l.check("a", t).allowed);
        let second = l.check("a", t + 1);
        assert!(second.allowed);
        assert_eq!(second.remaining, 0);
        let third = l.check("a", t + 10);
        assert!(!third.allowed);
        assert_eq!(third.retry_after, 50);
        assert_eq!(third.reset_at, t + 60);
        assert!(l.check("b", t + 10).allowed);
        assert!(l.check("a", t + 60).allowed);
    }
}
