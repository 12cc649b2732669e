//! Grouping findings into incidents.
//!
//! One incident per (workload, policy, rule, client). Its first finding
//! produces a "firing" notification at once; later findings raise the count
//! and refresh the evidence, and at most one updated "firing" goes out per
//! `group_window`. With no finding for `resolve_after` the incident is sent
//! as "resolved" and forgotten; a later finding opens a new incident.
//!
//! [`Grouper`] is plain data driven by [`Grouper::add`] and [`Grouper::due`]
//! with explicit clocks, so it is tested without timers; [`run`] is the task
//! that feeds it from the findings queue and a ticker.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::metrics::AlertMetrics;
use super::sink::SinkStats;
use super::{rfc3339, AlertsConfig, Finding, Severity};

/// Request ids kept per incident as samples.
pub const MAX_SAMPLES: usize = 5;
/// Reasons kept from a finding.
const MAX_REASONS: usize = 8;
/// Longest client, path, reason or identity kept, in characters: peers choose
/// some of these, and payload size must stay bounded.
const MAX_FIELD: usize = 256;
/// Findings taken from the queue per lock of the incident table.
const BATCH: usize = 256;

/// Firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Findings are still arriving.
    Firing,
    /// No finding for `resolve_after`.
    Resolved,
}

impl Status {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// What an incident says, as sent in a notification.
#[derive(Clone, Debug)]
pub struct IncidentData {
    /// Unique per incident: fingerprint plus start time.
    pub incident_id: String,
    /// 16 hex digits from the identifying labels, stable across incidents of the same key.
    pub fingerprint: String,
    /// Workload.
    pub workload: String,
    /// Anomaly policy.
    pub policy: String,
    /// 1-based rule number.
    pub rule: usize,
    /// Client key.
    pub client: String,
    /// Highest severity seen.
    pub severity: Severity,
    /// Action of the latest finding.
    pub action: &'static str,
    /// Band of the highest-scoring finding.
    pub band: &'static str,
    /// Highest score seen.
    pub score: f64,
    /// Threshold of that finding's band.
    pub threshold: f64,
    /// Reasons of the highest-scoring finding.
    pub reasons: Vec<String>,
    /// Peer identity of the highest-scoring finding.
    pub peer_identity: Option<String>,
    /// JWT subject of the highest-scoring finding.
    pub jwt_subject: Option<String>,
    /// Method of the highest-scoring finding.
    pub method: String,
    /// Path of the highest-scoring finding.
    pub path: String,
    /// Request ids of the first findings (at most [`MAX_SAMPLES`]).
    pub sample_request_ids: Vec<String>,
    /// Findings so far.
    pub count: u64,
    /// True while every finding came from a dry-run policy.
    pub dry_run: bool,
    /// First finding's time.
    pub starts_at: SystemTime,
    /// Latest finding's time.
    pub last_seen: SystemTime,
    /// When it was resolved.
    pub ends_at: Option<SystemTime>,
}

/// One message to every sink. `id` is the `webhook-id`, fixed across retries.
#[derive(Clone, Debug)]
pub struct Notification {
    /// Message id (`msg_` + 32 hex digits).
    pub id: String,
    /// Firing or resolved.
    pub status: Status,
    /// When it was produced.
    pub at: SystemTime,
    /// The incident as of `at`.
    pub incident: IncidentData,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    workload: String,
    policy: String,
    rule: usize,
    client: String,
}

#[derive(Debug)]
struct Incident {
    data: IncidentData,
    last_seen_at: Instant,
    last_sent_at: Instant,
    dirty: bool,
}

/// What [`Grouper::add`] did with a finding.
#[derive(Debug)]
pub enum Added {
    /// A new incident: send this "firing" now.
    New(Box<Notification>),
    /// Counted into an open incident.
    Updated,
    /// A new incident was needed but `max_incidents` are open: dropped.
    Full,
}

/// The open incidents.
#[derive(Debug)]
pub struct Grouper {
    group_window: Duration,
    resolve_after: Duration,
    max_incidents: usize,
    open: HashMap<Key, Incident>,
}

impl Grouper {
    /// No incident open yet.
    pub fn new(cfg: &AlertsConfig) -> Self {
        Self {
            group_window: cfg.group_window,
            resolve_after: cfg.resolve_after,
            max_incidents: cfg.max_incidents,
            open: HashMap::new(),
        }
    }

    /// Open incidents.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when no incident is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Counts a finding that arrived at `now`.
    pub fn add(&mut self, f: Finding, now: Instant) -> Added {
        let key = Key { workload: f.workload, policy: f.policy, rule: f.rule, client: clip_owned(f.client) };
        if let Some(inc) = self.open.get_mut(&key) {
            let d = &mut inc.data;
            d.count += 1;
            d.severity = d.severity.max(f.severity);
            d.action = f.action;
            d.dry_run &= f.dry_run;
            d.last_seen = d.last_seen.max(f.at);
            if d.sample_request_ids.len() < MAX_SAMPLES {
                d.sample_request_ids.push(clip(&f.request_id));
            }
            if f.score > d.score {
                d.score = f.score;
                d.band = f.band;
                d.threshold = f.threshold;
                d.reasons = reasons(&f.reasons);
                d.peer_identity = f.peer_identity.as_deref().map(clip);
                d.jwt_subject = f.jwt_subject.as_deref().map(clip);
                d.method = clip(&f.method);
                d.path = clip(&f.path);
            }
            inc.last_seen_at = now;
            inc.dirty = true;
            return Added::Updated;
        }
        if self.open.len() >= self.max_incidents {
            return Added::Full;
        }
        let fingerprint = fingerprint(&key);
        let millis = f.at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let data = IncidentData {
            incident_id: format!("{fingerprint}-{millis}"),
            fingerprint,
            workload: key.workload.clone(),
            policy: key.policy.clone(),
            rule: key.rule,
            client: key.client.clone(),
            severity: f.severity,
            action: f.action,
            band: f.band,
            score: f.score,
            threshold: f.threshold,
            reasons: reasons(&f.reasons),
            peer_identity: f.peer_identity.as_deref().map(clip),
            jwt_subject: f.jwt_subject.as_deref().map(clip),
            method: clip(&f.method),
            path: clip(&f.path),
            sample_request_ids: vec![clip(&f.request_id)],
            count: 1,
            dry_run: f.dry_run,
            starts_at: f.at,
            last_seen: f.at,
            ends_at: None,
        };
        let note = notification(Status::Firing, SystemTime::now(), data.clone());
        self.open.insert(key, Incident { data, last_seen_at: now, last_sent_at: now, dirty: false });
        Added::New(Box::new(note))
    }

    /// Notifications due at `now`: an updated "firing" for incidents with
    /// new findings whose last notification is at least `group_window` old,
    /// and "resolved" for incidents quiet for `resolve_after` (then forgotten).
    pub fn due(&mut self, now: Instant, wall: SystemTime) -> Vec<Notification> {
        let mut out = Vec::new();
        let (window, resolve) = (self.group_window, self.resolve_after);
        self.open.retain(|_, inc| {
            if now.saturating_duration_since(inc.last_seen_at) >= resolve {
                inc.data.ends_at = Some(wall);
                out.push(notification(Status::Resolved, wall, inc.data.clone()));
                return false;
            }
            if inc.dirty && now.saturating_duration_since(inc.last_sent_at) >= window {
                inc.dirty = false;
                inc.last_sent_at = now;
                out.push(notification(Status::Firing, wall, inc.data.clone()));
            }
            true
        });
        out
    }

    /// Up to `limit` open incidents, largest count first, for the admin view.
    pub fn view(&self, limit: usize) -> Vec<serde_json::Value> {
        let mut all: Vec<&IncidentData> = self.open.values().map(|i| &i.data).collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
        all.into_iter()
            .take(limit)
            .map(|d| {
                serde_json::json!({
                    "incident_id": d.incident_id,
                    "fingerprint": d.fingerprint,
                    "workload": d.workload,
                    "policy": d.policy,
                    "rule": d.rule,
                    "client": d.client,
                    "severity": d.severity.as_str(),
                    "action": d.action,
                    "count": d.count,
                    "score": d.score,
                    "dry_run": d.dry_run,
                    "starts_at": rfc3339(d.starts_at),
                    "last_seen": rfc3339(d.last_seen),
                })
            })
            .collect()
    }
}

/// A delivery queue of one sink, as the grouping task sees it.
pub type SinkQueue = (String, mpsc::Sender<Arc<Notification>>, Arc<SinkStats>);

/// The grouping task: drains the findings queue into `grouper` and, on a
/// ticker (a quarter of the shorter window, between 10 ms and 1 s), sends
/// what is due to every sink's queue. Ends when every [`super::Alerts`]
/// handle is gone; dropping the sink queues then lets the sinks drain and end.
pub async fn run(
    mut rx: mpsc::Receiver<Finding>,
    grouper: Arc<Mutex<Grouper>>,
    cfg: Arc<AlertsConfig>,
    sinks: Vec<SinkQueue>,
    metrics: AlertMetrics,
    ungrouped: Arc<AtomicU64>,
) {
    let tick = (cfg.group_window.min(cfg.resolve_after) / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let mut taken = 0;
        let out = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                taken = n as u64;
                let now = Instant::now();
                let mut out = Vec::new();
                let mut g = grouper.lock().unwrap_or_else(PoisonError::into_inner);
                for f in batch.drain(..) {
                    match g.add(f, now) {
                        Added::New(n) => out.push(*n),
                        Added::Updated => {}
                        Added::Full => metrics.drop(super::metrics::ALL_SINKS, "incidents_full"),
                    }
                }
                metrics.open_incidents.set(g.len() as i64);
                out
            }
            _ = ticker.tick() => {
                let mut g = grouper.lock().unwrap_or_else(PoisonError::into_inner);
                let out = g.due(Instant::now(), SystemTime::now());
                metrics.open_incidents.set(g.len() as i64);
                out
            }
        };
        for note in out {
            dispatch(note, &sinks, &metrics);
        }
        ungrouped.fetch_sub(taken, Ordering::Relaxed);
    }
}

fn dispatch(note: Notification, sinks: &[SinkQueue], metrics: &AlertMetrics) {
    tracing::debug!(
        id = %note.id,
        status = note.status.as_str(),
        incident = %note.incident.incident_id,
        count = note.incident.count,
        "alert notification"
    );
    let note = Arc::new(note);
    for (name, tx, stats) in sinks {
        // Counted before the send so the sink never sees it below zero.
        stats.pending.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(Arc::clone(&note)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats.pending.fetch_sub(1, Ordering::Relaxed);
                metrics.drop(name, "queue_full");
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The sink task is gone (runtime shutting down): nothing to deliver to.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                stats.pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

fn notification(status: Status, at: SystemTime, incident: IncidentData) -> Notification {
    Notification { id: format!("msg_{:032x}", rand::random::<u128>()), status, at, incident }
}

/// Stable over restarts: SHA-256 of the identifying labels, first 8 bytes.
fn fingerprint(k: &Key) -> String {
    let mut h = Sha256::new();
    for part in [k.workload.as_bytes(), k.policy.as_bytes(), k.rule.to_string().as_bytes(), k.client.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut s = String::with_capacity(16);
    for b in &digest[..8] {
        // Writing into a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn reasons(r: &[String]) -> Vec<String> {
    r.iter().take(MAX_REASONS).map(|s| clip(s)).collect()
}

/// [`clip`] without a copy when nothing is cut (the key of every finding).
fn clip_owned(s: String) -> String {
    if s.len() <= MAX_FIELD {
        s
    } else {
        clip(&s)
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_FIELD) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
