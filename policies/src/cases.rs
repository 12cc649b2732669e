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
//!
//! A case with `anomaly` gives the detector's finding for the request; the
//! anomaly policies then decide what happens to an allowed, unlimited
//! request (`allow`, `audit`, `rate_limited`, `block`, `quarantined`). With
//! `repeat`, the same client sends the request `repeat` times, `every` apart
//! (default: at once), so escalation and quarantine can be tested; the last
//! request's decision is the case's outcome.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::anomaly::{Band, Finding, Offenders};
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
    /// `allow`, `deny` or `rate_limited`; with `anomaly` also `audit`, `block`
    /// or `quarantined`.
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
    /// The detector's finding for the request (anomaly policies); omit: the
    /// detector is not consulted.
    #[serde(default)]
    pub anomaly: Option<CaseAnomaly>,
}

/// What the detector found for a case's request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CaseAnomaly {
    /// `normal`, `suspicious` or `anomalous`; omit only with `unavailable`.
    #[serde(default)]
    pub band: Option<CaseBand>,
    /// The verdict comes from the client's behaviour (extraction, flood, scan).
    #[serde(default)]
    pub client_signal: bool,
    /// The detector could not judge the request (overloaded or unavailable).
    #[serde(default)]
    pub unavailable: bool,
    /// Time between repeated requests, e.g. `10s`. Default: all at once.
    #[serde(default)]
    pub every: Option<String>,
    /// The client's key. Default: the JWT's `iss/sub`, else the peer, else the IP.
    #[serde(default)]
    pub client: Option<String>,
}

/// A score band as written in a case.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseBand {
    /// Normal.
    Normal,
    /// Suspicious.
    Suspicious,
    /// Anomalous.
    Anomalous,
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

struct AnomalyOutcome {
    verdict: &'static str,
    got: String,
    policy: String,
    rule: usize,
}

/// Sends the request `repeat` times through a fresh offender book and
/// reports the last decision, with a tally when there were several.
fn anomaly_outcome(
    policies: &Policies,
    req: &RequestAttrs<'_>,
    client: &str,
    a: &CaseAnomaly,
    repeat: u32,
) -> Result<Option<AnomalyOutcome>, String> {
    let every = match &a.every {
        None => 0.0,
        Some(e) => crate::ratelimit::period(e)
            .ok_or_else(|| format!("invalid case: anomaly.every: \"{e}\" is not a duration (expected e.g. 10s, 1m)"))?
            .as_secs_f64(),
    };
    let band = match (a.band, a.unavailable) {
        (_, true) => None,
        (Some(CaseBand::Normal), false) => Some(Band::Normal),
        (Some(CaseBand::Suspicious), false) => Some(Band::Suspicious),
        (Some(CaseBand::Anomalous), false) => Some(Band::Anomalous),
        (None, false) => return Err("invalid case: anomaly needs a band (or unavailable: true)".to_owned()),
    };
    let mut book = Offenders::new(16);
    let mut tally: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut last = None;
    for i in 0..repeat.max(1) {
        let d = match band {
            None => crate::anomaly::unavailable(&policies.anomaly, req),
            Some(band) => {
                let finding = Finding { band, client_signal: a.client_signal, score: 0.0 };
                book.decide(&policies.anomaly, req, client, &finding, f64::from(i) * every)
            }
        };
        let Some(d) = d else { return Ok(None) };
        *tally.entry(d.action.name()).or_default() += 1;
        last = Some(d);
    }
    let Some(d) = last else { return Ok(None) };
    let why = match (d.reason, d.escalation_step) {
        ("escalation", Some(s)) => format!("escalation step {s}"),
        (r, Some(s)) => format!("{r}, escalation step {s}"),
        (r, None) => r.to_owned(),
    };
    let (verdict, mut got) = if d.dry_run {
        (
            "allow",
            format!("allow (dry-run: anomaly policy '{}' rule {} would {}: {why})", d.policy, d.rule, d.action.name(),),
        )
    } else {
        (d.action.name(), format!("{} by anomaly policy '{}' rule {} ({why})", d.action.name(), d.policy, d.rule))
    };
    if repeat > 1 {
        let parts: Vec<String> = tally.iter().map(|(k, n)| format!("{n} {k}")).collect();
        got.push_str(&format!("; of {repeat}: {}", parts.join(", ")));
    }
    Ok(Some(AnomalyOutcome { verdict, got, policy: d.policy, rule: d.rule }))
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
    let (mut policy, mut rule) = (policy.map(str::to_owned), rule);
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
                (policy, rule) = (Some(b.policy.to_owned()), Some(b.rule));
            }
        }
    }
    if let (Some(a), "allow") = (&c.anomaly, verdict) {
        let client = a.client.clone().unwrap_or_else(|| match (&jwt, r.peer.as_deref()) {
            (Some(j), _) => j.principal.clone(),
            (None, Some(p)) => p.to_owned(),
            (None, None) => r.ip.to_string(),
        });
        match anomaly_outcome(&policies, &req, &client, a, c.repeat) {
            Ok(Some(o)) => {
                (verdict, got) = (o.verdict, o.got);
                (policy, rule) = (Some(o.policy), Some(o.rule));
            }
            Ok(None) => got.push_str(" (no anomaly policy covers it)"),
            Err(e) => {
                return CaseResult { name: c.name.clone(), passed: false, got: e, expected: Some(c.expect.clone()) }
            }
        }
    }
    let mut passed = c.expect.eq_ignore_ascii_case(verdict);
    if let Some(n) = c.limited {
        passed &= n == limited;
    }
    if let Some(p) = &c.policy {
        passed &= policy.as_deref() == Some(p.as_str());
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

#[cfg(test)]
mod anomaly_tests {
    use super::*;

    const GUARD: &str = "apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {name: guard}\nspec:\n  rules:\n  - to: [{operation: {paths: ['/v2/models/{m}/infer']}}]\n  - anomalous: audit\n  escalation: [{flagged: 3, within: 1m, action: quarantine}]\n";

    fn run(policy: &str, cases: &str) -> Vec<CaseResult> {
        let p = crate::compile::load_all(&[("a.yaml", policy)]).expect("policy");
        run_cases(&p, &parse_cases(cases).expect("cases"))
    }

    #[test]
    fn findings_decide_with_policy_rule_and_escalation() {
        let r = run(
            GUARD,
            "cases:\n- name: blocked\n  request: {method: POST, path: /v2/models/m/infer}\n  anomaly: {band: anomalous}\n  expect: block\n  policy: guard\n  rule: 1\n\
- name: other route audited\n  request: {path: /v2/models/m}\n  anomaly: {band: anomalous}\n  expect: audit\n  rule: 2\n\
- name: third flagged within a minute quarantines\n  request: {path: /v2/models/m/infer}\n  anomaly: {band: suspicious, every: 20s}\n  repeat: 3\n  expect: quarantined\n\
- name: wrong expectation\n  request: {path: /v2/models/m/infer}\n  anomaly: {band: normal, clientSignal: true}\n  expect: block\n\
- name: no band\n  request: {path: /x}\n  anomaly: {}\n  expect: allow\n",
        );
        assert!(r[0].passed && r[1].passed && r[2].passed, "{r:#?}");
        assert_eq!(r[0].got, "block by anomaly policy 'guard' rule 1 (anomalous)");
        assert_eq!(r[1].got, "audit by anomaly policy 'guard' rule 2 (anomalous)");
        assert_eq!(
            r[2].got,
            "quarantined by anomaly policy 'guard' rule 1 (escalation step 1); of 3: 2 audit, 1 quarantined"
        );
        assert!(!r[3].passed);
        assert_eq!(r[3].got, "rate_limited by anomaly policy 'guard' rule 1 (client_signal)");
        assert_eq!(
            (r[4].passed, r[4].got.as_str()),
            (false, "invalid case: anomaly needs a band (or unavailable: true)")
        );
        assert!(parse_cases("cases: [{name: x, request: {path: /}, expect: allow, anomaly: {band: weird}}]").is_err());
    }

    #[test]
    fn dry_run_and_fail_modes_are_reported() {
        let dry = GUARD.replace("spec:\n", "spec:\n  dryRun: true\n  onDetectorUnavailable: closed\n");
        let r = run(
            &dry,
            "cases:\n- name: dry\n  request: {path: /v2/models/m/infer}\n  anomaly: {band: anomalous}\n  expect: allow\n  policy: guard\n\
- name: unavailable\n  request: {path: /v2/models/m/infer}\n  anomaly: {unavailable: true}\n  expect: allow\n",
        );
        assert!(r[0].passed && r[1].passed, "{r:#?}");
        assert_eq!(r[0].got, "allow (dry-run: anomaly policy 'guard' rule 1 would block: anomalous)");
        assert_eq!(r[1].got, "allow (dry-run: anomaly policy 'guard' rule 1 would block: detector_unavailable)");
        let r = run(
            &GUARD.replace("spec:\n", "spec:\n  onDetectorUnavailable: closed\n"),
            "cases:\n- name: closed\n  request: {path: /v2/models/m/infer}\n  anomaly: {unavailable: true}\n  expect: block\n",
        );
        assert!(r[0].passed, "{r:#?}");
    }
}
