//! Feature extraction + scoring of one request against a trained model:
//! a 1 KiB OIP v2 JSON request and a request without a body (GET with a
//! query string), each with 6 headers. Targets: 10 us and 2 us.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use meshward_detector::{score, Clients, Config, Learner, Model, Request};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const HEADERS_JSON: [(&str, &str); 6] = [
    ("host", "model-server:8000"),
    ("user-agent", "python-requests/2.31.0"),
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate"),
    ("content-type", "application/json"),
    ("content-length", "1024"),
];

const HEADERS_GET: [(&str, &str); 6] = [
    ("host", "shop.example"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
    ("accept", "text/html"),
    ("accept-language", "es-ES"),
    ("cookie", "JSESSIONID=6A1F2C3D4E5F60718293A4B5C6D7E8F9"),
    ("connection", "keep-alive"),
];

/// An OIP v2 request of about 1 KiB: 120 FP32 values.
fn oip_body(rng: &mut Rng) -> String {
    let data: Vec<String> = (0..120).map(|_| format!("{:.4}", rng.unit() * 2.0 - 1.0)).collect();
    format!(r#"{{"inputs": [{{"name": "x", "shape": [1, 120], "datatype": "FP32", "data": [{}]}}]}}"#, data.join(","))
}

fn get_uri(rng: &mut Rng) -> String {
    format!(
        "/tienda1/publico/anadir.jsp?id={}&nombre=Queso+Manchego&precio={}&cantidad={}",
        rng.next() % 3,
        10 + rng.next() % 90,
        1 + rng.next() % 50
    )
}

fn trained() -> Model {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut learner = Learner::new(Config::default());
    let mut model = Model::empty();
    let mut clients = Clients::new(10_000);
    for i in 0..6000u32 {
        let client = format!("client-{}", rng.next() % 50);
        let ts = f64::from(i) * 0.05;
        let (uri, body, headers) = if i % 2 == 0 {
            (get_uri(&mut rng), String::new(), &HEADERS_GET)
        } else {
            ("/v2/models/m/infer".to_string(), oip_body(&mut rng), &HEADERS_JSON)
        };
        let method = if body.is_empty() { "GET" } else { "POST" };
        let req = Request { method, uri: &uri, headers, body: body.as_bytes(), client: &client, ts, truncated: false };
        let s = score(&model, &mut clients, &req);
        learner.learn(&s.sample);
        if let Some(m) = learner.maybe_publish() {
            model = m;
        }
    }
    learner.model()
}

fn bench(c: &mut Criterion) {
    let model = trained();
    let mut clients = Clients::new(10_000);
    let mut rng = Rng(99);
    let body = oip_body(&mut rng);
    assert!((900..1200).contains(&body.len()), "body is {} bytes", body.len());
    let uri = get_uri(&mut rng);
    let mut ts = 1e6;
    c.bench_function("score_oip_v2_1kib", |b| {
        b.iter(|| {
            ts += 0.01;
            let req = Request {
                method: "POST",
                uri: "/v2/models/m/infer",
                headers: &HEADERS_JSON,
                body: body.as_bytes(),
                client: "client-7",
                ts,
                truncated: false,
            };
            black_box(score(&model, &mut clients, black_box(&req)))
        })
    });
    c.bench_function("score_get_no_body", |b| {
        b.iter(|| {
            ts += 0.01;
            let req = Request {
                method: "GET",
                uri: &uri,
                headers: &HEADERS_GET,
                body: b"",
                client: "client-8",
                ts,
                truncated: false,
            };
            black_box(score(&model, &mut clients, black_box(&req)))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
