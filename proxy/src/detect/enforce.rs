//! Phase 5 of the inbound request: score it, let the anomaly policies
//! decide, apply the action (forward, audit, reduced rate, 403, quarantine),
//! count it, record it for the admin views and raise an alert.

use meshward_detector::{Band, Request};
use meshward_policies::anomaly::{self, AnomalyAction, AnomalyDecision, AnomalyPolicy};
use meshward_policies::eval::RequestAttrs;
use meshward_policies::ratelimit::Bucket;

use super::{DecisionView, Detector, Judged};
use crate::http::error::ProxyError;
use crate::metrics::DetectorDecisionLabels;
use crate::ratelimit::Limiters;

/// The detector's part of an inbound request, for the access log, the
/// alert and learning.
#[derive(Debug, Default)]
pub struct Detected {
    /// Client key the request was scored under.
    pub client: String,
    /// Arrival time (Unix seconds) the request was scored at.
    pub ts: f64,
    /// Score in [0, 1].
    pub score: f64,
    /// Band name.
    pub band: &'static str,
    /// Action taken (`allow` when nothing applied).
    pub action: &'static str,
    /// The policy decision, if a policy applied.
    pub decision: Option<AnomalyDecision>,
    /// Top reasons in words.
    pub reasons: Vec<String>,
    /// Anomalous threshold of the model that judged.
    pub threshold: f64,
}

impl Detected {
    /// Whether an alert is due: a policy took (or in dry-run would have
    /// taken) an action other than allow.
    pub fn alerting(&self) -> bool {
        self.decision.as_ref().is_some_and(|d| d.action != AnomalyAction::Allow)
    }
}

/// Scores the request and applies the anomaly policies. `Err` refuses it;
/// `Ok` forwards it. Either way the returned [`Detected`] says what happened.
pub fn enforce(
    det: &Detector,
    policies: &[AnomalyPolicy],
    req: &Request<'_>,
    attrs: &RequestAttrs<'_>,
    limiters: &Limiters,
    request_id: &str,
) -> (Detected, Result<(), ProxyError>) {
    let mut out = Detected { client: req.client.to_owned(), ts: req.ts, action: "allow", ..Detected::default() };
    let judged = match det.judge(req, attrs, policies) {
        Ok(j) => j,
        Err(_overloaded) => {
            out.band = "unavailable";
            let decision = anomaly::unavailable(policies, attrs);
            let result = match &decision {
                Some(d) => {
                    let open = d.action == AnomalyAction::Allow;
                    let action = if open { "unavailable_open" } else { "unavailable_closed" };
                    count(det, action, "overloaded", d);
                    out.action = action;
                    if open || d.dry_run {
                        Ok(())
                    } else {
                        Err(ProxyError::DetectorUnavailable(which(d)))
                    }
                }
                None => Ok(()),
            };
            out.decision = decision;
            return (out, result);
        }
    };
    let Judged { verdict, decision, sample, threshold } = judged;
    out.score = verdict.score;
    out.band = verdict.band.as_str();
    out.threshold = threshold;
    if verdict.band >= Band::Suspicious {
        out.reasons = verdict.reasons.iter().take(3).map(meshward_detector::Reason::message).collect();
    }
    // Learn only from what nothing flagged: not by the detector, not by a policy.
    if !verdict.flagged() && decision.as_ref().is_none_or(|d| d.action == AnomalyAction::Allow) {
        det.learn(sample);
    }
    let Some(decision) = decision else { return (out, Ok(())) };
    let result = apply(&decision, req.client, limiters);
    out.action = match (&decision.action, &result) {
        (AnomalyAction::RateLimit(_), Ok(())) => "allow",
        (a, _) => a.name(),
    };
    if decision.action != AnomalyAction::Allow || verdict.band >= Band::Suspicious {
        if out.action != "allow" {
            count(det, out.action, decision.reason, &decision);
        }
        det.views.record(
            DecisionView {
                ts: req.ts,
                client: req.client.to_owned(),
                request: format!("{} {}", req.method, attrs.path),
                score: verdict.score,
                band: out.band,
                action: out.action,
                reason: decision.reason,
                policy: which(&decision),
                dry_run: decision.dry_run,
                reasons: out.reasons.clone(),
                request_id: request_id.to_owned(),
            },
            result.is_err() && !decision.dry_run,
        );
    }
    let result = if decision.dry_run { Ok(()) } else { result };
    out.decision = Some(decision);
    (out, result)
}

/// `policy 'NAME' rule N`.
fn which(d: &AnomalyDecision) -> String {
    format!("policy '{}' rule {}", d.policy, d.rule)
}

fn count(det: &Detector, action: &'static str, reason: &'static str, d: &AnomalyDecision) {
    let dry_run = if d.dry_run { "true" } else { "false" };
    det.metrics
        .detector_decisions
        .get_or_create(&DetectorDecisionLabels { action, reason, policy: d.policy.clone(), dry_run })
        .inc();
}

/// What the action does to this request (before dry-run is considered).
fn apply(d: &AnomalyDecision, client: &str, limiters: &Limiters) -> Result<(), ProxyError> {
    match d.action {
        AnomalyAction::Allow | AnomalyAction::Audit => Ok(()),
        AnomalyAction::Block => {
            Err(ProxyError::AnomalyRefused { which: which(d), code: "anomaly_blocked", retry_after_secs: None })
        }
        AnomalyAction::Quarantine(left) => Err(ProxyError::AnomalyRefused {
            which: which(d),
            code: "client_quarantined",
            retry_after_secs: Some(left.as_secs().max(1)),
        }),
        AnomalyAction::RateLimit(limit) => {
            // The reduced rate is its own bucket per policy and client, in the
            // same governor machinery as RateLimitPolicy.
            let policy = format!("anomaly:{}", d.policy);
            let bucket = Bucket { policy: &policy, rule: d.rule, key: client.to_owned(), limit, dry_run: d.dry_run };
            let (result, _reset) = limiters.check(&bucket);
            result.map_err(|over| {
                let ceil = |t: std::time::Duration| t.as_secs() + u64::from(t.subsec_nanos() > 0);
                ProxyError::RateLimited {
                    which: which(d),
                    retry_after_secs: ceil(over.retry_after).max(1),
                    limit: limit.requests,
                    window_secs: ceil(limit.per).max(1),
                }
            })
        }
    }
}
