//! Generality guard: the detector on ordinary web-shop traffic in the style
//! of the CSIC-2010 HTTP data set (no inference payloads at all), learned
//! from normal requests, then scored on fresh normal requests mixed with
//! injection, traversal, command injection, overlong and unexpected
//! parameters. Generated here with a fixed seed; nothing in the detector is
//! fitted to it.

use meshward_detector::{metrics, score, Clients, Config, Learner, Model, Request};

/// SplitMix64: a small, fixed-seed generator (the crate has no `rand`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..n).map(|_| char::from(A[self.below(A.len() as u64) as usize])).collect()
    }
}

/// Form/query encoding as a browser does it.
fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => o.push(char::from(b)),
            b' ' => o.push('+'),
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

// Normal values are not all plain letters: apostrophes, hyphens, accents,
// commas and '#' occur in real names, searches and addresses.
const WORDS: &[&str] = &[
    "shirt", "blue", "shoes", "running", "jacket", "wool", "summer", "dress", "hat", "kids", "bag", "men's", "t-shirt",
    "café", "50%",
];
const FIRST: &[&str] = &["Ana", "Luis", "Marta", "John", "Wei", "Fatima", "Olga", "Pedro", "Sara", "Tom"];
const LAST: &[&str] =
    &["Garcia", "Smith", "Lopez", "Chen", "Novak", "Silva", "Brown", "Khan", "Rossi", "O'Brien", "Müller"];
const STREETS: &[&str] =
    &["Main St", "Calle Mayor", "Oak Avenue, Apt 4B", "Gran Vía", "High Street #5", "Elm Road (rear)"];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
];

/// One request: method, uri, form body, attack class (None: normal).
struct Gen {
    method: &'static str,
    uri: String,
    body: String,
    class: Option<&'static str>,
}

/// The value a normal user would put in `param`.
fn normal_value(r: &mut Rng, param: &str) -> String {
    match param {
        "q" => (0..1 + r.below(3)).map(|_| r.pick(WORDS)).collect::<Vec<_>>().join(" "),
        "page" => (1 + r.below(20)).to_string(),
        "sort" => r.pick(&["price", "name", "rating", "newest"]).into(),
        "id" | "item_id" => (1000 + r.below(9000)).to_string(),
        "color" => r.pick(&["red", "blue", "black", "white", "green"]).into(),
        "qty" => (1 + r.below(5)).to_string(),
        "size" => r.pick(&["S", "M", "L", "XL"]).into(),
        "user" => format!("{}{}", r.pick(FIRST).to_lowercase(), r.digits(2)),
        "password" => {
            let n = 8 + r.below(7) as usize;
            r.alnum(n)
        }
        "name" => format!("{} {}", r.pick(FIRST), r.pick(LAST)),
        "address" => format!("{} {}", 1 + r.below(300), r.pick(STREETS)),
        "zip" => r.digits(5),
        "card" => r.digits(16),
        "email" => format!("{}.{}@example.com", r.pick(FIRST).to_lowercase(), r.pick(LAST).to_lowercase()),
        _ => r.alnum(6),
    }
}

/// Endpoints: (method, path, parameters).
const ENDPOINTS: &[(&str, &str, &[&str])] = &[
    ("GET", "/shop/search", &["q", "page", "sort"]),
    ("GET", "/shop/item", &["id", "color"]),
    ("POST", "/shop/cart", &["item_id", "qty", "size"]),
    ("POST", "/shop/login", &["user", "password"]),
    ("POST", "/shop/checkout", &["name", "address", "zip", "card", "email"]),
];

const ATTACKS: &[(&str, &[&str])] = &[
    ("sqli", &["' OR '1'='1", "1; DROP TABLE users--", "1 UNION SELECT username, password FROM users", "admin'--"]),
    ("xss", &["<script>alert(document.cookie)</script>", "\"><img src=x onerror=alert(1)>", "javascript:alert(1)"]),
    ("traversal", &["../../../../etc/passwd", "..%2F..%2F..%2Fwindows%2Fwin.ini", "/etc/shadow"]),
    ("command", &["; cat /etc/passwd", "| id", "$(whoami)", "`uname -a`"]),
];

fn generate(r: &mut Rng, attack_share: u64) -> Gen {
    let (method, path, params) = ENDPOINTS[r.below(ENDPOINTS.len() as u64) as usize];
    let mut pairs: Vec<(String, String)> = params.iter().map(|p| ((*p).to_string(), normal_value(r, p))).collect();
    let mut class = None;
    if r.below(100) < attack_share {
        let i = r.below(pairs.len() as u64) as usize;
        match r.below(7) {
            k @ 0..=3 => {
                let (name, payloads) = ATTACKS[k as usize];
                let p = r.pick(payloads);
                // Often appended to a plausible value, as tools do.
                pairs[i].1 = if r.below(2) == 0 { p.to_string() } else { format!("{}{p}", pairs[i].1) };
                class = Some(name);
            }
            4 => {
                let n = 300 + r.below(700) as usize;
                pairs[i].1 = "A".repeat(n);
                class = Some("overlong");
            }
            5 => {
                let extra = r.pick(&["debug", "admin", "isAdmin", "cmd", "role"]);
                pairs.push((extra.to_string(), r.pick(&["1", "true", "root"]).to_string()));
                class = Some("unseen-param");
            }
            _ => {
                pairs[i].1 = r.pick(&["%00", "\u{0}\u{1}\u{2}", "\u{ff}\u{fe}", "%252e%252e%252f"]).to_string();
                class = Some("odd-bytes");
            }
        }
    }
    let qs: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    let qs = qs.join("&");
    if method == "GET" {
        Gen { method, uri: format!("{path}?{qs}"), body: String::new(), class }
    } else {
        Gen { method, uri: path.to_string(), body: qs, class }
    }
}

#[test]
fn web_shop_attacks_rank_above_normal_requests() {
    let mut r = Rng(2010);
    let mut learner = Learner::new(Config::default());
    let mut model = Model::empty();
    let mut clients = Clients::new(10_000);
    let mut ts = 1_700_000_000.0;
    let mut run = |r: &mut Rng, g: &Gen, ts: f64, model: &mut Model, learner: &mut Learner| {
        let client = format!("10.1.{}.{}", r.below(4), r.below(250));
        let cookie = format!("JSESSIONID={:016X}", fnv(&client));
        let agent = AGENTS[(fnv(&client) % AGENTS.len() as u64) as usize];
        let mut headers = vec![
            ("host", "shop.example.com"),
            ("user-agent", agent),
            ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            ("accept-language", "en-US,en;q=0.5"),
            ("cookie", cookie.as_str()),
        ];
        if g.method == "POST" {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        let req = Request {
            method: g.method,
            uri: &g.uri,
            headers: &headers,
            body: g.body.as_bytes(),
            client: &client,
            ts,
            truncated: false,
        };
        let s = score(model, &mut clients, &req);
        learner.learn(&s.sample);
        if let Some(m) = learner.maybe_publish() {
            *model = m;
        }
        s.verdict
    };
    for _ in 0..6000 {
        ts += 0.05 + r.below(100) as f64 / 1000.0;
        let g = generate(&mut r, 0);
        run(&mut r, &g, ts, &mut model, &mut learner);
    }
    model = learner.model();
    assert!(model.ready, "warm-up not over after 6000 requests");

    let (mut scores, mut labels, mut classes, mut flagged) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..4000 {
        ts += 0.05 + r.below(100) as f64 / 1000.0;
        let g = generate(&mut r, 12);
        let v = run(&mut r, &g, ts, &mut model, &mut learner);
        scores.push(v.score);
        labels.push(g.class.is_some());
        classes.push(g.class);
        flagged.push(v.flagged());
    }
    let auroc = metrics::auroc(&scores, &labels).expect("both labels present");
    let normals = labels.iter().filter(|a| !**a).count();
    let fp = flagged.iter().zip(&labels).filter(|(f, a)| **f && !**a).count();
    let mut report = Vec::new();
    for class in ["sqli", "xss", "traversal", "command", "overlong", "unseen-param", "odd-bytes"] {
        let mine: Vec<usize> = (0..classes.len()).filter(|i| classes[*i] == Some(class)).collect();
        let caught = mine.iter().filter(|i| flagged[**i]).count();
        report.push(format!("{class} {caught}/{}", mine.len()));
    }
    let fpr = fp as f64 / normals as f64;
    let msg = format!("AUROC {auroc:.4}, FPR {fpr:.4} ({fp}/{normals}), flagged per class: {}", report.join(", "));
    eprintln!("{msg}");
    assert!(auroc >= 0.95, "{msg}");
    assert!(fpr <= 0.01, "{msg}");
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
