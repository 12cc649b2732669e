//! `RequestAuthentication`: JWT rules as checked types, key sets, and token
//! verification with Istio's semantics.
//!
//! Pure, like the rest of the crate: key sets are handed in (the proxy fetches
//! JWKS URLs and reads key files), and so is the time. Signatures are checked
//! by `jsonwebtoken`; `exp`/`nbf` are checked here against the given time so
//! that tests and `meshward policy test` are reproducible.
//!
//! How a request is authenticated:
//! 1. Each rule of every attached policy looks for a token where it was told
//!    to (`fromHeaders`, default `Authorization: Bearer`, and `fromParams`).
//!    No token anywhere: the request passes unauthenticated, unless a policy
//!    says `requireToken`.
//! 2. The token's `iss` (read before verification, only to pick the rule)
//!    selects the rule; an issuer no rule trusts is refused.
//! 3. The header's `alg` must be one the rule allows; `none` never parses.
//!    The key is picked by `kid` and by key type, so an RSA public key can
//!    never be used as an HMAC secret (the HS/RS confusion).
//! 4. Signature, then `iss`, `aud` (any configured audience), `exp`
//!    (required) and `nbf`, with the rule's clock skew.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

use crate::compile::{Attachment, Diagnostic, Location};
use crate::eval::{HeaderLookup, VerifiedJwt};
use crate::format::{RawJwtRule, RawRequestAuthentication};

/// A checked `RequestAuthentication`.
#[derive(Debug, Clone)]
pub struct RequestAuthentication {
    /// `metadata.name`.
    pub name: String,
    /// Which workloads it applies to.
    pub attach: Attachment,
    /// Where the document starts.
    pub location: Location,
    /// Refusals are logged and counted only.
    pub dry_run: bool,
    /// A request without any token is refused.
    pub require_token: bool,
    /// One per issuer.
    pub rules: Vec<JwtRule>,
}

/// Where a rule's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Written in the policy.
    Inline(Arc<KeySet>),
    /// A file the proxy reads (and re-reads every refresh interval).
    File(String),
    /// A JWKS URL the proxy fetches.
    Uri(String),
}

/// A checked JWT rule.
#[derive(Debug, Clone)]
pub struct JwtRule {
    /// Trusted `iss`.
    pub issuer: String,
    /// Accepted `aud` values; empty: not checked.
    pub audiences: Vec<String>,
    /// Keys.
    pub keys: KeySource,
    /// Refresh period for file and URL keys.
    pub refresh_interval: Duration,
    /// Floor between refetches triggered by an unknown `kid`.
    pub min_refetch_interval: Duration,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// `(lower-case header name, prefix)`.
    pub from_headers: Vec<(String, String)>,
    /// Query parameter names.
    pub from_params: Vec<String>,
    /// Keep the token for the app.
    pub forward_original_token: bool,
    /// `(lower-case header name, claim path)`.
    pub claim_headers: Vec<(String, Vec<String>)>,
    /// Allowed clock difference for `exp`/`nbf`.
    pub clock_skew: Duration,
    /// Tokens this rule verified recently.
    pub cache: Arc<VerifiedCache>,
}

/// Tokens a rule verified recently, so that a client reusing its token (the
/// common case) pays for the signature check once, as Envoy's `jwt_cache`
/// does. An entry counts only while the key set it was verified with is
/// still the current one (rotation or revocation invalidates it) and the
/// token has not expired. Bounded: cleared when full. Each compiled rule has
/// its own, so a policy reload starts empty.
#[derive(Debug, Default)]
pub struct VerifiedCache {
    map: std::sync::Mutex<std::collections::HashMap<Box<str>, CacheEntry>>,
}

#[derive(Debug)]
struct CacheEntry {
    keys: Arc<KeySet>,
    jwt: Arc<VerifiedJwt>,
    exp: u64,
}

/// Entries per rule (a few KiB each at most).
const CACHE_MAX: usize = 1024;

impl VerifiedCache {
    fn get(&self, token: &str, keys: &Arc<KeySet>, now: u64, skew: u64) -> Option<Arc<VerifiedJwt>> {
        let map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = map.get(token)?;
        (Arc::ptr_eq(&e.keys, keys) && e.exp.saturating_add(skew) > now).then(|| Arc::clone(&e.jwt))
    }

    fn put(&self, token: &str, keys: &Arc<KeySet>, jwt: &Arc<VerifiedJwt>) {
        let Some(exp) = jwt.claims.get("exp").and_then(serde_json::Value::as_f64) else { return };
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(token.into(), CacheEntry { keys: Arc::clone(keys), jwt: Arc::clone(jwt), exp: exp as u64 });
    }
}

impl JwtRule {
    /// The token this rule finds in the request, with where it was found.
    pub fn find_token<'r>(&self, headers: &'r dyn HeaderLookup, query: Option<&'r str>) -> Option<Found<'r>> {
        for (name, prefix) in &self.from_headers {
            if let Some(v) = headers.header(name) {
                let token = if prefix.is_empty() {
                    Some(v)
                } else {
                    // Prefixes compare case-insensitively ("bearer " is common).
                    v.get(..prefix.len()).filter(|p| p.eq_ignore_ascii_case(prefix)).map(|_| &v[prefix.len()..])
                };
                if let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) {
                    return Some(Found { token: t, from: TokenPlace::Header(name.clone()) });
                }
            }
        }
        let query = query?;
        for param in &self.from_params {
            for pair in query.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    if k == param && !v.is_empty() {
                        return Some(Found { token: v, from: TokenPlace::Param(param.clone()) });
                    }
                }
            }
        }
        None
    }
}

/// A token and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'r> {
    /// The compact JWS.
    pub token: &'r str,
    /// Its place, so the proxy can strip it.
    pub from: TokenPlace,
}

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenPlace {
    /// A header (lower-case name).
    Header(String),
    /// A query parameter.
    Param(String),
}

/// Parsed public keys (or HMAC secrets) of one issuer.
pub struct KeySet {
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    decoding: DecodingKey,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document or a PEM public key (RSA, EC or Ed25519).
    /// Keys this version cannot use (encryption keys, unknown types) are
    /// skipped; a set without any usable key is an error.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "keys are not UTF-8".to_owned())?;
        if text.trim_start().starts_with("-----BEGIN") {
            return Self::from_pem(text.as_bytes());
        }
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)) {
                continue;
            }
            let alg = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok());
            let Ok(decoding) = DecodingKey::from_jwk(jwk) else { continue };
            keys.push(Key { kid: jwk.common.key_id.clone(), alg, family: decoding.family(), decoding });
        }
        if keys.is_empty() {
            return Err(format!("no usable signing key among {} key(s)", set.keys.len()));
        }
        Ok(KeySet { keys })
    }

    fn from_pem(pem: &[u8]) -> Result<KeySet, String> {
        let decoding = DecodingKey::from_rsa_pem(pem)
            .or_else(|_| DecodingKey::from_ec_pem(pem))
            .or_else(|_| DecodingKey::from_ed_pem(pem))
            .map_err(|e| format!("not a PEM public key: {e}"))?;
        Ok(KeySet { keys: vec![Key { kid: None, alg: None, family: decoding.family(), decoding }] })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there is no key (never, for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True if any key uses a symmetric secret.
    fn has_secret(&self) -> bool {
        self.keys.iter().any(|k| k.family == AlgorithmFamily::Hmac)
    }
}

/// The keys of a rule as the proxy has them right now.
#[derive(Debug, Clone)]
pub enum Keys {
    /// Loaded.
    Ready(Arc<KeySet>),
    /// Not loaded yet or never loadable: fail closed.
    Unavailable,
}

/// Why a token was refused. The `code` goes into the 401 response and the
/// decision metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    /// No token and the policy requires one.
    #[error("no token")]
    Missing,
    /// Not a compact JWS, bad base64 or JSON, or `alg: none`.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `iss` is not trusted by any rule.
    #[error("issuer \"{0}\" is not trusted")]
    UnknownIssuer(String),
    /// `alg` not allowed for this issuer.
    #[error("algorithm {0} is not allowed for this issuer")]
    AlgorithmNotAllowed(String),
    /// No key with this `kid` (the proxy refetches the JWKS once, rate-limited).
    #[error("no key with kid \"{0}\"")]
    UnknownKid(String),
    /// Keys could not be loaded: fail closed.
    #[error("keys of issuer \"{0}\" are unavailable")]
    KeysUnavailable(String),
    /// Signature does not verify with any candidate key.
    #[error("signature does not verify")]
    BadSignature,
    /// `exp` is past (plus skew).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond skew).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` has none of the accepted audiences.
    #[error("audience not accepted")]
    WrongAudience,
    /// A required claim (`exp`) is missing or not a number.
    #[error("claim {0} missing or invalid")]
    BadClaim(&'static str),
}

impl AuthnError {
    /// Short machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "jwt_missing",
            Self::Malformed(_) => "jwt_malformed",
            Self::UnknownIssuer(_) => "jwt_unknown_issuer",
            Self::AlgorithmNotAllowed(_) => "jwt_algorithm_not_allowed",
            Self::UnknownKid(_) => "jwt_unknown_kid",
            Self::KeysUnavailable(_) => "jwt_keys_unavailable",
            Self::BadSignature => "jwt_bad_signature",
            Self::Expired => "jwt_expired",
            Self::NotYetValid => "jwt_not_yet_valid",
            Self::WrongAudience => "jwt_wrong_audience",
            Self::BadClaim(_) => "jwt_bad_claim",
        }
    }
}

/// The result of authenticating one request.
#[derive(Debug, Clone)]
pub enum Outcome<'p> {
    /// No policy applies, or no token and none is required.
    Anonymous,
    /// A verified token.
    Verified {
        /// Claims and principal.
        jwt: Arc<VerifiedJwt>,
        /// The policy and rule that verified it.
        policy: &'p RequestAuthentication,
        /// The rule.
        rule: &'p JwtRule,
        /// Where the token was.
        from: TokenPlace,
    },
    /// Refused; enforced unless `dry_run`.
    Refused {
        /// The deciding policy.
        policy: &'p RequestAuthentication,
        /// The rule that verified the token, or for a malformed token or an
        /// unknown issuer the first rule that found it; `None` when no token.
        rule: Option<&'p JwtRule>,
        /// Why.
        error: AuthnError,
    },
}

/// Authenticates a request against the attached policies at unix time `now`.
/// `keys` gives a rule's current keys (inline keys need no lookup).
pub fn authenticate<'p>(
    policies: &'p [RequestAuthentication],
    headers: &dyn HeaderLookup,
    query: Option<&str>,
    keys: &dyn Fn(&JwtRule) -> Keys,
    now: u64,
) -> Outcome<'p> {
    let mut found: Vec<(&'p RequestAuthentication, &'p JwtRule, Found<'_>)> = Vec::new();
    for p in policies {
        for r in &p.rules {
            if let Some(f) = r.find_token(headers, query) {
                found.push((p, r, f));
            }
        }
    }
    let Some((first_policy, first_rule, first)) = found.first() else {
        return match policies.iter().find(|p| p.require_token && !p.dry_run).or_else(|| {
            // A dry-run policy that requires a token still records the would-be refusal.
            policies.iter().find(|p| p.require_token)
        }) {
            Some(policy) => Outcome::Refused { policy, rule: None, error: AuthnError::Missing },
            None => Outcome::Anonymous,
        };
    };
    let token = first.token;
    let issuer = match unverified_issuer(token) {
        Ok(iss) => iss,
        // Attributed to the first rule that found the token where it looks.
        Err(e) => return Outcome::Refused { policy: first_policy, rule: Some(first_rule), error: e },
    };
    let Some((policy, rule, f)) = found.iter().find(|(_, r, f)| r.issuer == issuer && f.token == token) else {
        return Outcome::Refused {
            policy: first_policy,
            rule: Some(first_rule),
            error: AuthnError::UnknownIssuer(issuer),
        };
    };
    let set = match &rule.keys {
        KeySource::Inline(set) => Arc::clone(set),
        _ => match keys(rule) {
            Keys::Ready(set) => set,
            Keys::Unavailable => {
                return Outcome::Refused {
                    policy,
                    rule: Some(rule),
                    error: AuthnError::KeysUnavailable(rule.issuer.clone()),
                }
            }
        },
    };
    if let Some(jwt) = rule.cache.get(token, &set, now, rule.clock_skew.as_secs()) {
        return Outcome::Verified { jwt, policy, rule, from: f.from.clone() };
    }
    match verify(rule, &set, token, now) {
        Ok(jwt) => {
            let jwt = Arc::new(jwt);
            rule.cache.put(token, &set, &jwt);
            Outcome::Verified { jwt, policy, rule, from: f.from.clone() }
        }
        Err(error) => Outcome::Refused { policy, rule: Some(rule), error },
    }
}

/// `iss` of a token, read without verification, only to pick the rule.
fn unverified_issuer(token: &str) -> Result<String, AuthnError> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let claims: Iss =
        jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|e| AuthnError::Malformed(e.to_string()))?;
    claims.iss.ok_or(AuthnError::BadClaim("iss"))
}

/// Verifies `token` for `rule` with `keys` at unix time `now`.
pub fn verify(rule: &JwtRule, keys: &KeySet, token: &str, now: u64) -> Result<VerifiedJwt, AuthnError> {
    // `alg: none` and unknown algorithms fail to parse here.
    let header = jsonwebtoken::decode_header(token).map_err(|e| AuthnError::Malformed(e.to_string()))?;
    let alg = header.alg;
    if !rule.algorithms.contains(&alg) {
        return Err(AuthnError::AlgorithmNotAllowed(format!("{alg:?}")));
    }
    let kid = header.kid.as_deref();
    let mut by_kid = false;
    let candidates = keys.keys.iter().filter(|k| {
        let kid_ok = match (kid, k.kid.as_deref()) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        by_kid |= kid_ok && kid.is_some() && k.kid.is_some();
        // The key type decides the family: an RSA key never verifies an HS token.
        kid_ok && k.family == alg.family() && k.alg.is_none_or(|a| a == alg)
    });
    let mut validation = Validation::new(alg);
    validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_issuer(&[&rule.issuer]);
    if rule.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&rule.audiences);
    }
    let mut last = None;
    let mut tried = false;
    for key in candidates {
        tried = true;
        match jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation) {
            Ok(data) => return check_times(rule, data.claims, now),
            Err(e) => last = Some(e),
        }
    }
    if !tried {
        return Err(match kid {
            Some(k) if !by_kid => AuthnError::UnknownKid(k.to_owned()),
            _ => AuthnError::BadSignature,
        });
    }
    use jsonwebtoken::errors::ErrorKind as K;
    Err(match last.as_ref().map(jsonwebtoken::errors::Error::kind) {
        Some(K::InvalidAudience) => AuthnError::WrongAudience,
        Some(K::InvalidIssuer) => AuthnError::UnknownIssuer(rule.issuer.clone()),
        Some(K::MissingRequiredClaim(_)) => AuthnError::BadClaim("exp"),
        Some(K::InvalidSignature) | None => AuthnError::BadSignature,
        Some(other) => AuthnError::Malformed(format!("{other:?}")),
    })
}

fn check_times(rule: &JwtRule, claims: serde_json::Value, now: u64) -> Result<VerifiedJwt, AuthnError> {
    let skew = rule.clock_skew.as_secs();
    let time = |name: &'static str| -> Result<Option<u64>, AuthnError> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| Some(f as u64))
                .ok_or(AuthnError::BadClaim(name)),
        }
    };
    let exp = time("exp")?.ok_or(AuthnError::BadClaim("exp"))?;
    if exp.saturating_add(skew) <= now {
        return Err(AuthnError::Expired);
    }
    if let Some(nbf) = time("nbf")? {
        if nbf > now.saturating_add(skew) {
            return Err(AuthnError::NotYetValid);
        }
    }
    let sub = claims.get("sub").and_then(serde_json::Value::as_str).unwrap_or("");
    Ok(VerifiedJwt { principal: format!("{}/{}", rule.issuer, sub), claims })
}

/// The value of a claim path for a header: strings as they are, numbers and
/// booleans as text, string lists joined with commas.
pub fn claim_text(claims: &serde_json::Value, path: &[String]) -> Option<String> {
    let mut v = claims;
    for p in path {
        v = v.get(p)?;
    }
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Array(items) => {
            let parts: Option<Vec<&str>> = items.iter().map(serde_json::Value::as_str).collect();
            parts.map(|p| p.join(","))
        }
        _ => None,
    }
}

const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Checks one `RequestAuthentication`; `err(needle, message)` makes a located diagnostic.
pub(crate) fn compile(
    raw: RawRequestAuthentication,
    attach: Attachment,
    location: Location,
    err: &dyn Fn(&str, String) -> Diagnostic,
) -> Result<RequestAuthentication, Vec<Diagnostic>> {
    let name = raw.metadata.name;
    let mut diags = Vec::new();
    if raw.spec.jwt_rules.is_empty() {
        diags.push(err("spec", format!("request authentication '{name}': no jwtRules")));
    }
    let mut rules: Vec<JwtRule> = Vec::new();
    for (i, r) in raw.spec.jwt_rules.into_iter().enumerate() {
        let ctx = format!("request authentication '{name}', jwt rule {}", i + 1);
        if let Some(prev) = rules.iter().position(|p| p.issuer == r.issuer) {
            diags.push(err(
                &r.issuer,
                format!("{ctx}: issuer \"{}\" is already used by jwt rule {}", r.issuer, prev + 1),
            ));
        }
        if let Some(rule) = compile_rule(&ctx, r, err, &mut diags) {
            rules.push(rule);
        }
    }
    if diags.is_empty() {
        Ok(RequestAuthentication {
            name,
            attach,
            location,
            dry_run: raw.spec.dry_run,
            require_token: raw.spec.require_token,
            rules,
        })
    } else {
        Err(diags)
    }
}

fn compile_rule(
    ctx: &str,
    r: RawJwtRule,
    err: &dyn Fn(&str, String) -> Diagnostic,
    diags: &mut Vec<Diagnostic>,
) -> Option<JwtRule> {
    let before = diags.len();
    if r.issuer.is_empty() {
        diags.push(err("issuer", format!("{ctx}: issuer must not be empty")));
    }
    let period = |field: &str, v: Option<&str>, default: Duration, diags: &mut Vec<Diagnostic>| match v {
        None => default,
        Some(s) => crate::ratelimit::period(s).unwrap_or_else(|| {
            diags.push(err(s, format!("{ctx}: {field}: \"{s}\" is not a duration (expected e.g. 30s, 10m, 1h)")));
            default
        }),
    };
    let refresh_interval =
        period("jwksRefreshInterval", r.jwks_refresh_interval.as_deref(), Duration::from_secs(600), diags);
    let min_refetch_interval =
        period("jwksMinRefetchInterval", r.jwks_min_refetch_interval.as_deref(), Duration::from_secs(30), diags);
    let clock_skew = match r.clock_skew.as_deref() {
        Some("0" | "0s") => Duration::ZERO,
        other => period("clockSkew", other, Duration::from_secs(60), diags),
    };
    let mut algorithms = Vec::new();
    for a in &r.algorithms {
        match a.parse::<Algorithm>() {
            Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Ok(_) => diags.push(err(a, format!("{ctx}: algorithm \"{a}\" listed twice"))),
            Err(_) => diags.push(err(
                a,
                format!("{ctx}: unknown algorithm \"{a}\" (expected RS256/384/512, PS256/384/512, ES256/384, EdDSA or HS256/384/512; \"none\" is never accepted)"),
            )),
        }
    }
    if r.algorithms.is_empty() {
        algorithms = ASYMMETRIC.to_vec();
    }
    let symmetric = algorithms.iter().any(|a| a.family() == AlgorithmFamily::Hmac);
    let keys = match (&r.jwks, &r.jwks_file, &r.jwks_uri) {
        (Some(inline), None, None) => match KeySet::parse(inline.as_bytes()) {
            Ok(set) => {
                if set.has_secret() && !symmetric {
                    diags.push(err("jwks", format!("{ctx}: jwks holds an HMAC secret but algorithms allow no HS*")));
                }
                Some(KeySource::Inline(Arc::new(set)))
            }
            Err(e) => {
                diags.push(err("jwks", format!("{ctx}: jwks: {e}")));
                None
            }
        },
        (None, Some(file), None) if !file.is_empty() => Some(KeySource::File(file.clone())),
        (None, None, Some(uri)) => {
            if symmetric {
                diags.push(err(
                    uri,
                    format!("{ctx}: HS* algorithms with jwksUri \"{uri}\": shared secrets must not come from a URL (use jwks or jwksFile)"),
                ));
            }
            if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                diags.push(err(uri, format!("{ctx}: jwksUri \"{uri}\" is not an http(s) URL")));
            }
            Some(KeySource::Uri(uri.clone()))
        }
        (None, None, None) => {
            diags.push(err(
                &r.issuer,
                format!("{ctx}: no keys for issuer \"{}\" (set one of jwks, jwksFile, jwksUri)", r.issuer),
            ));
            None
        }
        _ => {
            diags.push(err(&r.issuer, format!("{ctx}: set only one of jwks, jwksFile, jwksUri")));
            None
        }
    };
    let mut from_headers: Vec<(String, String)> =
        r.from_headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.prefix.clone())).collect();
    for (h, _) in &from_headers {
        if !valid_header_name(h) {
            diags.push(err(h, format!("{ctx}: fromHeaders: \"{h}\" is not a header name")));
        }
    }
    if from_headers.is_empty() && r.from_params.is_empty() {
        from_headers.push(("authorization".to_owned(), "Bearer ".to_owned()));
    }
    let mut claim_headers = Vec::new();
    for c in &r.output_claim_to_headers {
        let h = c.header.to_ascii_lowercase();
        if !valid_header_name(&h) || h.starts_with(':') {
            diags.push(err(&c.header, format!("{ctx}: outputClaimToHeaders: \"{}\" is not a header name", c.header)));
        } else if h.starts_with("x-meshward-") || h == "authorization" || h == "host" {
            diags.push(err(
                &c.header,
                format!(
                    "{ctx}: outputClaimToHeaders: header \"{}\" is reserved (x-meshward-*, authorization, host)",
                    c.header
                ),
            ));
        }
        if c.claim.is_empty() || c.claim.split('.').any(str::is_empty) {
            diags
                .push(err(&c.claim, format!("{ctx}: outputClaimToHeaders: claim \"{}\" is not a claim name", c.claim)));
        }
        claim_headers.push((h, c.claim.split('.').map(str::to_owned).collect()));
    }
    if diags.len() > before {
        return None;
    }
    Some(JwtRule {
        issuer: r.issuer,
        audiences: r.audiences,
        keys: keys?,
        refresh_interval,
        min_refetch_interval,
        algorithms,
        from_headers,
        from_params: r.from_params,
        forward_original_token: r.forward_original_token,
        claim_headers,
        clock_skew,
        cache: Arc::default(),
    })
}

fn valid_header_name(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
