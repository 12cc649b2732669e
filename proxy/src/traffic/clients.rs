//! Who calls the model server and how: client identities (SPIFFE IDs, JWT
//! subjects, pod IPs), client libraries with their headers and JSON habits,
//! and the behaviour of a normal client (rate with diurnal swing and bursts,
//! models and batch sizes, caching, retries, metadata and health calls).
//!
//! Attack clients are built from the same identity and library pools, so
//! nothing but their behaviour tells them apart.

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Exp1, StandardNormal};

use super::models::{self, Data, Infer, JsonStyle, Model, Tensor};
use crate::dataset::{Label, Record};

/// Client HTTP libraries seen in front of model servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// Python `requests` (json.dumps with spaces).
    PythonRequests,
    /// Triton's Python HTTP client (geventhttpclient); may use the binary extension.
    TritonClient,
    /// Go `net/http`.
    GoHttp,
    /// grpc-gateway style HTTP front ends (Go).
    GrpcGateway,
    /// Java/Kotlin OkHttp.
    OkHttp,
    /// Node axios.
    Axios,
    /// curl from a shell script or cron job.
    Curl,
}

const LIBRARIES: [Library; 10] = [
    Library::PythonRequests,
    Library::PythonRequests,
    Library::PythonRequests,
    Library::TritonClient,
    Library::TritonClient,
    Library::Curl,
    Library::GoHttp,
    Library::GrpcGateway,
    Library::OkHttp,
    Library::Axios,
];

impl Library {
    fn user_agent(self, rng: &mut StdRng) -> &'static str {
        let pick = |rng: &mut StdRng, v: &[&'static str]| v[rng.gen_range(0..v.len())];
        match self {
            Library::PythonRequests => pick(rng, &["python-requests/2.31.0", "python-requests/2.32.3"]),
            Library::TritonClient => {
                pick(rng, &["python/gevent-http-client-2.0.11", "python/gevent-http-client-2.3.1"])
            }
            Library::GoHttp => "Go-http-client/1.1",
            Library::GrpcGateway => pick(rng, &["grpc-gateway/2.19.1", "grpc-gateway/2.20.0"]),
            Library::OkHttp => pick(rng, &["okhttp/4.12.0", "okhttp/4.11.0"]),
            Library::Axios => pick(rng, &["axios/1.6.8", "axios/1.7.2"]),
            Library::Curl => pick(rng, &["curl/7.81.0", "curl/8.5.0"]),
        }
    }

    fn style(self) -> JsonStyle {
        JsonStyle { spaced: matches!(self, Library::PythonRequests), nested: false }
    }
}

/// A bearer token (JWT-shaped) for a subject, refreshed before it expires.
#[derive(Debug, Clone)]
pub struct Token {
    /// JWT `sub`.
    pub sub: String,
    /// `header.payload.signature`.
    pub value: String,
    /// Expiry (seconds, same clock as `ts`).
    pub exp: f64,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT-shaped token: real base64url JSON header and claims, random signature.
pub fn jwt(rng: &mut StdRng, sub: &str, iat: f64, alg: &str) -> Token {
    let kid: u32 = rng.gen_range(1..4);
    let header = format!(r#"{{"alg":"{alg}","kid":"k{kid}","typ":"JWT"}}"#);
    let (iat, exp) = (iat.floor() as i64, iat.floor() as i64 + 3600);
    let claims = format!(
        r#"{{"iss":"https://auth.corp.example.com/","sub":"{sub}","aud":"ml-inference","iat":{iat},"exp":{exp},"scope":"predict"}}"#
    );
    let sig: Vec<u8> = (0..256).map(|_| rng.gen()).collect();
    let sig = if alg == "none" { String::new() } else { b64url(&sig) };
    Token {
        sub: sub.to_owned(),
        value: format!("{}.{}.{}", b64url(header.as_bytes()), b64url(claims.as_bytes()), sig),
        exp: exp as f64,
    }
}

const NAMESPACES: &[&str] = &[
    "payments",
    "checkout",
    "risk",
    "fraud-ops",
    "analytics",
    "search",
    "recs",
    "support",
    "ml-platform",
    "mobile-api",
    "reporting",
    "batch",
    "onboarding",
    "marketing",
];
const ACCOUNTS: &[&str] =
    &["api", "worker", "scorer", "gateway", "backend", "etl", "notebook", "default", "consumer", "cron", "web"];
const SUBJECT_PREFIXES: &[&str] = &["svc-", "app-", "team-", "client-"];
const SUBJECT_NAMES: &[&str] = &[
    "checkout",
    "ledger",
    "review-moderation",
    "catalog",
    "chatbot",
    "kyc",
    "dashboard",
    "partner-sync",
    "mobile",
    "crm",
    "search-rank",
    "translations",
];

/// How the `client` field identifies a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A SPIFFE ID from the peer certificate.
    Spiffe,
    /// A JWT subject (the client sends bearer tokens).
    Subject,
    /// A source IP address.
    Ip,
}

/// A fresh client identity of `kind` (unique within `taken`).
pub fn identity(rng: &mut StdRng, kind: IdKind, taken: &mut std::collections::HashSet<String>) -> String {
    loop {
        let id = match kind {
            IdKind::Spiffe => format!(
                "spiffe://cluster.local/ns/{}/sa/{}",
                NAMESPACES[rng.gen_range(0..NAMESPACES.len())],
                ACCOUNTS[rng.gen_range(0..ACCOUNTS.len())]
            ),
            IdKind::Subject => {
                let base = format!(
                    "{}{}",
                    SUBJECT_PREFIXES[rng.gen_range(0..SUBJECT_PREFIXES.len())],
                    SUBJECT_NAMES[rng.gen_range(0..SUBJECT_NAMES.len())]
                );
                if rng.gen_bool(0.4) {
                    format!("{base}-{}", rng.gen_range(1..9))
                } else {
                    base
                }
            }
            IdKind::Ip => format!("10.{}.{}.{}", rng.gen_range(40..48), rng.gen_range(0..32), rng.gen_range(2..254)),
        };
        if taken.insert(id.clone()) {
            return id;
        }
    }
}

/// What a client sends besides the body: library, host, auth and tracing
/// headers, and its JSON habits.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Client library.
    pub lib: Library,
    /// Its user-agent string.
    pub user_agent: &'static str,
    /// Host header value.
    pub host: &'static str,
    /// Bearer token, for JWT-subject clients.
    pub token: Option<Token>,
    /// Sends `x-request-id`.
    pub request_id: bool,
    /// Sends W3C `traceparent`.
    pub traceparent: bool,
    /// JSON formatting.
    pub style: JsonStyle,
    /// Uses the binary tensor extension (Triton client only).
    pub binary: bool,
    /// Puts an `id` in requests.
    pub with_id: bool,
    /// Names the wanted output.
    pub with_outputs: bool,
    /// A fixed `parameters` object it always sends.
    pub parameters: Option<&'static str>,
}

const HOSTS: &[&str] = &["model-server.ml.svc.cluster.local:8000", "model-server:8000", "localhost:8000"];
const PARAMETERS: &[&str] = &[r#"{"priority":1}"#, r#"{"timeout":2000000}"#, r#"{"binary_data_output":false}"#];

impl Profile {
    /// A random profile; `sub` gives the client bearer tokens for that subject.
    pub fn random(rng: &mut StdRng, sub: Option<&str>, t: f64) -> Profile {
        let lib = LIBRARIES[rng.gen_range(0..LIBRARIES.len())];
        let go = matches!(lib, Library::GoHttp | Library::GrpcGateway);
        let mut style = lib.style();
        style.nested = rng.gen_bool(0.3);
        Profile {
            lib,
            user_agent: lib.user_agent(rng),
            host: HOSTS[rng.gen_range(0..HOSTS.len())],
            token: sub.map(|s| {
                let iat = t - rng.gen_range(0.0..3000.0);
                jwt(rng, s, iat, "RS256")
            }),
            request_id: go || rng.gen_bool(0.2),
            traceparent: go && rng.gen_bool(0.6),
            style,
            binary: lib == Library::TritonClient && rng.gen_bool(0.6),
            with_id: lib == Library::TritonClient || rng.gen_bool(0.3),
            with_outputs: lib == Library::TritonClient || rng.gen_bool(0.25),
            parameters: if rng.gen_bool(0.15) { Some(PARAMETERS[rng.gen_range(0..PARAMETERS.len())]) } else { None },
        }
    }

    /// Refreshes the bearer token when it is about to expire.
    pub fn refresh_token(&mut self, rng: &mut StdRng, t: f64) {
        if let Some(tok) = &self.token {
            if t > tok.exp - 300.0 {
                self.token = Some(jwt(rng, &tok.sub.clone(), t, "RS256"));
            }
        }
    }

    /// Request headers for a body of `body_len` bytes (`content` = content
    /// type and, for the binary extension, the JSON header length).
    pub fn headers(&self, rng: &mut StdRng, content: Option<(&str, usize, Option<usize>)>) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = Vec::with_capacity(10);
        let mut add = |k: &str, v: String| h.push((k.to_owned(), v));
        add("host", self.host.to_owned());
        add("user-agent", self.user_agent.to_owned());
        match self.lib {
            Library::PythonRequests => {
                add("accept-encoding", "gzip, deflate".into());
                add("accept", "*/*".into());
                add("connection", "keep-alive".into());
            }
            Library::TritonClient => add("accept-encoding", "identity".into()),
            Library::GoHttp | Library::GrpcGateway => add("accept-encoding", "gzip".into()),
            Library::OkHttp => {
                add("accept-encoding", "gzip".into());
                add("connection", "Keep-Alive".into());
            }
            Library::Axios => add("accept", "application/json, text/plain, */*".into()),
            Library::Curl => add("accept", "*/*".into()),
        }
        if let Some(tok) = &self.token {
            add("authorization", format!("Bearer {}", tok.value));
        }
        if self.request_id {
            add("x-request-id", uuid(rng));
        }
        if self.traceparent {
            add("traceparent", format!("00-{:032x}-{:016x}-01", rng.gen::<u128>(), rng.gen::<u64>()));
        }
        if let Some((ctype, len, header_len)) = content {
            add("content-type", ctype.to_owned());
            add("content-length", len.to_string());
            if let Some(n) = header_len {
                add("inference-header-content-length", n.to_string());
            }
        }
        h
    }
}

/// A random version-4 UUID.
pub fn uuid(rng: &mut StdRng) -> String {
    let v: u128 =
        (rng.gen::<u128>() & !(0xf000u128 << 64) & !(0xc000u128 << 48)) | (0x4000u128 << 64) | (0x8000u128 << 48);
    let s = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &s[0..8], &s[8..12], &s[12..16], &s[16..20], &s[20..32])
}

/// A request body ready to send.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body (GET).
    Empty,
    /// An inference request, JSON or binary extension per the profile.
    Infer(Infer),
    /// Explicit bytes with a content type and optional binary header length.
    Raw(Vec<u8>, &'static str, Option<usize>),
}

/// Assembles a record: headers from the profile, body encoded per its habits.
#[allow(clippy::too_many_arguments)] // one call site per kind of caller; a struct would only rename these
pub fn record(
    profile: &Profile,
    rng: &mut StdRng,
    ts: f64,
    client: &str,
    method: &str,
    uri: String,
    body: Body,
    status: u16,
    latency_ms: f64,
) -> Record {
    let (body, content) = match body {
        Body::Empty => (Vec::new(), None),
        Body::Infer(req) if profile.binary => {
            let (b, n) = models::encode_binary(&req, profile.style);
            let len = b.len();
            (b, Some(("application/octet-stream", len, Some(n))))
        }
        Body::Infer(req) => {
            let b = models::encode_json(&req, profile.style);
            let len = b.len();
            (b, Some(("application/json", len, None)))
        }
        Body::Raw(b, ctype, n) => {
            let len = b.len();
            (b, Some((ctype, len, n)))
        }
    };
    Record {
        ts: (ts * 1000.0).round() / 1000.0,
        client: client.to_owned(),
        method: method.to_owned(),
        uri,
        headers: profile.headers(rng, content),
        body,
        label: Label::Normal,
        scenario: None,
        status: Some(status),
        latency_ms: Some(latency_ms),
    }
}

/// The infer path for a model, optionally versioned.
pub fn infer_uri(model: Model, version: Option<u32>) -> String {
    match version {
        Some(v) => format!("/v2/models/{}/versions/{v}/infer", model.name()),
        None => format!("/v2/models/{}/infer", model.name()),
    }
}

/// Per-client habits for building inference inputs.
#[derive(Debug, Clone)]
pub struct Habits {
    /// Largest batch the client sends (tabular and text models).
    pub max_batch: usize,
    /// Typical token count for the embedder.
    pub tokens: usize,
    /// Pads token ids to this length.
    pub pad_to: Option<usize>,
}

/// A normal inference request for `model` at hour-of-day `hour`.
pub fn normal_infer(
    rng: &mut StdRng,
    model: Model,
    habits: &Habits,
    hour: f32,
    drift: f32,
    profile: &Profile,
    n: u64,
) -> Infer {
    let batch = if habits.max_batch <= 1 || rng.gen_bool(0.5) { 1 } else { rng.gen_range(1..=habits.max_batch) };
    let mut inputs = Vec::with_capacity(2);
    match model {
        Model::Fraud | Model::Iris | Model::Digits => {
            let width = model.width();
            let mut v = Vec::with_capacity(batch * width);
            let (shape, decimals) = match model {
                Model::Fraud => {
                    (0..batch).for_each(|_| models::fraud_row(rng, hour, drift, &mut v));
                    (vec![batch as i64, width as i64], model.decimals())
                }
                Model::Iris => {
                    (0..batch).for_each(|_| models::iris_row(rng, drift, &mut v));
                    (vec![batch as i64, width as i64], model.decimals())
                }
                _ => {
                    models::digit_image(rng, drift, &mut v);
                    (vec![1, 1, 28, 28], model.decimals())
                }
            };
            inputs.push(Tensor {
                name: model.input().into(),
                datatype: "FP32".into(),
                shape,
                data: Data::F32(v, decimals),
            });
        }
        Model::Sentiment => {
            let texts: Vec<String> = (0..batch.min(4)).map(|_| models::sentence(rng, drift)).collect();
            inputs.push(Tensor {
                name: model.input().into(),
                datatype: "BYTES".into(),
                shape: vec![texts.len() as i64],
                data: Data::Bytes(texts),
            });
        }
        Model::Embed => {
            let spread: f64 = rng.sample(StandardNormal);
            let len =
                ((habits.tokens as f64) * (1.0 + 0.1 * f64::from(drift)) * (0.35 * spread).exp()).clamp(4.0, 256.0);
            let (ids, mask) = models::token_ids(rng, len as usize, habits.pad_to);
            let shape = vec![1, ids.len() as i64];
            inputs.push(Tensor {
                name: "input_ids".into(),
                datatype: "INT64".into(),
                shape: shape.clone(),
                data: Data::Int(ids),
            });
            inputs.push(Tensor {
                name: "attention_mask".into(),
                datatype: "INT64".into(),
                shape,
                data: Data::Int(mask),
            });
        }
    }
    Infer {
        id: profile.with_id.then(|| if profile.request_id { uuid(rng) } else { n.to_string() }),
        parameters: profile.parameters.map(str::to_owned),
        inputs,
        outputs: if profile.with_outputs { vec![model.output().to_owned()] } else { Vec::new() },
    }
}

/// A client the service expects.
#[derive(Debug, Clone)]
pub struct NormalClient {
    /// Identity (the `client` field).
    pub id: String,
    /// Library and headers.
    pub profile: Profile,
    /// Models it calls.
    pub models: Vec<Model>,
    /// Mean requests per second.
    pub rate: f64,
    /// Input habits.
    pub habits: Habits,
    diurnal_amp: f64,
    diurnal_phase: f64,
    /// (rate factor while bursting, chance per request to toggle bursting).
    burst: Option<(f64, f64)>,
    bursting: bool,
    version: Option<u32>,
    repeat_p: f64,
    cache: Vec<(Model, Infer)>,
    meta_p: f64,
    retry: Option<(Model, Infer)>,
    sent: u64,
}

impl NormalClient {
    /// A random normal client with identity `id` (a JWT subject when `sub`).
    pub fn random(rng: &mut StdRng, id: String, sub: bool, t: f64) -> NormalClient {
        let profile = Profile::random(rng, sub.then_some(id.as_str()), t);
        let mut models = vec![Model::ALL[rng.gen_range(0..Model::ALL.len())]];
        if rng.gen_bool(0.3) {
            let m = Model::ALL[rng.gen_range(0..Model::ALL.len())];
            if !models.contains(&m) {
                models.push(m);
            }
        }
        let versioned = rng.gen_bool(0.2);
        let first = models[0];
        NormalClient {
            id,
            profile,
            rate: 0.01 * 40f64.powf(rng.gen::<f64>()),
            habits: Habits {
                max_batch: [1, 1, 2, 4, 8, 16][rng.gen_range(0..6)],
                tokens: rng.gen_range(10..60),
                pad_to: if rng.gen_bool(0.3) { Some([64, 128][rng.gen_range(0..2)]) } else { None },
            },
            models,
            diurnal_amp: rng.gen_range(0.1..0.6),
            diurnal_phase: rng.gen_range(-3.0..3.0),
            burst: rng.gen_bool(0.2).then(|| (rng.gen_range(5.0..15.0), rng.gen_range(0.02..0.08))),
            bursting: false,
            version: versioned.then(|| first.versions()[rng.gen_range(0..first.versions().len())]),
            repeat_p: if rng.gen_bool(0.25) { rng.gen_range(0.1..0.5) } else { 0.0 },
            cache: Vec::new(),
            meta_p: rng.gen_range(0.0..0.03),
            retry: None,
            sent: 0,
        }
    }

    /// Seconds until this client's next request after time `t`.
    pub fn gap(&mut self, rng: &mut StdRng, t: f64) -> f64 {
        if self.retry.is_some() {
            return rng.gen_range(0.1..1.5);
        }
        if let Some((_, toggle)) = self.burst {
            if rng.gen_bool(toggle) {
                self.bursting = !self.bursting;
            }
        }
        let hour = (t.rem_euclid(86_400.0)) / 3600.0;
        let diurnal = 1.0 + self.diurnal_amp * ((hour - 14.0 + self.diurnal_phase) * std::f64::consts::PI / 12.0).cos();
        let burst = match (self.burst, self.bursting) {
            (Some((factor, _)), true) => factor,
            (Some(_), false) => 0.5,
            (None, _) => 1.0,
        };
        let e: f64 = rng.sample(Exp1);
        e / (self.rate * diurnal * burst)
    }

    /// Hour of day (0..24) at `t`.
    pub fn hour(t: f64) -> f32 {
        ((t.rem_euclid(86_400.0)) / 3600.0) as f32
    }

    /// A new input for one of this client's models (or a cached one).
    pub fn fresh_infer(&mut self, rng: &mut StdRng, t: f64, drift: f32) -> (Model, Infer) {
        self.sent += 1;
        if !self.cache.is_empty() && rng.gen_bool(self.repeat_p) {
            return self.cache[rng.gen_range(0..self.cache.len())].clone();
        }
        let model = self.models[rng.gen_range(0..self.models.len())];
        let req = normal_infer(rng, model, &self.habits, Self::hour(t), drift, &self.profile, self.sent);
        if self.repeat_p > 0.0 {
            if self.cache.len() >= 16 {
                self.cache.swap_remove(rng.gen_range(0..16));
            }
            self.cache.push((model, req.clone()));
        }
        (model, req)
    }

    /// This client's request at time `t`.
    pub fn request(&mut self, rng: &mut StdRng, t: f64, drift: f32) -> Record {
        self.profile.refresh_token(rng, t);
        let (model, req, retried) = match self.retry.take() {
            Some((m, r)) => (m, r, true),
            None => {
                if rng.gen_bool(self.meta_p) {
                    return self.metadata(rng, t);
                }
                let (m, r) = self.fresh_infer(rng, t, drift);
                (m, r, false)
            }
        };
        let batch =
            req.inputs
                .first()
                .map_or(1, |i| if model == Model::Embed { i.data.len() } else { i.shape[0].max(1) as usize });
        let (status, latency) = if !retried && rng.gen_bool(0.002) {
            self.retry = Some((model, req.clone()));
            (503, rng.gen_range(0.2..2.0))
        } else {
            (200, model.latency_ms(rng, batch))
        };
        let version = if model == self.models[0] { self.version } else { None };
        record(&self.profile, rng, t, &self.id, "POST", infer_uri(model, version), Body::Infer(req), status, latency)
    }

    fn metadata(&self, rng: &mut StdRng, t: f64) -> Record {
        let model = self.models[rng.gen_range(0..self.models.len())];
        let versions = model.versions();
        let mut status = 200;
        let uri = match rng.gen_range(0..10) {
            0..=2 => format!("/v2/models/{}/ready", model.name()),
            3 => "/v2/health/ready".to_owned(),
            // Server metadata (extensions, version).
            4 => "/v2".to_owned(),
            5 => {
                // A versioned lookup; now and then of a version already
                // unloaded (a client with stale config): 404.
                let v = versions[rng.gen_range(0..versions.len())];
                if rng.gen_bool(0.3) && versions[0] > 1 {
                    status = 404;
                    format!("/v2/models/{}/versions/{}", model.name(), versions[0] - 1)
                } else {
                    format!("/v2/models/{}/versions/{v}", model.name())
                }
            }
            _ => format!("/v2/models/{}", model.name()),
        };
        let latency = ((0.2 + rng.gen::<f64>() * 0.6) * 1000.0).round() / 1000.0;
        record(&self.profile, rng, t, &self.id, "GET", uri, Body::Empty, status, latency)
    }
}

/// A kubelet-like prober: `GET /v2/health/live|ready` every ~10 s.
#[derive(Debug, Clone)]
pub struct Prober {
    /// Node IP (the `client` field).
    pub id: String,
    profile: Profile,
    period: f64,
}

impl Prober {
    /// A prober at `ip` with a period of 5-15 s.
    pub fn new(rng: &mut StdRng, ip: String) -> Prober {
        let mut profile = Profile::random(rng, None, 0.0);
        profile.lib = Library::Curl;
        profile.user_agent = "kube-probe/1.30";
        profile.request_id = false;
        profile.traceparent = false;
        profile.host = HOSTS[2];
        Prober { id: ip, profile, period: [5.0, 10.0, 15.0][rng.gen_range(0..3)] }
    }

    /// Seconds until the next probe.
    pub fn gap(&self, rng: &mut StdRng) -> f64 {
        self.period + rng.gen_range(-0.05..0.05)
    }

    /// The probe at `t`.
    pub fn request(&self, rng: &mut StdRng, t: f64) -> Record {
        let uri = if rng.gen_bool(0.5) { "/v2/health/live" } else { "/v2/health/ready" };
        let mut r = record(&self.profile, rng, t, &self.id, "GET", uri.to_owned(), Body::Empty, 200, 0.2);
        r.headers.retain(|(k, _)| k != "accept-encoding" && k != "accept");
        r.headers.push(("accept".into(), "*/*".into()));
        r.headers.push(("connection".into(), "close".into()));
        r
    }
}
