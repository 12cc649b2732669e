//! `RateLimitPolicy`: which requests are limited, bucketed by what key, at
//! what rate. This crate only decides the buckets; the proxy owns the token
//! buckets themselves (they need a clock).

use std::time::Duration;

use crate::compile::{Diagnostic, Operation};
use crate::eval::RequestAttrs;
use crate::format::{RawLimit, RawRateLimitPolicy};

/// What a bucket key is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The peer SPIFFE ID.
    Peer,
    /// The client IP.
    Ip,
    /// A request header (lower-case name).
    Header(String),
    /// A claim of the verified JWT.
    Claim(String),
}

/// A token bucket: `requests` per `per`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Requests per period.
    pub requests: u32,
    /// The period.
    pub per: Duration,
    /// Bucket size.
    pub burst: u32,
}

/// A checked rate-limit rule.
#[derive(Debug, Clone)]
pub struct RateRule {
    /// Requests it applies to (any; empty: all).
    pub to: Vec<Operation>,
    /// Bucket key.
    pub key: KeySource,
    /// Default limit.
    pub limit: Limit,
    /// Limits for named key values.
    pub overrides: Vec<(String, Limit)>,
}

/// A checked `RateLimitPolicy`.
#[derive(Debug, Clone)]
pub struct RateLimitPolicy {
    /// Name.
    pub name: String,
    /// Which workloads it applies to.
    pub attach: crate::compile::Attachment,
    /// Counted, not enforced.
    pub dry_run: bool,
    /// Rules.
    pub rules: Vec<RateRule>,
}

/// One bucket a request must take a token from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket<'p> {
    /// Policy name.
    pub policy: &'p str,
    /// 1-based rule number.
    pub rule: usize,
    /// The key value; `(missing)` when the request has none (all such
    /// requests share one bucket, so a missing key is no way around a limit).
    pub key: String,
    /// The limit for this key.
    pub limit: Limit,
    /// Counted, not enforced.
    pub dry_run: bool,
}

/// The buckets that apply to `req`, in policy and rule order.
pub fn buckets<'p>(policies: &'p [RateLimitPolicy], req: &RequestAttrs<'_>) -> Vec<Bucket<'p>> {
    let mut out = Vec::new();
    for p in policies {
        for (i, r) in p.rules.iter().enumerate() {
            if !r.to.is_empty() && !r.to.iter().any(|o| crate::eval::operation_matches(o, req)) {
                continue;
            }
            let key = match &r.key {
                KeySource::Peer => req.peer.map(str::to_owned),
                KeySource::Ip => Some(req.source_ip.to_string()),
                KeySource::Header(h) => req.headers.header(h).map(str::to_owned),
                KeySource::Claim(c) => req.jwt.and_then(|j| j.claims.get(c)).and_then(|v| match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
            }
            .unwrap_or_else(|| "(missing)".to_owned());
            let limit = r.overrides.iter().find(|(v, _)| *v == key).map_or(r.limit, |(_, l)| *l);
            out.push(Bucket { policy: &p.name, rule: i + 1, key, limit, dry_run: p.dry_run });
        }
    }
    out
}

/// Parses `100ms`, `1s`, `5m`, `1h`.
pub(crate) fn period(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..split].parse().ok()?;
    let d = match &s[split..] {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// Checks one `RateLimitPolicy`; `err(needle, message)` makes a located diagnostic.
pub(crate) fn compile(
    raw: RawRateLimitPolicy,
    attach: crate::compile::Attachment,
    op: &mut dyn FnMut(&str, &crate::format::RawOperation, &mut Vec<Diagnostic>) -> Operation,
    err: &dyn Fn(&str, String) -> Diagnostic,
) -> Result<RateLimitPolicy, Vec<Diagnostic>> {
    let name = raw.metadata.name;
    let mut diags = Vec::new();
    if raw.spec.rules.is_empty() {
        diags.push(err("spec", format!("rate limit '{name}': no rules")));
    }
    let limit = |ctx: &str, requests: u32, per: &str, burst: Option<u32>, diags: &mut Vec<Diagnostic>| {
        let per_d = period(per).unwrap_or_else(|| {
            diags.push(err(per, format!("{ctx}: per: \"{per}\" is not a period (expected e.g. 1s, 100ms, 1m, 1h)")));
            Duration::from_secs(1)
        });
        if requests == 0 {
            diags.push(err("requests", format!("{ctx}: requests must be at least 1")));
        }
        let burst = burst.unwrap_or(requests).max(1);
        Limit { requests: requests.max(1), per: per_d, burst }
    };
    let mut rules = Vec::new();
    for (i, r) in raw.spec.rules.into_iter().enumerate() {
        let ctx = format!("rate limit '{name}', rule {}", i + 1);
        let to = r.to.iter().map(|t| op(&ctx, &t.operation, &mut diags)).collect();
        let key = match (r.key.source.as_str(), r.key.name) {
            ("peer", None) => KeySource::Peer,
            ("ip", None) => KeySource::Ip,
            ("header", Some(n)) if !n.is_empty() => KeySource::Header(n.to_ascii_lowercase()),
            ("claim", Some(n)) if !n.is_empty() => KeySource::Claim(n),
            (s @ ("header" | "claim"), _) => {
                diags.push(err(s, format!("{ctx}: key source \"{s}\" needs a name")));
                KeySource::Peer
            }
            (s @ ("peer" | "ip"), Some(n)) => {
                diags.push(err(&n, format!("{ctx}: key source \"{s}\" takes no name (got \"{n}\")")));
                KeySource::Peer
            }
            (other, _) => {
                diags.push(err(
                    other,
                    format!("{ctx}: unknown key source \"{other}\" (expected peer, ip, header or claim)"),
                ));
                KeySource::Peer
            }
        };
        let RawLimit { requests, per, burst } = r.limit;
        let default = limit(&ctx, requests, &per, burst, &mut diags);
        let mut overrides = Vec::new();
        for o in r.overrides {
            if overrides.iter().any(|(v, _)| *v == o.value) {
                diags.push(err(&o.value, format!("{ctx}: duplicate override \"{}\"", o.value)));
            }
            let l = limit(&ctx, o.requests, &o.per, o.burst, &mut diags);
            overrides.push((o.value, l));
        }
        rules.push(RateRule { to, key, limit: default, overrides });
    }
    if diags.is_empty() {
        Ok(RateLimitPolicy { name, attach, dry_run: raw.spec.dry_run, rules })
    } else {
        Err(diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{RequestAttrs, VerifiedJwt};

    const YAML: &str = "apiVersion: meshward.dev/v1\nkind: RateLimitPolicy\nmetadata: {name: per-client}\nspec:\n  rules:\n  - to: [{operation: {paths: ['/v2/models/{m}/infer']}}]\n    key: {source: claim, name: sub}\n    limit: {requests: 10, per: 1s, burst: 20}\n    overrides: [{value: premium-1, requests: 100, per: 1s}]\n";

    #[test]
    fn buckets_are_keyed_and_overridden() {
        let set = crate::compile::load_all(&[("r.yaml", YAML)]).expect("valid");
        let p = &set.rate_limits;
        let headers: Vec<(&str, &str)> = Vec::new();
        let jwt = VerifiedJwt { principal: "i/premium-1".into(), claims: serde_json::json!({"sub": "premium-1"}) };
        let mut req = RequestAttrs {
            method: "POST",
            path: "/v2/models/iris/infer",
            port: 8080,
            peer: None,
            source_ip: [10, 0, 0, 1].into(),
            headers: &headers,
            jwt: Some(&jwt),
        };
        let b = buckets(p, &req);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].key.as_str(), b[0].limit.requests, b[0].limit.burst), ("premium-1", 100, 100));
        req.jwt = None;
        let b = buckets(p, &req);
        assert_eq!((b[0].key.as_str(), b[0].limit.requests, b[0].limit.burst), ("(missing)", 10, 20));
        req.path = "/v2/health/ready";
        assert!(buckets(p, &req).is_empty());
    }

    #[test]
    fn invalid_limits_are_refused_with_positions() {
        let bad = YAML.replace("per: 1s, burst", "per: 1 sec, burst").replace("source: claim", "source: cookie");
        let e = crate::compile::load_all(&[("r.yaml", bad.as_str())]).expect_err("invalid");
        let all: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert!(
            all.iter()
                .any(|d| d.starts_with("r.yaml:7:19: rate limit 'per-client', rule 1: unknown key source \"cookie\"")),
            "{all:?}"
        );
        assert!(all.iter().any(|d| d.contains("per: \"1 sec\" is not a period")), "{all:?}");
    }
}
