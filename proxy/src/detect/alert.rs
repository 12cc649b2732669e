//! The alert a detector decision raises: evidence for the security team.

use std::time::{Duration, UNIX_EPOCH};

use meshward_policies::anomaly::AnomalyAction;

use super::enforce::Detected;
use crate::alerts::{Finding, Severity};
use crate::pipeline::InboundConn;
use crate::tls::SpiffeId;

/// The alert for a decision that did more than allow (see [`Detected::alerting`]).
/// `principal` is the verified JWT `iss/sub`, empty without one.
pub fn finding(
    d: &Detected,
    workload: &str,
    conn: &InboundConn,
    principal: &str,
    method: &http::Method,
    path: &str,
    request_id: &str,
) -> Finding {
    let (policy, rule, dry_run, action) = match &d.decision {
        Some(dec) => (dec.policy.clone(), dec.rule, dec.dry_run, dec.action),
        None => (String::new(), 0, false, AnomalyAction::Allow),
    };
    // Refusing a client is urgent; auditing and slowing it down are for review.
    let severity = match action {
        AnomalyAction::Block | AnomalyAction::Quarantine(_) if !dry_run => Severity::Critical,
        _ => Severity::Warning,
    };
    Finding {
        workload: workload.to_owned(),
        policy,
        rule,
        client: d.client.clone(),
        action: d.action,
        band: d.band,
        severity,
        score: d.score,
        threshold: d.threshold,
        reasons: d.reasons.clone(),
        peer_identity: conn.peer_identity.as_ref().map(|p| SpiffeId::as_str(p).to_owned()),
        jwt_subject: (!principal.is_empty()).then(|| principal.to_owned()),
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        request_id: request_id.to_owned(),
        dry_run,
        at: UNIX_EPOCH + Duration::from_secs_f64(d.ts.max(0.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_policies::anomaly::AnomalyDecision;

    #[test]
    fn blocking_is_critical_and_dry_run_or_audit_is_a_warning() {
        let conn = InboundConn {
            peer_identity: SpiffeId::parse("spiffe://c.local/ns/a/sa/b").ok(),
            client_addr: "127.0.0.1:1".parse().expect("addr"),
            app: "127.0.0.1:2".parse().expect("addr"),
        };
        let mut d = Detected {
            client: "jwt:iss/alice".into(),
            ts: 1_800_000_000.5,
            score: 0.93,
            band: "anomalous",
            action: "block",
            decision: Some(AnomalyDecision {
                action: AnomalyAction::Block,
                policy: "guard".into(),
                rule: 1,
                dry_run: false,
                reason: "anomalous",
                escalation_step: None,
            }),
            reasons: vec!["input 'x' 40x above the learned range".into()],
            threshold: 12.0,
        };
        let f = finding(&d, "ml/fraud", &conn, "iss/alice", &http::Method::POST, "/v2/models/fraud/infer", "t1");
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!((f.policy.as_str(), f.rule, f.action, f.band), ("guard", 1, "block", "anomalous"));
        assert_eq!(f.peer_identity.as_deref(), Some("spiffe://c.local/ns/a/sa/b"));
        assert_eq!(f.jwt_subject.as_deref(), Some("iss/alice"));
        assert_eq!(f.at.duration_since(UNIX_EPOCH).map(|t| t.as_secs()).unwrap_or(0), 1_800_000_000);
        if let Some(dec) = d.decision.as_mut() {
            dec.dry_run = true;
        }
        assert_eq!(finding(&d, "w", &conn, "", &http::Method::GET, "/", "t2").severity, Severity::Warning);
        assert!(finding(&d, "w", &conn, "", &http::Method::GET, "/", "t2").jwt_subject.is_none());
    }
}
