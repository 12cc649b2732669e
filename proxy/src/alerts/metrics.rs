//! Alerting metrics, registered into the sidecar's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Sink label used for findings dropped before grouping (no sink chosen yet).
pub const ALL_SINKS: &str = "(all)";

/// Labels of `alert_deliveries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// Sink name.
    pub sink: String,
    /// `ok` (2xx), `retry` (failed, will be retried), `failed` (failed, given up).
    pub result: &'static str,
}

/// Labels of `alerts_dropped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// Sink name, or `(all)` for findings dropped before grouping.
    pub sink: String,
    /// `queue_full`, `attempts_exhausted`, `rejected` (a 4xx other than 429) or `incidents_full`.
    pub reason: &'static str,
}

/// Counters and gauges of the alert pipeline. Cheap to clone (shared handles).
#[derive(Clone, Debug, Default)]
pub struct AlertMetrics {
    /// Findings reported, accepted or not.
    pub findings: Counter,
    /// Delivery attempts by sink and result.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Findings and notifications lost, by sink and reason.
    pub dropped: Family<DropLabels, Counter>,
    /// Incidents currently open (firing).
    pub open_incidents: Gauge,
}

impl AlertMetrics {
    /// Creates the metrics and registers them. `registry` is the sidecar's,
    /// which carries the `meshward` prefix, so the names come out as
    /// `meshward_alerts_findings_total`, `meshward_alert_deliveries_total`,
    /// `meshward_alerts_dropped_total` and `meshward_alerts_open_incidents`.
    pub fn register(registry: &mut Registry) -> AlertMetrics {
        let m = AlertMetrics::default();
        registry.register("alerts_findings", "Findings reported to alerting (accepted or dropped)", m.findings.clone());
        registry.register(
            "alert_deliveries",
            "Webhook delivery attempts by sink and result (ok, retry, failed)",
            m.deliveries.clone(),
        );
        registry.register(
            "alerts_dropped",
            "Findings or notifications lost, by sink and reason (queue_full, attempts_exhausted, rejected, incidents_full)",
            m.dropped.clone(),
        );
        registry.register("alerts_open_incidents", "Alert incidents currently firing", m.open_incidents.clone());
        m
    }

    pub(crate) fn delivery(&self, sink: &str, result: &'static str) {
        self.deliveries.get_or_create(&DeliveryLabels { sink: sink.to_string(), result }).inc();
    }

    pub(crate) fn drop(&self, sink: &str, reason: &'static str) {
        self.dropped.get_or_create(&DropLabels { sink: sink.to_string(), reason }).inc();
    }
}
