//! `meshward eval`: the real binary on small labelled files in a temp dir.

use std::fmt::Write as _;
use std::process::Command;

use crate::util::BIN;

/// Normal web-shop and inference traffic, plus injection attacks in the test file.
fn write_files(dir: &std::path::Path) -> (String, String) {
    let mut train = String::new();
    let mut test = String::new();
    let mut seed = 7u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..6000u64 {
        let ts = i as f64 * 0.01;
        let client = format!("10.0.0.{}", next() % 20);
        let line = if i % 2 == 0 {
            format!(
                r#"{{"ts":{ts},"client":"{client}","method":"GET","uri":"/shop/item?id={}&qty={}","headers":[["accept","text/html"]]}}"#,
                100 + next() % 900,
                1 + next() % 5
            )
        } else {
            let body = format!(
                r#"{{\"inputs\":[{{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[{}.5,{}.25]}}]}}"#,
                next() % 5,
                next() % 5
            );
            format!(
                r#"{{"ts":{ts},"client":"{client}","method":"POST","uri":"/v2/models/m/infer","headers":[["content-type","application/json"]],"body":"{body}","status":200}}"#
            )
        };
        let out = if i < 4000 { &mut train } else { &mut test };
        let _ = writeln!(out, "{line}");
        if i >= 4000 && i % 50 == 0 {
            let _ = writeln!(
                test,
                r#"{{"ts":{ts},"client":"10.9.9.9","method":"GET","uri":"/shop/item?id=1%27%20OR%20%271%27%3D%271&qty=1","headers":[["accept","text/html"]],"label":"attack","scenario":"sqli"}}"#
            );
        }
    }
    let tr = dir.join("train.jsonl");
    let te = dir.join("test.jsonl");
    std::fs::write(&tr, train).expect("write train");
    std::fs::write(&te, test).expect("write test");
    (tr.to_str().expect("utf8").to_owned(), te.to_str().expect("utf8").to_owned())
}

fn run(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().expect("run meshward");
    eprintln!(
        "meshward {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn eval_prints_metrics_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (train, test) = write_files(dir.path());
    let model = dir.path().join("model.json");
    let model = model.to_str().expect("utf8");
    let out = run(&["eval", "--train", &train, "--test", &test, "--save-model", model]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    for key in [
        "requests",
        "attacks",
        "auroc",
        "auprc",
        "tpr_at_fpr",
        "operating_point",
        "scenarios",
        "clients",
        "requests_per_second",
        "wall_requests_per_second",
    ] {
        assert!(v.get(key).is_some(), "missing key {key}");
    }

    assert_eq!(v["attacks"], 40);
    assert_eq!(v["requests"], 2040);
    assert!(v["tpr_at_fpr"]["0.001"].is_number() && v["tpr_at_fpr"]["0.01"].is_number());
    assert!(v["operating_point"]["fpr"].as_f64().expect("fpr") <= 0.01);
    let sqli = &v["scenarios"]["sqli"];
    assert_eq!(sqli["requests"], 40);
    assert!(sqli["auroc"].as_f64().expect("auroc") > 0.99, "{sqli}");
    assert!(sqli["detected"].as_f64().expect("detected") > 0.9, "{sqli}");
    assert_eq!(v["clients"]["attacking"], 1);
    assert_eq!(v["clients"]["flagged_within_50"], 1.0);

    // The saved model scores the test file without training again.
    let out = run(&["eval", "--load-model", model, "--test", &test]);
    assert!(out.status.success());
    let v2: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v2["requests"], 2040);
    assert!(v2["scenarios"]["sqli"]["auroc"].as_f64().expect("auroc") > 0.99);
}

#[test]
fn eval_names_the_bad_line_or_skips_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (train, test) = write_files(dir.path());
    let mut text = std::fs::read_to_string(&test).expect("read");
    text.push_str("{\"ts\": 1, \"client\": \"c\", \"method\": \"GET\", \"uri\": \"/\", \"label\": \"evil\"}\n");
    let lines = text.lines().count();
    std::fs::write(&test, text).expect("write");
    let out = run(&["eval", "--train", &train, "--test", &test]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("line {lines}")) && err.contains("\"evil\""), "{err}");
    assert!(out.stdout.is_empty());

    let out = run(&["eval", "--train", &train, "--test", &test, "--skip-bad"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["skipped"], 1);
}

#[test]
fn eval_refuses_an_unknown_snapshot_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, test) = write_files(dir.path());
    let model = dir.path().join("future.json");
    std::fs::write(&model, r#"{"format": "meshward-detector-model", "version": 7, "model": {}}"#).expect("write");
    let out = run(&["eval", "--load-model", model.to_str().expect("utf8"), "--test", &test]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("version 7 is not supported"), "{err}");
}

#[test]
fn eval_judges_the_body_prefix_a_sidecar_inspects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (train, test) = write_files(dir.path());
    // Out-of-range second elements from known clients, each first element ordinary.
    let body = |first: u32| {
        format!(
            r#"{{\"inputs\":[{{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[{first}.5,4000.25]}}]}}"#
        )
    };
    let mut text = std::fs::read_to_string(&test).expect("read");
    for i in 0..40 {
        let _ = writeln!(
            text,
            r#"{{"ts":{},"client":"10.0.0.{}","method":"POST","uri":"/v2/models/m/infer","headers":[["content-type","application/json"]],"body":"{}","label":"attack","scenario":"range"}}"#,
            60.0 + f64::from(i),
            i % 20,
            body(i % 5)
        );
    }
    std::fs::write(&test, text).expect("write");
    let detected = |extra: &[&str]| {
        let out = run(&[&["eval", "--train", &train, "--test", &test], extra].concat());
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["scenarios"]["range"]["detected"].as_f64().expect("detected")
    };
    assert!(detected(&[]) > 0.9);
    // A sidecar inspecting only the bytes before the second element judges the
    // first (ordinary) one, as eval does with the same limit.
    let unescaped = body(0).replace('\\', "");
    let second = unescaped.find("4000").expect("second element");
    assert!(detected(&["--max-inspect-bytes", &(second + 2).to_string()]) < 0.1);
}
