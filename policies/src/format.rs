//! The policy file format as written: YAML, several documents per file,
//! Kubernetes-shaped (`apiVersion`, `kind`, `metadata`, `spec`). Field names
//! follow Istio's `AuthorizationPolicy` so that security teams can read them
//! without a manual. Unknown fields are errors everywhere.

use schemars::JsonSchema;
use serde::Deserialize;

/// The only API version this crate reads.
pub const API_VERSION: &str = "meshward.dev/v1";

/// `apiVersion` and `kind`, read first to pick the spec type.
#[derive(Debug, Deserialize)]
pub struct RawHeader {
    /// Must be [`API_VERSION`].
    #[serde(rename = "apiVersion")]
    pub api_version: Option<String>,
    /// The kind of policy.
    pub kind: Option<String>,
}

/// Object metadata.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetadata {
    /// Unique name (per namespace).
    pub name: String,
    /// Namespace; empty means mesh-wide.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// An `AuthorizationPolicy` document.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorizationPolicy {
    /// `meshward.dev/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `AuthorizationPolicy`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: RawMetadata,
    /// The rules.
    pub spec: RawAuthorizationSpec,
}

/// `spec` of an `AuthorizationPolicy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAuthorizationSpec {
    /// Workloads this policy attaches to (by pod labels); absent: every
    /// workload in the policy's namespace (or the whole mesh without one).
    #[serde(default)]
    pub selector: Option<RawSelector>,
    /// `ALLOW` (default), `DENY` or `AUDIT`.
    #[serde(default)]
    #[schemars(extend("enum" = ["ALLOW", "DENY", "AUDIT"]))]
    pub action: Option<String>,
    /// Evaluated, logged and counted, never enforced.
    #[serde(default)]
    pub dry_run: bool,
    /// Rules; any matching rule makes the policy match. An ALLOW policy with
    /// no rules matches nothing; `rules: [{}]` matches everything.
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// One rule: `from`, `to` and `when` AND together; entries of each list OR.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Who is calling.
    #[serde(default)]
    pub from: Vec<RawFrom>,
    /// What is called.
    #[serde(default)]
    pub to: Vec<RawTo>,
    /// Extra conditions.
    #[serde(default)]
    pub when: Vec<RawCondition>,
}

/// `from:` entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFrom {
    /// The source.
    pub source: RawSource,
}

/// A request source. Every field set must match; values within a field OR.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSource {
    /// Peer SPIFFE IDs (`*` globs at either end), e.g. `spiffe://cluster.local/ns/gw/sa/*`.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Negated `principals`.
    #[serde(default)]
    pub not_principals: Vec<String>,
    /// Peer namespaces (from the SPIFFE ID's `/ns/<namespace>/`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Negated `namespaces`.
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// Client IP blocks (`10.0.0.0/8`, `2001:db8::1`).
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    /// Negated `ip_blocks`.
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    /// JWT principals `iss/sub` (globs allowed).
    #[serde(default)]
    pub request_principals: Vec<String>,
    /// Negated `request_principals`.
    #[serde(default)]
    pub not_request_principals: Vec<String>,
}

/// `to:` entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTo {
    /// The operation.
    pub operation: RawOperation,
}

/// A request operation.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOperation {
    /// HTTP methods.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Negated `methods`.
    #[serde(default)]
    pub not_methods: Vec<String>,
    /// Paths: exact, `*` globs at either end, or templates such as `/v2/models/{model}/infer`.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Negated `paths`.
    #[serde(default)]
    pub not_paths: Vec<String>,
    /// App ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Negated `ports`.
    #[serde(default)]
    pub not_ports: Vec<u16>,
}

/// `when:` condition.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCondition {
    /// `request.auth.claims[name]` (nested: `claims[a][b]`), `request.headers[name]`,
    /// `source.ip`, `source.principal`, `source.namespace`, `request.auth.principal`.
    pub key: String,
    /// Any of these matches (globs allowed).
    #[serde(default)]
    pub values: Vec<String>,
    /// None of these may match.
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// JSON Schema of a policy document of `kind`, for editors
/// (`# yaml-language-server: $schema=...`) and CI validation; `None` for an
/// unknown kind.
pub fn schema(kind: &str) -> Option<serde_json::Value> {
    let generated = match kind {
        "AuthorizationPolicy" => schemars::schema_for!(RawAuthorizationPolicy),
        "RateLimitPolicy" => schemars::schema_for!(RawRateLimitPolicy),
        "RequestAuthentication" => schemars::schema_for!(RawRequestAuthentication),
        "AnomalyPolicy" => schemars::schema_for!(RawAnomalyPolicy),
        _ => return None,
    };
    let mut schema = serde_json::to_value(generated).unwrap_or_default();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), format!("meshward {kind}").into());
        if let Some(props) = obj.get_mut("properties").and_then(|p| p.as_object_mut()) {
            props.insert("apiVersion".into(), serde_json::json!({"const": API_VERSION}));
            props.insert("kind".into(), serde_json::json!({"const": kind}));
        }
    }
    Some(schema)
}

/// A `RateLimitPolicy` document.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimitPolicy {
    /// `meshward.dev/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `RateLimitPolicy`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: RawMetadata,
    /// The limits.
    pub spec: RawRateLimitSpec,
}

/// `spec` of a `RateLimitPolicy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRateLimitSpec {
    /// Workloads this policy attaches to (by pod labels); absent: every
    /// workload in the policy's namespace (or the whole mesh without one).
    #[serde(default)]
    pub selector: Option<RawSelector>,
    /// Counted and logged as what it would do, never enforced.
    #[serde(default)]
    pub dry_run: bool,
    /// Limits; every rule whose `to` matches applies (each has its own buckets).
    pub rules: Vec<RawRateRule>,
}

/// One limit: which requests, bucketed by what, how many.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateRule {
    /// Requests this limit applies to; empty: all.
    #[serde(default)]
    pub to: Vec<RawTo>,
    /// What one bucket belongs to.
    pub key: RawRateKey,
    /// The default limit per key.
    pub limit: RawLimit,
    /// Other limits for named keys (e.g. a premium tier).
    #[serde(default)]
    pub overrides: Vec<RawOverride>,
}

/// Bucket key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateKey {
    /// `peer` (SPIFFE ID), `ip`, `header` or `claim` (JWT).
    #[schemars(extend("enum" = ["peer", "ip", "header", "claim"]))]
    pub source: String,
    /// Header or claim name, for `header` and `claim`.
    #[serde(default)]
    pub name: Option<String>,
}

/// A token bucket.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// Requests per `per`.
    pub requests: u32,
    /// The period, e.g. `1s`, `1m`.
    pub per: String,
    /// Extra requests allowed at once. Default: `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A limit for one key value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    /// The key value, e.g. `spiffe://cluster.local/ns/gw/sa/premium`.
    pub value: String,
    /// Requests per `per`.
    pub requests: u32,
    /// The period.
    pub per: String,
    /// Burst. Default: `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Which workloads a policy attaches to.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSelector {
    /// Every label must be present on the workload with this value.
    #[serde(default)]
    pub match_labels: std::collections::BTreeMap<String, String>,
}

/// A `RequestAuthentication` document (JWT).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRequestAuthentication {
    /// `meshward.dev/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `RequestAuthentication`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: RawMetadata,
    /// The JWT rules.
    pub spec: RawRequestAuthenticationSpec,
}

/// `spec` of a `RequestAuthentication`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRequestAuthenticationSpec {
    /// Workloads this policy attaches to.
    #[serde(default)]
    pub selector: Option<RawSelector>,
    /// Invalid tokens are logged and counted as what would be refused, and
    /// the request continues without a verified token.
    #[serde(default)]
    pub dry_run: bool,
    /// Refuse (401) requests that carry no token at all. Default `false`, as
    /// in Istio: a request without a token passes unauthenticated and an
    /// `AuthorizationPolicy` decides (e.g. with `requestPrincipals: ["*"]`).
    #[serde(default)]
    pub require_token: bool,
    /// One rule per trusted issuer.
    pub jwt_rules: Vec<RawJwtRule>,
}

/// How tokens of one issuer are found and verified.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawJwtRule {
    /// The `iss` claim this rule verifies, e.g. `https://auth.example.com`.
    pub issuer: String,
    /// Accepted `aud` values (any one must be in the token); empty: `aud` is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Keys inline: a JWKS document as a JSON string.
    #[serde(default)]
    pub jwks: Option<String>,
    /// Keys from a file: a JWKS document or a PEM public key.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// Keys from a URL (`https://`, or `http://` for loopback and tests).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// How often keys from `jwksUri`/`jwksFile` are refreshed. Default `10m`.
    #[serde(default)]
    pub jwks_refresh_interval: Option<String>,
    /// Least time between two refetches caused by an unknown `kid`. Default `30s`.
    #[serde(default)]
    pub jwks_min_refetch_interval: Option<String>,
    /// Accepted `alg` values. Default: every asymmetric algorithm
    /// (RS256/384/512, PS256/384/512, ES256/384, EdDSA). HS256/384/512 only
    /// when listed, and only with inline or file keys.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Headers the token is read from. Default: `Authorization` with prefix `Bearer `.
    #[serde(default)]
    pub from_headers: Vec<RawJwtHeader>,
    /// Query parameters the token is read from.
    #[serde(default)]
    pub from_params: Vec<String>,
    /// Keep the token in the request to the app. Default `false` (removed).
    #[serde(default)]
    pub forward_original_token: bool,
    /// Copy claims into request headers for the app (incoming copies are always removed).
    #[serde(default)]
    pub output_claim_to_headers: Vec<RawClaimToHeader>,
    /// Allowed clock difference for `exp` and `nbf`. Default `60s`.
    #[serde(default)]
    pub clock_skew: Option<String>,
}

/// A header a token may arrive in.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJwtHeader {
    /// Header name.
    pub name: String,
    /// Text before the token, e.g. `Bearer `.
    #[serde(default)]
    pub prefix: String,
}

/// One claim copied into a header.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClaimToHeader {
    /// Header name set for the app.
    pub header: String,
    /// Claim name; nested claims with dots (`realm.tier`).
    pub claim: String,
}

/// An `AnomalyPolicy` document: what to do with the detector's verdicts.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAnomalyPolicy {
    /// `meshward.dev/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `AnomalyPolicy`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: RawMetadata,
    /// Actions per band, escalation, fail mode.
    pub spec: RawAnomalySpec,
}

/// The actions an `AnomalyPolicy` may take, as written.
const ANOMALY_ACTIONS: [&str; 5] = ["allow", "audit", "rate-limit", "block", "quarantine"];

/// `spec` of an `AnomalyPolicy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAnomalySpec {
    /// Workloads this policy attaches to (by pod labels); absent: every
    /// workload in the policy's namespace (or the whole mesh without one).
    #[serde(default)]
    pub selector: Option<RawSelector>,
    /// Decisions are computed, counted, logged and alerted, never enforced.
    #[serde(default)]
    pub dry_run: bool,
    /// Samples the detector learns from before it gives verdicts. Default: the detector's own.
    #[serde(default)]
    pub warmup_samples: Option<u64>,
    /// Share of normal traffic the anomalous band may flag, in (0, 0.5). Default: the detector's own.
    #[serde(default)]
    pub false_positive_budget: Option<f64>,
    /// `open` (default: requests pass) or `closed` (requests are blocked) when
    /// the detector is overloaded or unavailable.
    #[serde(default)]
    #[schemars(extend("enum" = ["open", "closed"]))]
    pub on_detector_unavailable: Option<String>,
    /// Actions per route; the first rule whose `to` matches applies.
    pub rules: Vec<RawAnomalyRule>,
    /// The reduced per-client rate of `rate-limit`. Default `{requests: 1, per: 1s, burst: 2}`.
    #[serde(default)]
    pub rate_limit: Option<RawLimit>,
    /// How long `quarantine` refuses a client. Default `{duration: 10m}`.
    #[serde(default)]
    pub quarantine: Option<RawQuarantine>,
    /// Repeat offenders: steps by flagged requests within a window, in increasing order.
    #[serde(default)]
    pub escalation: Vec<RawEscalationStep>,
    /// A client with no flagged request for this long starts over. Default:
    /// `10m`, or the longest escalation window if that is longer.
    #[serde(default)]
    pub decay: Option<String>,
}

/// Actions per band for some routes.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAnomalyRule {
    /// Requests this rule covers (same syntax as `AuthorizationPolicy`); empty: every request.
    #[serde(default)]
    pub to: Vec<RawTo>,
    /// Action in the suspicious band. Default `audit`.
    #[serde(default)]
    #[schemars(extend("enum" = ANOMALY_ACTIONS))]
    pub suspicious: Option<String>,
    /// Action in the anomalous band. Default `block`.
    #[serde(default)]
    #[schemars(extend("enum" = ANOMALY_ACTIONS))]
    pub anomalous: Option<String>,
    /// Action when the verdict comes from the client's behaviour over many
    /// requests (extraction, flood, scan). Default `rate-limit`.
    #[serde(default)]
    #[schemars(extend("enum" = ANOMALY_ACTIONS))]
    pub client_signal: Option<String>,
}

/// `quarantine:` settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawQuarantine {
    /// How long a quarantined client is refused, e.g. `10m`.
    pub duration: String,
}

/// One escalation step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEscalationStep {
    /// Flagged requests (1..=100) by one client ...
    pub flagged: u32,
    /// ... within this window (at most `24h`), e.g. `1m` ...
    pub within: String,
    /// ... raise the client to this action: `rate-limit`, `block` or `quarantine`.
    #[schemars(extend("enum" = ["rate-limit", "block", "quarantine"]))]
    pub action: String,
}
