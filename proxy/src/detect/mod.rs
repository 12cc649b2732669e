//! The detector in the data path: scoring on the request path, learning on
//! a thread of its own, models swapped atomically.
//!
//! - Scoring ([`Detector::judge`]) calls `meshward_detector::score`, the same
//!   function `meshward eval` calls, on the request as the client sent it
//!   (headers before meshward adds or strips any, the first
//!   `max_inspect_bytes` of the body) with the arrival time in Unix seconds.
//!   Per-client windows are sharded by client key so concurrent requests of
//!   different clients do not wait on one lock.
//! - The band goes to the `AnomalyPolicy` offender book (pure, in the
//!   `policies` crate), which decides the action, escalation and quarantine.
//! - Learning: samples of requests that nothing flagged or refused are handed
//!   to the learner thread over a bounded queue (full: dropped and counted),
//!   which it drains every 20 ms (a wake-up per request cost more CPU than
//!   scoring it, measured with perf);
//!   after warm-up at most `learn_per_second` of them (the rest skipped and
//!   counted), so learning stays a bounded cost at any request rate;
//!   each model it publishes is swapped in with `ArcSwap` and optionally
//!   written to `save_model` by that thread. The request path never waits for
//!   learning or file I/O.

pub mod alert;
pub mod body;
pub mod config;
pub mod enforce;
pub mod record;
mod views;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use meshward_detector::{score, Band, Clients, Learned, Learner, Model, Request, Sample, Verdict};
use meshward_policies::anomaly::{self, AnomalyDecision, AnomalyPolicy, Finding, Offenders};
use meshward_policies::eval::RequestAttrs;

pub use config::{ClientKey, DetectorConfig, RawDetector};
pub use views::{DecisionView, Views};

use crate::metrics::Metrics;

/// Shards of the per-client windows.
const SHARDS: usize = 16;

/// What the detector made of one request.
pub struct Judged {
    /// The detector's verdict (band, score, reasons).
    pub verdict: Verdict,
    /// What the anomaly policies decided; `None` when none applies.
    pub decision: Option<AnomalyDecision>,
    /// The sample to learn from, if the request ends up allowed.
    pub sample: Sample,
    /// The anomalous threshold of the model that judged.
    pub threshold: f64,
}

/// Why the detector gave no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// More than `max_concurrent` requests were being scored.
    Overloaded,
}

/// The detector runtime shared by every inbound request.
pub struct Detector {
    cfg: DetectorConfig,
    model: Arc<ArcSwap<Model>>,
    shards: Box<[Mutex<Clients>]>,
    learn_queue: Option<Arc<LearnQueue>>,
    offenders: Mutex<Offenders>,
    in_flight: AtomicUsize,
    /// Second and count of samples learned in it (the `learn_per_second` budget).
    learn_budget: Mutex<(u64, u32)>,
    /// Admin views: recent decisions, suspicious clients, learning state.
    pub views: Arc<Views>,
    /// `detector.record`, when set.
    pub recorder: Option<record::Recorder>,
    metrics: Arc<Metrics>,
}

/// Unix seconds now, the detector's clock.
pub fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Detector {
    /// Builds the detector: loads `load_model` if set (an unreadable or
    /// invalid snapshot is an error: fail closed at start), starts the
    /// learner thread when learning is on.
    pub fn start(cfg: DetectorConfig, metrics: Arc<Metrics>) -> anyhow::Result<Detector> {
        let model = match &cfg.load_model {
            None => Model::empty(),
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("detector.load_model: cannot read {}: {e}", path.display()))?;
                Model::from_snapshot(&bytes)
                    .map_err(|e| anyhow::anyhow!("detector.load_model: {}: {e}", path.display()))?
            }
        };
        let views = Arc::new(Views::new(&model));
        metrics.detector_model_version.set(i64::try_from(model.version).unwrap_or(i64::MAX));
        let model = Arc::new(ArcSwap::from_pointee(model));
        let per_shard = cfg.model.max_clients.div_ceil(SHARDS).max(1);
        // One request count for all shards (a gateway's share is of all
        // traffic) and one table of unseen values (how many clients send each).
        let shared = std::sync::Arc::default();
        let shards =
            (0..SHARDS).map(|_| Mutex::new(Clients::sharing(per_shard, std::sync::Arc::clone(&shared)))).collect();
        let learn_queue = if cfg.enabled && cfg.learn {
            let queue = Arc::new(LearnQueue { pending: Mutex::new(Vec::new()), cap: cfg.learn_queue });
            let learner = Learner::from_model(cfg.model.clone(), &model.load());
            let (model, views, metrics, save) = (model.clone(), views.clone(), metrics.clone(), cfg.save_model.clone());
            let q = queue.clone();
            std::thread::Builder::new()
                .name("meshward-learner".into())
                .spawn(move || learn_loop(learner, &q, &model, &views, &metrics, save.as_deref()))?;
            Some(queue)
        } else {
            None
        };
        let recorder = match &cfg.record {
            Some(path) => {
                Some(record::Recorder::start(path, cfg.record_max_bytes, cfg.record_credentials, metrics.clone())?)
            }
            None => None,
        };
        Ok(Detector {
            recorder,
            offenders: Mutex::new(Offenders::new(cfg.max_offenders)),
            cfg,
            model,
            shards,
            learn_queue,
            in_flight: AtomicUsize::new(0),
            learn_budget: Mutex::new((0, 0)),
            views,
            metrics,
        })
    }

    /// The settings.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// The model scoring now.
    pub fn model(&self) -> Arc<Model> {
        self.model.load_full()
    }

    /// The client key of a request: the first configured source present.
    pub fn client_key(&self, jwt: Option<&str>, peer: Option<&str>, ip: std::net::IpAddr) -> String {
        for k in &self.cfg.client_key {
            match k {
                ClientKey::Jwt => {
                    if let Some(j) = jwt.filter(|j| !j.is_empty()) {
                        return format!("jwt:{j}");
                    }
                }
                ClientKey::Peer => {
                    if let Some(p) = peer {
                        return p.to_owned();
                    }
                }
                ClientKey::Ip => return ip.to_string(),
            }
        }
        ip.to_string()
    }

    fn shard(&self, client: &str) -> &Mutex<Clients> {
        let i = (meshward_detector::features::fnv1a(client.as_bytes()) as usize) % self.shards.len();
        &self.shards[i]
    }

    /// Scores `req` and asks the anomaly policies what to do about it.
    /// `Err` when the detector is overloaded (the caller applies the
    /// policy's fail mode).
    pub fn judge(
        &self,
        req: &Request<'_>,
        attrs: &RequestAttrs<'_>,
        policies: &[AnomalyPolicy],
    ) -> Result<Judged, Unavailable> {
        let _slot = Slot::take(&self.in_flight, self.cfg.max_concurrent).ok_or(Unavailable::Overloaded)?;
        let model = self.model.load();
        let scored = {
            let mut clients = self.shard(req.client).lock().unwrap_or_else(|p| p.into_inner());
            score(&model, &mut clients, req)
        };
        let verdict = scored.verdict;
        if verdict.band != Band::WarmingUp {
            self.metrics.detector_score.observe(verdict.score);
        }
        let decision = if policies.is_empty() {
            None
        } else {
            let finding = finding(&verdict, model.samples, policies);
            let mut book = self.offenders.lock().unwrap_or_else(|p| p.into_inner());
            book.decide(policies, attrs, req.client, &finding, req.ts)
        };
        Ok(Judged { verdict, decision, sample: scored.sample, threshold: model.thresholds.anomalous })
    }

    /// Sets the offender-book gauges (called when `/metrics` is read).
    pub fn refresh_gauges(&self) {
        let book = self.offenders.lock().unwrap_or_else(|p| p.into_inner());
        self.metrics.detector_offenders.set(i64::try_from(book.len()).unwrap_or(i64::MAX));
        self.metrics.detector_offender_evictions.set(i64::try_from(book.evictions()).unwrap_or(i64::MAX));
    }

    /// Hands the sample of an allowed request to the learner (never waits).
    /// During warm-up every sample goes; afterwards `learn_per_second` at most.
    pub fn learn(&self, sample: Sample) {
        let Some(queue) = &self.learn_queue else { return };
        if !sample.warming_up {
            let second = sample.ts.max(0.0) as u64;
            let mut budget = self.learn_budget.lock().unwrap_or_else(|p| p.into_inner());
            if budget.0 != second {
                *budget = (second, 0);
            }
            if budget.1 >= self.cfg.learn_per_second {
                drop(budget);
                self.metrics.detector_learning.get_or_create(&result("skipped")).inc();
                return;
            }
            budget.1 += 1;
        }
        let mut pending = queue.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() < queue.cap {
            pending.push(sample);
        } else {
            drop(pending);
            self.metrics.detector_learning.get_or_create(&result("dropped")).inc();
        }
    }

    /// Feeds the app's response to the client's window.
    pub fn observe_response(&self, client: &str, status: u16, latency_secs: f64, ts: f64) {
        let mut clients = self.shard(client).lock().unwrap_or_else(|p| p.into_inner());
        clients.observe_response(client, status, latency_secs, ts);
    }
}

/// The policy's view of a verdict: the band (normal while the model, or the
/// policy's own warm-up, is not done) and whether per-client behaviour made it.
fn finding(verdict: &Verdict, samples: u64, policies: &[AnomalyPolicy]) -> Finding {
    let warm = policies.iter().map(|p| p.warmup_samples.unwrap_or(0)).max().unwrap_or(0);
    let band = match verdict.band {
        Band::WarmingUp | Band::Normal => anomaly::Band::Normal,
        _ if samples < warm => anomaly::Band::Normal,
        Band::Suspicious => anomaly::Band::Suspicious,
        Band::Anomalous => anomaly::Band::Anomalous,
    };
    let client_signal = band != anomaly::Band::Normal
        && verdict.reasons.first().is_some_and(|r| r.family == meshward_detector::score::Family::Client);
    Finding { band, client_signal, score: verdict.score }
}

fn result(r: &'static str) -> crate::metrics::ResultLabel {
    crate::metrics::ResultLabel { result: r }
}

/// One of `max` concurrent scoring slots, released on drop.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(counter: &'a AtomicUsize, max: usize) -> Option<Slot<'a>> {
        let prev = counter.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(counter);
        (prev < max).then_some(slot)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Samples waiting for the learner thread.
struct LearnQueue {
    pending: Mutex<Vec<Sample>>,
    cap: usize,
}

/// How often the learner thread takes the waiting samples.
const LEARN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// The learner thread: every [`LEARN_EVERY`] it learns the waiting samples
/// and swaps in each published model; it ends with the detector.
fn learn_loop(
    mut learner: Learner,
    queue: &Arc<LearnQueue>,
    model: &ArcSwap<Model>,
    views: &Views,
    metrics: &Metrics,
    save: Option<&std::path::Path>,
) {
    let mut batch = Vec::new();
    while Arc::strong_count(queue) > 1 {
        std::thread::sleep(LEARN_EVERY);
        std::mem::swap(&mut batch, &mut *queue.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for sample in batch.drain(..) {
            let outcome = match learner.learn(&sample) {
                Learned::Learned => "learned",
                Learned::Refused => "refused",
            };
            metrics.detector_learning.get_or_create(&result(outcome)).inc();
            if let Some(next) = learner.maybe_publish() {
                publish(next, model, views, metrics, save);
            }
        }
    }
}

/// Swaps in a model the learner published (and saves it, if asked). The
/// model serves before `/detector` reports it: a client that sees
/// `warming_up: false` there gets verdicts from its next request on.
fn publish(next: Model, model: &ArcSwap<Model>, views: &Views, metrics: &Metrics, save: Option<&std::path::Path>) {
    let next = Arc::new(next);
    model.store(Arc::clone(&next));
    metrics.detector_model_swaps.inc();
    metrics.detector_model_version.set(i64::try_from(next.version).unwrap_or(i64::MAX));
    views.published(&next);
    tracing::debug!(version = next.version, samples = next.samples, ready = next.ready, "detector model swapped in");
    if let Some(path) = save {
        if let Err(e) = write_atomically(path, &next.snapshot()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the detector model");
        }
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
