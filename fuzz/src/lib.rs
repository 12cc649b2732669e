//! The checks behind meshward's fuzz targets. Each `check_*` takes the raw
//! fuzz input, feeds it to the code under test and asserts properties that
//! must hold for every input; a panic is a finding. The targets in
//! `fuzz_targets/` call these, and `cargo test` replays `seeds/<target>/`
//! (and `corpus/<target>/`, when present) through them on stable Rust.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use meshward::config::Config;
use meshward::http::framing::FramingGuard;
use meshward::tls::identity::SpiffeId;
use tokio::io::{AsyncRead, ReadBuf};

/// A check: panics on a finding.
pub type Check = fn(&[u8]);

/// Fuzz target names and their checks, for replaying files.
pub const TARGETS: &[(&str, Check)] = &[
    ("config_file", check_config),
    ("spiffe_id", check_spiffe_id),
    ("http1_request_head", check_http1_request_head),
    ("policy_file", check_policy_file),
    ("oip_v2", check_oip_v2),
    ("admission_review", check_admission_review),
];

// ------------------------------------------------------- admission_review

/// An AdmissionReview body as the API server would send the injector. The
/// answer is always a JSON AdmissionReview (HTTP 200, or 400 when there is no
/// uid to answer to) echoing the request's uid; a patched answer is a
/// JSONPatch, and the same body always gets the same answer.
pub fn check_admission_review(data: &[u8]) {
    use meshward::k8s::admission::{review, Decision};
    let settings = meshward::k8s::inject::Settings::default();
    let a = review(data, &settings);
    assert!(a.status == 200 || a.status == 400, "status {}", a.status);
    let body: serde_json::Value = serde_json::from_slice(&a.body).expect("the answer is JSON");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let resp = &body["response"];
    assert!(resp["allowed"].is_boolean(), "response.allowed missing: {body}");
    if a.status == 200 {
        if let Ok(sent) = serde_json::from_slice::<serde_json::Value>(data) {
            assert_eq!(resp["uid"], sent["request"]["uid"], "uid not echoed");
        }
    }
    if a.decision == Decision::Injected {
        assert_eq!(resp["patchType"], "JSONPatch");
        assert!(resp["patch"].is_string(), "patch is base64 text");
    }
    assert_eq!(review(data, &settings).body, a.body, "same review, different answers");
}

// ----------------------------------------------------------------- oip_v2

/// Configuration bytes before an `oip_v2` input's body.
pub const OIP_HEADER: usize = 3;

/// An OIP v2 inference body. Byte 0: bit 0 set means the binary tensor
/// extension, with bytes 1-2 (little-endian) as `Inference-Header-Content-Length`;
/// bit 1 set means the body is a truncated prefix; the rest is the body. Extraction never panics and is deterministic, every
/// field name lies inside the sample's name arena, numbers are finite; a
/// model trained on a few requests scores the body with a finite raw score
/// and a score in [0, 1].
pub fn check_oip_v2(data: &[u8]) {
    use meshward_detector::features::oip::{extract, NoRanges};
    use meshward_detector::features::request::ValueStats;
    use meshward_detector::{score, Clients, Request};
    let Some(body) = data.get(OIP_HEADER..) else { return };
    let header_len = (data[0] & 1 == 1).then(|| usize::from(u16::from_le_bytes([data[1], data[2]])));
    let truncated = data[0] & 2 == 2;
    let run = || {
        let mut s = meshward_detector::score::empty_sample();
        let summary = extract(body, header_len, truncated, "m", &NoRanges, &mut s, &mut ValueStats::default());
        (summary.map(|x| (x.inputs, x.elements)), s)
    };
    let (a, sa) = run();
    let (b, sb) = run();
    assert_eq!(a, b, "same body, different summaries");
    // Debug text, not ==: NaN elements are kept as sent and NaN != NaN.
    assert_eq!(format!("{sa:?}"), format!("{sb:?}"), "same body, different samples");
    for f in &sa.fields {
        assert!(f.name.0 <= f.name.1 && f.name.1 as usize <= sa.names.len(), "name range outside the arena");
        assert!(sa.names.is_char_boundary(f.name.0 as usize) && sa.names.is_char_boundary(f.name.1 as usize));
        if let Some(v) = f.num {
            assert!(v.is_finite(), "non-finite number in field {}", sa.name(f));
        }
    }
    let model = oip_model();
    let len = header_len.map(|n| n.to_string()).unwrap_or_default();
    let headers: Vec<(&str, &str)> = if header_len.is_some() {
        vec![("content-type", "application/octet-stream"), ("inference-header-content-length", &len)]
    } else {
        vec![("content-type", "application/json")]
    };
    let mut clients = Clients::new(4);
    let req = Request {
        method: "POST",
        uri: "/v2/models/m/infer",
        headers: &headers,
        body,
        client: "fuzz",
        ts: 1e6,
        truncated,
    };
    let v = score(model, &mut clients, &req).verdict;
    assert!(v.raw.is_finite() && v.raw >= 0.0, "raw score {}", v.raw);
    assert!((0.0..=1.0).contains(&v.score), "score {}", v.score);
    for r in &v.reasons {
        assert!(!r.message().is_empty());
    }
}

/// A model trained on a few hundred ordinary OIP v2 requests (built once).
fn oip_model() -> &'static meshward_detector::Model {
    use meshward_detector::{score, Clients, Config, Learner, Request};
    static MODEL: std::sync::OnceLock<meshward_detector::Model> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let mut learner = Learner::new(Config::default());
        let mut model = meshward_detector::Model::empty();
        let mut clients = Clients::new(16);
        for i in 0..1200u32 {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[1,3],"datatype":"FP32","data":[{}.5,{},{}]}},{{"name":"t","shape":[1],"datatype":"BYTES","data":["hello {}"]}}]}}"#,
                i % 7,
                i % 3,
                i % 11,
                i % 13
            );
            let client = format!("c{}", i % 5);
            let req = Request {
                method: "POST",
                uri: "/v2/models/m/infer",
                headers: &[("content-type", "application/json")],
                body: body.as_bytes(),
                client: &client,
                ts: f64::from(i),
                truncated: false,
            };
            let s = score(&model, &mut clients, &req);
            learner.learn(&s.sample);
            if let Some(m) = learner.maybe_publish() {
                model = m;
            }
        }
        learner.model()
    })
}

// ------------------------------------------------------------ policy_file

/// Policy file text: loading never panics and is deterministic; every
/// diagnostic points inside the file; an accepted set evaluates a request
/// without panicking, the same way twice.
pub fn check_policy_file(data: &[u8]) {
    use meshward_policies::compile::load_file;
    use meshward_policies::eval::{evaluate, RequestAttrs};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = text.lines().count().max(1) + 1;
    match (load_file("p.yaml", text), load_file("p.yaml", text)) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.len(), b.len(), "same text, different sets");
            let headers: Vec<(&str, &str)> = vec![("x-debug", "1"), ("x-tenant", "acme")];
            let req = RequestAttrs {
                method: "POST",
                path: "/v2/models/iris/infer",
                port: 8080,
                peer: Some("spiffe://cluster.local/ns/gateway/sa/api"),
                source_ip: [10, 0, 0, 1].into(),
                headers: &headers,
                jwt: None,
            };
            assert_eq!(evaluate(&a, &req), evaluate(&b, &req), "same set, different decisions");
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "same text, different diagnostics");
            for d in &a {
                assert!(d.location.line >= 1 && d.location.line <= lines, "diagnostic outside the file: {d}");
                assert!(!d.message.is_empty(), "empty message at {}", d.location);
            }
        }
        _ => panic!("same text, accepted once and refused once"),
    }
}

// ------------------------------------------------------------ config_file

/// YAML configuration text: parsing never panics, is deterministic, and an
/// accepted configuration satisfies the validation rules.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let first = Config::from_yaml(text);
    let second = Config::from_yaml(text);
    let cfg = match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "same text, different configuration");
            a
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "same text, different errors");
            return;
        }
        (a, b) => panic!("same text, accepted once and refused once: {:?} / {:?}", a.err(), b.err()),
    };
    assert!(cfg.limits.max_header_bytes >= 8192, "max_header_bytes {} below the minimum", cfg.limits.max_header_bytes);
    assert!(cfg.limits.max_connections > 0);
    assert!(!cfg.limits.header_read_timeout.is_zero() && !cfg.limits.idle_timeout.is_zero());
    if cfg.inbound.is_some() || !cfg.outbound.is_empty() {
        assert!(cfg.identity.is_some(), "listeners without identity files were accepted");
    }
    for (i, l) in cfg.outbound.iter().enumerate() {
        assert!(!l.name.trim().is_empty(), "empty listener name accepted");
        assert!(cfg.outbound[..i].iter().all(|o| o.name != l.name), "duplicate listener name {:?} accepted", l.name);
    }
}

// -------------------------------------------------------------- spiffe_id

/// A SPIFFE ID string (and the same bytes as a DER certificate): an accepted
/// ID is exactly the input, with a non-empty trust domain and no empty,
/// `.` or `..` path segments.
pub fn check_spiffe_id(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = SpiffeId::parse(text) {
            check_valid_id(&id);
            assert_eq!(id.as_str(), text, "parse changed the ID");
        }
    }
    if let Ok(id) = SpiffeId::from_cert_der(data) {
        check_valid_id(&id);
    }
}

fn check_valid_id(id: &SpiffeId) {
    let s = id.as_str();
    let rest = s.strip_prefix("spiffe://").unwrap_or_else(|| panic!("accepted without spiffe:// scheme: {s:?}"));
    let td = id.trust_domain();
    assert!(!td.is_empty() && !td.contains('/'), "bad trust domain {td:?} in {s:?}");
    let path = rest.strip_prefix(td).unwrap_or_else(|| panic!("trust domain {td:?} is not the start of {s:?}"));
    if !path.is_empty() {
        let segs = path.strip_prefix('/').unwrap_or_else(|| panic!("path without leading '/': {s:?}"));
        for seg in segs.split('/') {
            assert!(!seg.is_empty() && seg != "." && seg != "..", "bad path segment {seg:?} in {s:?}");
        }
    }
    assert_eq!(id.to_string(), s);
    assert_eq!(SpiffeId::parse(s).as_ref(), Ok(id), "an accepted ID must re-parse to itself");
}

// ----------------------------------------------------- http1_request_head

/// Bytes of the input that configure the run before the connection's bytes.
pub const HTTP1_HEADER: usize = 4;

/// Untrusted bytes from a client through the HTTP/1 framing guard.
///
/// Input: 4 configuration bytes, then the connection's bytes.
/// - byte 0: head limit; 0 means 8192, else `64 * byte`.
/// - byte 1: size of the caller's read buffer; 0 means 8192.
/// - bytes 2, 3: read sizes, used in turn: `b & 0x7f` bytes per read (0: all
///   the rest), and `b & 0x80` makes that read return `Pending` first.
///
/// The head timer (408) is set to an hour, so it never fires here.
///
/// Properties: no panic; what the guard passes on is the input with only
/// CR/LF bytes removed (the empty lines allowed before a request line)
/// and possibly an unfinished head at the end held back; without a
/// rejection, that held-back rest is not a complete head; whether the
/// input is refused does not depend on how it was split into reads (the
/// fuzzer's split, one read, byte by byte), nor does the output of an
/// accepted input.
pub fn check_http1_request_head(data: &[u8]) {
    if data.len() < HTTP1_HEADER {
        return;
    }
    let (cfg, input) = data.split_at(HTTP1_HEADER);
    let max_head = if cfg[0] == 0 { 8192 } else { 64 * usize::from(cfg[0]) };
    let buf_len = if cfg[1] == 0 { 8192 } else { usize::from(cfg[1]) };

    // The fuzzer's split, then the same bytes in one read and byte by byte.
    let runs = [
        run_guard(input, max_head, buf_len, &cfg[2..4]),
        run_guard(input, max_head, 1 << 16, &[0]),
        run_guard(input, max_head, 1 << 16, &[1]),
    ];
    for (out, rejection) in &runs {
        check_guard_output(input, out, rejection.is_some(), max_head);
    }
    let (out, rejection) = &runs[0];
    for (other, other_rejection) in &runs[1..] {
        // (The reason may differ: a long head with a bare LF past the limit is
        // "too large" when it trickles in, "bare LF" when it arrives at once.)
        assert_eq!(
            rejection.is_some(),
            other_rejection.is_some(),
            "refused in one split and not in another: {rejection:?} / {other_rejection:?}"
        );
        // (After a rejection, how much of a body already passed may differ.)
        assert!(
            rejection.is_some() || out == other,
            "output depends on how the input was split into reads:\n {}\n {}",
            out.escape_ascii(),
            other.escape_ascii()
        );
    }
}

/// What one run passed on is the input with CR/LF bytes dropped and maybe
/// an unfinished head held back at the end; accepted runs hold back no
/// complete head.
fn check_guard_output(input: &[u8], out: &[u8], rejected: bool, max_head: usize) {
    assert!(out.len() <= input.len());
    let end = match_dropping_crlf(out, input).unwrap_or_else(|| {
        panic!(
            "output is not the input with CR/LF removed:\n in: {}\nout: {}",
            input.escape_ascii(),
            out.escape_ascii()
        )
    });
    if !rejected {
        let rest = &input[end..];
        let rest = &rest[rest.iter().take_while(|b| **b == b'\r' || **b == b'\n').count()..];
        let partial_preface = rest.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(rest);
        assert!(
            rest.is_empty() || partial_preface || (rest.len() <= max_head && find(rest, b"\r\n\r\n").is_none()),
            "accepted, yet a complete head was held back: {}",
            rest.escape_ascii()
        );
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("tokio runtime");
}

/// Reads everything through a guard; returns the bytes passed and the rejection text.
fn run_guard(input: &[u8], max_head: usize, buf_len: usize, sizes: &[u8]) -> (Vec<u8>, Option<String>) {
    // The guard's head timer needs a runtime with time enabled; its driver
    // never turns here (no block_on), so the timer never fires.
    RUNTIME.with(|rt| {
        let _rt = rt.enter();
        drive_guard(input, max_head, buf_len, sizes)
    })
}

fn drive_guard(input: &[u8], max_head: usize, buf_len: usize, sizes: &[u8]) -> (Vec<u8>, Option<String>) {
    let reader = Chunks { data: input, pos: 0, sizes, turn: 0, pending: false };
    let mut guard = FramingGuard::new(reader, max_head, Duration::from_secs(3600));
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = vec![0u8; buf_len];
    let mut out = Vec::new();
    // Every poll either makes progress or returns Pending once; bound it anyway.
    for _ in 0..4 * (input.len() + 4) {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut rb) {
            Poll::Pending => continue,
            Poll::Ready(Err(e)) => panic!("in-memory read failed: {e}"),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                return (out, guard.rejection().map(ToString::to_string));
            }
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
        }
    }
    panic!("the guard did not reach end of stream");
}

/// An in-memory connection that returns its bytes in reads of the given sizes.
struct Chunks<'a> {
    data: &'a [u8],
    pos: usize,
    sizes: &'a [u8],
    turn: usize,
    pending: bool,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let size = self.sizes[self.turn % self.sizes.len()];
        if size & 0x80 != 0 && !self.pending {
            self.pending = true;
            return Poll::Pending; // the noop waker: the caller simply polls again
        }
        self.pending = false;
        self.turn += 1;
        let left = self.data.len() - self.pos;
        let n = match usize::from(size & 0x7f) {
            0 => left,
            n => n.min(left),
        }
        .min(buf.remaining());
        buf.put_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// If `out` is a prefix of `input` with some CR/LF bytes removed, the length
/// of that prefix. Greedy matching is exact here: skipping is only allowed
/// over CR/LF, so matching a byte as early as possible never loses a match.
fn match_dropping_crlf(out: &[u8], input: &[u8]) -> Option<usize> {
    let mut i = 0;
    for &o in out {
        loop {
            let b = *input.get(i)?;
            i += 1;
            if b == o {
                break;
            }
            if b != b'\r' && b != b'\n' {
                return None;
            }
        }
    }
    Some(i)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
