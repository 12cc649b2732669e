//! Checking an `AnomalyPolicy` as written into the checked type, with
//! diagnostics that quote the bad value.

use std::time::Duration;

use super::{
    ActionKind, AnomalyPolicy, AnomalyRule, EscalationStep, FailMode, DEFAULT_DECAY, DEFAULT_QUARANTINE,
    DEFAULT_RATE_LIMIT, MAX_FLAGGED, MAX_WINDOW,
};
use crate::compile::{Attachment, Diagnostic, Location, Operation};
use crate::format::{RawAnomalyPolicy, RawLimit, RawOperation};
use crate::ratelimit::{period, Limit};

/// Checks one `AnomalyPolicy`; `err(needle, message)` makes a located diagnostic.
pub(crate) fn compile(
    raw: RawAnomalyPolicy,
    attach: Attachment,
    location: Location,
    op: &mut dyn FnMut(&str, &RawOperation, &mut Vec<Diagnostic>) -> Operation,
    err: &dyn Fn(&str, String) -> Diagnostic,
) -> Result<AnomalyPolicy, Vec<Diagnostic>> {
    let name = raw.metadata.name;
    let spec = raw.spec;
    let ctx = format!("anomaly policy '{name}'");
    let mut diags = Vec::new();
    let duration = |field: &str, v: &str, diags: &mut Vec<Diagnostic>| {
        period(v).unwrap_or_else(|| {
            diags.push(err(
                v,
                format!("{ctx}: {field}: \"{v}\" is not a duration (expected e.g. 500ms, 30s, 10m, 1h; not zero)"),
            ));
            Duration::from_secs(1)
        })
    };
    // Located at `field: value`, so that a common value such as "audit" is
    // found on its own line and not at its first mention.
    let action = |rule: usize, field: &str, v: Option<&str>, default: ActionKind, diags: &mut Vec<Diagnostic>| match v {
        None => default,
        Some(v) => ActionKind::parse(v).unwrap_or_else(|| {
            diags.push(err(
                &format!("{field}: {v}"),
                format!(
                    "{ctx}: rule {rule}: {field}: unknown action \"{v}\" \
                     (expected allow, audit, rate-limit, block or quarantine)"
                ),
            ));
            default
        }),
    };

    if spec.warmup_samples == Some(0) {
        diags.push(err("warmupSamples", format!("{ctx}: warmupSamples must be at least 1 (got 0)")));
    }
    if let Some(b) = spec.false_positive_budget {
        if !(b > 0.0 && b < 0.5) {
            diags.push(err(
                "falsePositiveBudget",
                format!("{ctx}: falsePositiveBudget {b} is outside (0, 0.5) (e.g. 0.001 for one in a thousand)"),
            ));
        }
    }
    let fail_mode = match spec.on_detector_unavailable.as_deref() {
        None | Some("open") => FailMode::Open,
        Some("closed") => FailMode::Closed,
        Some(other) => {
            diags.push(err(
                other,
                format!("{ctx}: onDetectorUnavailable: unknown mode \"{other}\" (expected open or closed)"),
            ));
            FailMode::Open
        }
    };

    if spec.rules.is_empty() {
        diags.push(err(
            "spec",
            format!("{ctx}: no rules (write `rules: [{{}}]` to cover every request with the default actions)"),
        ));
    }
    let mut rules = Vec::new();
    for (i, r) in spec.rules.into_iter().enumerate() {
        let rctx = format!("{ctx}, rule {}", i + 1);
        let to = r.to.iter().map(|t| op(&rctx, &t.operation, &mut diags)).collect();
        rules.push(AnomalyRule {
            to,
            suspicious: action(i + 1, "suspicious", r.suspicious.as_deref(), ActionKind::Audit, &mut diags),
            anomalous: action(i + 1, "anomalous", r.anomalous.as_deref(), ActionKind::Block, &mut diags),
            client_signal: action(i + 1, "clientSignal", r.client_signal.as_deref(), ActionKind::RateLimit, &mut diags),
        });
    }

    let rate_limit = match spec.rate_limit {
        None => DEFAULT_RATE_LIMIT,
        Some(RawLimit { requests, per, burst }) => {
            if requests == 0 {
                diags.push(err("requests", format!("{ctx}: rateLimit: requests must be at least 1 (got 0)")));
            }
            if burst == Some(0) {
                diags.push(err("burst", format!("{ctx}: rateLimit: burst must be at least 1 (got 0)")));
            }
            let per = duration("rateLimit.per", &per, &mut diags);
            Limit { requests: requests.max(1), per, burst: burst.unwrap_or(requests).max(1) }
        }
    };
    let quarantine =
        spec.quarantine.map_or(DEFAULT_QUARANTINE, |q| duration("quarantine.duration", &q.duration, &mut diags));

    let mut escalation: Vec<EscalationStep> = Vec::new();
    for (i, s) in spec.escalation.iter().enumerate() {
        let sctx = format!("escalation step {}", i + 1);
        let within = duration(&format!("{sctx}: within"), &s.within, &mut diags);
        if within > MAX_WINDOW {
            diags.push(err(&s.within, format!("{ctx}: {sctx}: within \"{}\" is longer than 24h", s.within)));
        }
        let needle = format!("flagged: {}", s.flagged);
        if s.flagged == 0 || s.flagged > MAX_FLAGGED {
            diags.push(err(&needle, format!("{ctx}: {sctx}: flagged {} is outside 1..={MAX_FLAGGED}", s.flagged)));
        }
        let action_at = format!("action: {}", s.action);
        let kind = match ActionKind::parse(&s.action) {
            Some(k @ (ActionKind::RateLimit | ActionKind::Block | ActionKind::Quarantine)) => Some(k),
            Some(k) => {
                diags.push(err(
                    &action_at,
                    format!(
                        "{ctx}: {sctx}: action \"{k}\" does not escalate (expected rate-limit, block or quarantine)"
                    ),
                ));
                None
            }
            None => {
                diags.push(err(
                    &action_at,
                    format!(
                        "{ctx}: {sctx}: unknown action \"{}\" (expected rate-limit, block or quarantine)",
                        s.action
                    ),
                ));
                None
            }
        };
        if let Some(prev) = escalation.last() {
            if s.flagged <= prev.flagged {
                diags.push(err(
                    &needle,
                    format!(
                        "{ctx}: {sctx}: flagged {} is not more than step {}'s {} (steps must increase)",
                        s.flagged, i, prev.flagged
                    ),
                ));
            }
            if let Some(k) = kind.filter(|k| *k < prev.action) {
                diags.push(err(
                    &action_at,
                    format!(
                        "{ctx}: {sctx}: action \"{k}\" is milder than step {i}'s \"{}\" (steps must not de-escalate)",
                        prev.action
                    ),
                ));
            }
        }
        // An invalid action was reported above; keep the step (as mild as
        // allowed) so that later steps are checked without follow-on errors.
        let action = kind.or(escalation.last().map(|p| p.action)).unwrap_or(ActionKind::RateLimit);
        escalation.push(EscalationStep { flagged: s.flagged, within, action });
    }
    let longest = escalation.iter().map(|s| s.within).max().unwrap_or_default();
    let decay = match spec.decay.as_deref() {
        None => DEFAULT_DECAY.max(longest),
        Some(d) => {
            let decay = duration("decay", d, &mut diags);
            if decay < longest {
                diags.push(err(
                    d,
                    format!(
                        "{ctx}: decay \"{d}\" is shorter than the longest escalation window ({}s): flagged requests \
                         would be forgotten before the window ends",
                        longest.as_secs_f64()
                    ),
                ));
            }
            decay
        }
    };
    if diags.is_empty() {
        Ok(AnomalyPolicy {
            name,
            attach,
            location,
            dry_run: spec.dry_run,
            warmup_samples: spec.warmup_samples,
            fp_budget: spec.false_positive_budget,
            fail_mode,
            rules,
            rate_limit,
            quarantine,
            escalation,
            decay,
        })
    } else {
        Err(diags)
    }
}
