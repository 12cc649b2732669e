//! Generator tests: determinism, labels, scenario coverage, and that every
//! line reads back and normal inference bodies are well-formed OIP v2.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::models::Model;
use super::*;
use crate::dataset::read_records;

fn small(seed: u64) -> TrafficConfig {
    TrafficConfig { seed, train_requests: 1000, test_requests: 1000, ..TrafficConfig::default() }
}

fn run(cfg: &TrafficConfig) -> (Vec<u8>, Vec<u8>, Summary) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let summary = generate(cfg, &mut train, &mut test).expect("writing to memory");
    (train, test, summary)
}

/// One full run shared by the tests that only read it (generation in a debug
/// build is the slow part of this module's tests).
fn shared() -> &'static (Vec<u8>, Vec<u8>, Summary) {
    static RUN: std::sync::OnceLock<(Vec<u8>, Vec<u8>, Summary)> = std::sync::OnceLock::new();
    RUN.get_or_init(|| run(&small(3)))
}

fn records(bytes: &[u8]) -> Vec<Record> {
    read_records(bytes, false).map(|r| r.expect("every generated line reads back")).collect()
}

#[test]
fn a_seed_gives_the_same_bytes_and_another_seed_different_ones() {
    let a = shared();
    let b = run(&small(3));
    assert!(a.0 == b.0 && a.1 == b.1, "same seed, different output");
    let other = TrafficConfig { seed: 4, train_requests: 300, test_requests: 300, scenarios: Vec::new(), ..small(4) };
    let c = run(&other);
    assert!(!a.0.starts_with(&c.0[..1000]) && !a.1.starts_with(&c.1[..1000]));
}

#[test]
fn labels_counts_and_scenarios_are_consistent() {
    let cfg = small(3);
    let (train, test, summary) = shared();
    let train = records(train);
    let test = records(test);
    assert_eq!(train.len(), cfg.train_requests);
    assert!(train.iter().all(|r| r.label == Label::Normal && r.scenario.is_none()));
    let normal = test.iter().filter(|r| r.label == Label::Normal).count();
    assert_eq!(normal, cfg.test_requests);
    assert_eq!(summary.test_normal as usize, normal);

    let mut per_client: HashMap<(&str, &str), usize> = HashMap::new();
    for r in test.iter().filter(|r| r.label == Label::Attack) {
        let s = r.scenario.as_deref().expect("attack lines name their scenario");
        assert!(s.parse::<Scenario>().is_ok(), "{s}");
        *per_client.entry((r.client.as_str(), s)).or_default() += 1;
    }
    let mut scenarios: BTreeMap<&str, usize> = BTreeMap::new();
    for ((client, s), n) in &per_client {
        assert!(*n >= MIN_ATTACK_REQUESTS, "{client} ran {s} for only {n} requests");
        *scenarios.entry(s).or_default() += 1;
    }
    assert_eq!(scenarios.len(), Scenario::ALL.len(), "{scenarios:?}");
    assert_eq!(summary.attacks() as usize, test.len() - normal);

    // Time order within each file, and test after train.
    for file in [&train, &test] {
        assert!(file.windows(2).all(|w| w[0].ts <= w[1].ts));
    }
    assert!(train.last().map(|r| r.ts) <= test.first().map(|r| r.ts));

    // Floods come from known clients; no attacker is named after its role.
    let known: std::collections::HashSet<&str> = train.iter().map(|r| r.client.as_str()).collect();
    assert!(per_client.keys().filter(|(_, s)| *s == "flood").all(|(c, _)| known.contains(c)));
    assert!(per_client.keys().any(|(c, _)| !known.contains(c)));
    assert!(test.iter().all(|r| !r.client.contains("attack") && !r.headers.iter().any(|(_, v)| v.contains("attack"))));
}

#[test]
fn scenario_selection_and_share_are_honoured() {
    let cfg = TrafficConfig { scenarios: vec![Scenario::PathScan, Scenario::NanInf], attack_share: 0.2, ..small(5) };
    let (_, test, summary) = run(&cfg);
    assert_eq!(summary.test_attacks.keys().copied().collect::<Vec<_>>(), vec!["nan-inf", "path-scan"]);
    let attacks = summary.attacks() as f64;
    let share = attacks / (attacks + cfg.test_requests as f64);
    assert!((0.18..0.25).contains(&share), "attack share {share}");
    assert_eq!(records(&test).len() as u64, summary.attacks() + summary.test_normal);
}

/// Elements of a (possibly nested) JSON `data` array.
fn count(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.iter().map(count).sum(),
        _ => 1,
    }
}

fn check_inputs(header: &Value, uri: &str) -> Vec<u64> {
    let model = Model::ALL.iter().find(|m| uri.contains(&format!("/{}/", m.name()))).expect("known model");
    let inputs = header["inputs"].as_array().expect("inputs array");
    let mut binary_sizes = Vec::new();
    for input in inputs {
        let shape: Vec<u64> = input["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("non-negative dimension"))
            .collect();
        let elements: u64 = shape.iter().product();
        let datatype = input["datatype"].as_str().expect("datatype");
        let expected = match model {
            Model::Fraud | Model::Iris | Model::Digits => "FP32",
            Model::Sentiment => "BYTES",
            Model::Embed => "INT64",
        };
        assert_eq!(datatype, expected, "{uri}");
        match model {
            Model::Fraud => assert_eq!(shape[1], 30),
            Model::Iris => assert!(shape[1] == 4 && (1..=16).contains(&shape[0])),
            Model::Digits => assert_eq!(shape, vec![1, 1, 28, 28]),
            Model::Sentiment => assert_eq!(shape.len(), 1),
            Model::Embed => assert!(shape[0] == 1 && shape[1] >= 4),
        }
        match input.get("data") {
            Some(data) => assert_eq!(count(data) as u64, elements, "{uri}: {input}"),
            None => binary_sizes.push(input["parameters"]["binary_data_size"].as_u64().expect("binary_data_size")),
        }
    }
    binary_sizes
}

#[test]
fn normal_inference_bodies_are_well_formed_oip_v2() {
    let (train, test, _) = shared();
    let (mut json, mut binary, mut gets) = (0, 0, 0);
    for r in records(train).into_iter().chain(records(test)).filter(|r| r.label == Label::Normal) {
        assert!(r.status.is_some() && r.latency_ms.is_some());
        if r.method == "GET" {
            assert!((r.uri == "/v2" || r.uri.starts_with("/v2/")) && r.body.is_empty(), "{}", r.uri);
            gets += 1;
            continue;
        }
        assert!(r.uri.ends_with("/infer"), "{}", r.uri);
        let header = |name: &str| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(header("content-length").and_then(|v| v.parse().ok()), Some(r.body.len()));
        match header("inference-header-content-length") {
            Some(n) => {
                let n: usize = n.parse().expect("length");
                let head: Value = serde_json::from_slice(&r.body[..n]).expect("binary header is JSON");
                let sizes = check_inputs(&head, &r.uri);
                assert_eq!(sizes.iter().sum::<u64>() as usize, r.body.len() - n, "binary sizes add up");
                assert_eq!(header("content-type"), Some("application/octet-stream"));
                binary += 1;
            }
            None => {
                let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
                assert!(check_inputs(&body, &r.uri).is_empty());
                json += 1;
            }
        }
    }
    assert!(json > 1000 && binary > 20 && gets > 20, "json {json}, binary {binary}, gets {gets}");
}

#[test]
fn inputs_drift_only_mildly_and_some_inputs_repeat() {
    let (train, test, _) = shared();
    let amounts = |bytes: &[u8]| -> Vec<f64> {
        records(bytes)
            .iter()
            .filter(|r| r.label == Label::Normal && r.uri.contains("fraud_detector") && r.method == "POST")
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter_map(|v| v["inputs"][0]["data"].as_array().and_then(|d| d.get(29)).and_then(Value::as_f64))
            .collect()
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(amounts(train)), median(amounts(test)));
    assert!(b > a * 0.8 && b < a * 1.6, "train median amount {a}, test {b}");
    let bodies: Vec<Vec<u8>> = records(train).into_iter().filter(|r| r.method == "POST").map(|r| r.body).collect();
    let distinct: std::collections::HashSet<&Vec<u8>> = bodies.iter().collect();
    assert!(distinct.len() < bodies.len(), "caching clients repeat some inputs");
}
