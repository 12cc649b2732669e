use std::sync::Arc;

use super::*;
use crate::testkeys::{self, SigningKey};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://auth.example.com";

fn policy_yaml(jwks: &str, extra: &str) -> String {
    format!(
        "apiVersion: meshward.dev/v1\nkind: RequestAuthentication\nmetadata: {{name: gw-jwt}}\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    audiences: [inference]\n    jwks: '{jwks}'\n    fromParams: [access_token]\n    fromHeaders: [{{name: Authorization, prefix: 'Bearer '}}]\n{extra}"
    )
}

fn load(yaml: &str) -> Vec<RequestAuthentication> {
    crate::compile::load_all(&[("a.yaml", yaml)]).expect("valid policy").authentication
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({"iss": ISS, "sub": "alice", "aud": "inference", "exp": NOW + 600, "tier": "gold"});
    if let (Some(c), serde_json::Value::Object(e)) = (c.as_object_mut(), extra) {
        c.extend(e);
    }
    c
}

fn run(policies: &[RequestAuthentication], header: Option<&str>) -> Result<Arc<VerifiedJwt>, AuthnError> {
    let headers: Vec<(&str, &str)> = header.map(|h| vec![("authorization", h)]).unwrap_or_default();
    match authenticate(policies, &headers, None, &|_| Keys::Unavailable, NOW) {
        Outcome::Verified { jwt, .. } => Ok(jwt),
        Outcome::Refused { error, .. } => Err(error),
        Outcome::Anonymous => Err(AuthnError::Missing),
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn valid_rs256_and_es256_tokens_verify() {
    let (rsa, ec) = (SigningKey::rsa("r1"), SigningKey::ec("e1"));
    let p = load(&policy_yaml(&testkeys::jwks(&[&rsa, &ec]), ""));
    for key in [&rsa, &ec] {
        let jwt = run(&p, Some(&bearer(&key.sign(&claims(serde_json::json!({})))))).expect("valid");
        assert_eq!(jwt.principal, format!("{ISS}/alice"));
        assert_eq!(jwt.claims["tier"], "gold");
    }
}

#[test]
fn refusals_name_the_reason() {
    let rsa = SigningKey::rsa("r1");
    let p = load(&policy_yaml(&testkeys::jwks(&[&rsa]), ""));
    let cases: Vec<(String, AuthnError)> = vec![
        (rsa.sign(&claims(serde_json::json!({"exp": NOW - 61}))), AuthnError::Expired),
        (rsa.sign(&claims(serde_json::json!({"nbf": NOW + 120}))), AuthnError::NotYetValid),
        (rsa.sign(&claims(serde_json::json!({"aud": "billing"}))), AuthnError::WrongAudience),
        (
            rsa.sign(&claims(serde_json::json!({"iss": "https://evil"}))),
            AuthnError::UnknownIssuer("https://evil".into()),
        ),
        (testkeys::unsigned(&claims(serde_json::json!({}))), AuthnError::Malformed(String::new())),
        (SigningKey::rsa("r2").sign(&claims(serde_json::json!({}))), AuthnError::UnknownKid("r2".into())),
        ("not.a.jwt".to_owned(), AuthnError::Malformed(String::new())),
    ];
    for (token, want) in cases {
        let got = run(&p, Some(&bearer(&token))).expect_err("refused");
        assert_eq!(got.code(), want.code(), "{token}: {got}");
    }
    // Within the clock skew an expired token still passes.
    run(&p, Some(&bearer(&rsa.sign(&claims(serde_json::json!({"exp": NOW - 30})))))).expect("within skew");
    // A token without exp is refused.
    let mut no_exp = claims(serde_json::json!({}));
    no_exp.as_object_mut().map(|c| c.remove("exp"));
    assert_eq!(run(&p, Some(&bearer(&rsa.sign(&no_exp)))).expect_err("no exp").code(), "jwt_bad_claim");
    // A tampered payload breaks the signature.
    let good = rsa.sign(&claims(serde_json::json!({})));
    let forged = rsa.sign(&claims(serde_json::json!({"sub": "mallory"})));
    let parts: Vec<&str> = good.split('.').collect();
    let forged_parts: Vec<&str> = forged.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], forged_parts[1], parts[2]);
    assert_eq!(run(&p, Some(&bearer(&tampered))).expect_err("tampered"), AuthnError::BadSignature);
}

#[test]
fn hs_rs_confusion_is_refused_even_when_hs256_is_allowed() {
    let rsa = SigningKey::rsa("r1");
    let jwks = testkeys::jwks(&[&rsa]);
    // The attacker signs with HMAC using the public key material as secret.
    let n = rsa.jwk()["n"].as_str().expect("n").as_bytes().to_vec();
    for secret in [n, jwks.as_bytes().to_vec()] {
        let token = testkeys::hs256_with_secret("r1", &secret, &claims(serde_json::json!({})));
        let default_algs = load(&policy_yaml(&jwks, ""));
        assert_eq!(run(&default_algs, Some(&bearer(&token))).expect_err("hs").code(), "jwt_algorithm_not_allowed");
        let both = load(&policy_yaml(&jwks, "    algorithms: [RS256, HS256]\n"));
        assert_eq!(run(&both, Some(&bearer(&token))).expect_err("hs").code(), "jwt_bad_signature");
    }
}

#[test]
fn token_locations_missing_tokens_and_unavailable_keys() {
    let rsa = SigningKey::rsa("r1");
    let p = load(&policy_yaml(&testkeys::jwks(&[&rsa]), ""));
    let token = rsa.sign(&claims(serde_json::json!({})));
    let none: Vec<(&str, &str)> = Vec::new();
    let q = format!("x=1&access_token={token}");
    assert!(matches!(
        authenticate(&p, &none, Some(&q), &|_| Keys::Unavailable, NOW),
        Outcome::Verified { from: TokenPlace::Param(_), .. }
    ));
    assert!(matches!(authenticate(&p, &none, None, &|_| Keys::Unavailable, NOW), Outcome::Anonymous));
    assert_eq!(run(&p, Some(&format!("Basic {token}"))).expect_err("wrong prefix"), AuthnError::Missing);
    let required = load(&policy_yaml(&testkeys::jwks(&[&rsa]), "").replace("spec:\n", "spec:\n  requireToken: true\n"));
    assert!(matches!(
        authenticate(&required, &none, None, &|_| Keys::Unavailable, NOW),
        Outcome::Refused { error: AuthnError::Missing, .. }
    ));
    // Keys from a URL that the proxy could not fetch: fail closed.
    let yaml = policy_yaml("x", "").replace("jwks: 'x'", "jwksUri: http://127.0.0.1:1/jwks");
    let uri = load(&yaml);
    assert_eq!(run(&uri, Some(&bearer(&token))).expect_err("no keys").code(), "jwt_keys_unavailable");
    let set = Arc::new(KeySet::parse(testkeys::jwks(&[&rsa]).as_bytes()).expect("jwks"));
    let headers = [("authorization", bearer(&token))];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(matches!(
        authenticate(&uri, &headers, None, &|_| Keys::Ready(Arc::clone(&set)), NOW),
        Outcome::Verified { .. }
    ));
}

#[test]
fn invalid_rules_are_refused_with_positions() {
    let check = |yaml: &str, want: &str| {
        let e = crate::compile::load_all(&[("a.yaml", yaml)]).expect_err("invalid");
        let all: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert!(all.iter().any(|d| d.contains(want)), "want {want:?} in {all:?}");
    };
    let base = policy_yaml(&testkeys::jwks(&[&SigningKey::ec("e1")]), "");
    check(&base.replace("    jwks: '", "    #jwks: '"), "no keys for issuer \"https://auth.example.com\"");
    check(&format!("{base}    jwksUri: https://x/jwks\n"), "set only one of jwks, jwksFile, jwksUri");
    check(
        &format!("{base}    algorithms: [none]\n"),
        "a.yaml:11:18: request authentication 'gw-jwt', jwt rule 1: unknown algorithm \"none\"",
    );
    check(
        &policy_yaml("x", "    algorithms: [HS256]\n").replace("jwks: 'x'", "jwksUri: https://idp/jwks"),
        "shared secrets must not come from a URL",
    );
    check(&policy_yaml("{\"keys\": []}", ""), "jwks: no usable signing key");
    check(&format!("{base}    outputClaimToHeaders: [{{header: x-meshward-peer-id, claim: sub}}]\n"), "is reserved");
    check(&format!("{base}    clockSkew: soon\n"), "clockSkew: \"soon\" is not a duration");
}

#[test]
fn claims_become_header_text() {
    let c = serde_json::json!({"realm": {"tier": "gold"}, "groups": ["a", "b"], "n": 3});
    assert_eq!(claim_text(&c, &["realm".into(), "tier".into()]).as_deref(), Some("gold"));
    assert_eq!(claim_text(&c, &["groups".into()]).as_deref(), Some("a,b"));
    assert_eq!(claim_text(&c, &["n".into()]).as_deref(), Some("3"));
    assert_eq!(claim_text(&c, &["realm".into()]), None);
}

#[test]
fn verified_tokens_are_cached_only_while_keys_and_expiry_allow() {
    let (k1, k2) = (SigningKey::rsa("k1"), SigningKey::ec("k2"));
    let yaml = policy_yaml("x", "").replace("jwks: 'x'", "jwksUri: https://idp/jwks");
    let p = load(&yaml);
    let token = k1.sign(&claims(serde_json::json!({})));
    let headers = [("authorization", bearer(&token))];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let both = Arc::new(KeySet::parse(testkeys::jwks(&[&k1, &k2]).as_bytes()).expect("jwks"));
    let at = |keys: &Arc<KeySet>, now: u64| match authenticate(
        &p,
        &headers,
        None,
        &|_| Keys::Ready(Arc::clone(keys)),
        now,
    ) {
        Outcome::Verified { .. } => Ok(()),
        Outcome::Refused { error, .. } => Err(error.code()),
        Outcome::Anonymous => Err("anonymous"),
    };
    assert_eq!(at(&both, NOW), Ok(()));
    assert_eq!(at(&both, NOW + 1), Ok(()), "cached");
    // k1 revoked: the cached verification no longer counts.
    let only_k2 = Arc::new(KeySet::parse(testkeys::jwks(&[&k2]).as_bytes()).expect("jwks"));
    assert_eq!(at(&only_k2, NOW + 2), Err("jwt_unknown_kid"));
    // Expiry is checked on every hit.
    assert_eq!(at(&both, NOW + 600 + 61), Err("jwt_expired"));
}
