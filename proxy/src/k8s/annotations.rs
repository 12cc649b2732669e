//! The `meshward.dev/*` annotations users set on pods (pod templates) and
//! namespaces, parsed and checked into [`PodOptions`]. A pod's annotation
//! wins over its namespace's. Unknown `meshward.dev/*` keys are reported as
//! warnings (a typo must not silently do nothing); invalid values are errors
//! that quote the value and say what was expected.

use std::collections::BTreeMap;

use ipnet::IpNet;

/// Prefix of every meshward annotation.
pub const PREFIX: &str = "meshward.dev/";
/// `enabled` | `disabled`: opt a pod (or namespace) in or out.
pub const INJECT: &str = "meshward.dev/inject";
/// Written by the injector: the meshward version that injected the pod.
pub const INJECTED: &str = "meshward.dev/injected";
/// Comma-separated inbound ports not captured (traffic reaches the app directly).
pub const SKIP_INBOUND_PORTS: &str = "meshward.dev/skip-inbound-ports";
/// Comma-separated outbound destination ports not captured.
pub const SKIP_OUTBOUND_PORTS: &str = "meshward.dev/skip-outbound-ports";
/// Comma-separated CIDRs whose outbound traffic is not captured.
pub const EXCLUDE_OUTBOUND_CIDRS: &str = "meshward.dev/exclude-outbound-cidrs";
/// Proxy CPU request (Kubernetes quantity).
pub const PROXY_CPU: &str = "meshward.dev/proxy-cpu";
/// Proxy CPU limit.
pub const PROXY_CPU_LIMIT: &str = "meshward.dev/proxy-cpu-limit";
/// Proxy memory request.
pub const PROXY_MEMORY: &str = "meshward.dev/proxy-memory";
/// Proxy memory limit.
pub const PROXY_MEMORY_LIMIT: &str = "meshward.dev/proxy-memory-limit";
/// The proxy's `log.level` (a tracing filter).
pub const LOG_LEVEL: &str = "meshward.dev/log-level";
/// Name of the ConfigMap holding the policy files to mount.
pub const POLICY_CONFIGMAP: &str = "meshward.dev/policy-configmap";
/// `strict` | `permissive`: the inbound mTLS mode.
pub const MTLS_MODE: &str = "meshward.dev/mtls-mode";
/// Per app port modes: `9090=permissive,8443=strict`.
pub const PORT_MTLS_MODES: &str = "meshward.dev/port-mtls-modes";
/// `true` | `false`: start the app only once the proxy is ready.
pub const HOLD_APPLICATION: &str = "meshward.dev/hold-application-until-proxy-starts";
/// `native` (init container with restartPolicy Always) | `legacy` (first container).
pub const SIDECAR_MODE: &str = "meshward.dev/sidecar-mode";
/// Name of the Secret with `tls.crt`, `tls.key`, `ca.crt`; or `csi:<issuer>`
/// for a per-pod certificate from the cert-manager CSI driver.
pub const IDENTITY: &str = "meshward.dev/identity";
/// `true` | `false`: listen dual-stack and write ip6tables rules too.
pub const IPV6: &str = "meshward.dev/ipv6";
/// `permissive` | `exclude`: how kubelet probes of app ports keep working.
pub const PROBES: &str = "meshward.dev/probes";

/// Every annotation meshward reads or writes.
pub const KNOWN: &[&str] = &[
    INJECT,
    INJECTED,
    SKIP_INBOUND_PORTS,
    SKIP_OUTBOUND_PORTS,
    EXCLUDE_OUTBOUND_CIDRS,
    PROXY_CPU,
    PROXY_CPU_LIMIT,
    PROXY_MEMORY,
    PROXY_MEMORY_LIMIT,
    LOG_LEVEL,
    POLICY_CONFIGMAP,
    MTLS_MODE,
    PORT_MTLS_MODES,
    HOLD_APPLICATION,
    SIDECAR_MODE,
    IDENTITY,
    IPV6,
    PROBES,
];

/// An annotation with a value meshward cannot use.
#[derive(Debug, thiserror::Error)]
#[error("annotation {key}: \"{value}\" {problem}")]
pub struct AnnotationError {
    /// The annotation key.
    pub key: String,
    /// Its value as written.
    pub value: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

/// Inbound mTLS mode, as the sidecar's `inbound.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mtls {
    /// Mutual TLS only.
    Strict,
    /// Mutual TLS or plaintext (plaintext carries no identity).
    Permissive,
}

impl Mtls {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Permissive => "permissive",
        }
    }
}

/// Where the proxy goes in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes >= 1.29).
    Native,
    /// The first app container, with a postStart hook that waits for readiness.
    Legacy,
}

/// How kubelet HTTP/TCP/gRPC probes of app containers get through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probes {
    /// Probe ports are captured but accept plaintext (port-level permissive):
    /// meshed peers still use mTLS, policies still apply, plaintext callers
    /// (the kubelet) carry no identity.
    Permissive,
    /// Probe ports are not captured at all: everything on them bypasses meshward.
    Exclude,
}

/// Where the workload certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A Secret (`tls.crt`, `tls.key`, `ca.crt`, cert-manager's layout).
    Secret(String),
    /// The cert-manager CSI driver with this issuer (a per-pod certificate).
    Csi(String),
}

/// The checked options of one pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodOptions {
    /// `Some(false)` when the pod or namespace opted out.
    pub inject: Option<bool>,
    /// Inbound ports left alone.
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone.
    pub skip_outbound_ports: Vec<u16>,
    /// Outbound destinations left alone.
    pub exclude_outbound_cidrs: Vec<IpNet>,
    /// CPU request.
    pub cpu: Option<String>,
    /// CPU limit.
    pub cpu_limit: Option<String>,
    /// Memory request.
    pub memory: Option<String>,
    /// Memory limit.
    pub memory_limit: Option<String>,
    /// Proxy log level.
    pub log_level: Option<String>,
    /// Policy ConfigMap name.
    pub policy_configmap: Option<String>,
    /// Inbound mTLS mode.
    pub mtls: Option<Mtls>,
    /// Per app port modes.
    pub port_mtls: BTreeMap<u16, Mtls>,
    /// Hold the app until the proxy is ready.
    pub hold_application: Option<bool>,
    /// Native or legacy sidecar.
    pub sidecar_mode: Option<SidecarMode>,
    /// Certificate source.
    pub identity: Option<Identity>,
    /// Dual-stack listeners and ip6tables rules.
    pub ipv6: Option<bool>,
    /// Probe handling.
    pub probes: Option<Probes>,
}

/// Parses the `meshward.dev/*` annotations of a namespace and a pod (pod
/// values win). Returns the options and a warning per unknown meshward key.
pub fn parse(
    namespace: &BTreeMap<String, String>,
    pod: &BTreeMap<String, String>,
) -> Result<(PodOptions, Vec<String>), AnnotationError> {
    let warnings = unknown(namespace, pod);
    let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
    for map in [namespace, pod] {
        for (k, v) in map {
            if KNOWN.contains(&k.as_str()) {
                merged.insert(k.as_str(), v.as_str());
            }
        }
    }
    let mut o = PodOptions::default();
    for (key, value) in merged {
        let err =
            |problem: &str| AnnotationError { key: key.to_owned(), value: value.to_owned(), problem: problem.into() };
        let v = value.trim();
        match key {
            INJECT => {
                o.inject = Some(match v {
                    "enabled" | "true" => true,
                    "disabled" | "false" => false,
                    _ => return Err(err("is not a choice (expected enabled or disabled)")),
                })
            }
            INJECTED => {}
            SKIP_INBOUND_PORTS => o.skip_inbound_ports = ports(v).map_err(|p| err(&p))?,
            SKIP_OUTBOUND_PORTS => o.skip_outbound_ports = ports(v).map_err(|p| err(&p))?,
            EXCLUDE_OUTBOUND_CIDRS => o.exclude_outbound_cidrs = cidrs(v).map_err(|p| err(&p))?,
            PROXY_CPU => o.cpu = Some(quantity(v).map_err(|p| err(&p))?),
            PROXY_CPU_LIMIT => o.cpu_limit = Some(quantity(v).map_err(|p| err(&p))?),
            PROXY_MEMORY => o.memory = Some(quantity(v).map_err(|p| err(&p))?),
            PROXY_MEMORY_LIMIT => o.memory_limit = Some(quantity(v).map_err(|p| err(&p))?),
            LOG_LEVEL => {
                if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '\'' || c == '"') {
                    return Err(err("is not a log filter (expected e.g. info, warn, meshward=debug)"));
                }
                o.log_level = Some(v.to_owned());
            }
            POLICY_CONFIGMAP => o.policy_configmap = Some(dns_name(v).map_err(|p| err(&p))?),
            MTLS_MODE => o.mtls = Some(mtls(v).ok_or_else(|| err("is not a mode (expected strict or permissive)"))?),
            PORT_MTLS_MODES => {
                for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let (port, mode) = item
                        .split_once('=')
                        .ok_or_else(|| err("is not a list of port=mode (expected e.g. 9090=permissive,8443=strict)"))?;
                    let port = port_number(port.trim()).map_err(|p| err(&p))?;
                    let mode = mtls(mode.trim())
                        .ok_or_else(|| err("names an unknown mode (expected strict or permissive)"))?;
                    o.port_mtls.insert(port, mode);
                }
            }
            HOLD_APPLICATION => o.hold_application = Some(boolean(v).ok_or_else(|| err("is not true or false"))?),
            SIDECAR_MODE => {
                o.sidecar_mode = Some(match v {
                    "native" => SidecarMode::Native,
                    "legacy" => SidecarMode::Legacy,
                    _ => return Err(err("is not a sidecar mode (expected native or legacy)")),
                })
            }
            IDENTITY => {
                o.identity = Some(match v.strip_prefix("csi:") {
                    Some(issuer) => Identity::Csi(dns_name(issuer).map_err(|p| err(&p))?),
                    None => Identity::Secret(dns_name(v).map_err(|p| err(&p))?),
                })
            }
            IPV6 => o.ipv6 = Some(boolean(v).ok_or_else(|| err("is not true or false"))?),
            PROBES => {
                o.probes = Some(match v {
                    "permissive" => Probes::Permissive,
                    "exclude" => Probes::Exclude,
                    _ => return Err(err("is not a probe handling (expected permissive or exclude)")),
                })
            }
            // KNOWN and this match list the same keys.
            _ => {}
        }
    }
    Ok((o, warnings))
}

/// A warning per `meshward.dev/*` key meshward does not know (a typo must not silently do nothing).
pub fn unknown(namespace: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> Vec<String> {
    let mut warnings = Vec::new();
    for (origin, map) in [("namespace", namespace), ("pod", pod)] {
        for k in map.keys().filter(|k| k.starts_with(PREFIX) && !KNOWN.contains(&k.as_str())) {
            warnings.push(format!(
                "unknown {origin} annotation {k} ignored (meshward reads: {})",
                KNOWN.iter().map(|k| &k[PREFIX.len()..]).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    warnings
}

fn boolean(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn mtls(v: &str) -> Option<Mtls> {
    match v.to_ascii_lowercase().as_str() {
        "strict" => Some(Mtls::Strict),
        "permissive" => Some(Mtls::Permissive),
        _ => None,
    }
}

fn port_number(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("has \"{s}\", which is not a port (expected 1..=65535)")),
    }
}

/// Comma-separated ports, e.g. `9090, 9091`.
pub fn ports(v: &str) -> Result<Vec<u16>, String> {
    let mut out: Vec<u16> =
        v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(port_number).collect::<Result<_, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Comma-separated CIDRs (a bare address means a single host).
pub fn cidrs(v: &str) -> Result<Vec<IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("has \"{s}\", which is not a CIDR (expected e.g. 10.96.0.1/32 or fd00::/8)"))
        })
        .collect()
}

/// A Kubernetes resource quantity (`100m`, `0.5`, `128Mi`, `1e3`).
fn quantity(v: &str) -> Result<String, String> {
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &v[digits.len()..];
    let number_ok = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && digits != ".";
    let suffix_ok =
        matches!(suffix, "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei");
    if number_ok && suffix_ok {
        Ok(v.to_owned())
    } else {
        Err("is not a quantity (expected e.g. 100m, 0.5, 128Mi, 1Gi)".into())
    }
}

/// A DNS-1123 subdomain (Secret, ConfigMap and issuer names).
fn dns_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(v.to_owned())
    } else {
        Err("is not a Kubernetes object name (expected lower-case letters, digits, '-' and '.')".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn pod_wins_over_namespace_and_unknown_keys_warn() {
        let ns = map(&[(LOG_LEVEL, "debug"), (MTLS_MODE, "permissive"), ("meshward.dev/loglevel", "x")]);
        let pod = map(&[(LOG_LEVEL, "warn"), (SKIP_INBOUND_PORTS, "9090, 8081,9090"), ("other.io/x", "y")]);
        let (o, warnings) = parse(&ns, &pod).expect("valid");
        assert_eq!(o.log_level.as_deref(), Some("warn"));
        assert_eq!(o.mtls, Some(Mtls::Permissive));
        assert_eq!(o.skip_inbound_ports, [8081, 9090]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("meshward.dev/loglevel"), "{warnings:?}");
    }

    #[test]
    fn invalid_values_are_refused_with_the_value_quoted() {
        let cases = [
            (SKIP_INBOUND_PORTS, "80,http", "\"http\""),
            (SKIP_OUTBOUND_PORTS, "0", "not a port"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/33", "not a CIDR"),
            (PROXY_MEMORY, "lots", "not a quantity"),
            (PROXY_CPU, "1.2.3", "not a quantity"),
            (MTLS_MODE, "STRICTISH", "strict or permissive"),
            (PORT_MTLS_MODES, "9090:permissive", "port=mode"),
            (INJECT, "yes", "enabled or disabled"),
            (POLICY_CONFIGMAP, "My_Policies", "object name"),
            (SIDECAR_MODE, "sidecar", "native or legacy"),
            (PROBES, "rewrite", "permissive or exclude"),
            (LOG_LEVEL, "info warn", "log filter"),
        ];
        for (key, value, expect) in cases {
            let e = parse(&BTreeMap::new(), &map(&[(key, value)])).expect_err(key).to_string();
            assert!(e.contains(key) && e.contains(expect), "{key}={value}: {e}");
        }
    }

    #[test]
    fn full_set_parses() {
        let pod = map(&[
            (INJECT, "enabled"),
            (EXCLUDE_OUTBOUND_CIDRS, "169.254.169.254, fd00::/8, 10.96.0.1/32"),
            (PORT_MTLS_MODES, "9090=permissive,8443=STRICT"),
            (PROXY_CPU, "100m"),
            (PROXY_MEMORY_LIMIT, "256Mi"),
            (IDENTITY, "csi:meshward-ca"),
            (HOLD_APPLICATION, "false"),
        ]);
        let (o, w) = parse(&BTreeMap::new(), &pod).expect("valid");
        assert!(w.is_empty());
        assert_eq!(o.inject, Some(true));
        assert_eq!(o.exclude_outbound_cidrs.len(), 3);
        assert_eq!(o.exclude_outbound_cidrs[0].to_string(), "169.254.169.254/32");
        assert_eq!(o.port_mtls.get(&8443), Some(&Mtls::Strict));
        assert_eq!(o.identity, Some(Identity::Csi("meshward-ca".into())));
        assert_eq!(o.hold_application, Some(false));
    }
}
