//! Evaluation, in Istio's order: any matching DENY policy denies; otherwise,
//! if no ALLOW policy exists the request is allowed; otherwise it must match
//! an ALLOW policy. AUDIT policies only record matches. Dry-run policies are
//! left out of the verdict; the decision also carries the verdict that would
//! have resulted had they been enforced, so the proxy can log and count it.
//!
//! Within a rule, `from`, `to` and `when` AND together; entries of a list OR;
//! within a source or operation every field that is set must match, and a
//! `not*` field must not. Paths are matched without the query string.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::compile::{Action, AuthorizationPolicy, Condition, Key, Operation, Rule, Source, Values};

/// Header lookup by lower-case name (the proxy implements it for its header map).
pub trait HeaderLookup {
    /// The first value of `name`, if present and valid UTF-8.
    fn header(&self, name: &str) -> Option<&str>;
}

impl HeaderLookup for Vec<(&str, &str)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

/// A JWT that authentication already verified.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    /// `iss/sub`.
    pub principal: String,
    /// All claims.
    pub claims: serde_json::Value,
}

/// What a policy sees of a request.
pub struct RequestAttrs<'a> {
    /// Method (upper case).
    pub method: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// App port the request is for.
    pub port: u16,
    /// Verified peer SPIFFE ID, if mTLS.
    pub peer: Option<&'a str>,
    /// Client IP.
    pub source_ip: IpAddr,
    /// Request headers.
    pub headers: &'a dyn HeaderLookup,
    /// Verified JWT, if any.
    pub jwt: Option<&'a VerifiedJwt>,
}

/// The outcome for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass.
    Allow,
    /// Refuse (403).
    Deny,
}

/// Which policy and rule (1-based) decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// Policy name.
    pub policy: String,
    /// 1-based rule number.
    pub rule: usize,
}

/// Why the verdict is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A DENY policy matched.
    Denied(RuleRef),
    /// An ALLOW policy matched.
    Allowed(RuleRef),
    /// ALLOW policies exist and none matched.
    NoAllowMatched,
    /// No enforced ALLOW policy exists.
    NoAllowPolicies,
}

/// The full decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Enforced verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// Verdict and reason had dry-run policies been enforced, when different.
    pub dry_run: Option<(Verdict, Reason)>,
    /// AUDIT policy rules that matched.
    pub audited: Vec<RuleRef>,
}

/// Evaluates `policies` (in order) for `req`.
pub fn evaluate(policies: &[AuthorizationPolicy], req: &RequestAttrs<'_>) -> Decision {
    let enforced = decide(policies.iter().filter(|p| !p.dry_run), req);
    let dry_run = if policies.iter().any(|p| p.dry_run) {
        let shadow = decide(policies.iter(), req);
        (shadow != enforced).then_some(shadow)
    } else {
        None
    };
    let audited = policies
        .iter()
        .filter(|p| p.action == Action::Audit)
        .filter_map(|p| first_match(p, req).map(|rule| RuleRef { policy: p.name.clone(), rule }))
        .collect();
    Decision { verdict: enforced.0, reason: enforced.1, dry_run, audited }
}

fn decide<'p>(
    policies: impl Iterator<Item = &'p AuthorizationPolicy> + Clone,
    req: &RequestAttrs<'_>,
) -> (Verdict, Reason) {
    for p in policies.clone().filter(|p| p.action == Action::Deny) {
        if let Some(rule) = first_match(p, req) {
            return (Verdict::Deny, Reason::Denied(RuleRef { policy: p.name.clone(), rule }));
        }
    }
    let mut any_allow = false;
    for p in policies.filter(|p| p.action == Action::Allow) {
        any_allow = true;
        if let Some(rule) = first_match(p, req) {
            return (Verdict::Allow, Reason::Allowed(RuleRef { policy: p.name.clone(), rule }));
        }
    }
    if any_allow {
        (Verdict::Deny, Reason::NoAllowMatched)
    } else {
        (Verdict::Allow, Reason::NoAllowPolicies)
    }
}

/// The 1-based number of the first rule of `p` that matches.
fn first_match(p: &AuthorizationPolicy, req: &RequestAttrs<'_>) -> Option<usize> {
    p.rules.iter().position(|r| rule_matches(r, req)).map(|i| i + 1)
}

fn rule_matches(r: &Rule, req: &RequestAttrs<'_>) -> bool {
    (r.from.is_empty() || r.from.iter().any(|s| source_matches(s, req)))
        && (r.to.is_empty() || r.to.iter().any(|o| operation_matches(o, req)))
        && r.when.iter().all(|c| condition_matches(c, req))
}

/// `pos` empty or any matches, and no `neg` matches.
fn field<T>(pos: &[T], neg: &[T], hit: impl Fn(&T) -> bool) -> bool {
    (pos.is_empty() || pos.iter().any(&hit)) && !neg.iter().any(hit)
}

/// Like [`field`] for an attribute that may be absent: absent never matches a positive list.
fn opt_field(pos: &[crate::matcher::Pattern], neg: &[crate::matcher::Pattern], v: Option<&str>) -> bool {
    match v {
        Some(v) => field(pos, neg, |p| p.matches(v)),
        None => pos.is_empty(),
    }
}

/// The namespace in `spiffe://td/ns/<ns>/...`.
pub fn namespace_of(spiffe_id: &str) -> Option<&str> {
    let mut parts = spiffe_id.strip_prefix("spiffe://")?.split('/').skip(1);
    while let Some(p) = parts.next() {
        if p == "ns" {
            return parts.next();
        }
    }
    None
}

fn source_matches(s: &Source, req: &RequestAttrs<'_>) -> bool {
    opt_field(&s.principals, &s.not_principals, req.peer)
        && opt_field(&s.namespaces, &s.not_namespaces, req.peer.and_then(namespace_of))
        && field(&s.ip_blocks, &s.not_ip_blocks, |n| n.contains(&req.source_ip))
        && opt_field(&s.request_principals, &s.not_request_principals, req.jwt.map(|j| j.principal.as_str()))
}

pub(crate) fn operation_matches(o: &Operation, req: &RequestAttrs<'_>) -> bool {
    field(&o.methods, &o.not_methods, |m| m == req.method)
        && field(&o.paths, &o.not_paths, |p| p.matches(req.path))
        && field(&o.ports, &o.not_ports, |p| *p == req.port)
}

fn condition_matches(c: &Condition, req: &RequestAttrs<'_>) -> bool {
    let (values, not_values) = match &c.values {
        Values::Ips { values, not_values } => return field(values, not_values, |n| n.contains(&req.source_ip)),
        Values::Patterns { values, not_values } => (values, not_values),
    };
    // Borrowed candidates: no allocation on the request path except for
    // non-string claims and source.ip, which must be rendered as text.
    let mut candidates: Vec<Cow<'_, str>> = Vec::new();
    match &c.key {
        Key::Claim(path) => claim_values(req.jwt.map(|j| &j.claims), path, &mut candidates),
        Key::Header(name) => candidates.extend(req.headers.header(name).map(Cow::Borrowed)),
        Key::RequestPrincipal => candidates.extend(req.jwt.map(|j| Cow::Borrowed(j.principal.as_str()))),
        Key::SourcePrincipal => candidates.extend(req.peer.map(Cow::Borrowed)),
        Key::SourceNamespace => candidates.extend(req.peer.and_then(namespace_of).map(Cow::Borrowed)),
        Key::SourceIp => candidates.push(Cow::Owned(req.source_ip.to_string())),
    }
    if candidates.is_empty() {
        return values.is_empty();
    }
    (values.is_empty() || candidates.iter().any(|c| values.iter().any(|p| p.matches(c))))
        && !candidates.iter().any(|c| not_values.iter().any(|p| p.matches(c)))
}

/// Text forms of a claim: a string, a number or boolean, or each element of a list.
fn claim_values<'a>(claims: Option<&'a serde_json::Value>, path: &[String], out: &mut Vec<Cow<'a, str>>) {
    let Some(mut v) = claims else { return };
    for key in path {
        match v.get(key) {
            Some(next) => v = next,
            None => return,
        }
    }
    let scalar = |x: &'a serde_json::Value| match x {
        serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
        serde_json::Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    };
    match v {
        serde_json::Value::Array(items) => out.extend(items.iter().filter_map(scalar)),
        other => out.extend(scalar(other)),
    }
}
