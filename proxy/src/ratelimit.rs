//! Token buckets for `RateLimitPolicy` (governor's GCRA, keyed). The
//! `policies` crate decides which bucket and key apply; this module owns the
//! buckets, since they need a clock.
//!
//! Key state is bounded: a limiter holding more than `MAX_KEYS` keys first
//! drops keys whose buckets are full again (`retain_recent`); if a flood of
//! distinct keys still exceeds the bound, that limiter's state is reset and
//! counted (`meshward_ratelimit_state_resets_total`), so memory stays flat.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use meshward_policies::ratelimit::{Bucket, Limit};

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Most keys one limiter keeps.
pub const MAX_KEYS: usize = 100_000;

/// Limiters per (policy, rule, limit); reused across policy reloads while unchanged.
#[derive(Default)]
pub struct Limiters {
    map: Mutex<HashMap<(String, usize, Limit), Arc<Keyed>>>,
}

/// A request over its limit.
#[derive(Debug, Clone, Copy)]
pub struct Exceeded {
    /// Time until a token is available.
    pub retry_after: Duration,
}

fn quota(l: Limit) -> Quota {
    let burst = NonZeroU32::new(l.burst).unwrap_or(NonZeroU32::MIN);
    let per_token = l.per / l.requests.max(1);
    Quota::with_period(per_token).unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX)).allow_burst(burst)
}

impl Limiters {
    /// Takes one token from `bucket`; `Err` when the key is over its limit.
    /// Returns whether the key state had to be reset (for the metric).
    pub fn check(&self, bucket: &Bucket<'_>) -> (Result<(), Exceeded>, bool) {
        let id = (bucket.policy.to_owned(), bucket.rule, bucket.limit);
        let limiter = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.clone()).or_insert_with(|| Arc::new(RateLimiter::keyed(quota(bucket.limit)))).clone()
        };
        let mut reset = false;
        if limiter.len() > MAX_KEYS {
            limiter.retain_recent();
            if limiter.len() > MAX_KEYS {
                let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
                map.insert(id, Arc::new(RateLimiter::keyed(quota(bucket.limit))));
                reset = true;
            }
        }
        let result = limiter
            .check_key(&bucket.key)
            .map_err(|not_until| Exceeded { retry_after: not_until.wait_time_from(DefaultClock::default().now()) });
        (result, reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(key: &str, requests: u32, burst: u32) -> Bucket<'static> {
        Bucket {
            policy: "p",
            rule: 1,
            key: key.to_owned(),
            limit: Limit { requests, per: Duration::from_secs(60), burst },
            dry_run: false,
        }
    }

    #[test]
    fn each_key_has_its_own_bucket() {
        let l = Limiters::default();
        for _ in 0..3 {
            assert!(l.check(&bucket("a", 3, 3)).0.is_ok());
        }
        let over = l.check(&bucket("a", 3, 3)).0.expect_err("fourth is over");
        assert!(over.retry_after > Duration::from_secs(10) && over.retry_after <= Duration::from_secs(20), "{over:?}");
        assert!(l.check(&bucket("b", 3, 3)).0.is_ok(), "another key is not limited");
    }

    #[test]
    fn key_state_stays_bounded_under_a_flood_of_keys() {
        let l = Limiters::default();
        let mut resets = 0;
        for i in 0..(MAX_KEYS + 10) {
            resets += usize::from(l.check(&bucket(&format!("k{i}"), 1, 1)).1);
        }
        let map = l.map.lock().expect("lock");
        let len = map.values().next().map_or(0, |k| k.len());
        assert!(len <= MAX_KEYS + 1, "{len}");
        assert!(resets >= 1);
    }
}
