//! Phase 4a of the inbound request: JWT authentication. The decision is
//! `policies::jwt`'s; this module applies it to the request: it removes
//! incoming copies of claim headers, refetches keys once on an unknown `kid`,
//! strips the token unless the rule forwards it, sets claim headers, counts
//! the decision and turns a refusal into 401 (or 503 while keys are
//! unavailable: fail closed).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use meshward_policies::eval::VerifiedJwt;
use meshward_policies::jwt::{self, AuthnError, JwtRule, Outcome, RequestAuthentication, TokenPlace};

use crate::http::error::ProxyError;
use crate::metrics::DecisionLabels;
use crate::pipeline::{HeaderMapLookup, Shared};
use crate::policy_store::PolicySet;

/// Authenticates the request in `parts` against the attached
/// `RequestAuthentication` policies. `Ok(None)`: no verified token (none
/// sent, none required, or refused by a dry-run policy).
pub async fn authenticate(
    set: &PolicySet,
    parts: &mut http::request::Parts,
    shared: &Shared,
) -> Result<Option<Arc<VerifiedJwt>>, ProxyError> {
    let policies = &set.authentication;
    if policies.is_empty() {
        return Ok(None);
    }
    // Claim headers are meshward's to set: drop whatever the client sent.
    for rule in policies.iter().flat_map(|p| &p.rules) {
        for (h, _) in &rule.claim_headers {
            parts.headers.remove(h.as_str());
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let run = |parts: &http::request::Parts| {
        jwt::authenticate(policies, &HeaderMapLookup(&parts.headers), parts.uri.query(), &|r| shared.jwks.keys(r), now)
    };
    let mut outcome = run(parts);
    if let Outcome::Refused { rule: Some(rule), error: AuthnError::UnknownKid(_), .. } = &outcome {
        // The issuer may have rotated its keys: one shared, rate-limited refetch.
        if shared.jwks.refetch(rule).await {
            outcome = run(parts);
        }
    }
    match outcome {
        Outcome::Anonymous => Ok(None),
        Outcome::Verified { jwt, policy, rule, from } => {
            count(shared, policy, Some(rule), "jwt_valid");
            if !rule.forward_original_token {
                strip_token(parts, &from);
            }
            for (header, claim) in &rule.claim_headers {
                if let Some(v) = jwt::claim_text(&jwt.claims, claim).and_then(|v| HeaderValue::from_str(&v).ok()) {
                    parts.headers.insert(http::HeaderName::try_from(header.as_str()).map_err(|_| bad_header())?, v);
                }
            }
            Ok(Some(jwt))
        }
        Outcome::Refused { policy, rule, error } => {
            count(shared, policy, rule, error.code());
            let which = describe(policy, rule);
            // The reason is logged, the token never is.
            tracing::info!(target: "meshward::policy", policy = %policy.name, which = %which, reason = error.code(), detail = %error, dry_run = policy.dry_run, "JWT refused");
            if policy.dry_run {
                return Ok(None);
            }
            Err(match error {
                AuthnError::KeysUnavailable(_) => ProxyError::AuthKeysUnavailable(which),
                _ => ProxyError::Unauthenticated { which, code: error.code() },
            })
        }
    }
}

fn bad_header() -> ProxyError {
    // Header names were validated when the policy compiled.
    ProxyError::Unavailable("invalid claim header name")
}

fn rule_number(policy: &RequestAuthentication, rule: Option<&JwtRule>) -> Option<usize> {
    let rule = rule?;
    policy.rules.iter().position(|r| std::ptr::eq(r, rule)).map(|i| i + 1)
}

fn describe(policy: &RequestAuthentication, rule: Option<&JwtRule>) -> String {
    match rule_number(policy, rule) {
        Some(n) => format!("policy '{}' rule {n}", policy.name),
        None => format!("policy '{}'", policy.name),
    }
}

fn count(shared: &Shared, policy: &RequestAuthentication, rule: Option<&JwtRule>, decision: &'static str) {
    let labels = DecisionLabels {
        decision,
        policy: policy.name.clone(),
        rule: rule_number(policy, rule).map(|n| n.to_string()).unwrap_or_default(),
        dry_run: if policy.dry_run { "true" } else { "false" },
    };
    shared.metrics.policy_decisions.get_or_create(&labels).inc();
}

/// Removes the token from where it was found, so the app never sees it.
fn strip_token(parts: &mut http::request::Parts, from: &TokenPlace) {
    match from {
        TokenPlace::Header(h) => {
            parts.headers.remove(h.as_str());
        }
        TokenPlace::Param(name) => {
            let Some(pq) = parts.uri.path_and_query() else { return };
            let kept: Vec<&str> =
                pq.query().unwrap_or("").split('&').filter(|kv| kv.split('=').next() != Some(name.as_str())).collect();
            let rebuilt = if kept.iter().all(|k| k.is_empty()) {
                pq.path().to_owned()
            } else {
                format!("{}?{}", pq.path(), kept.join("&"))
            };
            if let Ok(pq) = PathAndQuery::try_from(rebuilt) {
                let mut p = parts.uri.clone().into_parts();
                p.path_and_query = Some(pq);
                if let Ok(uri) = http::Uri::from_parts(p) {
                    parts.uri = uri;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_stripped_from_query_and_header() {
        let (mut parts, ()) =
            http::Request::get("/v2/models/m/infer?a=1&access_token=x.y.z&b=2").body(()).expect("req").into_parts();
        strip_token(&mut parts, &TokenPlace::Param("access_token".into()));
        assert_eq!(parts.uri.to_string(), "/v2/models/m/infer?a=1&b=2");
        let (mut parts, ()) = http::Request::get("/p?access_token=t").body(()).expect("req").into_parts();
        strip_token(&mut parts, &TokenPlace::Param("access_token".into()));
        assert_eq!(parts.uri.to_string(), "/p");
        let (mut parts, ()) =
            http::Request::get("/p").header("authorization", "Bearer t").body(()).expect("req").into_parts();
        strip_token(&mut parts, &TokenPlace::Header("authorization".into()));
        assert!(parts.headers.get("authorization").is_none());
    }
}
