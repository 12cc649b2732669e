//! Table-driven policy tests (`meshward policy test`): each case describes a
//! request and the decision it must get, optionally which policy and rule
//! must decide it. Lets teams test a policy in CI before rollout.
//!
//! A case sees the policies that attach to its `workload` (all of them
//! without one). Authorization decides `allow` or `deny`; an allowed request
//! sent `repeat` times at once then meets the rate limits: requests beyond the
//! smallest enforced burst are `rate_limited`. `jwt` describes a token that
//! authentication already verified (signatures are checked by the sidecar,
//! not here).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::compile::{Policies, Workload};
use crate::eval::{evaluate, Reason, RequestAttrs, Verdict, VerifiedJwt};
use crate::ratelimit::buckets;

/// A cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFile {
    /// The cases, run in order.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown in the report.
    pub name: String,
    /// The request.
    pub request: CaseRequest,
    /// `allow`, `deny` or `rate_limited`.
    pub expect: String,
    /// How many times the request is sent at once (for rate limits). Default 1.
    #[serde(default = "one")]
    pub repeat: u32,
    /// With `rate_limited`: exactly how many of the `repeat` requests are limited.
    #[serde(default)]
    pub limited: Option<u32>,
    /// The workload the request is for (policy attachment); omit: every policy applies.
    #[serde(default)]
    pub workload: Option<CaseWorkload>,
    /// The policy that must decide (omit to not check).
    #[serde(default)]
    pub policy: Option<String>,
    /// The 1-based rule that must decide (omit to not check).
    #[serde(default)]
    pub rule: Option<usize>,
}

/// The workload a case's request is for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseWorkload {
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Pod labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A request description.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    /// Method. Default GET.
    #[serde(default = "get")]
    pub method: String,
    /// Path (query is ignored).
    pub path: String,
    /// App port. Default 8080.
    #[serde(default = "port")]
    pub port: u16,
    /// Peer SPIFFE ID; omit for plaintext.
    #[serde(default)]
    pub peer: Option<String>,
    /// Client IP. Default 10.0.0.1.
    #[serde(default = "ip")]
    pub ip: IpAddr,
    /// Headers (names are case-insensitive).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A verified JWT.
    #[serde(default)]
    pub jwt: Option<CaseJwt>,
}

/// A JWT as authentication would have verified it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseJwt {
    /// `iss`.
    pub iss: String,
    /// `sub`.
    pub sub: String,
    /// Other claims.
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

fn one() -> u32 {
    1
}
fn get() -> String {
    "GET".to_owned()
}
fn port() -> u16 {
    8080
}
fn ip() -> IpAddr {
    IpAddr::from([10, 0, 0, 1])
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// True when the decision matched every expectation.
    pub passed: bool,
    /// What happened, e.g. `deny by policy 'x' rule 2`.
    pub got: String,
    /// What was expected, when it failed.
    pub expected: Option<String>,
}

/// Parses a cases file.
pub fn parse_cases(text: &str) -> Result<CasesFile, String> {
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

/// Runs every case against `policies`.
pub fn run_cases(policies: &Policies, cases: &CasesFile) -> Vec<CaseResult> {
    cases.cases.iter().map(|c| run_case(policies, c)).collect()
}

fn run_case(all: &Policies, c: &Case) -> CaseResult {
    let workload = c.workload.as_ref().map(|w| Workload { namespace: w.namespace.clone(), labels: w.labels.clone() });
    let policies = all.for_workload(workload.as_ref());
    let r = &c.request;
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let jwt = r.jwt.as_ref().map(|j| {
        let mut claims = j.claims.clone();
        claims.insert("iss".into(), j.iss.clone().into());
        claims.insert("sub".into(), j.sub.clone().into());
        VerifiedJwt { principal: format!("{}/{}", j.iss, j.sub), claims: serde_json::Value::Object(claims) }
    });
    let method = r.method.to_ascii_uppercase();
    let path = r.path.split('?').next().unwrap_or("");
    let req = RequestAttrs {
        method: &method,
        path,
        port: r.port,
        peer: r.peer.as_deref(),
        source_ip: r.ip,
        headers: &headers,
        jwt: jwt.as_ref(),
    };
    let d = evaluate(&policies.authorization, &req);
    let mut verdict = if d.verdict == Verdict::Allow { "allow" } else { "deny" };
    let (policy, rule) = match &d.reason {
        Reason::Allowed(x) | Reason::Denied(x) => (Some(x.policy.as_str()), Some(x.rule)),
        _ => (None, None),
    };
    let mut got = match &d.reason {
        Reason::Allowed(x) | Reason::Denied(x) => format!("{verdict} by policy '{}' rule {}", x.policy, x.rule),
        Reason::NoAllowMatched => format!("{verdict}: no ALLOW policy matched"),
        Reason::NoAllowPolicies => format!("{verdict}: no ALLOW policy"),
    };
    let (mut policy, mut rule) = (policy, rule);
    let mut limited = 0;
    if verdict == "allow" {
        // The enforced bucket with the smallest burst runs out first.
        let tightest =
            buckets(&policies.rate_limits, &req).into_iter().filter(|b| !b.dry_run).min_by_key(|b| b.limit.burst);
        if let Some(b) = tightest {
            limited = c.repeat.saturating_sub(b.limit.burst);
            if limited > 0 {
                verdict = "rate_limited";
                got = format!(
                    "rate_limited by policy '{}' rule {} (key \"{}\": {limited} of {} limited, burst {})",
                    b.policy, b.rule, b.key, c.repeat, b.limit.burst
                );
                (policy, rule) = (Some(b.policy), Some(b.rule));
            }
        }
    }
    let mut passed = c.expect.eq_ignore_ascii_case(verdict);
    if let Some(n) = c.limited {
        passed &= n == limited;
    }
    if let Some(p) = &c.policy {
        passed &= policy == Some(p.as_str());
    }
    if let Some(n) = c.rule {
        passed &= rule == Some(n);
    }
    let expected = (!passed).then(|| {
        let mut e = c.expect.to_ascii_lowercase();
        if let Some(p) = &c.policy {
            e.push_str(&format!(" by policy '{p}'"));
        }
        if let Some(n) = c.rule {
            e.push_str(&format!(" rule {n}"));
        }
        if let Some(n) = c.limited {
            e.push_str(&format!(" ({n} of {} limited)", c.repeat));
        }
        e
    });
    CaseResult { name: c.name.clone(), passed, got, expected }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_pass_and_fail_with_the_deciding_rule() {
        let p = crate::compile::load_file(
            "p.yaml",
            "apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: premium}\nspec:\n  rules:\n  - when: [{key: 'request.auth.claims[tier]', values: [premium]}]\n",
        )
        .expect("policy");
        let p = Policies { authorization: p, ..Policies::default() };
        let cases = parse_cases(
            "cases:\n- name: premium allowed\n  request: {method: post, path: /v2/models/m/infer, jwt: {iss: i, sub: s, claims: {tier: premium}}}\n  expect: allow\n  policy: premium\n  rule: 1\n\
- name: wrong expectation\n  request: {path: /x}\n  expect: allow\n",
        )
        .expect("cases");
        let r = run_cases(&p, &cases);
        assert!(r[0].passed, "{r:?}");
        assert_eq!(r[0].got, "allow by policy 'premium' rule 1");
        assert!(!r[1].passed);
        assert_eq!(r[1].got, "deny: no ALLOW policy matched");
        assert_eq!(r[1].expected.as_deref(), Some("allow"));
        assert!(parse_cases("cases: [{name: x, request: {path: /}, expect: allow, extra: 1}]").is_err());
    }
}

#[cfg(test)]
mod rate_limit_tests {
    use super::*;

    #[test]
    fn repeated_requests_are_limited_beyond_the_burst_and_workloads_select_policies() {
        let yaml = "apiVersion: meshward.dev/v1\nkind: RateLimitPolicy\nmetadata: {name: per-sub, namespace: ml}\nspec:\n  selector: {matchLabels: {app: fraud}}\n  rules:\n  - key: {source: claim, name: sub}\n    limit: {requests: 5, per: 1s, burst: 10}\n    overrides: [{value: premium, requests: 50, per: 1s}]\n";
        let p = crate::compile::load_all(&[("r.yaml", yaml)]).expect("policy");
        let cases = parse_cases(
            "cases:\n- name: flood limited\n  workload: {namespace: ml, labels: {app: fraud}}\n  request: {path: /x, jwt: {iss: i, sub: alice}}\n  repeat: 12\n  expect: rate_limited\n  limited: 2\n  policy: per-sub\n\
- name: premium not limited\n  workload: {namespace: ml, labels: {app: fraud}}\n  request: {path: /x, jwt: {iss: i, sub: premium}}\n  repeat: 12\n  expect: allow\n\
- name: other workload not attached\n  workload: {namespace: ml, labels: {app: iris}}\n  request: {path: /x, jwt: {iss: i, sub: alice}}\n  repeat: 12\n  expect: allow\n\
- name: wrong count\n  request: {path: /x, jwt: {iss: i, sub: alice}}\n  repeat: 12\n  expect: rate_limited\n  limited: 3\n",
        )
        .expect("cases");
        let r = run_cases(&p, &cases);
        assert!(r[0].passed && r[1].passed && r[2].passed, "{r:#?}");
        assert_eq!(r[0].got, "rate_limited by policy 'per-sub' rule 1 (key \"alice\": 2 of 12 limited, burst 10)");
        assert!(!r[3].passed);
        assert_eq!(r[3].expected.as_deref(), Some("rate_limited (3 of 12 limited)"));
    }
}
