//! Tests of `AnomalyPolicy`: parsing, validation, decisions, the offender book.

use super::*;
use crate::compile::{load_all, Workload};

const GUARD: &str = r#"apiVersion: meshward.dev/v1
kind: AnomalyPolicy
metadata: {name: inference-guard, namespace: ml}
spec:
  selector: {matchLabels: {app: fraud-model}}
  warmupSamples: 1000
  falsePositiveBudget: 0.001
  onDetectorUnavailable: closed
  rules:
    - to: [{operation: {methods: [POST], paths: ["/v2/models/{model}/infer"]}}]
      suspicious: audit
      anomalous: block
      clientSignal: rate-limit
    - suspicious: allow
      anomalous: audit
      clientSignal: quarantine
  rateLimit: {requests: 1, per: 1s, burst: 2}
  quarantine: {duration: 10m}
  escalation:
    - {flagged: 5, within: 1m, action: rate-limit}
    - {flagged: 20, within: 5m, action: quarantine}
  decay: 10m
"#;

fn load(yaml: &str) -> Vec<AnomalyPolicy> {
    match load_all(&[("a.yaml", yaml)]) {
        Ok(p) => p.anomaly,
        Err(d) => panic!("{}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
    }
}

fn errors(yaml: &str) -> Vec<String> {
    match load_all(&[("a.yaml", yaml)]) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

fn with_req<T>(method: &str, path: &str, f: impl FnOnce(&RequestAttrs<'_>) -> T) -> T {
    let headers: Vec<(&str, &str)> = Vec::new();
    let req = RequestAttrs {
        method,
        path,
        port: 8080,
        peer: None,
        source_ip: [10, 0, 0, 1].into(),
        headers: &headers,
        jwt: None,
    };
    f(&req)
}

const INFER: &str = "/v2/models/fraud/infer";

fn finding(band: Band) -> Finding {
    Finding { band, client_signal: false, score: 0.5 }
}

fn signal() -> Finding {
    Finding { band: Band::Normal, client_signal: true, score: 0.5 }
}

/// (action, reason, escalation step) of one decision.
fn decide(
    book: &mut Offenders,
    p: &[AnomalyPolicy],
    path: &str,
    client: &str,
    f: Finding,
    now: f64,
) -> Option<(AnomalyAction, &'static str, Option<usize>)> {
    with_req("POST", path, |req| book.decide(p, req, client, &f, now)).map(|d| (d.action, d.reason, d.escalation_step))
}

const LIMIT: Limit = Limit { requests: 1, per: Duration::from_secs(1), burst: 2 };
const TEN_MIN: Duration = Duration::from_secs(600);

#[test]
fn a_full_policy_loads_with_its_settings() {
    let p = load(GUARD);
    assert_eq!(p.len(), 1);
    let g = &p[0];
    assert_eq!((g.name.as_str(), g.attach.namespace.as_deref()), ("inference-guard", Some("ml")));
    assert_eq!((g.warmup_samples(), g.fp_budget(), g.fail_mode()), (Some(1000), Some(0.001), FailMode::Closed));
    assert_eq!((g.rate_limit, g.quarantine, g.decay), (LIMIT, TEN_MIN, TEN_MIN));
    assert_eq!(
        g.escalation,
        vec![
            EscalationStep { flagged: 5, within: Duration::from_secs(60), action: ActionKind::RateLimit },
            EscalationStep { flagged: 20, within: Duration::from_secs(300), action: ActionKind::Quarantine },
        ]
    );
    assert_eq!(g.location.to_string(), "a.yaml:1:1");
}

#[test]
fn defaults_are_documented_values() {
    let p = load("apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {name: g}\nspec:\n  rules: [{}]\n");
    let g = &p[0];
    let r = &g.rules[0];
    assert_eq!(
        (r.suspicious, r.anomalous, r.client_signal),
        (ActionKind::Audit, ActionKind::Block, ActionKind::RateLimit)
    );
    assert!(r.to.is_empty());
    assert_eq!((g.rate_limit, g.quarantine, g.decay), (DEFAULT_RATE_LIMIT, DEFAULT_QUARANTINE, DEFAULT_DECAY));
    assert_eq!((g.warmup_samples, g.fp_budget, g.fail_mode, g.dry_run), (None, None, FailMode::Open, false));
    // The default decay stretches to the longest escalation window.
    let p = load(
        "apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {name: g}\nspec:\n  rules: [{}]\n  escalation: [{flagged: 3, within: 1h, action: block}]\n",
    );
    assert_eq!(p[0].decay, Duration::from_secs(3600));
}

#[test]
fn invalid_values_are_refused_with_positions_and_quotes() {
    let bad = GUARD
        .replace("anomalous: block", "anomalous: blokc")
        .replace("0.001", "0.7")
        .replace("duration: 10m", "duration: 0s")
        .replace("flagged: 20", "flagged: 4")
        .replace("action: quarantine}", "action: audit}")
        .replace("decay: 10m", "decay: 30s")
        .replace("closed", "maybe");
    let e = errors(&bad);
    let want = [
        "a.yaml:12:7: anomaly policy 'inference-guard': rule 1: anomalous: unknown action \"blokc\" (expected allow, audit, rate-limit, block or quarantine)",
        "a.yaml:7:3: anomaly policy 'inference-guard': falsePositiveBudget 0.7 is outside (0, 0.5) (e.g. 0.001 for one in a thousand)",
        "a.yaml:8:26: anomaly policy 'inference-guard': onDetectorUnavailable: unknown mode \"maybe\" (expected open or closed)",
        "a.yaml:18:26: anomaly policy 'inference-guard': quarantine.duration: \"0s\" is not a duration (expected e.g. 500ms, 30s, 10m, 1h; not zero)",
        "a.yaml:21:8: anomaly policy 'inference-guard': escalation step 2: flagged 4 is not more than step 1's 5 (steps must increase)",
        "a.yaml:21:32: anomaly policy 'inference-guard': escalation step 2: action \"audit\" does not escalate (expected rate-limit, block or quarantine)",
        "a.yaml:22:10: anomaly policy 'inference-guard': decay \"30s\" is shorter than the longest escalation window (300s): flagged requests would be forgotten before the window ends",
    ];
    for w in want {
        assert!(e.iter().any(|d| d == w), "missing {w}\n got {e:#?}");
    }
    assert_eq!(e.len(), want.len(), "{e:#?}");
    // An invalid step action is reported once, without follow-on errors for later steps.
    let e =
        errors(&GUARD.replace("action: quarantine}", "action: audit}\n    - {flagged: 30, within: 5m, action: block}"));
    assert_eq!(e.len(), 1, "{e:#?}");

    // Steps that de-escalate, a zero rate, a flagged count out of range.
    let e = errors(
        "apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {name: g}\nspec:\n  rules: [{}]\n  rateLimit: {requests: 0, per: 1s}\n  escalation:\n  - {flagged: 2, within: 1m, action: quarantine}\n  - {flagged: 500, within: 2d, action: block}\n",
    )
    .join("\n");
    assert!(e.contains("a.yaml:6:15: anomaly policy 'g': rateLimit: requests must be at least 1 (got 0)"), "{e}");
    assert!(e.contains("escalation step 2: flagged 500 is outside 1..=100"), "{e}");
    assert!(e.contains("escalation step 2: action \"block\" is milder than step 1's \"quarantine\""), "{e}");
    assert!(e.contains("escalation step 2: within: \"2d\" is not a duration"), "{e}");

    // An unknown band is an unknown field; no rules is refused with the fix.
    let e = errors(
        "apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {name: g}\nspec:\n  rules: [{critical: block}]\n",
    );
    assert!(e[0].starts_with("a.yaml:5:12: spec.rules[0]: unknown field `critical`, expected one of"), "{e:?}");
    let e = errors("apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {name: g}\nspec:\n  rules: []\n  warmupSamples: 0\n");
    assert!(e.contains(&"a.yaml:4:1: anomaly policy 'g': no rules (write `rules: [{}]` to cover every request with the default actions)".to_owned()), "{e:?}");
    assert!(e.iter().any(|d| d.ends_with("warmupSamples must be at least 1 (got 0)")), "{e:?}");
    let e = errors("apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {name: g}\nspec:\n  rules:\n  - to: [{operation: {paths: [\"/v2/*/infer\"]}}]\n");
    assert!(
        e[0].starts_with("a.yaml:6:32: anomaly policy 'g', rule 1: paths: invalid pattern \"/v2/*/infer\""),
        "{e:?}"
    );
}

#[test]
fn each_band_gets_its_rules_action() {
    let p = load(GUARD);
    let mut book = Offenders::new(100);
    let cases = [
        (INFER, finding(Band::Normal), AnomalyAction::Allow, "normal"),
        (INFER, finding(Band::Suspicious), AnomalyAction::Audit, "suspicious"),
        (INFER, finding(Band::Anomalous), AnomalyAction::Block, "anomalous"),
        (INFER, signal(), AnomalyAction::RateLimit(LIMIT), "client_signal"),
        ("/v2/models/fraud", finding(Band::Suspicious), AnomalyAction::Allow, "suspicious"),
        ("/v2/models/fraud", finding(Band::Anomalous), AnomalyAction::Audit, "anomalous"),
        ("/v2/models/fraud", signal(), AnomalyAction::Quarantine(TEN_MIN), "client_signal"),
    ];
    for (i, (path, f, action, reason)) in cases.into_iter().enumerate() {
        let client = format!("client-{i}");
        let d = with_req("POST", path, |r| book.decide(&p, r, &client, &f, 0.0)).expect("covered");
        assert_eq!((d.action, d.reason, d.escalation_step), (action, reason, None), "case {i}");
        assert_eq!(
            (d.policy.as_str(), d.rule, d.dry_run),
            ("inference-guard", if path == INFER { 1 } else { 2 }, false)
        );
    }
    // A client signal on an anomalous request: the more severe action wins.
    let both = Finding { band: Band::Anomalous, client_signal: true, score: 0.99 };
    assert_eq!(decide(&mut book, &p, INFER, "x", both, 0.0), Some((AnomalyAction::Block, "anomalous", None)));
    // An `allow` outcome is not flagged: normal and allowed traffic never fills the book.
    assert_eq!(book.len(), 6, "clients 1, 2, 3, 5, 6 and x were flagged; 0 and 4 were allowed");
}

#[test]
fn dry_run_decides_the_same_and_says_so() {
    let p = load(&GUARD.replace("  warmupSamples", "  dryRun: true\n  warmupSamples"));
    let mut book = Offenders::new(10);
    let d = with_req("POST", INFER, |r| book.decide(&p, r, "c", &finding(Band::Anomalous), 0.0)).expect("covered");
    assert_eq!((d.action, d.reason, d.dry_run), (AnomalyAction::Block, "anomalous", true));
}

#[test]
fn escalation_holds_a_repeat_offender_until_decay() {
    let p = load(GUARD);
    let mut book = Offenders::new(10);
    let sus = finding(Band::Suspicious);
    for t in 0..4 {
        assert_eq!(
            decide(&mut book, &p, INFER, "c", sus, f64::from(t)),
            Some((AnomalyAction::Audit, "suspicious", None))
        );
    }
    // The 5th flagged request within 1m reaches step 1.
    let held = Some((AnomalyAction::RateLimit(LIMIT), "escalation", Some(1)));
    assert_eq!(decide(&mut book, &p, INFER, "c", sus, 4.0), held);
    // Held even for normal requests ...
    assert_eq!(decide(&mut book, &p, INFER, "c", finding(Band::Normal), 5.0), held);
    // ... and an anomalous request keeps its more severe action.
    assert_eq!(
        decide(&mut book, &p, INFER, "c", finding(Band::Anomalous), 6.0),
        Some((AnomalyAction::Block, "anomalous", None))
    );
    assert_eq!(decide(&mut book, &p, INFER, "c", finding(Band::Normal), 6.0 + 599.0), held);
    // 10m without a flagged request: the client starts over.
    assert_eq!(
        decide(&mut book, &p, INFER, "c", finding(Band::Normal), 6.0 + 600.0),
        Some((AnomalyAction::Allow, "normal", None))
    );
    assert_eq!(decide(&mut book, &p, INFER, "c", sus, 700.0), Some((AnomalyAction::Audit, "suspicious", None)));

    // Five flagged requests spread over more than a minute never reach step 1.
    for t in [0.0, 20.0, 40.0, 60.5, 80.0, 100.0, 120.0, 140.0] {
        assert_eq!(
            decide(&mut book, &p, INFER, "slow", sus, t),
            Some((AnomalyAction::Audit, "suspicious", None)),
            "t={t}"
        );
    }
    // The window is inclusive: 5 within exactly 60s do.
    for t in [200.0, 215.0, 230.0, 245.0] {
        decide(&mut book, &p, INFER, "edge", sus, t);
    }
    assert_eq!(decide(&mut book, &p, INFER, "edge", sus, 260.0), held);
}

#[test]
fn quarantine_refuses_everything_until_it_expires() {
    let p = load(GUARD);
    let mut book = Offenders::new(10);
    let sus = finding(Band::Suspicious);
    for t in 0..19 {
        decide(&mut book, &p, INFER, "c", sus, f64::from(t) * 10.0);
    }
    assert_eq!(book.quarantined_until("c", 180.0), None);
    // The 20th flagged request within 5m: step 2, quarantine.
    assert_eq!(
        decide(&mut book, &p, INFER, "c", sus, 190.0),
        Some((AnomalyAction::Quarantine(TEN_MIN), "escalation", Some(2)))
    );
    assert_eq!(book.quarantined_until("c", 190.0), Some(790.0));
    // Every request, any band, any route of the workload, gets the time left.
    let q = decide(&mut book, &p, "/v2/health/ready", "c", finding(Band::Normal), 490.0);
    assert_eq!(q, Some((AnomalyAction::Quarantine(Duration::from_secs(300)), "quarantined", Some(2))));
    let d = with_req("GET", "/x", |r| book.decide(&p, r, "c", &finding(Band::Normal), 789.0)).expect("quarantined");
    assert_eq!((d.policy.as_str(), d.rule, d.reason), ("inference-guard", 1, "quarantined"));
    // Expired: the client starts over (not held at a step any more).
    assert_eq!(
        decide(&mut book, &p, INFER, "c", finding(Band::Normal), 790.0),
        Some((AnomalyAction::Allow, "normal", None))
    );
    assert_eq!(decide(&mut book, &p, INFER, "c", sus, 791.0), Some((AnomalyAction::Audit, "suspicious", None)));

    // Quarantine straight from a rule (client signal on rule 2).
    assert_eq!(
        decide(&mut book, &p, "/v2/models/fraud", "d", signal(), 0.0),
        Some((AnomalyAction::Quarantine(TEN_MIN), "client_signal", None))
    );
    assert_eq!(
        decide(&mut book, &p, INFER, "d", finding(Band::Normal), 1.5),
        Some((AnomalyAction::Quarantine(Duration::from_secs_f64(598.5)), "quarantined", None))
    );
}

#[test]
fn the_book_is_bounded_and_drops_the_least_recently_used() {
    let p = load(GUARD);
    let mut book = Offenders::new(2);
    let quarantine = |book: &mut Offenders, c: &str, t: f64| decide(book, &p, "/v2/models/fraud", c, signal(), t);
    quarantine(&mut book, "a", 0.0);
    quarantine(&mut book, "b", 1.0);
    // "a" is used again, so "b" is the least recently used when "c" arrives.
    assert_eq!(decide(&mut book, &p, INFER, "a", finding(Band::Normal), 2.0).map(|d| d.1), Some("quarantined"));
    quarantine(&mut book, "c", 3.0);
    assert_eq!((book.len(), book.evictions()), (2, 1));
    assert!(book.quarantined_until("a", 4.0).is_some());
    assert_eq!(book.quarantined_until("b", 4.0), None, "evicted");
    assert_eq!(decide(&mut book, &p, INFER, "b", finding(Band::Normal), 4.0).map(|d| d.1), Some("normal"));
    // Many distinct clients stay within the bound.
    for i in 0..1000 {
        decide(&mut book, &p, INFER, &format!("x{i}"), finding(Band::Suspicious), 5.0);
    }
    assert_eq!((book.len(), book.evictions()), (2, 1001));
}

#[test]
fn long_running_offenders_are_counted_exactly_after_rebasing() {
    let p = load(GUARD);
    let mut book = Offenders::new(4);
    let sus = finding(Band::Suspicious);
    // One flagged request every 50s for ~35 days: never 5 in a minute.
    let mut t = 0.0;
    while t < 3.0e6 {
        assert_eq!(decide(&mut book, &p, INFER, "c", sus, t).map(|d| d.1), Some("suspicious"), "t={t}");
        t += 50.0;
    }
    for i in 0..4 {
        assert_eq!(decide(&mut book, &p, INFER, "c", sus, t + f64::from(i) * 10.0).map(|d| d.1), Some("suspicious"));
    }
    assert_eq!(decide(&mut book, &p, INFER, "c", sus, t + 40.0).map(|d| d.1), Some("escalation"));
}

#[test]
fn attachment_rules_and_fail_modes() {
    let all = load_all(&[("a.yaml", GUARD)]).expect("valid");
    let w = |ns: &str, app: &str| Workload {
        namespace: Some(ns.to_owned()),
        labels: [("app".to_owned(), app.to_owned())].into_iter().collect(),
    };
    assert_eq!(all.for_workload(Some(&w("ml", "fraud-model"))).anomaly.len(), 1);
    assert!(all.for_workload(Some(&w("ml", "iris"))).anomaly.is_empty());
    assert!(all.for_workload(Some(&w("staging", "fraud-model"))).anomaly.is_empty());
    assert!(!all.is_empty());

    let mut book = Offenders::new(4);
    assert_eq!(decide(&mut book, &[], INFER, "c", finding(Band::Anomalous), 0.0), None, "no policy");
    // A policy covering only inference leaves other routes alone.
    let only_infer = load(
        "apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {name: g}\nspec:\n  rules:\n  - to: [{operation: {paths: [\"/v2/models/{m}/infer\"]}}]\n",
    );
    assert_eq!(decide(&mut book, &only_infer, "/v2/health/ready", "c", finding(Band::Anomalous), 0.0), None);
    assert_eq!(
        decide(&mut book, &only_infer, INFER, "c", finding(Band::Anomalous), 0.0).map(|d| d.0),
        Some(AnomalyAction::Block)
    );

    let closed = with_req("POST", INFER, |r| unavailable(&all.anomaly, r)).expect("covered");
    assert_eq!((closed.action, closed.reason, closed.rule), (AnomalyAction::Block, "detector_unavailable", 1));
    let open = with_req("POST", INFER, |r| unavailable(&only_infer, r)).expect("covered");
    assert_eq!(open.action, AnomalyAction::Allow);
    assert!(with_req("GET", "/v2/health/ready", |r| unavailable(&only_infer, r)).is_none());
}

#[test]
fn the_schema_covers_the_kind() {
    let s = crate::format::schema("AnomalyPolicy").expect("known kind");
    assert_eq!(s["properties"]["kind"]["const"], "AnomalyPolicy");
    let text = s.to_string();
    for field in ["falsePositiveBudget", "onDetectorUnavailable", "clientSignal", "escalation", "warmupSamples"] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
    assert!(text.contains(r#"["allow","audit","rate-limit","block","quarantine"]"#), "{text}");
}
