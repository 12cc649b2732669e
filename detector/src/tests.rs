//! Model-level tests: learn synthetic normal traffic, then check that
//! attacks score high and are explained, and that the machinery holds.

use crate::features::client::Clients;
use crate::features::request::Request;
use crate::learner::{Learned, Learner};
use crate::model::Model;
use crate::score::{score, Band, Verdict, Why};
use crate::Config;

/// A small deterministic generator (xorshift) so tests need no rand crate.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

const NAMES: [&str; 8] = ["ana", "luis", "maria", "jose", "carmen", "pedro", "lucia", "juan"];

/// One normal request: a web shop (query and form parameters) or an OIP v2
/// inference call with 4 FP32 features.
pub(crate) fn normal_request(rng: &mut Rng, i: usize) -> (String, String, String, Vec<u8>, String) {
    let client = format!("client-{}", rng.next() % 40);
    match rng.next() % 3 {
        0 => {
            let uri = format!("/shop/item?id={}&qty={}", 100 + rng.next() % 900, 1 + rng.next() % 5);
            ("GET".into(), uri, "text/html".into(), Vec::new(), client)
        }
        1 => {
            let body = format!(
                "name={}&email={}%40mail.com&amount={}",
                NAMES[(rng.next() % 8) as usize],
                NAMES[(rng.next() % 8) as usize],
                10 + rng.next() % 90
            );
            (
                "POST".into(),
                "/shop/checkout".into(),
                "application/x-www-form-urlencoded".into(),
                body.into_bytes(),
                client,
            )
        }
        _ => {
            let x: Vec<String> = (0..4).map(|j| format!("{:.3}", 5.0 + j as f64 + rng.normal() * 0.5)).collect();
            let body = format!(
                r#"{{"id": "r{i}", "inputs": [{{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [{}]}}]}}"#,
                x.join(", ")
            );
            ("POST".into(), "/v2/models/iris/infer".into(), "application/json".into(), body.into_bytes(), client)
        }
    }
}

pub(crate) struct Trained {
    pub(crate) model: Model,
    pub(crate) learner: Learner,
    pub(crate) clients: Clients,
    pub(crate) rng: Rng,
    pub(crate) ts: f64,
}

pub(crate) fn trained(n: usize) -> Trained {
    trained_with(n, Config::default())
}

pub(crate) fn trained_with(n: usize, config: Config) -> Trained {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut learner = Learner::new(config);
    let mut model = Model::empty();
    let mut clients = Clients::new(1000);
    let mut ts = 0.0;
    for i in 0..n {
        ts += 0.05;
        let (m, uri, ct, body, client) = normal_request(&mut rng, i);
        let headers = [("content-type", ct.as_str()), ("user-agent", "shop-client/1.0")];
        let req =
            Request { method: &m, uri: &uri, headers: &headers, body: &body, client: &client, ts, truncated: false };
        let s = score(&model, &mut clients, &req);
        learner.learn(&s.sample);
        if let Some(new) = learner.maybe_publish() {
            model = new;
        }
    }
    model = learner.model();
    Trained { model, learner, clients, rng, ts }
}

fn judge(t: &mut Trained, method: &str, uri: &str, ct: &str, body: &[u8], client: &str) -> Verdict {
    t.ts += 0.05;
    let headers = [("content-type", ct), ("user-agent", "shop-client/1.0")];
    let req = Request { method, uri, headers: &headers, body, client, ts: t.ts, truncated: false };
    score(&t.model, &mut t.clients, &req).verdict
}

fn normal_scores(t: &mut Trained, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let (m, uri, ct, body, client) = normal_request(&mut t.rng, i);
            judge(t, &m, &uri, &ct, &body, &client).raw
        })
        .collect()
}

#[test]
fn model_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
}

#[test]
fn warm_up_gives_no_verdicts() {
    let t = trained(200);
    assert!(!t.model.ready);
    let mut t = t;
    let v = judge(&mut t, "GET", "/admin", "text/html", b"", "x");
    assert_eq!(v.band, Band::WarmingUp);
}

#[test]
fn normal_traffic_stays_normal() {
    let mut t = trained(6000);
    assert!(t.model.ready);
    let mut flagged = Vec::new();
    for i in 0..3000 {
        let (m, uri, ct, body, client) = normal_request(&mut t.rng, i);
        let v = judge(&mut t, &m, &uri, &ct, &body, &client);
        if v.flagged() {
            flagged
                .push(v.reasons.iter().map(|r| format!("{:.1} {}", r.contribution, r.message())).collect::<Vec<_>>());
        }
    }
    assert!(flagged.len() <= 9, "{} of 3000 normal requests flagged: {flagged:#?}", flagged.len());
}

#[test]
fn injection_in_a_query_parameter_scores_far_above_normal() {
    let mut t = trained(6000);
    let normal = normal_scores(&mut t, 500);
    let worst = normal.iter().copied().fold(0.0, f64::max);
    for uri in [
        "/shop/item?id=1%27%20OR%20%271%27%3D%271&qty=1",
        "/shop/item?id=%3Cscript%3Ealert(1)%3C%2Fscript%3E&qty=1",
        "/shop/item?id=..%2F..%2F..%2Fetc%2Fpasswd&qty=1",
    ] {
        let v = judge(&mut t, "GET", uri, "text/html", b"", "client-3");
        assert!(v.flagged(), "{uri}: {v:?}");
        assert!(v.raw > worst * 2.0, "{uri}: {} vs worst normal {worst}", v.raw);
        assert!(v.reasons[0].message().contains("query parameter 'id'"), "{}", v.reasons[0]);
    }
}

#[test]
fn unseen_parameter_and_endpoint_are_explained() {
    let mut t = trained(6000);
    let v = judge(&mut t, "GET", "/shop/item?id=120&qty=2&debug=1", "text/html", b"", "client-1");
    assert!(v.reasons.iter().any(|r| r.message() == "unseen query parameter 'debug'"), "{:?}", v.reasons);
    let v = judge(&mut t, "POST", "/admin", "text/html", b"", "client-1");
    assert!(v.flagged());
    assert!(v.reasons.iter().any(|r| r.message() == "unseen endpoint POST /admin"), "{:?}", v.reasons);
}

/// An iris inference call with `data` as its four values, from a known client.
fn judge_iris(t: &mut Trained, data: &str) -> Verdict {
    let body =
        format!(r#"{{"inputs": [{{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [{data}]}}]}}"#);
    judge(t, "POST", "/v2/models/iris/infer", "application/json", body.as_bytes(), "client-2")
}

#[test]
fn out_of_range_input_is_explained() {
    let mut t = trained(6000);
    let v = judge_iris(&mut t, "5.1, 6.0, 7.2, 400.0");
    assert!(v.flagged(), "{v:?}");
    let msgs: Vec<String> = v.reasons.iter().map(|r| r.message()).collect();
    assert!(
        msgs.iter().any(|m| m.contains("input 'iris/features' max") && m.contains("above the learned range")),
        "{msgs:?}"
    );
}

#[test]
fn an_unparsable_inference_body_weighs_more_than_an_unseen_value() {
    let mut t = trained(6000);
    // A doubled comma: the body no longer parses where every learned one did.
    let v = judge_iris(&mut t, "5.1,, 6.0, 7.2, 1.0");
    let broken = v.reasons.iter().find(|r| r.name.ends_with(".request")).unwrap_or_else(|| panic!("{v:#?}"));
    // log2 of the ~2000 learned iris requests: above the 10-bit cap of an unseen value.
    assert!(broken.contribution > 10.5, "{broken}");
    assert!(broken.message().contains("does not parse (all 19"), "{}", broken.message());
}

#[test]
fn a_body_cut_short_by_the_sidecar_is_judged_on_what_arrived() {
    // The sidecar inspects a bounded prefix of large or slow bodies.
    let mut t = trained(6000);
    let headers = [("content-type", "application/json"), ("user-agent", "shop-client/1.0")];
    let req = |body, ts| Request {
        method: "POST",
        uri: "/v2/models/iris/infer",
        headers: &headers,
        body,
        client: "client-3",
        ts,
        truncated: true,
    };
    let about_the_body = |v: &Verdict| {
        v.reasons.iter().any(|r| [".request", ".mismatch", ".elements", ".inputs"].iter().any(|f| r.name.ends_with(f)))
    };
    // Cut inside the data: read up to its last whole number. Nothing is short
    // or unreadable, and what arrived is judged.
    let body = infer_body(&[5.1, 6.0, 7.2, 8.1]);
    let v = score(&t.model, &mut t.clients, &req(&body.as_bytes()[..body.len() - 10], 1e6)).verdict;
    assert!(!v.flagged() && !about_the_body(&v), "{v:#?}");
    let body = infer_body(&[5.1, 400.0, 7.2, 8.1]);
    let v = score(&t.model, &mut t.clients, &req(&body.as_bytes()[..body.len() - 10], 1e6 + 1.0)).verdict;
    assert!(v.flagged() && !about_the_body(&v), "{v:#?}");
    assert!(v.reasons.iter().any(|r| r.message().contains("above the learned range")), "{v:#?}");
    // Cut before any whole element: an unseen value (a cut body was never
    // learned here), not a broken invariant (which would be decisive: 1985
    // learned >= 1/budget).
    let v = score(&t.model, &mut t.clients, &req(&body.as_bytes()[..12], 1e6 + 2.0)).verdict;
    let cut = v.reasons.iter().find(|r| r.name.ends_with(".request")).unwrap_or_else(|| panic!("{v:#?}"));
    assert_eq!(cut.message(), "unseen value of input 'iris' request");
    // The same bytes as a whole body do not parse where every learned one did.
    let whole = Request { truncated: false, ..req(&body.as_bytes()[..12], 1e6 + 3.0) };
    let v = score(&t.model, &mut t.clients, &whole).verdict;
    assert!(v.reasons.iter().any(|r| r.message().contains("does not parse")), "{v:#?}");
}

#[test]
fn a_compressed_body_is_judged_inflated() {
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;
    let mut t = trained(6000);
    let body = infer_body(&[5.1, 6.0, 400.0, 8.1]);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(body.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let judge_gz = |t: &mut Trained, encoding: &str| {
        t.ts += 0.05;
        let headers =
            [("content-type", "application/json"), ("user-agent", "shop-client/1.0"), ("content-encoding", encoding)];
        let req = Request {
            method: "POST",
            uri: "/v2/models/iris/infer",
            headers: &headers,
            body: &gz,
            client: "client-2",
            ts: t.ts,
            truncated: false,
        };
        score(&t.model, &mut t.clients, &req).verdict
    };
    let out_of_range = |v: &Verdict| v.reasons.iter().any(|r| r.message().contains("above the learned range"));
    let v = judge_gz(&mut t, "gzip");
    assert!(out_of_range(&v), "{v:#?}");
    // Under an encoding it does not know, the body is scored as sent.
    let v = judge_gz(&mut t, "br");
    assert!(!out_of_range(&v), "{v:#?}");
}

#[test]
fn nan_and_infinity_as_clients_write_them_are_flagged_as_such() {
    let mut t = trained(6000);
    // A busy service's threshold, above the NaN's own 11 bits (log2 of the
    // ~2000 learned iris requests). Those 2000 requests without NaN are more
    // than 1/budget (1000), so a NaN is flagged all the same.
    t.model.thresholds.anomalous = 30.0;
    t.model.thresholds.suspicious = 20.0;
    let iris = |t: &mut Trained, data: &str, client: &str| {
        let body =
            format!(r#"{{"inputs": [{{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [{data}]}}]}}"#);
        judge(t, "POST", "/v2/models/iris/infer", "application/json", body.as_bytes(), client)
    };
    let cases = ["NaN, 6.0, 7.2, 8.1", "5.1, Infinity, 7.2, 8.1", "5.1, 6.0, -1e999, 8.1", r#"5.1, 6.0, 7.2, "nan""#];
    for (i, data) in cases.into_iter().enumerate() {
        // A new caller each time: nothing but this request counts.
        let v = iris(&mut t, data, &format!("caller-{i}"));
        assert_eq!(v.band, Band::Anomalous, "{data}: {v:#?}");
        assert!(v.own >= 30.0, "{data}: {v:#?}");
        let msgs: Vec<String> = v.reasons.iter().map(|r| r.message()).collect();
        assert_eq!(msgs[0], "1 NaN/Inf values in input 'iris/features' (none in 1985 learned requests)", "{data}");
    }
    // Finite values from a new caller: not flagged.
    assert_eq!(iris(&mut t, "5.1, 6.0, 7.2, 8.1", "caller-8").band, Band::Normal);
    // With a 0.01% budget, 2000 learned requests are fewer than 1/budget:
    // the NaN counts its own bits, no more.
    t.model.fp_budget = 0.0001;
    let v = iris(&mut t, "NaN, 6.0, 7.2, 8.1", "caller-9");
    assert_eq!(v.band, Band::Normal, "{v:#?}");
    assert!(v.reasons.iter().any(|r| r.message().starts_with("1 NaN/Inf values")), "{v:#?}");
}

fn infer_body(x: &[f64]) -> String {
    let x: Vec<String> = x.iter().map(|v| format!("{v:.4}")).collect();
    format!(r#"{{"inputs": [{{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [{}]}}]}}"#, x.join(","))
}

#[test]
fn grid_extraction_trips_prada() {
    let mut t = trained(6000);
    let mut prada = false;
    for i in 0..60 {
        // A grid sweep inside the learned ranges: equal steps along two axes.
        let x = [4.5 + f64::from(i % 8) * 0.1, 5.5 + f64::from(i / 8) * 0.1, 7.0, 8.0];
        let v = judge(&mut t, "POST", "/v2/models/iris/infer", "application/json", infer_body(&x).as_bytes(), "thief");
        prada |= v.reasons.iter().any(|r| matches!(r.why, Why::Prada { .. }));
    }
    assert!(prada, "PRADA never fired");
}

#[test]
fn uniform_random_extraction_is_flagged_as_spread() {
    let mut t = trained(6000);
    let mut rng = Rng(42);
    let mut spread = Vec::new();
    for _ in 0..50 {
        // Uniform over the learned per-feature ranges (about +-3 sd).
        let x: Vec<f64> = (0..4).map(|j| 3.5 + j as f64 + rng.unit() * 3.0).collect();
        let v = judge(&mut t, "POST", "/v2/models/iris/infer", "application/json", infer_body(&x).as_bytes(), "thief");
        if let Some(r) = v.reasons.iter().find(|r| r.message().contains("uniformly spread")) {
            spread.push((v.flagged(), r.message()));
        }
    }
    assert!(spread.iter().any(|(f, _)| *f), "{spread:?}");
}

#[test]
fn snapshot_round_trip_gives_identical_scores() {
    let mut t = trained(3000);
    let bytes = t.model.snapshot();
    let loaded = Model::from_snapshot(&bytes).expect("loads");
    assert!(loaded == t.model, "snapshot round trip changed the model");
    let mut c1 = Clients::new(100);
    let mut c2 = Clients::new(100);
    for i in 0..300 {
        let (m, uri, ct, body, client) = normal_request(&mut t.rng, i);
        let headers = [("content-type", ct.as_str())];
        let req = Request {
            method: &m,
            uri: &uri,
            headers: &headers,
            body: &body,
            client: &client,
            ts: i as f64,
            truncated: false,
        };
        let a = score(&t.model, &mut c1, &req).verdict;
        let b = score(&loaded, &mut c2, &req).verdict;
        assert_eq!(a, b);
    }
    let bad = String::from_utf8(bytes).expect("json").replacen("\"version\":1", "\"version\":99", 1);
    let e = Model::from_snapshot(bad.as_bytes()).expect_err("future version");
    assert!(e.to_string().contains("version 99 is not supported"), "{e}");
    assert!(Model::from_snapshot(b"{}").is_err());
}

#[test]
fn flagged_samples_are_refused() {
    let mut t = trained(3000);
    let headers = [("content-type", "text/html")];
    let req = Request {
        method: "DELETE",
        uri: "/etc/passwd",
        headers: &headers,
        body: b"",
        client: "x",
        ts: 1e6,
        truncated: false,
    };
    let s = score(&t.model, &mut t.clients, &req);
    assert!(s.verdict.flagged());
    let before = t.learner.refused();
    assert_eq!(t.learner.learn(&s.sample), Learned::Refused);
    assert_eq!(t.learner.refused(), before + 1);
}

#[test]
fn a_nan_is_learned_while_its_invariant_is_young_and_refused_once_settled() {
    // Scored against an empty model (as in warm-up): the learner judges by
    // the profiles it has built so far, with the scorer's rule: an invariant
    // that held in 1/budget (1000) observations is settled.
    let headers = [("content-type", "application/json")];
    let req = |body: &'static [u8], ts: f64| Request {
        method: "POST",
        uri: "/v2/models/m/infer",
        headers: &headers,
        body,
        client: "c",
        ts,
        truncated: false,
    };
    let (model, mut clients) = (Model::empty(), Clients::new(10));
    let clean = br#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.0]}]}"#;
    let nan = br#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [NaN, 2.0]}]}"#;
    let mut learner = Learner::new(Config::default());
    let mut ts = 0.0;
    let mut learn = |learner: &mut Learner, body: &'static [u8]| {
        ts += 1.0;
        learner.learn(&score(&model, &mut clients, &req(body, ts)).sample)
    };
    let mut young = Learner::new(Config::default());
    for _ in 0..50 {
        assert_eq!(learn(&mut learner, clean), Learned::Learned);
        learn(&mut young, clean);
    }
    // After 50 clean requests: a service whose clients send NaN now and
    // then learns it.
    assert_eq!(learn(&mut young, nan), Learned::Learned);
    // After 1000 without one: settled, refused.
    for _ in 0..1000 {
        learn(&mut learner, clean);
    }
    assert_eq!(learn(&mut learner, nan), Learned::Refused);
    assert_eq!(learn(&mut learner, clean), Learned::Learned);
}

#[test]
fn a_suspicious_sample_does_not_create_an_endpoint() {
    let mut t = trained(3000);
    let headers = [("content-type", "text/html"), ("user-agent", "shop-client/1.0")];
    let probe = |path: &'static str| Request {
        method: "GET",
        uri: path,
        headers: &headers,
        body: b"",
        client: "x",
        ts: 1e6,
        truncated: false,
    };
    let mut s = score(&t.model, &mut t.clients, &probe("/shop/item.bak")).sample;
    assert!(s.new_endpoint);
    // Below the threshold but suspicious: a scanner's first probe is not learned ...
    (s.flagged, s.suspicious) = (false, true);
    assert_eq!(t.learner.learn(&s), Learned::Refused);
    // ... an ordinary new route (normal band) is.
    s.suspicious = false;
    assert_eq!(t.learner.learn(&s), Learned::Learned);
    // A suspicious request to a known endpoint is learned as before.
    let mut known = score(&t.model, &mut t.clients, &probe("/shop/item?id=5&qty=1")).sample;
    assert!(!known.new_endpoint);
    (known.flagged, known.suspicious) = (false, true);
    assert_eq!(t.learner.learn(&known), Learned::Learned);
}

#[test]
fn an_unseen_route_many_clients_use_weighs_less() {
    let mut t = trained(6000);
    let mut route = |client: &str| {
        let v = judge(&mut t, "GET", "/shop/news", "text/html", b"", client);
        let r = v.reasons.iter().find(|r| matches!(r.why, Why::UnseenEndpoint { .. }));
        r.map_or(0.0, |r| r.contribution)
    };
    // One client repeating a new route: no discount.
    let (first, again) = (route("client-1"), route("client-1"));
    assert!(first > 8.0 && first == again, "{first} {again}");
    // One-shot clients (a key per request, a botnet's addresses) add nothing.
    let (_, _, one_shot) = (route("new-1"), route("new-2"), route("new-3"));
    assert_eq!(first, one_shot);
    // Four different returning clients: 3 bits off per doubling.
    let (_, _, fourth) = (route("client-2"), route("client-3"), route("client-4"));
    assert!((first - fourth - 6.0).abs() < 1e-9, "{first} -> {fourth}");
}

#[test]
fn a_suspicious_query_does_not_teach_what_far_means() {
    let mut t = trained(3000);
    // The memory: rows offered and distances measured.
    let memory = |l: &mut Learner| {
        let n = l.model().profiles.inputs.get("iris/features").expect("learned").neighbours.clone();
        (n.seen, n.measured, n.hist)
    };
    let before = memory(&mut t.learner);
    let body = infer_body(&[9.0, 1.0, 9.0, 0.1]);
    let headers = [("content-type", "application/json"), ("user-agent", "shop-client/1.0")];
    let req = Request {
        method: "POST",
        uri: "/v2/models/iris/infer",
        headers: &headers,
        body: body.as_bytes(),
        client: "x",
        ts: 1e6,
        truncated: false,
    };
    let mut s = score(&t.model, &mut t.clients, &req).sample;
    (s.flagged, s.suspicious) = (false, true);
    assert_eq!(t.learner.learn(&s), Learned::Learned);
    assert_eq!(memory(&mut t.learner), before);
    // The same query, ordinary, is remembered.
    s.suspicious = false;
    t.learner.learn(&s);
    assert_eq!(memory(&mut t.learner).0, before.0 + 1);
}

#[test]
fn learner_continues_from_a_loaded_model() {
    let t = trained(3000);
    let mut l = Learner::from_model(Config::default(), &t.model);
    let m = l.model();
    assert!(m.ready);
    assert_eq!(m.clusters.centroids.len(), t.model.clusters.centroids.len());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn scoring_never_panics(
            method in "\\PC{0,8}",
            uri in "\\PC{0,80}",
            hname in "\\PC{0,12}",
            hval in "\\PC{0,40}",
            body in proptest::collection::vec(any::<u8>(), 0..400),
            oip in any::<bool>(),
            binary_len in 0usize..500,
        ) {
            let mut t = MODEL.with(|m| m.clone());
            let len = binary_len.to_string();
            let ct = if oip { "application/json" } else { "application/x-www-form-urlencoded" };
            let headers = [("content-type", ct), (hname.as_str(), hval.as_str()), ("inference-header-content-length", len.as_str())];
            let path = if oip { format!("/v2/models/iris/infer{uri}") } else { uri };
            let req = Request { method: &method, uri: &path, headers: &headers, body: &body, client: &hval, ts: 1.0, truncated: false };
            let s = score(&t.0, &mut t.1, &req);
            prop_assert!((0.0..=1.0).contains(&s.verdict.score));
            prop_assert!(s.verdict.raw.is_finite());
            prop_assert!(s.verdict.reasons.iter().all(|r| !r.message().is_empty()));
        }

        #[test]
        fn oip_parser_never_panics_on_json_shapes(
            shape in proptest::collection::vec(-3i64..1_000_000, 0..4),
            dtype in prop_oneof![Just("FP32"), Just("BYTES"), Just("INT64"), Just("FP16"), Just("X")],
            data in proptest::collection::vec(-1e30f64..1e30, 0..20),
        ) {
            let body = format!(
                r#"{{"inputs": [{{"name": "features", "shape": {:?}, "datatype": "{dtype}", "data": {:?}}}]}}"#,
                shape, data
            );
            let mut t = MODEL.with(|m| m.clone());
            let req = Request { method: "POST", uri: "/v2/models/iris/infer", headers: &[], body: body.as_bytes(), client: "p", ts: 1.0, truncated: false };
            let s = score(&t.0, &mut t.1, &req);
            prop_assert!(s.verdict.raw.is_finite());
        }
    }

    thread_local! {
        static MODEL: (Model, ClientsClone) = {
            let t = trained(1500);
            (t.model, ClientsClone)
        };
    }

    /// Fresh client tables per case (the table itself is not Clone).
    #[derive(Debug)]
    struct ClientsClone;

    trait CloneModel {
        fn clone(&self) -> (Model, Clients);
    }

    impl CloneModel for (Model, ClientsClone) {
        fn clone(&self) -> (Model, Clients) {
            (self.0.clone(), Clients::new(16))
        }
    }
}
