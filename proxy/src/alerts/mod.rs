//! Alert webhooks: findings in, grouped incidents out to Alertmanager,
//! Standard Webhooks receivers and Slack.
//!
//! The request path calls [`Alerts::report`], which only tries to put the
//! [`Finding`] on a bounded queue: it never waits, never fails, and a full
//! queue drops the finding and counts it. Behind the queue one task groups
//! findings into incidents (one per workload + policy + rule + client; see
//! [`group`]) and hands each notification to one delivery task per sink
//! (bounded queue each; see [`sink`]), which POSTs it with jittered
//! exponential retries that honour `Retry-After`. Everything lost on the way
//! is counted in [`AlertMetrics`]. See `docs/alerts.md`.

pub mod config;
pub mod group;
pub mod metrics;
pub mod payload;
pub mod sign;
pub mod sink;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;

pub use config::{AlertsConfig, AlertsConfigError, Format, RawAlerts, RawSink, SinkConfig};
pub use metrics::AlertMetrics;
pub use sign::{Secret, SecretError, VerifyError};

use group::Grouper;
use sink::{Sink, SinkStats};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look (audit, rate-limit, dry-run).
    Warning,
    /// Act now (block, quarantine).
    Critical,
}

impl Severity {
    /// `warning` or `critical`, as in Alertmanager's `severity` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One flagged request, as the pipeline reports it. Owned so it can cross to
/// the alerting task; building one costs a few small string allocations.
#[derive(Clone, Debug)]
pub struct Finding {
    /// Workload that received the request.
    pub workload: String,
    /// Anomaly policy that judged it.
    pub policy: String,
    /// 1-based rule number within the policy.
    pub rule: usize,
    /// Client key (JWT `iss/sub`, peer SPIFFE ID or IP).
    pub client: String,
    /// What was done: `allow`, `audit`, `rate-limit`, `block`, `quarantine`.
    pub action: &'static str,
    /// Detector score band, e.g. `suspicious`, `anomalous`.
    pub band: &'static str,
    /// Warning or critical.
    pub severity: Severity,
    /// Detector score.
    pub score: f64,
    /// Threshold of the band that fired.
    pub threshold: f64,
    /// Top features, in words.
    pub reasons: Vec<String>,
    /// Verified peer SPIFFE ID.
    pub peer_identity: Option<String>,
    /// Verified JWT subject.
    pub jwt_subject: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path (without the query).
    pub path: String,
    /// The request's id (`x-request-id`).
    pub request_id: String,
    /// True when the policy only observes (nothing was enforced).
    pub dry_run: bool,
    /// When the request arrived.
    pub at: SystemTime,
}

/// Handle on the alert pipeline. Cheap to clone; [`Alerts::disabled`] when
/// no sink is configured.
#[derive(Clone, Debug)]
pub struct Alerts {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Finding>,
    metrics: AlertMetrics,
    /// `alerts_dropped_total{sink="(all)",reason="queue_full"}`, looked up once.
    queue_full: prometheus_client::metrics::counter::Counter,
    grouper: Arc<Mutex<Grouper>>,
    sinks: Vec<(String, &'static str, Arc<SinkStats>)>,
    dropped_findings: AtomicU64,
    /// Findings accepted but not yet grouped and dispatched.
    ungrouped: Arc<AtomicU64>,
}

impl Alerts {
    /// Alerting off: `report` does nothing.
    pub fn disabled() -> Alerts {
        Alerts { inner: None }
    }

    /// Spawns the grouping task and one delivery task per sink on the current
    /// tokio runtime. No sinks, or no runtime (logged as an error): disabled.
    /// The tasks end when every handle is dropped and the queues are drained.
    pub fn start(cfg: AlertsConfig, metrics: AlertMetrics) -> Alerts {
        if cfg.sinks.is_empty() {
            return Alerts::disabled();
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!("alert webhooks disabled: Alerts::start was called outside a tokio runtime");
            return Alerts::disabled();
        };
        // Errors only if the ring provider lacked TLS 1.2/1.3, which it does not.
        let clients: Result<Vec<_>, _> = {
            let shared = sink::client(cfg.timeout, None);
            cfg.sinks
                .iter()
                .map(|s| match (&s.ca, &shared) {
                    (Some(ca), _) => sink::client(cfg.timeout, Some(Arc::clone(ca))),
                    (None, Ok(c)) => Ok(c.clone()),
                    (None, Err(e)) => Err(std::io::Error::other(e.to_string())),
                })
                .collect()
        };
        let clients = match clients {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "alert webhooks disabled: TLS client setup failed");
                return Alerts::disabled();
            }
        };
        let cfg = Arc::new(cfg);
        let mut sinks = Vec::new();
        let mut senders = Vec::new();
        for (s, client) in cfg.sinks.iter().zip(clients) {
            let stats = Arc::new(SinkStats::default());
            let (tx, rx) = mpsc::channel(cfg.queue);
            let worker = Sink::new(s.clone(), Arc::clone(&cfg), client, metrics.clone(), Arc::clone(&stats));
            rt.spawn(worker.run(rx));
            sinks.push((s.name.clone(), s.format.as_str(), Arc::clone(&stats)));
            senders.push((s.name.clone(), tx, stats));
        }
        let grouper = Arc::new(Mutex::new(Grouper::new(&cfg)));
        let (tx, rx) = mpsc::channel(cfg.queue);
        let ungrouped = Arc::new(AtomicU64::new(0));
        rt.spawn(group::run(
            rx,
            Arc::clone(&grouper),
            Arc::clone(&cfg),
            senders,
            metrics.clone(),
            Arc::clone(&ungrouped),
        ));
        tracing::info!(sinks = cfg.sinks.len(), "alert webhooks enabled");
        let queue_full = metrics
            .dropped
            .get_or_create(&metrics::DropLabels { sink: metrics::ALL_SINKS.to_string(), reason: "queue_full" })
            .clone();
        Alerts {
            inner: Some(Arc::new(Inner {
                tx,
                metrics,
                queue_full,
                grouper,
                sinks,
                dropped_findings: AtomicU64::new(0),
                ungrouped,
            })),
        }
    }

    /// True when at least one sink is configured.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Hands a finding to alerting. Never blocks and never fails: when the
    /// queue is full the finding is dropped and counted
    /// (`alerts_dropped_total{sink="(all)",reason="queue_full"}`).
    pub fn report(&self, f: Finding) {
        let Some(inner) = &self.inner else { return };
        inner.metrics.findings.inc();
        // Counted before the send so the grouping task never sees it below zero.
        inner.ungrouped.fetch_add(1, Ordering::Relaxed);
        if inner.tx.try_send(f).is_err() {
            inner.ungrouped.fetch_sub(1, Ordering::Relaxed);
            inner.queue_full.inc();
            inner.dropped_findings.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (polling every 10 ms, at most `limit`) until every finding
    /// reported so far is grouped and every notification made from them is
    /// delivered or given up. True if that happened in time. Later updates
    /// and "resolved" of the open incidents are not waited for. For a clean
    /// shutdown and for the demo's final count; never on the request path.
    pub async fn idle(&self, limit: Duration) -> bool {
        let Some(inner) = &self.inner else { return true };
        let busy = || {
            inner.ungrouped.load(Ordering::Relaxed) > 0
                || inner.sinks.iter().any(|(_, _, s)| s.pending.load(Ordering::Relaxed) > 0)
        };
        let end = tokio::time::Instant::now() + limit;
        while busy() {
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Admin view: open incidents (largest counts first, at most 100) and
    /// per-sink delivery counts.
    pub fn snapshot(&self) -> serde_json::Value {
        let Some(inner) = &self.inner else {
            return serde_json::json!({ "enabled": false });
        };
        let (open, incidents) = {
            let g = inner.grouper.lock().unwrap_or_else(PoisonError::into_inner);
            (g.len(), g.view(100))
        };
        let sinks: serde_json::Map<String, serde_json::Value> =
            inner.sinks.iter().map(|(name, format, stats)| (name.clone(), stats.view(format))).collect();
        serde_json::json!({
            "enabled": true,
            "open_incidents": open,
            "incidents": incidents,
            "findings_dropped": inner.dropped_findings.load(Ordering::Relaxed),
            "sinks": sinks,
        })
    }
}

/// RFC 3339 with milliseconds, UTC (`2026-11-24T16:20:00.123Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Seconds since the epoch (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}
