//! The one registry of every metric meshward exports (Prometheus text format
//! via `prometheus-client`). Names follow Prometheus conventions: `_total`
//! counters, base units (seconds, bytes).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Direction of traffic through the sidecar.
pub type Direction = &'static str;
/// Traffic accepted from peers (mTLS server side).
pub const INBOUND: Direction = "inbound";
/// Traffic accepted from the local app (mTLS client side).
pub const OUTBOUND: Direction = "outbound";

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// inbound or outbound.
    pub direction: Direction,
    /// 2xx, 3xx, 4xx, 5xx.
    pub status_class: &'static str,
    /// Verified peer SPIFFE ID, or "none" (plaintext) .
    pub peer_identity: String,
}

/// A direction label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// inbound or outbound.
    pub direction: Direction,
}

/// A direction and a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// inbound or outbound.
    pub direction: Direction,
    /// Short stable reason.
    pub reason: &'static str,
}

/// A result label for reloads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// success or failure.
    pub result: &'static str,
}

/// Labels of a policy decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// allow, deny, audit or rate_limited.
    pub decision: &'static str,
    /// Policy name, or "(none)" when no ALLOW policy matched, "(default)" when none exists.
    pub policy: String,
    /// 1-based rule number, or "".
    pub rule: String,
    /// "true" for what a dry-run policy would have done.
    pub dry_run: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 20))
}

/// Labels of `jwks_fetches`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    /// The rule's issuer.
    pub issuer: String,
    /// `ok`, `error`, `unchanged`.
    pub result: &'static str,
    /// `refresh`, `unknown_kid`, `initial`.
    pub trigger: &'static str,
}

/// Labels of an anomaly-policy decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectorDecisionLabels {
    /// `audit`, `rate_limited`, `block`, `quarantined`, or
    /// `unavailable_open` / `unavailable_closed` when the detector was overloaded.
    pub action: &'static str,
    /// `anomalous`, `suspicious`, `client_signal`, `escalation`, `quarantined`, `overloaded`.
    pub reason: &'static str,
    /// Anomaly policy name.
    pub policy: String,
    /// "true" for what a dry-run policy would have done.
    pub dry_run: &'static str,
}

fn score_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::linear_buckets(0.05, 0.05, 19))
}

/// Every metric, shared by all tasks.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by direction, status class and peer identity.
    pub requests: Family<RequestLabels, Counter>,
    /// Request duration until the response head, by direction.
    pub request_duration: Family<DirectionLabel, Histogram, fn() -> Histogram>,
    /// Open connections by direction.
    pub open_connections: Family<DirectionLabel, Gauge>,
    /// Accepted connections by direction.
    pub connections: Family<DirectionLabel, Counter>,
    /// Connections refused before any HTTP (limit, no certificate loaded, plaintext on a strict port).
    pub connections_refused: Family<ReasonLabels, Counter>,
    /// TLS handshake failures by reason.
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    /// Requests refused by the proxy itself (framing, limits, upstream errors), by reason.
    pub proxy_errors: Family<ReasonLabels, Counter>,
    /// Certificate file reloads by result.
    pub cert_reloads: Family<ResultLabel, Counter>,
    /// Authorization decisions by decision, policy, rule and dry-run.
    pub policy_decisions: Family<DecisionLabels, Counter>,
    /// Policy file reloads by result.
    pub policy_reloads: Family<ResultLabel, Counter>,
    /// Rate-limit key state resets under a flood of distinct keys.
    pub ratelimit_state_resets: Counter,
    /// JWKS fetches (URL or file) by issuer and result.
    pub jwks_fetches: Family<JwksLabels, Counter>,
    /// Our certificate's notAfter as a Unix timestamp.
    pub cert_expiry: Gauge<f64, AtomicU64>,
    /// 1 when our certificate is loaded and currently valid.
    pub cert_valid: Gauge,
    /// Anomaly scores of scored requests (after warm-up).
    pub detector_score: Histogram,
    /// Anomaly-policy actions by action, reason, policy and dry-run.
    pub detector_decisions: Family<DetectorDecisionLabels, Counter>,
    /// Samples handed to learning by result (learned, refused, dropped).
    pub detector_learning: Family<ResultLabel, Counter>,
    /// Models published by the learner and swapped in.
    pub detector_model_swaps: Counter,
    /// Version of the model scoring now.
    pub detector_model_version: Gauge,
    /// Clients in the anomaly policies' offender book (set when /metrics is read).
    pub detector_offenders: Gauge,
    /// Clients pushed out of the full offender book since start (set when /metrics is read).
    pub detector_offender_evictions: Gauge,
    /// Requests recorded by `detector.record`, by result (written, dropped, full, error).
    pub detector_records: Family<ResultLabel, Counter>,
    /// Alert findings, deliveries and drops.
    pub alerts: crate::alerts::AlertMetrics,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("meshward");
        let m = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            open_connections: Family::default(),
            connections: Family::default(),
            connections_refused: Family::default(),
            tls_handshake_failures: Family::default(),
            proxy_errors: Family::default(),
            cert_reloads: Family::default(),
            policy_decisions: Family::default(),
            policy_reloads: Family::default(),
            ratelimit_state_resets: Counter::default(),
            jwks_fetches: Family::default(),
            cert_expiry: Gauge::default(),
            cert_valid: Gauge::default(),
            detector_score: score_histogram(),
            detector_decisions: Family::default(),
            detector_learning: Family::default(),
            detector_model_swaps: Counter::default(),
            detector_model_version: Gauge::default(),
            detector_records: Family::default(),
            detector_offenders: Gauge::default(),
            detector_offender_evictions: Gauge::default(),
            alerts: crate::alerts::AlertMetrics::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "HTTP requests by direction, status class and peer identity", m.requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head",
            m.request_duration.clone(),
        );
        registry.register("open_connections", "Currently open connections", m.open_connections.clone());
        registry.register("connections", "Accepted connections", m.connections.clone());
        registry.register(
            "connections_refused",
            "Connections closed before HTTP, by reason",
            m.connections_refused.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes by reason",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "proxy_errors",
            "Requests answered by the proxy with an error, by reason",
            m.proxy_errors.clone(),
        );
        registry.register(
            "policy_decisions",
            "Authorization decisions by decision, policy, rule and dry_run",
            m.policy_decisions.clone(),
        );
        registry.register("policy_reloads", "Policy file reloads by result", m.policy_reloads.clone());
        registry.register(
            "jwks_fetches",
            "JWT key set fetches (jwksUri or jwksFile) by issuer and result",
            m.jwks_fetches.clone(),
        );
        registry.register(
            "ratelimit_state_resets",
            "Rate-limit key state resets because more than 100000 keys were live",
            m.ratelimit_state_resets.clone(),
        );
        registry.register("certificate_reloads", "Certificate file reloads by result", m.cert_reloads.clone());
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the workload certificate (Unix time)",
            m.cert_expiry.clone(),
        );
        registry.register(
            "certificate_valid",
            "1 when the workload certificate is loaded and valid now",
            m.cert_valid.clone(),
        );
        registry.register("detector_score", "Anomaly scores of scored requests (0..1)", m.detector_score.clone());
        registry.register(
            "detector_decisions",
            "Anomaly-policy actions by action, reason, policy and dry_run",
            m.detector_decisions.clone(),
        );
        registry.register(
            "detector_learning_samples",
            "Samples handed to the learner by result (learned, refused, dropped)",
            m.detector_learning.clone(),
        );
        registry.register(
            "detector_model_swaps",
            "Detector models published and swapped in",
            m.detector_model_swaps.clone(),
        );
        registry.register(
            "detector_model_version",
            "Version of the detector model scoring now",
            m.detector_model_version.clone(),
        );
        registry.register(
            "detector_offenders",
            "Clients the anomaly policies remember (escalation, quarantine)",
            m.detector_offenders.clone(),
        );
        registry.register(
            "detector_offender_evictions",
            "Clients pushed out of the full offender book since start (detector.max_offenders)",
            m.detector_offender_evictions.clone(),
        );
        registry.register(
            "detector_records",
            "Requests recorded by detector.record, by result (written, dropped, full, error)",
            m.detector_records.clone(),
        );
        let alerts = crate::alerts::AlertMetrics::register(&mut registry);
        Arc::new(Self { registry, alerts, ..m })
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
