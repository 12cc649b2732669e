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

mod check;
mod offenders;

use std::fmt;
use std::time::Duration;

use crate::compile::{Attachment, Location, Operation};
use crate::eval::RequestAttrs;
use crate::ratelimit::Limit;

pub(crate) use check::compile;
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

#[cfg(test)]
mod tests;
