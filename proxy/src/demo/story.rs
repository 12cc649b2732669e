//! The demo's story in numbers: what happened to each replayed request, and
//! the per-scenario table and false-positive rate computed from it.
//!
//! Pure: [`summarize`] takes the requests in the order they were sent with
//! the status each got, so the table maths is tested without a network.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

/// One replayed request, in send order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The generator's client name (the JWT subject it was sent with).
    pub client: String,
    /// Attack scenario; `None` for normal traffic.
    pub scenario: Option<String>,
    /// HTTP status; `None` for a transport error or timeout.
    pub status: Option<u16>,
}

/// A request the sidecar refused on the detector's verdict: 403 (blocked or
/// quarantined) or 429 (held at the reduced rate).
#[must_use]
pub fn is_verdict(status: Option<u16>) -> bool {
    matches!(status, Some(403 | 429))
}

/// One scenario's row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScenarioRow {
    /// Requests of the scenario.
    pub requests: u64,
    /// Answered 403.
    pub blocked: u64,
    /// Answered 429.
    pub limited: u64,
    /// Answered 401 (refused by JWT authentication before the detector).
    pub unauthenticated: u64,
    /// Requests of the scenario sent before its first 403/429; `None` if none came.
    pub first_verdict_after: Option<u64>,
}

impl ScenarioRow {
    /// `n` as a share of the requests (0 without requests).
    #[must_use]
    pub fn share(&self, n: u64) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            n as f64 / self.requests as f64
        }
    }
}

/// The detector's part of the demo summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Normal requests of clients that never attacked.
    pub normal_requests: u64,
    /// Of those, answered 403 or 429.
    pub normal_refused: u64,
    /// Rows by scenario name.
    pub scenarios: BTreeMap<String, ScenarioRow>,
}

impl Summary {
    /// Share of normal requests refused or limited. A compromised client's
    /// own normal calls are left out: slowing or quarantining that client is
    /// the intended consequence of the verdict against it, not a false positive.
    #[must_use]
    pub fn false_positive_rate(&self) -> f64 {
        if self.normal_requests == 0 {
            0.0
        } else {
            self.normal_refused as f64 / self.normal_requests as f64
        }
    }

    /// The stable `detector` object of `demo --json`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let scenarios: serde_json::Map<String, Value> = self
            .scenarios
            .iter()
            .map(|(name, r)| {
                (
                    name.clone(),
                    json!({
                        "requests": r.requests,
                        "blocked": r.share(r.blocked),
                        "limited": r.share(r.limited),
                        "first_verdict_after": r.first_verdict_after,
                    }),
                )
            })
            .collect();
        json!({ "false_positive_rate": self.false_positive_rate(), "scenarios": scenarios })
    }
}

/// Computes the table from the requests in send order.
#[must_use]
pub fn summarize(sent: &[Sent]) -> Summary {
    let attackers: HashSet<&str> = sent.iter().filter(|s| s.scenario.is_some()).map(|s| s.client.as_str()).collect();
    let mut out = Summary::default();
    for s in sent {
        match &s.scenario {
            None => {
                if !attackers.contains(s.client.as_str()) {
                    out.normal_requests += 1;
                    out.normal_refused += u64::from(is_verdict(s.status));
                }
            }
            Some(name) => {
                let row = out.scenarios.entry(name.clone()).or_default();
                if is_verdict(s.status) && row.first_verdict_after.is_none() {
                    row.first_verdict_after = Some(row.requests);
                }
                row.requests += 1;
                match s.status {
                    Some(403) => row.blocked += 1,
                    Some(429) => row.limited += 1,
                    Some(401) => row.unauthenticated += 1,
                    _ => {}
                }
            }
        }
    }
    out
}

/// Median (nearest rank) of latencies in microseconds, in milliseconds; 0 when empty.
#[must_use]
pub fn p50_ms(latencies_us: &[u64]) -> f64 {
    if latencies_us.is_empty() {
        return 0.0;
    }
    let mut v = latencies_us.to_vec();
    v.sort_unstable();
    v[(v.len() - 1) / 2] as f64 / 1000.0
}

/// Prints the per-scenario table and the normal traffic's numbers.
pub fn print_table(s: &Summary, direct_p50: f64, mesh_p50: f64) {
    println!("\nwhat the detector did (per attack scenario)");
    println!(
        "  {:<26} {:>8} {:>9} {:>9} {:>7} {:>20}",
        "scenario", "requests", "blocked", "limited", "401", "first verdict after"
    );
    for (name, r) in &s.scenarios {
        let first = r.first_verdict_after.map_or_else(|| "never".to_owned(), |n| format!("{n} requests"));
        println!(
            "  {:<26} {:>8} {:>8.1}% {:>8.1}% {:>7} {:>20}",
            name,
            r.requests,
            100.0 * r.share(r.blocked),
            100.0 * r.share(r.limited),
            r.unauthenticated,
            first
        );
    }
    println!(
        "  {:<26} {:>8} {:>8.3}% refused or limited (false positives)",
        "normal traffic",
        s.normal_requests,
        100.0 * s.false_positive_rate()
    );
    println!(
        "  {:<26} p50 {:.3} ms direct, {:.3} ms through both sidecars with the detector (+{:.3} ms)",
        "latency",
        direct_p50,
        mesh_p50,
        mesh_p50 - direct_p50
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(client: &str, scenario: Option<&str>, status: Option<u16>) -> Sent {
        Sent { client: client.into(), scenario: scenario.map(Into::into), status }
    }

    #[test]
    fn scenario_rows_and_false_positive_rate() {
        let log = vec![
            sent("a", None, Some(200)),
            sent("b", None, Some(429)),
            sent("x", Some("flood"), Some(200)),
            sent("x", Some("flood"), Some(200)),
            // A compromised client's own normal call refused: not a false positive.
            sent("x", None, Some(403)),
            sent("x", Some("flood"), Some(429)),
            sent("x", Some("flood"), Some(403)),
            sent("y", Some("path-scan"), None),
            sent("y", Some("path-scan"), Some(404)),
            sent("z", Some("token-stuffing"), Some(401)),
            sent("a", None, Some(200)),
            sent("c", None, Some(200)),
        ];
        let s = summarize(&log);
        assert_eq!((s.normal_requests, s.normal_refused), (4, 1));
        assert!((s.false_positive_rate() - 0.25).abs() < 1e-12);
        let flood = &s.scenarios["flood"];
        assert_eq!((flood.requests, flood.blocked, flood.limited, flood.first_verdict_after), (4, 1, 1, Some(2)));
        assert!((flood.share(flood.blocked) - 0.25).abs() < 1e-12);
        let scan = &s.scenarios["path-scan"];
        assert_eq!((scan.requests, scan.first_verdict_after), (2, None));
        assert_eq!(s.scenarios["token-stuffing"].unauthenticated, 1);

        let j = s.to_json();
        assert_eq!(j["scenarios"]["flood"]["requests"], 4);
        assert_eq!(j["scenarios"]["flood"]["first_verdict_after"], 2);
        assert!(j["scenarios"]["path-scan"]["first_verdict_after"].is_null());
        assert_eq!(j["scenarios"]["path-scan"]["blocked"], 0.0);
        assert_eq!(j["false_positive_rate"], 0.25);
    }

    #[test]
    fn first_verdict_at_the_first_request_counts_zero_and_empty_logs_are_zero() {
        let s = summarize(&[sent("x", Some("nan-inf"), Some(403))]);
        assert_eq!(s.scenarios["nan-inf"].first_verdict_after, Some(0));
        let empty = summarize(&[]);
        assert!(empty.false_positive_rate().abs() < f64::EPSILON && empty.scenarios.is_empty());
        assert!(p50_ms(&[]).abs() < f64::EPSILON);
        assert!((p50_ms(&[3000, 1000, 2000, 9000]) - 2.0).abs() < 1e-12);
    }
}
