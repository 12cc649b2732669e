//! Sidecar injection: one pure function, [`inject_pod`], used by both
//! `meshward inject` (YAML files) and the admission webhook. Pods are
//! handled as untyped values (`serde_yaml::Value`, which keeps key order,
//! so the output reads like the input) so that fields meshward does not know
//! (newer API versions, CRD-added fields) pass through untouched; the
//! containers and volumes meshward adds are built from k8s-openapi types.
//!
//! Idempotence: a pod that carries a previous injection is first stripped
//! of everything meshward added (containers and volumes named `meshward-*`,
//! the status annotation), then injected again. Injecting twice therefore
//! gives the same pod, and re-injecting with changed annotations updates it.
//! App containers are never modified.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_yaml::{Mapping as Map, Value};

use super::annotations::{self, AnnotationError, Identity, Mtls, PodOptions, Probes, SidecarMode};
use super::capture::Capture;

/// Name of the proxy container.
pub const PROXY: &str = "meshward-proxy";
/// Name of the capture init container.
pub const INIT: &str = "meshward-init";
/// Every container and volume meshward adds is named with this prefix.
pub const NAME_PREFIX: &str = "meshward-";
/// Where the workload certificate is mounted.
pub const IDENTITY_DIR: &str = "/var/run/meshward/identity";
/// Where the downward-API pod labels are mounted.
pub const PODINFO_DIR: &str = "/var/run/meshward/podinfo";
/// Where the policy ConfigMap is mounted.
pub const POLICY_DIR: &str = "/etc/meshward/policies";
/// The meshward binary in the image (`deploy/Dockerfile`).
pub const BINARY: &str = "/usr/local/bin/meshward";

/// Injector-wide settings (flags of `meshward inject` and `meshward injector`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Proxy image, e.g. `ghcr.io/example/meshward:0.1.0`.
    pub image: String,
    /// `imagePullPolicy` of the added containers; `None` leaves the cluster default.
    pub image_pull_policy: Option<String>,
    /// The uid (and gid) the proxy runs as; excluded from outbound capture.
    pub proxy_uid: u32,
    /// Inbound listener port.
    pub inbound_port: u16,
    /// Transparent outbound listener port.
    pub outbound_port: u16,
    /// Admin port (`/ready`, `/live`, `/metrics`); never captured.
    pub admin_port: u16,
    /// Default sidecar mode when the pod does not choose.
    pub sidecar_mode: SidecarMode,
    /// Default Secret name; `{sa}` is replaced by the pod's service account.
    pub identity_secret: String,
    /// Default IPv6 (dual-stack) setting.
    pub ipv6: bool,
    /// Value of the `meshward.dev/injected` annotation.
    pub version: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            image: format!("meshward:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: None,
            proxy_uid: 1337,
            inbound_port: 15006,
            outbound_port: 15001,
            admin_port: 15000,
            sidecar_mode: SidecarMode::Native,
            identity_secret: "meshward-identity-{sa}".into(),
            ipv6: true,
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Why a pod was left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `meshward.dev/inject: disabled` on the pod or its namespace.
    OptedOut,
    /// `hostNetwork: true`: capture rules would rewrite the node's traffic.
    HostNetwork,
}

impl Skip {
    /// A sentence for logs and AdmissionReview responses.
    pub fn reason(self) -> &'static str {
        match self {
            Self::OptedOut => "injection disabled by the meshward.dev/inject annotation",
            Self::HostNetwork => "pod uses hostNetwork: capture rules would apply to the node, not injected",
        }
    }
}

/// What happened to one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added (or refreshed).
    Injected,
    /// Left alone.
    Skipped(Skip),
}

/// The result for one pod: outcome and warnings for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Injected or skipped.
    pub outcome: Outcome,
    /// Unknown annotations, unresolvable probe ports and the like.
    pub warnings: Vec<String>,
}

/// Why a pod could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A `meshward.dev/*` annotation has an unusable value.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// The object does not have the shape of its kind.
    #[error("{0}")]
    Shape(String),
}

fn shape(msg: impl Into<String>) -> InjectError {
    InjectError::Shape(msg.into())
}

/// The string map at `v[key]` (annotations, labels); non-string values are skipped.
pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_mapping)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v)))).collect())
        .unwrap_or_default()
}

/// A scalar as text (annotation values written unquoted, e.g. `true`, `8080`).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim_end().to_owned(),
    }
}

/// `v[k1][k2]...`.
fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |node, key| node.get(*key))
}

/// Injects one pod, given as its `metadata` and `spec` (a Pod or a pod
/// template). `namespace_annotations` are defaults the pod's own override.
pub fn inject_pod(
    metadata: &mut Value,
    spec: &mut Value,
    namespace_annotations: &BTreeMap<String, String>,
    settings: &Settings,
) -> Result<Report, InjectError> {
    if metadata.is_null() {
        *metadata = Value::Mapping(Map::new());
    }
    let meta = metadata.as_mapping_mut().ok_or_else(|| shape("metadata is not a mapping"))?;
    let spec = spec.as_mapping_mut().ok_or_else(|| shape("pod spec is not a mapping"))?;
    let pod_annotations = string_map(meta.get("annotations"));
    // An opted-out pod is left alone even if its other annotations are invalid.
    let inject = pod_annotations.get(annotations::INJECT).or_else(|| namespace_annotations.get(annotations::INJECT));
    if inject.is_some_and(|v| matches!(v.trim(), "disabled" | "false")) {
        let warnings = annotations::unknown(namespace_annotations, &pod_annotations);
        return Ok(Report { outcome: Outcome::Skipped(Skip::OptedOut), warnings });
    }
    let (opts, warnings) = annotations::parse(namespace_annotations, &pod_annotations)?;
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Ok(Report { outcome: Outcome::Skipped(Skip::HostNetwork), warnings });
    }
    if !spec.get("containers").is_some_and(Value::is_sequence) {
        return Err(shape("spec.containers is missing or not a list"));
    }
    strip(meta, spec);
    let mut report = Report { outcome: Outcome::Injected, warnings };
    let plan = Plan::new(&opts, spec, settings, &mut report.warnings)?;

    let mut init = vec![to_value(&plan.init_container(settings))?];
    let proxy = to_value(&plan.proxy_container(settings))?;
    if plan.mode == SidecarMode::Native {
        init.push(proxy);
        let existing = std::mem::take(list_mut(spec, "initContainers")?);
        let list = list_mut(spec, "initContainers")?;
        list.extend(init);
        list.extend(existing);
    } else {
        list_mut(spec, "containers")?.insert(0, proxy);
        // Legacy: existing init containers run before the proxy exists, so
        // the capture rules come last (they would cut their traffic off).
        list_mut(spec, "initContainers")?.extend(init);
    }
    let volumes = list_mut(spec, "volumes")?;
    for v in plan.volumes(&plan.service_account, settings) {
        volumes.push(to_value(&v)?);
    }
    let anns = meta.entry("annotations".into()).or_insert_with(|| Value::Mapping(Map::new()));
    if anns.is_null() {
        *anns = Value::Mapping(Map::new());
    }
    anns.as_mapping_mut()
        .ok_or_else(|| shape("metadata.annotations is not a mapping"))?
        .insert(annotations::INJECTED.into(), Value::String(settings.version.clone()));
    Ok(report)
}

fn to_value<T: serde::Serialize>(t: &T) -> Result<Value, InjectError> {
    serde_yaml::to_value(t).map_err(|e| shape(format!("cannot serialize an injected object: {e}")))
}

/// The list at `spec[key]`, created when absent.
fn list_mut<'a>(spec: &'a mut Map, key: &str) -> Result<&'a mut Vec<Value>, InjectError> {
    let v = spec.entry(key.into()).or_insert_with(|| Value::Sequence(Vec::new()));
    if v.is_null() {
        *v = Value::Sequence(Vec::new());
    }
    v.as_sequence_mut().ok_or_else(|| shape(format!("spec.{key} is not a list")))
}

/// Removes a previous injection (containers and volumes named `meshward-*`
/// and the status annotation) so that injecting again is idempotent.
pub fn strip(meta: &mut Map, spec: &mut Map) {
    let ours = |v: &Value| v.get("name").and_then(Value::as_str).is_some_and(|n| n.starts_with(NAME_PREFIX));
    for key in ["containers", "initContainers", "volumes"] {
        if let Some(list) = spec.get_mut(key).and_then(Value::as_sequence_mut) {
            list.retain(|v| !ours(v));
        }
    }
    // Lists meshward created and emptied again go away (inject -> strip is a no-op).
    for key in ["initContainers", "volumes"] {
        if spec.get(key).and_then(Value::as_sequence).is_some_and(Vec::is_empty) {
            spec.remove(key);
        }
    }
    if let Some(anns) = meta.get_mut("annotations").and_then(Value::as_mapping_mut) {
        anns.remove(annotations::INJECTED);
    }
}

/// Everything decided about one pod before building objects.
struct Plan {
    mode: SidecarMode,
    hold: bool,
    mtls: Mtls,
    port_modes: BTreeMap<u16, Mtls>,
    capture: Capture,
    ipv6: bool,
    opts: PodOptions,
    service_account: String,
}

impl Plan {
    fn new(
        opts: &PodOptions,
        spec: &Map,
        settings: &Settings,
        warnings: &mut Vec<String>,
    ) -> Result<Self, InjectError> {
        let mode = opts.sidecar_mode.unwrap_or(settings.sidecar_mode);
        let mtls = opts.mtls.unwrap_or(Mtls::Strict);
        let probes = opts.probes.unwrap_or(Probes::Permissive);
        let mut port_modes = opts.port_mtls.clone();
        let mut skip_in: BTreeSet<u16> = opts.skip_inbound_ports.iter().copied().collect();
        skip_in.insert(settings.admin_port);
        for port in probe_ports(spec, warnings) {
            match probes {
                Probes::Exclude => {
                    skip_in.insert(port);
                }
                Probes::Permissive if mtls == Mtls::Strict => {
                    port_modes.entry(port).or_insert(Mtls::Permissive);
                }
                Probes::Permissive => {}
            }
        }
        for port in [settings.inbound_port, settings.outbound_port, settings.admin_port] {
            if opts.port_mtls.contains_key(&port) {
                warnings.push(format!("{} names meshward's own port {port}; ignored", annotations::PORT_MTLS_MODES));
                port_modes.remove(&port);
            }
        }
        let service_account = spec
            .get("serviceAccountName")
            .or_else(|| spec.get("serviceAccount"))
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        Ok(Self {
            mode,
            hold: opts.hold_application.unwrap_or(true),
            mtls,
            port_modes,
            capture: Capture {
                inbound_port: settings.inbound_port,
                outbound_port: settings.outbound_port,
                proxy_uid: settings.proxy_uid,
                skip_inbound_ports: skip_in.into_iter().collect(),
                skip_outbound_ports: opts.skip_outbound_ports.clone(),
                exclude_outbound_cidrs: opts.exclude_outbound_cidrs.clone(),
            },
            ipv6: opts.ipv6.unwrap_or(settings.ipv6),
            opts: opts.clone(),
            service_account,
        })
    }

    fn any(&self) -> &'static str {
        if self.ipv6 {
            "[::]"
        } else {
            "0.0.0.0"
        }
    }

    /// The capture init container: the only one with NET_ADMIN/NET_RAW and uid 0.
    fn init_container(&self, settings: &Settings) -> Container {
        let c = &self.capture;
        let join = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let mut args: Vec<String> = vec![
            "init".into(),
            "--inbound-port".into(),
            c.inbound_port.to_string(),
            "--outbound-port".into(),
            c.outbound_port.to_string(),
            "--proxy-uid".into(),
            c.proxy_uid.to_string(),
            format!("--ipv6={}", self.ipv6),
        ];
        if !c.skip_inbound_ports.is_empty() {
            args.extend(["--skip-inbound-ports".into(), join(&c.skip_inbound_ports)]);
        }
        if !c.skip_outbound_ports.is_empty() {
            args.extend(["--skip-outbound-ports".into(), join(&c.skip_outbound_ports)]);
        }
        if !c.exclude_outbound_cidrs.is_empty() {
            let cidrs: Vec<String> = c.exclude_outbound_cidrs.iter().map(ToString::to_string).collect();
            args.extend(["--exclude-outbound-cidrs".into(), cidrs.join(",")]);
        }
        Container {
            name: INIT.into(),
            image: Some(settings.image.clone()),
            image_pull_policy: settings.image_pull_policy.clone(),
            command: Some(vec![BINARY.into()]),
            args: Some(args),
            resources: Some(resources(&[("cpu", "10m"), ("memory", "16Mi")], &[("memory", "64Mi")])),
            security_context: Some(SecurityContext {
                run_as_user: Some(0),
                run_as_group: Some(0),
                run_as_non_root: Some(false),
                allow_privilege_escalation: Some(false),
                privileged: Some(false),
                // iptables takes its lock file under /run.
                read_only_root_filesystem: Some(false),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                    drop: Some(vec!["ALL".into()]),
                }),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The proxy: non-root, read-only root filesystem, no capabilities.
    fn proxy_container(&self, settings: &Settings) -> Container {
        let any = self.any();
        let mut vars = vec![
            env("MESHWARD_IDENTITY__CERT", &format!("{IDENTITY_DIR}/tls.crt")),
            env("MESHWARD_IDENTITY__KEY", &format!("{IDENTITY_DIR}/tls.key")),
            env("MESHWARD_IDENTITY__TRUST_BUNDLE", &format!("{IDENTITY_DIR}/ca.crt")),
            // Values are read as YAML: quoted so that `[::]:15006` is a string, not a list.
            env("MESHWARD_INBOUND__LISTEN", &format!("\"{any}:{}\"", settings.inbound_port)),
            env("MESHWARD_INBOUND__TRANSPARENT", "true"),
            env("MESHWARD_INBOUND__MODE", self.mtls.as_str()),
            env(
                "MESHWARD_OUTBOUND__LISTENERS",
                &format!("[{{name: transparent, listen: \"{any}:{}\"}}]", settings.outbound_port),
            ),
            // Reachable by the kubelet's probes and Prometheus; never captured.
            env("MESHWARD_ADMIN__LISTEN", &format!("\"{any}:{}\"", settings.admin_port)),
            env("MESHWARD_LOG__FORMAT", "json"),
            env("MESHWARD_LOG__LEVEL", self.opts.log_level.as_deref().unwrap_or("info")),
            EnvVar {
                name: "MESHWARD_WORKLOAD__NAMESPACE".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector { field_path: "metadata.namespace".into(), api_version: None }),
                    ..Default::default()
                }),
                value: None,
            },
            env("MESHWARD_WORKLOAD__LABELS_FILE", &format!("{PODINFO_DIR}/labels")),
        ];
        if !self.port_modes.is_empty() {
            let modes: Vec<String> = self.port_modes.iter().map(|(p, m)| format!("\"{p}\": {}", m.as_str())).collect();
            vars.push(env_var("MESHWARD_INBOUND__PORT_MODES", format!("{{{}}}", modes.join(", "))));
        }
        let mut mounts = vec![
            mount("meshward-identity", IDENTITY_DIR),
            mount("meshward-podinfo", PODINFO_DIR),
            VolumeMount { name: "meshward-tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
        ];
        if self.opts.policy_configmap.is_some() {
            vars.push(env("MESHWARD_POLICY__PATHS", &format!("[\"{POLICY_DIR}\"]")));
            mounts.push(mount("meshward-policies", POLICY_DIR));
        }
        let probe = |path: &str, failure_threshold: i32, period: i32| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(settings.admin_port)),
                ..Default::default()
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failure_threshold),
            timeout_seconds: Some(1),
            ..Default::default()
        };
        let mut c = Container {
            name: PROXY.into(),
            image: Some(settings.image.clone()),
            image_pull_policy: settings.image_pull_policy.clone(),
            command: Some(vec![BINARY.into()]),
            args: Some(vec!["run".into()]),
            env: Some(vars),
            ports: Some(vec![port("mw-inbound", settings.inbound_port), port("mw-admin", settings.admin_port)]),
            readiness_probe: Some(probe("/ready", 3, 5)),
            liveness_probe: Some(probe("/live", 3, 10)),
            resources: Some(resources(
                &[
                    ("cpu", self.opts.cpu.as_deref().unwrap_or("50m")),
                    ("memory", self.opts.memory.as_deref().unwrap_or("64Mi")),
                ],
                &[("memory", self.opts.memory_limit.as_deref().unwrap_or("256Mi"))]
                    .into_iter()
                    .chain(self.opts.cpu_limit.as_deref().map(|c| ("cpu", c)))
                    .collect::<Vec<_>>(),
            )),
            security_context: Some(SecurityContext {
                run_as_user: Some(i64::from(settings.proxy_uid)),
                run_as_group: Some(i64::from(settings.proxy_uid)),
                run_as_non_root: Some(true),
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: Some(false),
                privileged: Some(false),
                capabilities: Some(Capabilities { add: None, drop: Some(vec!["ALL".into()]) }),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
                ..Default::default()
            }),
            volume_mounts: Some(mounts),
            ..Default::default()
        };
        match self.mode {
            SidecarMode::Native => {
                c.restart_policy = Some("Always".into());
                if self.hold {
                    // The kubelet starts the next container only after this succeeds.
                    c.startup_probe = Some(Probe { period_seconds: Some(1), ..probe("/ready", 120, 1) });
                }
            }
            SidecarMode::Legacy => {
                if self.hold {
                    // postStart blocks the start of the following containers until it returns.
                    c.lifecycle = Some(Lifecycle {
                        post_start: Some(LifecycleHandler {
                            exec: Some(ExecAction {
                                command: Some(vec![
                                    BINARY.into(),
                                    "wait-ready".into(),
                                    "--admin".into(),
                                    format!("127.0.0.1:{}", settings.admin_port),
                                    "--timeout".into(),
                                    "120s".into(),
                                ]),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
        }
        c
    }

    fn volumes(&self, service_account: &str, settings: &Settings) -> Vec<Volume> {
        let identity = self
            .opts
            .identity
            .clone()
            .unwrap_or_else(|| Identity::Secret(settings.identity_secret.replace("{sa}", service_account)));
        let identity = match identity {
            Identity::Secret(name) => Volume {
                name: "meshward-identity".into(),
                secret: Some(SecretVolumeSource { secret_name: Some(name), ..Default::default() }),
                ..Default::default()
            },
            Identity::Csi(issuer) => Volume {
                name: "meshward-identity".into(),
                csi: Some(CSIVolumeSource {
                    driver: "csi.cert-manager.io".into(),
                    read_only: Some(true),
                    volume_attributes: Some(BTreeMap::from([
                        ("csi.cert-manager.io/issuer-name".to_owned(), issuer),
                        ("csi.cert-manager.io/issuer-kind".to_owned(), "ClusterIssuer".to_owned()),
                        (
                            "csi.cert-manager.io/uri-sans".to_owned(),
                            "spiffe://cluster.local/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}".to_owned(),
                        ),
                        (
                            "csi.cert-manager.io/common-name".to_owned(),
                            "${SERVICE_ACCOUNT_NAME}.${POD_NAMESPACE}".to_owned(),
                        ),
                        ("csi.cert-manager.io/key-usages".to_owned(), "server auth,client auth".to_owned()),
                        ("csi.cert-manager.io/fs-group".to_owned(), settings.proxy_uid.to_string()),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        let mut v = vec![
            identity,
            Volume {
                name: "meshward-podinfo".into(),
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "labels".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "meshward-tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(Quantity("16Mi".into())),
                }),
                ..Default::default()
            },
        ];
        if let Some(cm) = &self.opts.policy_configmap {
            v.push(Volume {
                name: "meshward-policies".into(),
                config_map: Some(ConfigMapVolumeSource { name: cm.clone(), ..Default::default() }),
                ..Default::default()
            });
        }
        v
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    env_var(name, value.to_owned())
}

fn env_var(name: &str, value: String) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value), value_from: None }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(true), ..Default::default() }
}

fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect()
    };
    ResourceRequirements { requests: Some(map(requests)), limits: Some(map(limits)), ..Default::default() }
}

/// The ports the kubelet probes (HTTP, TCP, gRPC) on app containers, named
/// ports resolved against the container's own `ports`.
fn probe_ports(spec: &Map, warnings: &mut Vec<String>) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    let containers = spec.get("containers").and_then(Value::as_sequence).into_iter().flatten();
    let sidecars = spec
        .get("initContainers")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"));
    for c in containers.chain(sidecars) {
        let cname = c.get("name").and_then(Value::as_str).unwrap_or("?");
        for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let Some(probe) = c.get(kind) else { continue };
            for handler in ["httpGet", "tcpSocket", "grpc"] {
                let Some(port) = probe.get(handler).and_then(|h| h.get("port")) else { continue };
                match resolve_port(c, port) {
                    Some(p) => {
                        out.insert(p);
                    }
                    None => warnings.push(format!(
                        "container {cname}: {kind} port {} does not resolve to a container port; the probe may fail under strict mTLS",
                        scalar(port)
                    )),
                }
            }
        }
    }
    out
}

fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse::<u16>().ok().or_else(|| {
            container.get("ports")?.as_sequence()?.iter().find_map(|p| {
                (p.get("name")?.as_str()? == s).then(|| p.get("containerPort")?.as_u64()?.try_into().ok())?
            })
        }),
        _ => None,
    }
}

/// Where the pod templates of a workload object are, by `kind`.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            &["spec", "template"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        "PodTemplate" => &["template"],
        _ => return None,
    })
}

/// One document's result: per pod (template), its name and report.
#[derive(Debug, Default)]
pub struct DocumentReport {
    /// `Kind/name` and the report of every pod template found.
    pub pods: Vec<(String, Report)>,
}

/// Injects every pod template in a Kubernetes object (Pod, workload kinds,
/// `List`). Other kinds are left alone. `namespaces` maps namespace names
/// to their annotations (from Namespace objects in the same stream).
pub fn inject_object(
    obj: &mut Value,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    settings: &Settings,
) -> Result<DocumentReport, InjectError> {
    let mut report = DocumentReport::default();
    inject_into(obj, namespaces, settings, &mut report, None)?;
    Ok(report)
}

fn inject_into(
    obj: &mut Value,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    settings: &Settings,
    report: &mut DocumentReport,
    parent_ns: Option<&str>,
) -> Result<(), InjectError> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    let name = at(obj, &["metadata", "name"]).and_then(Value::as_str).unwrap_or("?").to_owned();
    let ns = at(obj, &["metadata", "namespace"])
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| parent_ns.map(str::to_owned));
    let empty = BTreeMap::new();
    let ns_annotations = ns.as_deref().and_then(|n| namespaces.get(n)).unwrap_or(&empty);
    let label = format!("{kind}/{name}");
    let with = |e: InjectError| match e {
        InjectError::Shape(m) => shape(format!("{label}: {m}")),
        other => other,
    };
    if kind.ends_with("List") {
        if let Some(items) = obj.get_mut("items").and_then(Value::as_sequence_mut) {
            for item in items {
                inject_into(item, namespaces, settings, report, ns.as_deref())?;
            }
        }
        return Ok(());
    }
    let pod = if kind == "Pod" {
        Some(obj)
    } else if let Some(path) = template_path(&kind) {
        let mut node = obj;
        for key in path {
            node = match node.get_mut(*key) {
                Some(n) => n,
                None => return Err(shape(format!("{label}: missing {}", path.join(".")))),
            };
        }
        Some(node)
    } else {
        None
    };
    let Some(pod) = pod else { return Ok(()) };
    let pod = pod.as_mapping_mut().ok_or_else(|| shape(format!("{label}: pod template is not a mapping")))?;
    let mut metadata = pod.remove("metadata").unwrap_or(Value::Null);
    let mut spec = pod.remove("spec").ok_or_else(|| shape(format!("{label}: pod has no spec")))?;
    let result = inject_pod(&mut metadata, &mut spec, ns_annotations, settings).map_err(with);
    if !metadata.is_null() {
        pod.insert("metadata".into(), metadata);
    }
    pod.insert("spec".into(), spec);
    report.pods.push((label, result?));
    Ok(())
}

#[cfg(test)]
mod tests;
