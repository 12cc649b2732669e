//! `meshward demo --json`, the real binary end to end: the mesh's checks
//! hold, the detector refuses attacks while normal traffic passes, and every
//! alert delivered to the demo's receiver carries a valid signature.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::BIN;

/// Runs the demo, killing it (by its PID) if it outlives `limit`.
fn run_demo(args: &[&str], limit: Duration) -> (serde_json::Value, String) {
    let mut child = Command::new(BIN)
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshward demo");
    // Drained while the demo runs: its stderr alone is larger than a pipe buffer.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out_reader = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let err_reader = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_reader.join().unwrap_or_default();
            panic!("meshward demo {args:?} still running after {limit:?}; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    assert!(status.success(), "meshward demo {args:?}: {status}\nstdout: {out}\nstderr: {err}");
    let json = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("demo --json printed no JSON object ({e}):\n{out}\nstderr: {err}"));
    (json, err)
}

#[test]
fn the_demo_tells_the_detector_story_with_stable_keys() {
    let (j, err) = run_demo(&["--json", "--duration", "3", "--rps", "200"], Duration::from_secs(240));
    let ctx = || format!("{j:#}\nstderr (tail):\n{}", err.lines().rev().take(40).collect::<Vec<_>>().join("\n"));

    // The keys the demo always had.
    for key in ["requests", "statuses", "errors", "duration_s", "rps", "latency_ms", "identities", "checks"] {
        assert!(j.get(key).is_some(), "missing key {key}\n{}", ctx());
    }
    assert_eq!(j["checks"]["plaintext_refused"], true, "{}", ctx());
    assert_eq!(j["checks"]["spoofed_identity_replaced"], true, "{}", ctx());

    // Alerts: some arrived, none with a bad signature.
    let alerts = &j["alerts"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}\n{}", ctx()));
    assert!(n(&alerts["received"]) > 0, "{}", ctx());
    assert!(n(&alerts["signatures_valid"]) > 0, "{}", ctx());
    assert_eq!(n(&alerts["signatures_invalid"]), 0, "{}", ctx());

    // The detector: normal traffic passes, attacks are refused.
    let det = &j["detector"];
    let fpr = det["false_positive_rate"].as_f64().unwrap_or_else(|| panic!("no false_positive_rate\n{}", ctx()));
    assert!((0.0..0.01).contains(&fpr), "false positive rate {fpr}\n{}", ctx());
    let scenarios = det["scenarios"].as_object().unwrap_or_else(|| panic!("no scenarios\n{}", ctx()));
    assert!(scenarios.len() >= 10, "{} scenarios\n{}", scenarios.len(), ctx());
    let mut refused_some = 0;
    for (name, s) in scenarios {
        assert!(n(&s["requests"]) >= 60, "{name}: {s}");
        let (blocked, limited) = (s["blocked"].as_f64(), s["limited"].as_f64());
        let (Some(blocked), Some(limited)) = (blocked, limited) else { panic!("{name}: shares missing: {s}") };
        assert!((0.0..=1.0).contains(&blocked) && (0.0..=1.0).contains(&limited) && blocked + limited <= 1.0, "{s}");
        match &s["first_verdict_after"] {
            serde_json::Value::Null => assert!(blocked + limited == 0.0, "{name}: refused but no first verdict: {s}"),
            v => assert!(n(v) < n(&s["requests"]), "{name}: {s}"),
        }
        if blocked > 0.0 {
            refused_some += 1;
        }
    }
    assert!(refused_some >= 1, "no scenario was blocked at all\n{}", ctx());
}
