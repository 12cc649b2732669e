//! `meshward policy check`: the shipped examples are valid; a broken file
//! gets one `file:line:column: message` per problem and exit status 1.

use std::process::Command;

use crate::util::BIN;

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(["policy", "check"]).args(args).output().expect("run");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn shipped_examples_are_valid() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/examples");
    let (code, out) = check(&[examples]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("7 policies (4 authorization, 1 request-authentication, 1 rate-limit, 1 anomaly) in 2 files: ok"),
        "{out}"
    );
}

#[test]
fn broken_files_get_precise_diagnostics_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.yaml");
    std::fs::write(
        &a,
        "apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: infer}\nspec:\n  action: alow\n---\napiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: shared}\nspec: {}\n",
    )
    .expect("write");
    let b = dir.path().join("b.yml");
    std::fs::write(
        &b,
        "apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: infer}\nspec:\n  rules:\n  - to: [{operation: {paths: [\"v2/x\"]}}]\n---\napiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: shared}\nspec: {}\n",
    )
    .expect("write");
    // Kubernetes ConfigMap internals are skipped.
    std::fs::create_dir(dir.path().join("..2026_11_24")).expect("mkdir");
    std::fs::write(dir.path().join("..2026_11_24/c.yaml"), "not: [valid").expect("write");

    let (code, out) = check(&[dir.path().to_str().expect("utf8")]);
    assert_eq!(code, 1, "{out}");
    let a = a.display();
    let b = b.display();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(
            &format!("{a}:5:11: policy 'infer': unknown action \"alow\" (expected ALLOW, DENY or AUDIT)").as_str()
        ),
        "{out}"
    );
    assert!(out.contains(&format!("{b}:6:32: policy 'infer', rule 1: paths: invalid pattern \"v2/x\"")), "{out}");
    assert!(out.contains(&format!("{b}:8:1: duplicate policy name \"shared\" (first defined at {a}:7:1)")), "{out}");
}

#[test]
fn policy_test_runs_the_shipped_cases_and_reports_failures() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let run = |cases: &str| {
        let out = Command::new(BIN)
            .args(["policy", "test", &format!("{root}/policies/examples"), "--cases", cases])
            .output()
            .expect("run");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run(&format!("{root}/policies/cases/inference-guard.yaml"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PASS  an anomalous inference call is blocked: block by anomaly policy 'inference-guard' rule 1 (anomalous)"),
        "{out}"
    );
    let (code, out) = run(&format!("{root}/policies/cases/ml-platform.yaml"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "PASS  the gateway may run inference for a user with a tier: allow by policy 'infer-from-gateway-only' rule 1"
        ),
        "{out}"
    );
    assert!(
        out.contains("PASS  one user's burst beyond 100 is limited: rate_limited by policy 'infer-per-client' rule 1 (key \"user-17\": 30 of 130 limited, burst 100)"),
        "{out}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let cases = dir.path().join("c.yaml");
    std::fs::write(
        &cases,
        "cases:\n- name: batch may infer\n  request: {method: POST, path: /v2/models/m/infer, peer: 'spiffe://cluster.local/ns/batch/sa/x'}\n  expect: allow\n",
    )
    .expect("write");
    let (code, out) = run(cases.to_str().expect("utf8"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  batch may infer: expected allow, got deny: no ALLOW policy matched"), "{out}");
}

#[test]
fn the_json_schema_accepts_the_examples_and_rejects_typos() {
    let ok = Command::new("python3").args(["-c", "import yaml, jsonschema"]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP schema test: python3 yaml/jsonschema not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for kind in ["AuthorizationPolicy", "RateLimitPolicy", "RequestAuthentication"] {
        let out = Command::new(BIN).args(["policy", "schema", kind]).output().expect("run");
        assert!(out.status.success());
        std::fs::write(dir.path().join(format!("{kind}.json")), &out.stdout).expect("write");
    }
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: PERMIT, rulez: []}\n")
        .expect("write");
    let script = r#"
import sys, os, json, yaml, jsonschema
def validator(doc):
    return jsonschema.Draft202012Validator(json.load(open(os.path.join(sys.argv[1], doc["kind"] + ".json"))))
good = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
errors = [e.message for d in good for e in validator(d).iter_errors(d)]
assert good and not errors, errors
bad = [e.message for d in yaml.safe_load_all(open(sys.argv[3])) if d for e in validator(d).iter_errors(d)]
assert any("PERMIT" in m for m in bad) and any("rulez" in m for m in bad), bad
print("ok", len(good))
"#;
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/examples/ml-platform.yaml");
    let out =
        Command::new("python3").args(["-c", script]).arg(dir.path()).arg(examples).arg(&bad).output().expect("python");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 6");
}
