//! `AnomalyPolicy`: what the sidecar does with the detector's verdicts. Per
//! route (the first rule whose `to` matches), an action per score band and
//! for per-client signals; escalation of repeat offenders, decay back,
//! quarantine; warm-up length, false-positive budget, dry-run and what to do
//! when the detector is unavailable.
//!
//! This crate never depends on the detector: the proxy maps the detector's
//! band to [`Band`] and hands it over as a [`Finding`]. The per-client state
//! lives in [`Offenders`], a bounded book that takes the time as an argument
//! (no clock here).

mod offenders;

use std::fmt;
use std::time::Duration;

use crate::compile::{Attachment, Diagnostic, Location, Operation};
use crate::eval::RequestAttrs;
use crate::format::{RawAnomalyPolicy, RawLimit, RawOperation};
use crate::ratelimit::{period, Limit};

pub use offenders::Offenders;

/// The detector's score band for a request, as policies see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    /// Below the suspicious threshold.
    Normal,
    /// Between the suspicious and the anomalous thresholds.
    Suspicious,
    /// Above the anomalous threshold.
    Anomalous,
}

/// What the detector found for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    /// The request's band.
    pub band: Band,
    /// True when the verdict comes from the client's behaviour across
    /// requests (extraction, flood, scan) rather than from this request alone.
    pub client_signal: bool,
    /// The score (for logs; the band already carries the decision).
    pub score: f64,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyAction {
    /// Pass.
    Allow,
    /// Pass; log and alert.
    Audit,
    /// Pass only within this reduced per-client rate (the proxy owns the bucket).
    RateLimit(Limit),
    /// Refuse (403 with the reason code).
    Block,
    /// Refuse this and every request of the client for this long (the time
    /// left when the client is already quarantined).
    Quarantine(Duration),
}

impl AnomalyAction {
    /// The stable name used in cases, logs and metrics: `allow`, `audit`,
    /// `rate_limited`, `block`, `quarantined`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Audit => "audit",
            Self::RateLimit(_) => "rate_limited",
            Self::Block => "block",
            Self::Quarantine(_) => "quarantined",
        }
    }
}

/// An action as written in a policy, before the policy's rate and
/// quarantine duration are attached. Ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActionKind {
    /// `allow`.
    Allow,
    /// `audit`.
    Audit,
    /// `rate-limit`.
    RateLimit,
    /// `block`.
    Block,
    /// `quarantine`.
    Quarantine,
}

impl ActionKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allow" => Self::Allow,
            "audit" => Self::Audit,
            "rate-limit" => Self::RateLimit,
            "block" => Self::Block,
            "quarantine" => Self::Quarantine,
            _ => return None,
        })
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Audit => "audit",
            Self::RateLimit => "rate-limit",
            Self::Block => "block",
            Self::Quarantine => "quarantine",
        })
    }
}

/// What happens when the detector cannot give a verdict (overloaded, unavailable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Requests pass (counted).
    Open,
    /// Requests are blocked (counted).
    Closed,
}

/// A checked rule: which requests, and the action per band.
#[derive(Debug, Clone)]
pub struct AnomalyRule {
    /// Any of these operations; empty: every request.
    pub to: Vec<Operation>,
    /// Action in the suspicious band.
    pub suspicious: ActionKind,
    /// Action in the anomalous band.
    pub anomalous: ActionKind,
    /// Action on a per-client signal.
    pub client_signal: ActionKind,
}

/// A checked escalation step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscalationStep {
    /// Flagged requests ...
    pub flagged: u32,
    /// ... within this window ...
    pub within: Duration,
    /// ... hold the client at (at least) this action.
    pub action: ActionKind,
}

/// A checked `AnomalyPolicy`.
#[derive(Debug, Clone)]
pub struct AnomalyPolicy {
    /// `metadata.name`.
    pub name: String,
    /// Which workloads it applies to.
    pub attach: Attachment,
    /// Where the document starts.
    pub location: Location,
    /// Decisions are computed and reported, never enforced.
    pub dry_run: bool,
    /// Overrides the detector's warm-up length (samples), if set.
    pub warmup_samples: Option<u64>,
    /// Overrides the detector's false-positive budget, if set; in (0, 0.5).
    pub fp_budget: Option<f64>,
    /// What happens when the detector is unavailable.
    pub fail_mode: FailMode,
    /// Rules; the first whose `to` matches applies.
    pub rules: Vec<AnomalyRule>,
    /// The reduced per-client rate of `rate-limit`.
    pub rate_limit: Limit,
    /// How long `quarantine` refuses a client.
    pub quarantine: Duration,
    /// Escalation steps, `flagged` strictly increasing.
    pub escalation: Vec<EscalationStep>,
    /// A client with no flagged request for this long starts over.
    pub decay: Duration,
}

impl AnomalyPolicy {
    /// The warm-up length this policy asks for, if any.
    pub fn warmup_samples(&self) -> Option<u64> {
        self.warmup_samples
    }

    /// The false-positive budget this policy asks for, if any.
    pub fn fp_budget(&self) -> Option<f64> {
        self.fp_budget
    }

    /// Open or closed when the detector is unavailable.
    pub fn fail_mode(&self) -> FailMode {
        self.fail_mode
    }

    /// The 0-based index of the first rule that covers `req`.
    pub fn rule_for(&self, req: &RequestAttrs<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.to.is_empty() || r.to.iter().any(|o| crate::eval::operation_matches(o, req)))
    }

    /// The checked action for `kind` with this policy's rate and quarantine.
    pub fn action(&self, kind: ActionKind) -> AnomalyAction {
        match kind {
            ActionKind::Allow => AnomalyAction::Allow,
            ActionKind::Audit => AnomalyAction::Audit,
            ActionKind::RateLimit => AnomalyAction::RateLimit(self.rate_limit),
            ActionKind::Block => AnomalyAction::Block,
            ActionKind::Quarantine => AnomalyAction::Quarantine(self.quarantine),
        }
    }
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyDecision {
    /// What to do.
    pub action: AnomalyAction,
    /// The policy that decided.
    pub policy: String,
    /// Its 1-based rule.
    pub rule: usize,
    /// Report, do not enforce.
    pub dry_run: bool,
    /// Stable code: `normal`, `suspicious`, `anomalous`, `client_signal`,
    /// `escalation`, `quarantined` or `detector_unavailable`.
    pub reason: &'static str,
    /// The 1-based escalation step that set the action, if any.
    pub escalation_step: Option<usize>,
}

/// The policy and 0-based rule that cover `req`: the first policy (in
/// order) with a rule whose `to` matches.
pub fn applicable<'p>(policies: &'p [AnomalyPolicy], req: &RequestAttrs<'_>) -> Option<(&'p AnomalyPolicy, usize)> {
    policies.iter().find_map(|p| p.rule_for(req).map(|r| (p, r)))
}

/// The decision when the detector could not judge `req` (overloaded or
/// unavailable): allow (`open`) or block (`closed`), reason
/// `detector_unavailable`; `None` when no policy covers the request.
pub fn unavailable(policies: &[AnomalyPolicy], req: &RequestAttrs<'_>) -> Option<AnomalyDecision> {
    let (p, rule) = applicable(policies, req)?;
    let action = match p.fail_mode {
        FailMode::Open => AnomalyAction::Allow,
        FailMode::Closed => AnomalyAction::Block,
    };
    Some(AnomalyDecision {
        action,
        policy: p.name.clone(),
        rule: rule + 1,
        dry_run: p.dry_run,
        reason: "detector_unavailable",
        escalation_step: None,
    })
}

/// Default reduced rate of `rate-limit`: 1 request per second, burst 2.
pub const DEFAULT_RATE_LIMIT: Limit = Limit { requests: 1, per: Duration::from_secs(1), burst: 2 };
/// Default quarantine: 10 minutes.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(600);
/// Default decay (unless an escalation window is longer): 10 minutes.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(600);
/// Largest `flagged` of an escalation step (bounds per-client memory).
pub const MAX_FLAGGED: u32 = 100;
/// Longest escalation window.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

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

#[cfg(test)]
mod tests;
