use super::*;

fn doc(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("yaml")
}

fn inject(yaml: &str) -> (Value, DocumentReport) {
    let mut v = doc(yaml);
    let r = inject_object(&mut v, &BTreeMap::new(), &Settings::default()).expect("inject");
    (v, r)
}

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: model, namespace: ml}
spec:
  selector: {matchLabels: {app: model}}
  template:
    metadata:
      labels: {app: model}
      annotations:
        meshward.dev/policy-configmap: model-policies
        meshward.dev/exclude-outbound-cidrs: 169.254.169.254/32
    spec:
      serviceAccountName: model
      initContainers:
        - {name: fetch-weights, image: busybox}
      containers:
        - name: model
          image: model:1
          ports: [{name: http, containerPort: 8080}, {name: health, containerPort: 8081}]
          readinessProbe: {httpGet: {path: /ready, port: health}}
          livenessProbe: {tcpSocket: {port: 8080}}
          futureField: {kept: true}
"#;

fn names(list: &Value) -> Vec<&str> {
    list.as_sequence().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect()
}

fn env_of<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"].as_sequence()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

#[test]
fn native_sidecar_layout() {
    let (v, r) = inject(DEPLOY);
    assert_eq!(r.pods.len(), 1);
    assert_eq!(r.pods[0].1.outcome, Outcome::Injected);
    let spec = &v["spec"]["template"]["spec"];
    assert_eq!(names(&spec["initContainers"]), ["meshward-init", "meshward-proxy", "fetch-weights"]);
    assert_eq!(names(&spec["containers"]), ["model"]);
    let proxy = &spec["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(proxy["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(proxy["securityContext"]["capabilities"].get("add").is_none());
    let init = &spec["initContainers"][0];
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    assert_eq!(init["securityContext"]["capabilities"]["add"], doc("[NET_ADMIN, NET_RAW]"));
    let args: Vec<&str> = init["args"].as_sequence().expect("args").iter().filter_map(Value::as_str).collect();
    assert!(args.windows(2).any(|w| w == ["--exclude-outbound-cidrs", "169.254.169.254/32"]), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--skip-inbound-ports", "15000"]), "{args:?}");
    // Probe ports (named and numbered) accept plaintext so the kubelet gets through.
    assert_eq!(env_of(proxy, "MESHWARD_INBOUND__PORT_MODES"), Some("{\"8080\": permissive, \"8081\": permissive}"));
    assert_eq!(env_of(proxy, "MESHWARD_POLICY__PATHS"), Some("[\"/etc/meshward/policies\"]"));
    assert_eq!(names(&spec["volumes"]), ["meshward-identity", "meshward-podinfo", "meshward-tmp", "meshward-policies"]);
    assert_eq!(spec["volumes"][0]["secret"]["secretName"], "meshward-identity-model");
    assert_eq!(v["spec"]["template"]["metadata"]["annotations"][annotations::INJECTED], env!("CARGO_PKG_VERSION"));
    // Unknown fields and app containers are untouched.
    assert_eq!(spec["containers"][0], doc(DEPLOY)["spec"]["template"]["spec"]["containers"][0]);
}

#[test]
fn idempotent_and_strip_restores() {
    let (once, _) = inject(DEPLOY);
    let mut twice = once.clone();
    inject_object(&mut twice, &BTreeMap::new(), &Settings::default()).expect("inject");
    assert_eq!(once, twice);
    let mut stripped = once;
    let t = &mut stripped["spec"]["template"];
    let mut meta = t["metadata"].as_mapping().cloned().expect("meta");
    let mut spec = t["spec"].as_mapping().cloned().expect("spec");
    strip(&mut meta, &mut spec);
    let original = doc(DEPLOY);
    assert_eq!(Value::Mapping(spec), original["spec"]["template"]["spec"]);
    assert_eq!(Value::Mapping(meta), original["spec"]["template"]["metadata"]);
}

#[test]
fn legacy_mode_and_exclude_probes() {
    let y = DEPLOY.replace(
        "meshward.dev/policy-configmap: model-policies",
        "meshward.dev/sidecar-mode: legacy\n        meshward.dev/probes: exclude\n        meshward.dev/proxy-cpu: 200m",
    );
    let (v, _) = inject(&y);
    let spec = &v["spec"]["template"]["spec"];
    assert_eq!(names(&spec["containers"]), ["meshward-proxy", "model"]);
    assert_eq!(names(&spec["initContainers"]), ["fetch-weights", "meshward-init"]);
    let proxy = &spec["containers"][0];
    assert!(proxy.get("restartPolicy").is_none());
    assert_eq!(proxy["lifecycle"]["postStart"]["exec"]["command"][1], "wait-ready");
    assert_eq!(proxy["resources"]["requests"]["cpu"], "200m");
    assert!(env_of(proxy, "MESHWARD_INBOUND__PORT_MODES").is_none());
    let args = serde_yaml::to_string(&spec["initContainers"][1]["args"]).expect("yaml");
    assert!(args.contains("8080,8081,15000"), "{args}");
}

#[test]
fn kinds_lists_and_skips() {
    let (v, r) = inject(
        r#"
apiVersion: v1
kind: List
items:
  - apiVersion: batch/v1
    kind: CronJob
    metadata: {name: nightly}
    spec: {schedule: "@daily", jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: j, image: j}]}}}}}
  - apiVersion: v1
    kind: Service
    metadata: {name: svc}
    spec: {ports: [{port: 80}]}
  - apiVersion: v1
    kind: Pod
    metadata: {name: node-agent}
    spec: {hostNetwork: true, containers: [{name: a, image: a}]}
  - apiVersion: v1
    kind: Pod
    metadata: {name: out, annotations: {meshward.dev/inject: disabled}}
    spec: {containers: [{name: a, image: a}]}
"#,
    );
    let outcomes: Vec<(&str, &Outcome)> = r.pods.iter().map(|(n, r)| (n.as_str(), &r.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            ("CronJob/nightly", &Outcome::Injected),
            ("Pod/node-agent", &Outcome::Skipped(Skip::HostNetwork)),
            ("Pod/out", &Outcome::Skipped(Skip::OptedOut)),
        ]
    );
    let job_pod = &v["items"][0]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(names(&job_pod["initContainers"]), ["meshward-init", "meshward-proxy"]);
    assert_eq!(
        v["items"][1],
        doc("{apiVersion: v1, kind: Service, metadata: {name: svc}, spec: {ports: [{port: 80}]}}")
    );
    assert!(v["items"][2]["spec"].get("initContainers").is_none());
}

#[test]
fn opted_out_pod_with_a_bad_annotation_is_skipped_not_refused() {
    let (_, r) = inject(
        "{kind: Pod, metadata: {name: p, annotations: {meshward.dev/inject: disabled, meshward.dev/proxy-cpu: lots}}, spec: {containers: []}}",
    );
    assert_eq!(r.pods[0].1.outcome, Outcome::Skipped(Skip::OptedOut));
}

#[test]
fn namespace_annotations_are_defaults() {
    let mut v = doc(
        "{apiVersion: v1, kind: Pod, metadata: {name: p, namespace: ml}, spec: {containers: [{name: a, image: a}]}}",
    );
    let ns =
        BTreeMap::from([("ml".to_owned(), BTreeMap::from([(annotations::INJECT.to_owned(), "disabled".to_owned())]))]);
    let r = inject_object(&mut v, &ns, &Settings::default()).expect("inject");
    assert_eq!(r.pods[0].1.outcome, Outcome::Skipped(Skip::OptedOut));
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    for y in [
        "{kind: Deployment, metadata: {name: d}, spec: {}}",
        "{kind: Pod, metadata: {name: p}}",
        "{kind: Pod, metadata: {name: p}, spec: [1]}",
        "{kind: Pod, metadata: {name: p}, spec: {containers: 5}}",
        "{kind: Pod, metadata: [], spec: {containers: []}}",
    ] {
        let mut v = doc(y);
        let e = inject_object(&mut v, &BTreeMap::new(), &Settings::default()).expect_err(y);
        assert!(!e.to_string().is_empty());
    }
}
