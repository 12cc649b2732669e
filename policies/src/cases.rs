//! Table-driven policy tests (`meshward policy test`): each case describes a
//! request and the decision it must get, optionally which policy and rule
//! must decide it. Lets teams test a policy in CI before rollout.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::compile::AuthorizationPolicy;
use crate::eval::{evaluate, Reason, RequestAttrs, Verdict, VerifiedJwt};

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
    /// `allow` or `deny`.
    pub expect: String,
    /// The policy that must decide (omit to not check).
    #[serde(default)]
    pub policy: Option<String>,
    /// The 1-based rule that must decide (omit to not check).
    #[serde(default)]
    pub rule: Option<usize>,
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
pub fn run_cases(policies: &[AuthorizationPolicy], cases: &CasesFile) -> Vec<CaseResult> {
    cases.cases.iter().map(|c| run_case(policies, c)).collect()
}

fn run_case(policies: &[AuthorizationPolicy], c: &Case) -> CaseResult {
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
    let d = evaluate(policies, &req);
    let verdict = if d.verdict == Verdict::Allow { "allow" } else { "deny" };
    let (policy, rule) = match &d.reason {
        Reason::Allowed(x) | Reason::Denied(x) => (Some(x.policy.as_str()), Some(x.rule)),
        _ => (None, None),
    };
    let got = match &d.reason {
        Reason::Allowed(x) | Reason::Denied(x) => format!("{verdict} by policy '{}' rule {}", x.policy, x.rule),
        Reason::NoAllowMatched => format!("{verdict}: no ALLOW policy matched"),
        Reason::NoAllowPolicies => format!("{verdict}: no ALLOW policy"),
    };
    let mut passed = c.expect.eq_ignore_ascii_case(verdict);
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
