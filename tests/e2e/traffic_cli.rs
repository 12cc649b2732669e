//! `meshward traffic`: the real binary writes a train and a test file with
//! the requested counts, every line in the documented format, and a summary
//! on stderr; bad options are refused.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;

use crate::util::BIN;

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("read output");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn writes_train_and_test_files_with_the_requested_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (train, test) = (dir.path().join("train.jsonl"), dir.path().join("test.jsonl"));
    let args = [
        "traffic",
        "--train",
        train.to_str().expect("utf8"),
        "--test",
        test.to_str().expect("utf8"),
        "--seed",
        "42",
        "--train-requests",
        "500",
        "--test-requests",
        "400",
        "--scenarios",
        "flood,path-scan,extraction-grid",
    ];
    let out = Command::new(BIN).args(args).output().expect("run meshward");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "meshward {args:?}: {}\nstderr: {stderr}", out.status);

    let train = lines(&train);
    assert_eq!(train.len(), 500);
    assert!(train.iter().all(|l| l["label"] == "normal"));
    let test = lines(&test);
    let normal = test.iter().filter(|l| l["label"] == "normal").count();
    assert_eq!(normal, 400);
    let mut per_scenario: BTreeMap<String, usize> = BTreeMap::new();
    let mut attackers = HashSet::new();
    for l in test.iter().filter(|l| l["label"] == "attack") {
        *per_scenario.entry(l["scenario"].as_str().expect("scenario").to_owned()).or_default() += 1;
        attackers.insert(l["client"].as_str().expect("client").to_owned());
    }
    assert_eq!(per_scenario.keys().map(String::as_str).collect::<Vec<_>>(), ["extraction-grid", "flood", "path-scan"]);
    assert!(per_scenario.values().all(|&n| n >= 60), "{per_scenario:?}");
    let attacks: usize = per_scenario.values().sum();
    assert!(stderr.contains(&format!("train: 500 normal; test: 400 normal, {attacks} attack")), "{stderr}");

    // The same seed writes the same bytes, through stdout too.
    let again = Command::new(BIN)
        .args(["traffic", "--train", dir.path().join("t2").to_str().expect("utf8"), "--test", "-"])
        .args(&args[5..])
        .output()
        .expect("run meshward");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(again.stdout, std::fs::read(dir.path().join("test.jsonl")).expect("read test"));
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    let run = |extra: &[&str]| {
        let out = Command::new(BIN).args(["traffic", "--train", "-"]).args(extra).output().expect("run meshward");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(&["--test", "/nonexistent-dir/x.jsonl", "--scenarios", "flood,bogus"]);
    assert!(!ok && err.contains("unknown scenario \"bogus\""), "{err}");
    let (ok, err) = run(&["--test", "-"]);
    assert!(!ok && err.contains("cannot both be \"-\""), "{err}");
    let (ok, err) = run(&["--test", "/x", "--attack-share", "2"]);
    assert!(!ok && err.contains("invalid attack share \"2\""), "{err}");
}
