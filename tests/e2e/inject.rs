//! `meshward inject` on the corpus in `tests/k8s/corpus`: every output
//! parses as typed Kubernetes objects (k8s-openapi), passes
//! `kubernetes-validate --strict` (skipped, reason printed, when it is not
//! installed), is idempotent, and the proxy configuration it generates is
//! accepted by `meshward run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, Service};

use crate::util::{free_addr, Pki, BIN};

/// The Kubernetes version the outputs are validated against (k8s-openapi's `v1_31`).
pub const K8S_VERSION: &str = "1.31.0";

pub fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/k8s/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "corpus too small: {files:?}");
    files
}

/// Runs `meshward inject ARGS` with `stdin`; stdout and stderr, panics on failure.
pub fn inject(args: &[&str], stdin: &str) -> (String, String) {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshward inject");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let (so, se) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "meshward inject {args:?} failed: {}\nstdout: {so}\nstderr: {se}", out.status);
    (so, se)
}

/// The documents of a YAML stream, `List` items flattened.
pub fn documents(yaml: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for d in serde_yaml::Deserializer::from_str(yaml) {
        let v: serde_json::Value = serde::Deserialize::deserialize(d).expect("output is YAML");
        if v.is_null() {
            continue;
        }
        if v["kind"] == "List" {
            out.extend(v["items"].as_array().cloned().unwrap_or_default());
        } else {
            out.push(v);
        }
    }
    out
}

/// Parses `doc` as its typed k8s-openapi object; returns its pod spec, if any.
pub fn typed_pod_spec(doc: &serde_json::Value) -> Option<PodSpec> {
    fn parse<T: serde::de::DeserializeOwned>(doc: &serde_json::Value) -> T {
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("not a valid {}: {e}\n{doc:#}", doc["kind"]))
    }
    let tpl = |t: Option<k8s_openapi::api::core::v1::PodTemplateSpec>| t.and_then(|t| t.spec);
    match doc["kind"].as_str().expect("kind") {
        "Pod" => parse::<Pod>(doc).spec,
        "Deployment" => tpl(parse::<Deployment>(doc).spec.map(|s| s.template)),
        "StatefulSet" => tpl(parse::<StatefulSet>(doc).spec.map(|s| s.template)),
        "DaemonSet" => tpl(parse::<DaemonSet>(doc).spec.map(|s| s.template)),
        "ReplicaSet" => tpl(parse::<ReplicaSet>(doc).spec.and_then(|s| s.template)),
        "Job" => tpl(parse::<Job>(doc).spec.map(|s| s.template)),
        "CronJob" => parse::<CronJob>(doc).spec.and_then(|s| s.job_template.spec).and_then(|s| s.template.spec),
        "Service" => {
            parse::<Service>(doc);
            None
        }
        "ConfigMap" => {
            parse::<ConfigMap>(doc);
            None
        }
        "Namespace" => {
            parse::<Namespace>(doc);
            None
        }
        other => panic!("unexpected kind {other} in the corpus"),
    }
}

/// The injected proxy container of a pod spec (native or legacy).
pub fn proxy_of(spec: &PodSpec) -> Option<&Container> {
    spec.init_containers.iter().flatten().chain(&spec.containers).find(|c| c.name == "meshward-proxy")
}

/// `kubernetes-validate --strict` on `files`; `Err(reason)` when it is not installed.
pub fn validate(files: &[PathBuf]) -> Result<(), String> {
    let probe = Command::new("kubernetes-validate").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Err("kubernetes-validate is not installed (pip install kubernetes-validate)".into());
    }
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", K8S_VERSION])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("ERROR"), "kubernetes-validate --strict failed:\n{text}");
    Ok(())
}

/// Writes every document as its own file in `dir` (Lists flattened: the validator has no List schema).
pub fn write_documents(dir: &Path, prefix: &str, docs: &[serde_json::Value]) -> Vec<PathBuf> {
    docs.iter()
        .enumerate()
        .map(|(i, d)| {
            let p = dir.join(format!("{prefix}-{i}.yaml"));
            std::fs::write(&p, serde_yaml::to_string(d).expect("yaml")).expect("write");
            p
        })
        .collect()
}

#[test]
fn corpus_is_injected_typed_valid_and_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let (mut injected, mut skipped) = (0, 0);
    for file in corpus() {
        let name = file.file_name().and_then(|n| n.to_str()).expect("name").to_owned();
        let input = std::fs::read_to_string(&file).expect("read corpus");
        let (out, stderr) = inject(&[file.to_str().expect("utf8")], "");
        let (again, _) = inject(&["-"], &out);
        assert_eq!(again, out, "{name}: injecting twice changed the output");
        let before = documents(&input);
        let after = documents(&out);
        assert_eq!(before.len(), after.len(), "{name}: document count changed");
        for (b, a) in before.iter().zip(&after) {
            let spec = typed_pod_spec(a);
            let Some(spec) = spec else {
                assert_eq!(a, b, "{name}: an object without a pod changed");
                continue;
            };
            let proxy = proxy_of(&spec);
            let opted_out = b.to_string().contains("\"meshward.dev/inject\":\"disabled\"");
            let host_network = spec.host_network == Some(true);
            if opted_out || host_network {
                assert!(proxy.is_none(), "{name}: skipped pod was injected");
                assert_eq!(a, b, "{name}: skipped pod changed");
                assert!(stderr.contains("not injected"), "{name}: skip not reported: {stderr}");
                skipped += 1;
                continue;
            }
            let proxy = proxy.unwrap_or_else(|| panic!("{name}: no meshward-proxy in {a:#}"));
            let sc = proxy.security_context.as_ref().expect("proxy securityContext");
            assert_eq!(
                (sc.run_as_user, sc.read_only_root_filesystem, sc.run_as_non_root),
                (Some(1337), Some(true), Some(true))
            );
            let init =
                spec.init_containers.iter().flatten().find(|c| c.name == "meshward-init").expect("init container");
            let caps = init.security_context.as_ref().and_then(|s| s.capabilities.as_ref()).and_then(|c| c.add.clone());
            assert_eq!(caps, Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]), "{name}");
            let proxy_caps = sc.capabilities.as_ref().expect("proxy capabilities");
            assert_eq!(
                (proxy_caps.add.as_ref(), proxy_caps.drop.clone()),
                (None, Some(vec!["ALL".to_owned()])),
                "{name}"
            );
            injected += 1;
        }
        if name == "annotated-legacy.yaml" {
            assert!(stderr.contains("meshward.dev/proxy-cpus"), "unknown annotation not reported: {stderr}");
        }
        files.extend(write_documents(dir.path(), &name, &after));
    }
    assert!(injected == 8 && skipped == 2, "injected {injected}, skipped {skipped}");
    match validate(&files) {
        Ok(()) => eprintln!("kubernetes-validate --strict -k {K8S_VERSION}: {} documents passed", files.len()),
        Err(why) => eprintln!("skipping strict schema validation: {why}"),
    }
}

#[test]
fn bad_annotation_fails_with_the_value_named() {
    let out = Command::new(BIN)
        .args(["inject", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().expect("stdin").write_all(
                b"apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {meshward.dev/exclude-outbound-cidrs: 10.0.0.0/99}}\nspec: {containers: [{name: a, image: a}]}\n",
            )?;
            c.wait_with_output()
        })
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bad annotation accepted");
    assert!(stderr.contains("exclude-outbound-cidrs") && stderr.contains("10.0.0.0/99"), "{stderr}");
}

/// The sidecar's environment from an injected pod, with the files and ports
/// mapped to this test's: `meshward run` must accept it and become ready.
#[test]
fn injected_proxy_configuration_is_accepted_by_meshward_run() {
    let pki = Pki::new();
    for file in ["annotated-legacy.yaml", "triton-deployment.yaml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/k8s/corpus").join(file);
        let (out, _) = inject(&[path.to_str().expect("utf8")], "");
        let doc = documents(&out).into_iter().find(|d| d["kind"] == "Deployment").expect("deployment");
        let spec = typed_pod_spec(&doc).expect("pod spec");
        let proxy = proxy_of(&spec).expect("proxy");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("labels"), "app=\"fraud-model\"\npod-template-hash=\"5d9f\"\n").expect("labels");
        std::fs::create_dir(dir.path().join("policies")).expect("policies dir");
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/ml-platform.yaml");
        let policy = std::fs::read_to_string(policy).expect("policy example");
        // jwksUri would need the network: the test keeps the authorization policies only.
        let kept: Vec<&str> = policy.split("\n---\n").filter(|d| !d.contains("jwksUri")).collect();
        std::fs::write(dir.path().join("policies/ml.yaml"), kept.join("\n---\n")).expect("policy");
        // The generated listeners bind every address ([::]); a port found
        // free on 127.0.0.1 can meanwhile be another test's ephemeral port.
        // Such a start is retried with new ports, at most twice.
        let log = dir.path().join("run.log");
        let mut ready = false;
        for attempt in 0..3 {
            let admin = free_addr();
            let mut cmd = Command::new(BIN);
            cmd.args(proxy.args.clone().unwrap_or_default()).env_clear();
            for e in proxy.env.iter().flatten() {
                let value = match (&e.value, &e.value_from) {
                    (Some(v), _) => v
                        .replace("/var/run/meshward/identity/tls.crt", &pki.file("server.crt"))
                        .replace("/var/run/meshward/identity/tls.key", &pki.file("server.key"))
                        .replace("/var/run/meshward/identity/ca.crt", &pki.file("ca.crt"))
                        .replace("/var/run/meshward/podinfo", dir.path().to_str().expect("utf8"))
                        .replace("/etc/meshward/policies", dir.path().join("policies").to_str().expect("utf8"))
                        // Same format, free ports: the listen values stay as generated.
                        .replace(":15006\"", &format!(":{}\"", free_addr().port()))
                        .replace(":15001\"", &format!(":{}\"", free_addr().port()))
                        .replace(":15000\"", &format!(":{}\"", admin.port())),
                    (None, Some(_)) => "ml".to_owned(), // the downward API's metadata.namespace
                    (None, None) => String::new(),
                };
                cmd.env(&e.name, value);
            }
            let mut child = cmd
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("spawn meshward run");
            let deadline = Instant::now() + Duration::from_secs(15);
            let exited = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break Some(status);
                }
                if crate::util::admin_get(admin, "/ready").is_some_and(|(status, _)| status == 200) {
                    ready = true;
                    break None;
                }
                if Instant::now() > deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            match exited {
                Some(_) if attempt < 2 && text.contains("Address already in use") => continue,
                Some(status) => panic!("{file}: meshward run exited {status}: {text}"),
                None => break,
            }
        }
        assert!(ready, "{file}: not ready: {}", std::fs::read_to_string(&log).unwrap_or_default());
        let identity = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!identity.contains("ERROR"), "{file}: {identity}");
    }
}

/// `kubectl kustomize` renders every deploy/ entry point; the objects parse
/// as k8s-openapi types and pass `kubernetes-validate --strict` (cert-manager
/// kinds have no bundled schema: the validator warns and skips them); the
/// example namespace injected by `meshward inject` still validates; the
/// example's policies pass `meshward policy check` and equal the source.
#[test]
fn deploy_manifests_render_validate_and_inject() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["ml-platform.yaml", "inference-guard.yaml"] {
        let policy = std::fs::read_to_string(root.join("policies/examples").join(file)).expect("policy");
        let copy = std::fs::read_to_string(root.join("deploy/examples/ml/policies").join(file)).expect("copy");
        assert_eq!(
            copy.split_once('\n').map(|(_, rest)| rest),
            Some(policy.as_str()),
            "deploy/examples/ml/policies/{file} is stale"
        );
    }
    crate::util::meshward(&["policy", "check", root.join("deploy/examples/ml/policies").to_str().expect("utf8")]);

    if !Command::new("kubectl").args(["version", "--client"]).output().is_ok_and(|o| o.status.success()) {
        eprintln!("skipping kustomize rendering: kubectl is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let mut kinds = Vec::new();
    for entry in ["base", "overlays/cert-manager", "examples/ml"] {
        let out =
            Command::new("kubectl").arg("kustomize").arg(root.join("deploy").join(entry)).output().expect("kubectl");
        let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "kubectl kustomize deploy/{entry}: {}", String::from_utf8_lossy(&out.stderr));
        let mut docs = documents(&yaml);
        if entry == "examples/ml" {
            let (injected, _) = inject(&["-"], &yaml);
            docs = documents(&injected);
            let model = docs.iter().find(|d| d["kind"] == "Deployment").expect("model deployment");
            let spec = typed_pod_spec(model).expect("spec");
            assert!(proxy_of(&spec).is_some(), "example model not injected");
            let volumes: Vec<String> = spec.volumes.iter().flatten().map(|v| format!("{:?}", v.config_map)).collect();
            assert!(volumes.iter().any(|v| v.contains("ml-platform-policies")), "{volumes:?}");
        }
        for d in &docs {
            let kind = d["kind"].as_str().unwrap_or_default().to_owned();
            let ok = match kind.as_str() {
                "MutatingWebhookConfiguration" => {
                    let w: MutatingWebhookConfiguration = serde_json::from_value(d.clone()).expect("webhook");
                    let hook = &w.webhooks.expect("webhooks")[0];
                    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
                    assert_eq!(hook.side_effects, "None");
                    let ns = format!("{:?}", hook.namespace_selector);
                    assert!(ns.contains("kube-system") && ns.contains("meshward-system"), "{ns}");
                    true
                }
                "ServiceAccount" => serde_json::from_value::<ServiceAccount>(d.clone()).is_ok(),
                "PodDisruptionBudget" => serde_json::from_value::<PodDisruptionBudget>(d.clone()).is_ok(),
                "Certificate" | "Issuer" | "ClusterIssuer" => d["apiVersion"] == "cert-manager.io/v1",
                _ => {
                    typed_pod_spec(d);
                    true
                }
            };
            assert!(ok, "deploy/{entry}: {kind} does not parse: {d:#}");
            kinds.push(kind);
        }
        files.extend(write_documents(dir.path(), &entry.replace('/', "-"), &docs));
    }
    for k in ["Namespace", "Deployment", "Service", "PodDisruptionBudget", "MutatingWebhookConfiguration", "ConfigMap"]
    {
        assert!(kinds.iter().any(|x| x == k), "no {k} rendered: {kinds:?}");
    }
    match validate(&files) {
        Ok(()) => eprintln!("deploy/: kubernetes-validate --strict -k {K8S_VERSION}: {} documents passed", files.len()),
        Err(why) => eprintln!("skipping strict schema validation of deploy/: {why}"),
    }
}

/// Every metric the Grafana dashboard queries is one meshward registers.
#[test]
fn grafana_dashboard_queries_real_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/meshward.json")).expect("dashboard"))
            .expect("dashboard is JSON");
    let sources = std::fs::read_to_string(root.join("proxy/src/metrics.rs")).expect("metrics.rs")
        + &std::fs::read_to_string(root.join("proxy/src/cli/injector.rs")).expect("injector.rs")
        + &std::fs::read_to_string(root.join("proxy/src/alerts/metrics.rs")).expect("alerts/metrics.rs");
    let mut checked = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("meshward_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let base = name
                    .trim_start_matches("meshward_injector_")
                    .trim_start_matches("meshward_")
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_total");
                assert!(
                    sources.contains(&format!("\"{base}\"")),
                    "dashboard queries {name}, which meshward does not register"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 22, "{checked}");
}
