//! Configuration: the YAML file a person edits, parsed into `Raw*` types and
//! validated into [`Config`], the only type the rest of the proxy accepts.
//!
//! Every field can also be set with a `MESHWARD_*` environment variable: the
//! path of the field in upper case, nesting separated by a double underscore
//! (`limits.header_read_timeout` is `MESHWARD_LIMITS__HEADER_READ_TIMEOUT`).
//! The value is read as YAML, so lists and maps work too. The environment is
//! passed in ([`Config::load`]) so tests never touch the process environment.
//! Unknown keys, in the file or the environment, are errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use crate::tls::identity::SpiffeId;

/// Prefix of the environment variables that override config fields.
pub const ENV_PREFIX: &str = "MESHWARD_";

/// Why a configuration was refused. Messages name the field and quote the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML (file plus environment overrides) did not match the schema.
    #[error("{origin}: {message}")]
    Parse {
        /// File name or "environment".
        origin: String,
        /// serde's message, which names the field and the position.
        message: String,
    },
    /// An environment override could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A field parsed but its value is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `limits.max_connections`.
        field: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.to_owned(), message: message.into() }
}

// ---------------------------------------------------------------- raw types

/// The file as written. See `docs/configuration.md` for every field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Certificate, key and trust bundle files.
    pub identity: Option<RawIdentity>,
    /// The inbound (server-side) listener.
    pub inbound: Option<RawInbound>,
    /// The outbound (client-side) listeners.
    pub outbound: Option<RawOutbound>,
    /// The admin server.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: RawLimits,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// The async runtime.
    #[serde(default)]
    pub runtime: RawRuntime,
    /// Policy files.
    #[serde(default)]
    pub policy: RawPolicy,
    /// The workload this sidecar protects (for policy attachment).
    #[serde(default)]
    pub workload: RawWorkload,
    /// The anomaly detector.
    #[serde(default)]
    pub detector: crate::detect::RawDetector,
    /// Alert webhooks.
    pub alerts: Option<crate::alerts::RawAlerts>,
}

/// `workload:` section: which policies attach to this sidecar. Without it
/// every loaded policy applies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    /// The pod's namespace (e.g. from the downward API via
    /// `MESHWARD_WORKLOAD__NAMESPACE`). Policies of other namespaces do not apply.
    /// Any scalar is taken as text: environment values are read as YAML, and
    /// namespaces such as `true` or `2024` must not fail the config.
    #[serde(default, deserialize_with = "scalar_as_text")]
    pub namespace: Option<String>,
    /// The pod's labels, matched by policies' `selector.matchLabels`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// A downward-API labels file (`key="value"` per line), read at start.
    pub labels_file: Option<PathBuf>,
}

/// `policy:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Policy files or directories (`*.yaml`, `*.yml`), e.g. a ConfigMap mount.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// How often the files are checked for changes. Default 2s.
    pub reload_interval: Option<String>,
}

/// `runtime:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// Worker threads; 0 means one per CPU. Default 1.
    pub worker_threads: Option<u64>,
}

/// `identity:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// PEM certificate chain of this workload (leaf first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that peers must chain to.
    pub trust_bundle: PathBuf,
    /// How often the files are checked for changes. Default 2s.
    pub reload_interval: Option<String>,
}

/// `inbound:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInbound {
    /// Listen address. Default `0.0.0.0:15006`.
    pub listen: Option<String>,
    /// App address when not transparent (or when the connection was not redirected).
    pub app: Option<String>,
    /// Use `SO_ORIGINAL_DST`: the app port is the original destination port.
    #[serde(default)]
    pub transparent: bool,
    /// Host of the app in transparent mode. Default `127.0.0.1`.
    pub app_host: Option<String>,
    /// `strict` (mTLS only, default) or `permissive` (mTLS or plaintext).
    pub mode: Option<String>,
    /// Per app port mode overrides, e.g. `{"9090": permissive}`.
    #[serde(default)]
    pub port_modes: BTreeMap<String, String>,
    /// Header that carries the verified peer identity to the app.
    pub identity_header: Option<String>,
    /// HTTP version spoken to the app: `auto` (default), `http1` or `http2`.
    pub app_protocol: Option<String>,
}

/// `outbound:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    /// Plaintext listeners for the local app.
    #[serde(default)]
    pub listeners: Vec<RawOutboundListener>,
}

/// One outbound listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutboundListener {
    /// Name used in logs and metrics.
    pub name: String,
    /// Listen address.
    pub listen: String,
    /// Peer sidecar to connect to; absent: transparent (`SO_ORIGINAL_DST`).
    pub target: Option<String>,
    /// SPIFFE ID the peer's certificate must carry; absent: any identity of the trust bundle.
    pub server_identity: Option<String>,
    /// Expected peer identity per original destination (transparent listeners).
    #[serde(default)]
    pub server_identities: BTreeMap<String, String>,
    /// `auto` (default: detect HTTP, else opaque TCP), `http` or `tcp`.
    pub protocol: Option<String>,
}

/// `admin:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Listen address. Default `127.0.0.1:15000`.
    pub listen: Option<String>,
}

/// `limits:` section. Durations are humantime strings (`10s`, `250ms`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Concurrent connections per listener. Default 10000.
    pub max_connections: Option<u64>,
    /// Time to receive a complete request head. Default 10s.
    pub header_read_timeout: Option<String>,
    /// Bytes in a request head. Default 65536.
    pub max_header_bytes: Option<u64>,
    /// Connection idle time with no request in flight. Default 300s.
    pub idle_timeout: Option<String>,
    /// Time to connect (and handshake) to an upstream. Default 5s.
    pub connect_timeout: Option<String>,
    /// Time until the upstream's response head. Default 300s.
    pub request_timeout: Option<String>,
    /// Largest request body. Default 1 GiB.
    pub max_request_body_bytes: Option<u64>,
    /// Time to wait for the first bytes when detecting the protocol. Default 1s.
    pub protocol_detect_timeout: Option<String>,
}

/// `log:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `auto` (text on a terminal, JSON otherwise), `text` or `json`.
    pub format: Option<String>,
    /// tracing filter, e.g. `info` or `meshward=debug`. Default `info`.
    pub level: Option<String>,
}

/// `shutdown:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// How long in-flight requests may take after SIGTERM. Default 30s.
    pub grace_period: Option<String>,
}

// ------------------------------------------------------------ checked types

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Certificate files; required when an inbound or outbound listener exists.
    pub identity: Option<IdentityFiles>,
    /// The inbound listener, if any.
    pub inbound: Option<Inbound>,
    /// Outbound listeners.
    pub outbound: Vec<OutboundListener>,
    /// Admin listen address.
    pub admin_listen: SocketAddr,
    /// Limits.
    pub limits: Limits,
    /// Logging.
    pub log: LogConfig,
    /// Grace period for in-flight requests at shutdown.
    pub grace_period: Duration,
    /// Worker threads of the runtime; 0 means one per CPU.
    pub worker_threads: usize,
    /// Policy files or directories; empty: no policy (everything allowed).
    pub policy_paths: Vec<PathBuf>,
    /// Poll interval for policy changes.
    pub policy_reload_interval: Duration,
    /// The workload policies attach to; `None`: every policy applies.
    pub workload: Option<meshward_policies::compile::Workload>,
    /// The anomaly detector.
    pub detector: crate::detect::DetectorConfig,
    /// Alert webhooks; `None`: no alerts are sent.
    pub alerts: Option<crate::alerts::AlertsConfig>,
}

/// Certificate files.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// Trust bundle.
    pub trust_bundle: PathBuf,
    /// Poll interval for changes.
    pub reload_interval: Duration,
}

/// mTLS mode of an inbound port, like Istio's PeerAuthentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    /// Only mutual TLS.
    Strict,
    /// Mutual TLS or plaintext; plaintext carries no identity.
    Permissive,
}

impl MtlsMode {
    fn parse(field: &str, s: &str) -> Result<Self, ConfigError> {
        match s {
            "strict" | "STRICT" => Ok(Self::Strict),
            "permissive" | "PERMISSIVE" => Ok(Self::Permissive),
            other => Err(invalid(field, format!("unknown mode \"{other}\" (expected strict or permissive)"))),
        }
    }
}

/// The inbound listener.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Listen address.
    pub listen: SocketAddr,
    /// App address for connections without an original destination.
    pub app: Option<SocketAddr>,
    /// Honour `SO_ORIGINAL_DST`.
    pub transparent: bool,
    /// Host of the app in transparent mode.
    pub app_host: std::net::IpAddr,
    /// Default mode.
    pub mode: MtlsMode,
    /// Per app port overrides.
    pub port_modes: BTreeMap<u16, MtlsMode>,
    /// Header carrying the peer identity to the app.
    pub identity_header: HeaderName,
    /// HTTP version spoken to the app.
    pub app_protocol: AppProtocolSetting,
}

/// Which HTTP version the inbound side speaks to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProtocolSetting {
    /// HTTP/1.1, except HTTP/2 for gRPC requests that arrived over HTTP/2.
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 with prior knowledge (h2c).
    Http2,
}

impl Inbound {
    /// The mode that applies to connections for `app_port`.
    pub fn mode_for(&self, app_port: u16) -> MtlsMode {
        self.port_modes.get(&app_port).copied().unwrap_or(self.mode)
    }
}

/// What an outbound listener expects to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Detect: HTTP/1, HTTP/2 prior knowledge, or else opaque TCP.
    Auto,
    /// HTTP only.
    Http,
    /// Opaque TCP.
    Tcp,
}

/// One outbound listener.
#[derive(Debug, Clone)]
pub struct OutboundListener {
    /// Name for logs and metrics.
    pub name: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Fixed peer, or `None` for transparent.
    pub target: Option<SocketAddr>,
    /// Expected peer identity for a fixed target.
    pub server_identity: Option<SpiffeId>,
    /// Expected peer identity per original destination.
    pub server_identities: BTreeMap<SocketAddr, SpiffeId>,
    /// Protocol handling.
    pub protocol: Protocol,
}

impl OutboundListener {
    /// The identity expected from `dest`, if one is configured.
    pub fn expected_identity(&self, dest: SocketAddr) -> Option<&SpiffeId> {
        match self.target {
            Some(_) => self.server_identity.as_ref(),
            None => self.server_identities.get(&dest).or(self.server_identity.as_ref()),
        }
    }
}

/// Limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent connections per listener.
    pub max_connections: usize,
    /// Time to read a request head.
    pub header_read_timeout: Duration,
    /// Bytes in a request head.
    pub max_header_bytes: usize,
    /// Idle connection time.
    pub idle_timeout: Duration,
    /// Upstream connect (and TLS handshake) time.
    pub connect_timeout: Duration,
    /// Time until the upstream's response head.
    pub request_timeout: Duration,
    /// Largest request body in bytes.
    pub max_request_body_bytes: u64,
    /// Protocol detection wait.
    pub protocol_detect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(300),
            max_request_body_bytes: 1 << 30,
            protocol_detect_timeout: Duration::from_secs(1),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Format.
    pub format: LogFormat,
    /// tracing-subscriber filter directive.
    pub level: String,
}

// --------------------------------------------------------------- loading

impl Config {
    /// Reads `path` (if any), applies `MESHWARD_*` overrides from `env` and validates.
    pub fn load<I>(path: Option<&Path>, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.to_owned(), source })?,
                p.display().to_string(),
            ),
            None => (String::new(), "environment".to_owned()),
        };
        Self::from_yaml_with_env(&text, &origin, env)
    }

    /// Parses YAML text only (no environment); used by tests and the fuzzer.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::from_yaml_with_env(text, "config", std::iter::empty())
    }

    /// Parses YAML text, applies environment overrides, validates.
    pub fn from_yaml_with_env<I>(text: &str, origin: &str, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut doc: serde_yaml::Value = if text.trim().is_empty() {
            serde_yaml::Value::Mapping(Default::default())
        } else {
            serde_yaml::from_str(text)
                .map_err(|e| ConfigError::Parse { origin: origin.to_owned(), message: e.to_string() })?
        };
        if doc.is_null() {
            doc = serde_yaml::Value::Mapping(Default::default());
        }
        let mut overridden = false;
        let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        vars.sort();
        for (var, value) in vars {
            apply_env_override(&mut doc, &var, &value)?;
            overridden = true;
        }
        let origin = if overridden { format!("{origin} (with MESHWARD_* overrides)") } else { origin.to_owned() };
        // serde_path_to_error names the field ("limits.max_connections: ...")
        // for type errors, which serde_yaml alone does not.
        let raw: RawConfig = serde_path_to_error::deserialize(doc).map_err(|e| ConfigError::Parse {
            origin,
            message: if e.path().iter().next().is_some() {
                format!("{}: {}", e.path(), e.inner())
            } else {
                e.inner().to_string()
            },
        })?;
        Config::try_from(raw)
    }
}

/// Sets the field named by `var` (`MESHWARD_A__B`) in `doc` to `value` read as YAML.
fn apply_env_override(doc: &mut serde_yaml::Value, var: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Env { var: var.to_owned(), message: "empty path segment".into() });
    }
    let parsed: serde_yaml::Value = serde_yaml::from_str(value).map_err(|e| ConfigError::Env {
        var: var.to_owned(),
        message: format!("value {value:?} is not valid YAML: {e}"),
    })?;
    let mut node = doc;
    for (i, key) in path.iter().enumerate() {
        let map = match node {
            serde_yaml::Value::Mapping(m) => m,
            other if other.is_null() => {
                *other = serde_yaml::Value::Mapping(Default::default());
                match other {
                    serde_yaml::Value::Mapping(m) => m,
                    // Just assigned a mapping above.
                    _ => unreachable!("assigned a mapping"),
                }
            }
            _ => {
                return Err(ConfigError::Env {
                    var: var.to_owned(),
                    message: format!("'{}' is not a section", path[..i].join(".")),
                })
            }
        };
        let k = serde_yaml::Value::String(key.clone());
        if i + 1 == path.len() {
            map.insert(k, parsed);
            return Ok(());
        }
        node = map.entry(k).or_insert(serde_yaml::Value::Null);
    }
    Ok(())
}

fn duration(field: &str, v: Option<&String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s.trim())
            .map_err(|e| invalid(field, format!("\"{s}\" is not a duration ({e}; expected e.g. 10s, 250ms, 5m)"))),
    }
}

fn nonzero_duration(field: &str, v: Option<&String>, default: Duration) -> Result<Duration, ConfigError> {
    let d = duration(field, v, default)?;
    if d.is_zero() {
        return Err(invalid(field, "must be greater than zero"));
    }
    Ok(d)
}

fn socket_addr(field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse().map_err(|_| {
        invalid(field, format!("\"{s}\" is not an address (expected ip:port, e.g. 127.0.0.1:15006 or [::1]:15006)"))
    })
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let d = Limits::default();
        let l = &raw.limits;
        let positive = |field: &str, v: Option<u64>, default: u64| -> Result<u64, ConfigError> {
            match v {
                Some(0) => Err(invalid(field, "must be greater than zero")),
                Some(n) => Ok(n),
                None => Ok(default),
            }
        };
        let max_header_bytes = positive("limits.max_header_bytes", l.max_header_bytes, d.max_header_bytes as u64)?;
        if max_header_bytes < 8192 {
            return Err(invalid("limits.max_header_bytes", format!("{max_header_bytes} is too small (minimum 8192)")));
        }
        let limits = Limits {
            max_connections: usize::try_from(positive(
                "limits.max_connections",
                l.max_connections,
                d.max_connections as u64,
            )?)
            .unwrap_or(usize::MAX),
            header_read_timeout: nonzero_duration(
                "limits.header_read_timeout",
                l.header_read_timeout.as_ref(),
                d.header_read_timeout,
            )?,
            max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
            idle_timeout: nonzero_duration("limits.idle_timeout", l.idle_timeout.as_ref(), d.idle_timeout)?,
            connect_timeout: nonzero_duration("limits.connect_timeout", l.connect_timeout.as_ref(), d.connect_timeout)?,
            request_timeout: nonzero_duration("limits.request_timeout", l.request_timeout.as_ref(), d.request_timeout)?,
            max_request_body_bytes: positive(
                "limits.max_request_body_bytes",
                l.max_request_body_bytes,
                d.max_request_body_bytes,
            )?,
            protocol_detect_timeout: nonzero_duration(
                "limits.protocol_detect_timeout",
                l.protocol_detect_timeout.as_ref(),
                d.protocol_detect_timeout,
            )?,
        };

        let identity = match raw.identity {
            None => None,
            Some(i) => Some(IdentityFiles {
                cert: i.cert,
                key: i.key,
                trust_bundle: i.trust_bundle,
                reload_interval: nonzero_duration(
                    "identity.reload_interval",
                    i.reload_interval.as_ref(),
                    Duration::from_secs(2),
                )?,
            }),
        };

        let inbound = match raw.inbound {
            None => None,
            Some(i) => {
                let listen = socket_addr("inbound.listen", i.listen.as_deref().unwrap_or("0.0.0.0:15006"))?;
                let app = i.app.as_deref().map(|a| socket_addr("inbound.app", a)).transpose()?;
                if !i.transparent && app.is_none() {
                    return Err(invalid("inbound.app", "required unless inbound.transparent is true"));
                }
                let app_host = i.app_host.as_deref().unwrap_or("127.0.0.1");
                let app_host = app_host
                    .parse()
                    .map_err(|_| invalid("inbound.app_host", format!("\"{app_host}\" is not an IP address")))?;
                let mode = MtlsMode::parse("inbound.mode", i.mode.as_deref().unwrap_or("strict"))?;
                let mut port_modes = BTreeMap::new();
                for (port, m) in &i.port_modes {
                    let field = format!("inbound.port_modes.{port}");
                    let p: u16 =
                        port.parse().map_err(|_| invalid(&field, format!("\"{port}\" is not a port number")))?;
                    port_modes.insert(p, MtlsMode::parse(&field, m)?);
                }
                let header = i.identity_header.as_deref().unwrap_or(crate::http::headers::DEFAULT_IDENTITY_HEADER);
                let identity_header = HeaderName::try_from(header).map_err(|_| {
                    invalid("inbound.identity_header", format!("\"{header}\" is not a valid header name"))
                })?;
                if crate::http::headers::is_reserved(&identity_header) {
                    return Err(invalid(
                        "inbound.identity_header",
                        format!("\"{header}\" is a hop-by-hop or framing header"),
                    ));
                }
                let app_protocol = match i.app_protocol.as_deref().unwrap_or("auto") {
                    "auto" => AppProtocolSetting::Auto,
                    "http1" => AppProtocolSetting::Http1,
                    "http2" => AppProtocolSetting::Http2,
                    other => {
                        return Err(invalid(
                            "inbound.app_protocol",
                            format!("unknown protocol \"{other}\" (expected auto, http1 or http2)"),
                        ))
                    }
                };
                Some(Inbound {
                    listen,
                    app,
                    transparent: i.transparent,
                    app_host,
                    mode,
                    port_modes,
                    identity_header,
                    app_protocol,
                })
            }
        };

        let mut outbound = Vec::new();
        for (n, o) in raw.outbound.map(|o| o.listeners).unwrap_or_default().into_iter().enumerate() {
            let f = |name: &str| format!("outbound.listeners[{n}].{name}");
            if o.name.trim().is_empty() {
                return Err(invalid(&f("name"), "must not be empty"));
            }
            if outbound.iter().any(|x: &OutboundListener| x.name == o.name) {
                return Err(invalid(&f("name"), format!("duplicate listener name \"{}\"", o.name)));
            }
            let listen = socket_addr(&f("listen"), &o.listen)?;
            let target = o.target.as_deref().map(|t| socket_addr(&f("target"), t)).transpose()?;
            let server_identity = o
                .server_identity
                .as_deref()
                .map(|s| SpiffeId::parse(s).map_err(|e| invalid(&f("server_identity"), e.to_string())))
                .transpose()?;
            let mut server_identities = BTreeMap::new();
            for (dest, id) in &o.server_identities {
                let field = f(&format!("server_identities.{dest}"));
                let addr = socket_addr(&field, dest)?;
                server_identities.insert(addr, SpiffeId::parse(id).map_err(|e| invalid(&field, e.to_string()))?);
            }
            let protocol = match o.protocol.as_deref().unwrap_or("auto") {
                "auto" => Protocol::Auto,
                "http" => Protocol::Http,
                "tcp" => Protocol::Tcp,
                other => {
                    return Err(invalid(
                        &f("protocol"),
                        format!("unknown protocol \"{other}\" (expected auto, http or tcp)"),
                    ))
                }
            };
            outbound.push(OutboundListener {
                name: o.name,
                listen,
                target,
                server_identity,
                server_identities,
                protocol,
            });
        }

        if (inbound.is_some() || !outbound.is_empty()) && identity.is_none() {
            return Err(invalid("identity", "required when an inbound or outbound listener is configured"));
        }

        let admin_listen = socket_addr("admin.listen", raw.admin.listen.as_deref().unwrap_or("127.0.0.1:15000"))?;
        let format = match raw.log.format.as_deref().unwrap_or("auto") {
            "auto" => LogFormat::Auto,
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid("log.format", format!("unknown format \"{other}\" (expected auto, text or json)")))
            }
        };
        let level = raw.log.level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(invalid(
                "log.level",
                format!("\"{level}\" is not a log filter (expected e.g. info, warn, meshward=debug)"),
            ));
        }
        let grace_period =
            duration("shutdown.grace_period", raw.shutdown.grace_period.as_ref(), Duration::from_secs(30))?;

        let worker_threads = match raw.runtime.worker_threads {
            None => 1,
            Some(n) if n > 1024 => {
                return Err(invalid("runtime.worker_threads", format!("{n} is too many (expected 0..=1024)")))
            }
            Some(n) => n as usize,
        };
        let workload = workload(raw.workload)?;
        let detector = crate::detect::DetectorConfig::try_from(raw.detector)?;
        let alerts = match raw.alerts {
            None => None,
            Some(a) => Some(crate::alerts::AlertsConfig::try_from(a).map_err(
                |crate::alerts::AlertsConfigError::Invalid { field, message }| ConfigError::Invalid { field, message },
            )?),
        };
        Ok(Config {
            workload,
            detector,
            alerts,
            identity,
            inbound,
            outbound,
            admin_listen,
            limits,
            log: LogConfig { format, level },
            grace_period,
            worker_threads,
            policy_paths: raw.policy.paths,
            policy_reload_interval: nonzero_duration(
                "policy.reload_interval",
                raw.policy.reload_interval.as_ref(),
                Duration::from_secs(2),
            )?,
        })
    }
}

/// A string, bool or number read as its text (`true` -> "true").
fn scalar_as_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_yaml::Value>::deserialize(d)? {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(serde_yaml::Value::String(s)) => Ok(Some(s)),
        Some(serde_yaml::Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(serde_yaml::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!("expected a namespace name, got {other:?}"))),
    }
}

/// The checked `workload:` section; labels from the file win over inline ones.
fn workload(raw: RawWorkload) -> Result<Option<meshward_policies::compile::Workload>, ConfigError> {
    if raw.namespace.is_none() && raw.labels.is_empty() && raw.labels_file.is_none() {
        return Ok(None);
    }
    let mut labels = raw.labels;
    if let Some(path) = &raw.labels_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("workload.labels_file", format!("cannot read {}: {e}", path.display())))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let parsed = line.split_once('=').and_then(|(k, v)| {
                let v = v.trim();
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                (!k.trim().is_empty()).then(|| (k.trim().to_owned(), v.replace("\\\"", "\"")))
            });
            match parsed {
                Some((k, v)) => {
                    labels.insert(k, v);
                }
                None => {
                    return Err(invalid(
                        "workload.labels_file",
                        format!("{}:{}: \"{line}\" is not key=\"value\"", path.display(), i + 1),
                    ))
                }
            }
        }
    }
    let namespace = raw.namespace.filter(|n| !n.is_empty());
    Ok(Some(meshward_policies::compile::Workload { namespace, labels }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "identity: {cert: c.pem, key: k.pem, trust_bundle: ca.pem}\ninbound: {listen: 127.0.0.1:15006, app: 127.0.0.1:8080}\n";

    #[test]
    fn workload_labels_come_from_the_config_or_a_downward_api_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("labels");
        std::fs::write(&file, "app=\"fraud-model\"\npod-template-hash=\"7d9f\"\n").expect("write");
        let yaml =
            format!("{BASE}workload: {{namespace: ml, labels: {{tier: gold}}, labels_file: '{}'}}\n", file.display());
        let w = Config::from_yaml(&yaml).expect("valid").workload.expect("workload");
        assert_eq!(w.namespace.as_deref(), Some("ml"));
        assert_eq!(w.labels.get("app").map(String::as_str), Some("fraud-model"));
        assert_eq!(w.labels.get("tier").map(String::as_str), Some("gold"));
        assert!(Config::from_yaml(BASE).expect("valid").workload.is_none(), "no section: every policy applies");
        // Environment values are YAML: a namespace called `true` or `2024` is still a name.
        for (raw, want) in [("true", "true"), ("2024", "2024"), ("ml", "ml")] {
            let c = Config::from_yaml(&format!("{BASE}workload: {{namespace: {raw}}}\n")).expect("valid");
            assert_eq!(c.workload.and_then(|w| w.namespace).as_deref(), Some(want));
        }
        std::fs::write(&file, "garbage line\n").expect("write");
        let e = err(&yaml);
        assert!(
            e.starts_with("workload.labels_file: ") && e.contains(":1: \"garbage line\" is not key=\"value\""),
            "{e}"
        );
    }

    fn err(yaml: &str) -> String {
        match Config::from_yaml(yaml) {
            Ok(_) => panic!("config was accepted: {yaml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_apply() {
        let c = Config::from_yaml(BASE).expect("valid");
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.admin_listen, "127.0.0.1:15000".parse().expect("addr"));
        let i = c.inbound.expect("inbound");
        assert_eq!(i.mode, MtlsMode::Strict);
        assert_eq!(i.identity_header, "x-meshward-peer-id");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = err(&format!("{BASE}limits: {{max_conections: 5}}\n"));
        assert!(e.contains("max_conections"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_field_and_quote_the_value() {
        let e = err(&format!("{BASE}limits: {{header_read_timeout: soon}}\n"));
        assert!(e.contains("limits.header_read_timeout") && e.contains("\"soon\""), "{e}");
        let e = err(&format!("{BASE}runtime: {{worker_threads: 5000}}\n"));
        assert!(e.contains("runtime.worker_threads") && e.contains("5000"), "{e}");
        let e = err(&format!("{BASE}limits: {{max_connections: 0}}\n"));
        assert!(e.contains("limits.max_connections"), "{e}");
        let e = err("identity: {cert: c, key: k, trust_bundle: t}\ninbound: {app: 127.0.0.1:1, mode: lax}\n");
        assert!(e.contains("inbound.mode") && e.contains("\"lax\""), "{e}");
        let e = err("identity: {cert: c, key: k, trust_bundle: t}\ninbound: {app: 'localhost:80'}\n");
        assert!(e.contains("inbound.app") && e.contains("localhost:80"), "{e}");
        let e = err("identity: {cert: c, key: k, trust_bundle: t}\ninbound: {app: 127.0.0.1:1, app_protocol: h3}\n");
        assert!(e.contains("inbound.app_protocol") && e.contains("\"h3\""), "{e}");
        let e = err("inbound: {app: 127.0.0.1:1}\n");
        assert!(e.starts_with("identity:"), "{e}");
        let e = err(&format!(
            "{BASE}outbound: {{listeners: [{{name: a, listen: 127.0.0.1:1, server_identity: 'https://x'}}]}}\n"
        ));
        assert!(e.contains("outbound.listeners[0].server_identity"), "{e}");
    }

    #[test]
    fn environment_overrides_fields_and_refuses_unknown_ones() {
        let env = vec![
            ("MESHWARD_LIMITS__MAX_CONNECTIONS".to_owned(), "7".to_owned()),
            ("MESHWARD_INBOUND__MODE".to_owned(), "permissive".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let c = Config::from_yaml_with_env(BASE, "f", env).expect("valid");
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.inbound.expect("inbound").mode, MtlsMode::Permissive);

        let env = vec![("MESHWARD_LIMITS__NOPE".to_owned(), "1".to_owned())];
        let e = Config::from_yaml_with_env(BASE, "f", env).expect_err("unknown");
        assert!(e.to_string().contains("nope"), "{e}");

        let env = vec![(
            "MESHWARD_OUTBOUND__LISTENERS".to_owned(),
            "[{name: m, listen: '127.0.0.1:1', target: '127.0.0.1:2'}]".to_owned(),
        )];
        let c = Config::from_yaml_with_env(BASE, "f", env).expect("valid");
        assert_eq!(c.outbound.len(), 1);
    }
}
