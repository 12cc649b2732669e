//! What the admin server shows of the detector: model state, recent
//! decisions and the most suspicious clients. Bounded, updated only for
//! requests that were not plainly normal, read only by the admin server.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use meshward_detector::Model;
use serde_json::{json, Value};

/// Recent decisions kept.
const RECENT: usize = 200;
/// Clients kept in the suspicious-clients view.
const SUSPECTS: usize = 1000;

/// One decision, for `/detector/decisions`.
#[derive(Debug, Clone)]
pub struct DecisionView {
    /// Unix seconds.
    pub ts: f64,
    /// Client key.
    pub client: String,
    /// Method and path.
    pub request: String,
    /// Score in [0, 1].
    pub score: f64,
    /// Band.
    pub band: &'static str,
    /// Action taken (or that dry-run would have taken).
    pub action: &'static str,
    /// Reason code of the decision.
    pub reason: &'static str,
    /// `policy 'NAME' rule N`, or empty.
    pub policy: String,
    /// Dry-run: not enforced.
    pub dry_run: bool,
    /// Top reasons in words.
    pub reasons: Vec<String>,
    /// Request id (trace id).
    pub request_id: String,
}

#[derive(Debug, Clone, Default)]
struct Suspect {
    flagged: u64,
    refused: u64,
    max_score: f64,
    last_seen: f64,
    last_reasons: Vec<String>,
}

#[derive(Debug, Default)]
struct ModelState {
    version: u64,
    samples: u64,
    refused: u64,
    ready: bool,
    suspicious: f64,
    anomalous: f64,
    fp_budget: f64,
    last_swap: Option<SystemTime>,
}

/// The admin views of the detector.
#[derive(Debug, Default)]
pub struct Views {
    model: Mutex<ModelState>,
    recent: Mutex<VecDeque<DecisionView>>,
    suspects: Mutex<HashMap<String, Suspect>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Views {
    /// Views starting from `model`.
    pub fn new(model: &Model) -> Views {
        let v = Views::default();
        v.set_model(model, None);
        v
    }

    fn set_model(&self, m: &Model, at: Option<SystemTime>) {
        let mut s = lock(&self.model);
        *s = ModelState {
            version: m.version,
            samples: m.samples,
            refused: m.refused,
            ready: m.ready,
            suspicious: m.thresholds.suspicious,
            anomalous: m.thresholds.anomalous,
            fp_budget: m.fp_budget,
            last_swap: at.or(s.last_swap),
        };
    }

    /// A new model was swapped in.
    pub fn published(&self, m: &Model) {
        self.set_model(m, Some(SystemTime::now()));
    }

    /// Records a decision that was not plainly normal.
    pub fn record(&self, d: DecisionView, refused: bool) {
        {
            let mut suspects = lock(&self.suspects);
            if !suspects.contains_key(&d.client) && suspects.len() >= SUSPECTS {
                // Forget the client seen longest ago (a linear scan of at
                // most SUSPECTS entries, only when a new client is flagged).
                let oldest =
                    suspects.iter().min_by(|a, b| a.1.last_seen.total_cmp(&b.1.last_seen)).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    suspects.remove(&k);
                }
            }
            let s = suspects.entry(d.client.clone()).or_default();
            s.flagged += 1;
            s.refused += u64::from(refused);
            s.max_score = s.max_score.max(d.score);
            s.last_seen = d.ts;
            s.last_reasons.clone_from(&d.reasons);
        }
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(d);
    }

    /// `/detector`: model state and warm-up progress.
    pub fn model_json(&self, warmup_samples: u64) -> Value {
        let s = lock(&self.model);
        let swapped = s.last_swap.map(|t| humantime::format_rfc3339_seconds(t).to_string());
        json!({
            "model_version": s.version,
            "samples_learned": s.samples,
            "samples_refused": s.refused,
            "warming_up": !s.ready,
            "warmup": {"samples": s.samples.min(warmup_samples), "of": warmup_samples},
            "thresholds": {"suspicious": s.suspicious, "anomalous": s.anomalous},
            "fp_budget": s.fp_budget,
            "last_model_swap": swapped,
        })
    }

    /// `/detector/clients`: the most suspicious clients, highest score first.
    pub fn clients_json(&self, top: usize) -> Value {
        let suspects = lock(&self.suspects);
        let mut list: Vec<(&String, &Suspect)> = suspects.iter().collect();
        list.sort_by(|a, b| b.1.max_score.total_cmp(&a.1.max_score).then(b.1.flagged.cmp(&a.1.flagged)));
        let clients: Vec<Value> = list
            .into_iter()
            .take(top)
            .map(|(k, s)| {
                json!({"client": k, "flagged": s.flagged, "refused": s.refused, "max_score": s.max_score,
                       "last_seen": s.last_seen, "reasons": s.last_reasons})
            })
            .collect();
        json!({ "clients": clients })
    }

    /// `/detector/decisions`: the latest decisions, newest first.
    pub fn decisions_json(&self) -> Value {
        let recent = lock(&self.recent);
        let list: Vec<Value> = recent
            .iter()
            .rev()
            .map(|d| {
                json!({"ts": d.ts, "client": d.client, "request": d.request, "score": d.score, "band": d.band,
                       "action": d.action, "reason": d.reason, "policy": d.policy, "dry_run": d.dry_run,
                       "reasons": d.reasons, "request_id": d.request_id})
            })
            .collect();
        json!({ "decisions": list })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(client: &str, score: f64, ts: f64) -> DecisionView {
        DecisionView {
            ts,
            client: client.into(),
            request: "POST /v2/models/m/infer".into(),
            score,
            band: "anomalous",
            action: "block",
            reason: "anomalous",
            policy: "policy 'guard' rule 1".into(),
            dry_run: false,
            reasons: vec!["input 'x' 40x above the learned range".into()],
            request_id: "t1".into(),
        }
    }

    #[test]
    fn views_are_bounded_and_ordered() {
        let v = Views::new(&Model::empty());
        for i in 0..(SUSPECTS + 50) {
            v.record(decision(&format!("c{i}"), 0.5 + (i % 7) as f64 / 100.0, i as f64), true);
        }
        assert_eq!(lock(&v.suspects).len(), SUSPECTS);
        assert!(!lock(&v.suspects).contains_key("c0"), "the oldest client is forgotten first");
        assert_eq!(lock(&v.recent).len(), RECENT);
        let top = v.clients_json(3);
        let scores: Vec<f64> =
            top["clients"].as_array().map_or(vec![], |a| a.iter().filter_map(|c| c["max_score"].as_f64()).collect());
        assert_eq!(scores.len(), 3);
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        let d = v.decisions_json();
        assert_eq!(d["decisions"][0]["client"], format!("c{}", SUSPECTS + 49));
        assert_eq!(v.model_json(1000)["warming_up"], true);
    }
}
