//! The model catalogue of the simulated model server: five Open Inference
//! Protocol v2 models with different inputs, the distributions their normal
//! inputs are drawn from (with a `drift` knob in [0, 1] for slow change over
//! the test period), and the request encoders (JSON and the binary tensor
//! extension).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Exp1, StandardNormal};

/// A model served behind the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Model {
    /// Card-fraud scorer: one FP32 input `[B,30]` (hour, 28 PCA-like components, amount).
    Fraud,
    /// Iris-like classifier: FP32 `[B,4]`, batch 1-8.
    Iris,
    /// Handwritten digit CNN: FP32 `[1,1,28,28]`, pixel intensities in [0, 1].
    Digits,
    /// Sentiment classifier: BYTES `[B]` of short sentences.
    Sentiment,
    /// Sentence embedder: INT64 `input_ids` and `attention_mask`, `[1,L]`.
    Embed,
}

impl Model {
    /// Every model.
    pub const ALL: [Model; 5] = [Model::Fraud, Model::Iris, Model::Digits, Model::Sentiment, Model::Embed];

    /// Name in the URL.
    pub fn name(self) -> &'static str {
        match self {
            Model::Fraud => "fraud_detector",
            Model::Iris => "iris_classifier",
            Model::Digits => "mnist_cnn",
            Model::Sentiment => "sentiment_bert",
            Model::Embed => "text_embedder",
        }
    }

    /// Versions the server has loaded (the last is the default).
    pub fn versions(self) -> &'static [u32] {
        match self {
            Model::Fraud => &[3, 4],
            Model::Iris => &[1],
            Model::Digits => &[1, 2],
            Model::Sentiment => &[7],
            Model::Embed => &[2],
        }
    }

    /// Name of the (first) input.
    pub fn input(self) -> &'static str {
        match self {
            Model::Fraud => "features",
            Model::Iris => "input",
            Model::Digits => "input_1",
            Model::Sentiment => "text",
            Model::Embed => "input_ids",
        }
    }

    /// Name of the output clients ask for.
    pub fn output(self) -> &'static str {
        match self {
            Model::Fraud => "fraud_probability",
            Model::Iris => "probabilities",
            Model::Digits => "dense_2",
            Model::Sentiment => "label",
            Model::Embed => "sentence_embedding",
        }
    }

    /// Row width of the tabular models (features per row).
    pub fn width(self) -> usize {
        match self {
            Model::Fraud => FRAUD_WIDTH,
            Model::Iris => 4,
            Model::Digits => 784,
            Model::Sentiment | Model::Embed => 1,
        }
    }

    /// Fraction digits clients write for this model's FP32 values (pixels
    /// use 4: the k/255 table).
    pub fn decimals(self) -> u8 {
        match self {
            Model::Fraud => 6,
            Model::Iris => 1,
            Model::Digits => 4,
            Model::Sentiment | Model::Embed => 0,
        }
    }

    /// Typical server latency in milliseconds for a batch of `batch` (or
    /// `batch` tokens for the embedder).
    pub fn latency_ms(self, rng: &mut StdRng, batch: usize) -> f64 {
        let (base, per) = match self {
            Model::Fraud => (1.8, 0.05),
            Model::Iris => (0.6, 0.02),
            Model::Digits => (4.5, 3.0),
            Model::Sentiment => (14.0, 9.0),
            Model::Embed => (3.0, 0.12),
        };
        let jitter: f64 = rng.sample::<f64, _>(StandardNormal) * 0.25;
        let tail = if rng.gen_bool(0.01) { 1.0 + 8.0 * rng.gen::<f64>() } else { 1.0 };
        ((base + per * batch as f64) * jitter.exp() * tail * 1000.0).round() / 1000.0
    }

    /// The plausible value box of each feature of a tabular/image model (what
    /// an extraction attack sweeps).
    pub fn feature_box(self) -> Vec<(f32, f32)> {
        match self {
            Model::Fraud => {
                let mut b = vec![(0.0, 24.0)];
                b.extend(FRAUD_SIGMA.iter().map(|s| (-4.0 * s, 4.0 * s)));
                b.push((0.0, 2500.0));
                b
            }
            Model::Iris => vec![(4.3, 7.9), (2.0, 4.4), (1.0, 6.9), (0.1, 2.5)],
            Model::Digits => vec![(0.0, 1.0); 784],
            Model::Sentiment | Model::Embed => Vec::new(),
        }
    }
}

/// Elements of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// FP32 values, written with at most `decimals` fraction digits in JSON.
    F32(Vec<f32>, u8),
    /// Integer values (INT64 and other integer types).
    Int(Vec<i64>),
    /// BYTES elements.
    Bytes(Vec<String>),
    /// A preformatted JSON value for `data` (only for malformed requests).
    Raw(String),
}

impl Data {
    /// Number of elements (Raw counts as 0).
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v, _) => v.len(),
            Data::Int(v) => v.len(),
            Data::Bytes(v) => v.len(),
            Data::Raw(_) => 0,
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One input tensor of an inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Input name.
    pub name: String,
    /// OIP datatype (`FP32`, `INT64`, `BYTES`, ...).
    pub datatype: String,
    /// Declared shape.
    pub shape: Vec<i64>,
    /// Elements, flat row-major.
    pub data: Data,
}

/// An inference request before encoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Infer {
    /// Optional request id.
    pub id: Option<String>,
    /// Optional `parameters` object, preformatted JSON.
    pub parameters: Option<String>,
    /// Inputs.
    pub inputs: Vec<Tensor>,
    /// Requested outputs (names).
    pub outputs: Vec<String>,
}

/// How a client library writes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonStyle {
    /// Python's `json.dumps` default separators (`", "`, `": "`).
    pub spaced: bool,
    /// Nested arrays following the shape instead of flat `data`.
    pub nested: bool,
}

/// Number of fraud model features.
pub const FRAUD_WIDTH: usize = 30;

/// Standard deviations of the 28 PCA-like fraud components (decreasing, as
/// principal components are).
const FRAUD_SIGMA: [f32; 28] = [
    1.96, 1.65, 1.52, 1.42, 1.38, 1.33, 1.24, 1.19, 1.10, 1.09, 1.02, 1.00, 0.99, 0.96, 0.92, 0.88, 0.85, 0.84, 0.81,
    0.77, 0.73, 0.73, 0.62, 0.61, 0.52, 0.48, 0.40, 0.33,
];

/// Iris class means and standard deviations per feature.
const IRIS: [[(f32, f32); 4]; 3] = [
    [(5.01, 0.35), (3.42, 0.38), (1.46, 0.17), (0.24, 0.11)],
    [(5.94, 0.52), (2.77, 0.31), (4.26, 0.47), (1.33, 0.20)],
    [(6.59, 0.64), (2.97, 0.32), (5.55, 0.55), (2.03, 0.27)],
];

fn normal(rng: &mut StdRng) -> f32 {
    rng.sample::<f32, _>(StandardNormal)
}

/// One fraud feature row at hour-of-day `hour`.
pub fn fraud_row(rng: &mut StdRng, hour: f32, drift: f32, out: &mut Vec<f32>) {
    out.push((hour * 100.0).round() / 100.0);
    for (i, s) in FRAUD_SIGMA.iter().enumerate() {
        let x = match i {
            // Skewed components: a long negative tail, as in card data.
            0 | 2 if rng.gen_bool(0.08) => -2.5 * s - s * rng.sample::<f32, _>(Exp1),
            _ => normal(rng) * s,
        };
        out.push(x + 0.06 * drift * s);
    }
    let amount = (3.1 + 0.15 * drift + 1.35 * normal(rng)).exp().min(25_691.16);
    out.push((amount * 100.0).round() / 100.0);
}

/// One iris row.
pub fn iris_row(rng: &mut StdRng, drift: f32, out: &mut Vec<f32>) {
    let class = &IRIS[rng.gen_range(0..3)];
    for &(m, s) in class {
        let v = (m + 0.05 * drift + normal(rng) * s).max(0.1);
        out.push((v * 10.0).round() / 10.0);
    }
}

/// Pen positions per stroke (the brush overlaps between them).
const STROKE_STEPS: u32 = 12;

/// A 28x28 handwritten-looking digit: 2-4 antialiased pen strokes in the
/// centre, intensities quantised to k/255 like a scanned image.
pub fn digit_image(rng: &mut StdRng, drift: f32, out: &mut Vec<f32>) {
    let mut img = [0f32; 784];
    let ink = 0.85 + 0.15 * rng.gen::<f32>() - 0.05 * drift;
    for _ in 0..rng.gen_range(2..=4) {
        let p: [(f32, f32); 3] = [
            (rng.gen_range(5.0..23.0), rng.gen_range(4.0..24.0)),
            (rng.gen_range(5.0..23.0), rng.gen_range(4.0..24.0)),
            (rng.gen_range(5.0..23.0), rng.gen_range(4.0..24.0)),
        ];
        for step in 0..=STROKE_STEPS {
            let t = step as f32 / STROKE_STEPS as f32;
            let u = 1.0 - t;
            let x = u * u * p[0].0 + 2.0 * u * t * p[1].0 + t * t * p[2].0;
            let y = u * u * p[0].1 + 2.0 * u * t * p[1].1 + t * t * p[2].1;
            // Coordinates are positive: adding 0.5 and truncating rounds.
            let (cx, cy) = ((x + 0.5) as i32, (y + 0.5) as i32);
            for dy in -1..=1i32 {
                for dx in -1..=1i32 {
                    let (px, py) = (cx + dx, cy + dy);
                    if !(0..28).contains(&px) || !(0..28).contains(&py) {
                        continue;
                    }
                    let d2 = (px as f32 - x).powi(2) + (py as f32 - y).powi(2);
                    let v = ink * (1.0 - d2 / 2.5).max(0.0);
                    let cell = &mut img[(py * 28 + px) as usize];
                    *cell = cell.max(v);
                }
            }
        }
    }
    out.extend(img.iter().map(|&v| quantise_pixel(v)));
}

const SUBJECTS: &[&str] = &[
    "delivery",
    "product",
    "app",
    "support team",
    "checkout",
    "battery life",
    "screen",
    "price",
    "update",
    "camera",
    "refund process",
    "driver",
    "packaging",
    "fit",
    "sound quality",
    "subscription",
    "new dashboard",
    "hotel room",
];
const POSITIVE: &[&str] =
    &["great", "excellent", "fast", "helpful", "amazing", "reliable", "comfortable", "worth it", "smooth", "friendly"];
const NEGATIVE: &[&str] =
    &["terrible", "slow", "broken", "disappointing", "confusing", "overpriced", "noisy", "useless", "rude", "buggy"];
const ADVERBS: &[&str] = &["", "really ", "very ", "quite ", "incredibly ", "not very ", "honestly ", "super "];
const TAILS: &[&str] = &[
    ".",
    "!",
    "!!",
    " and I would buy again.",
    " but shipping took forever.",
    ", five stars.",
    ". Won\u{2019}t order again.",
    " \u{1f44d}",
    " compared to last year.",
    ", thanks!",
];
const OPENERS: &[&str] = &["The", "This", "My", "Our", "Honestly the", "Overall the"];
const NEW_SUBJECTS: &[&str] = &["X2 headset", "holiday bundle", "AI assistant"];

/// A short review-like sentence.
pub fn sentence(rng: &mut StdRng, drift: f32) -> String {
    let subject = if rng.gen_bool(f64::from(0.15 * drift)) {
        NEW_SUBJECTS[rng.gen_range(0..NEW_SUBJECTS.len())]
    } else {
        SUBJECTS[rng.gen_range(0..SUBJECTS.len())]
    };
    let adj = if rng.gen_bool(0.6) { POSITIVE } else { NEGATIVE };
    let mut s = format!(
        "{} {} {} {}{}{}",
        OPENERS[rng.gen_range(0..OPENERS.len())],
        subject,
        ["was", "is", "seems", "felt"][rng.gen_range(0..4)],
        ADVERBS[rng.gen_range(0..ADVERBS.len())],
        adj[rng.gen_range(0..adj.len())],
        TAILS[rng.gen_range(0..TAILS.len())]
    );
    if rng.gen_bool(0.2) {
        let _ = write!(
            s,
            " The {} was {} too.",
            SUBJECTS[rng.gen_range(0..SUBJECTS.len())],
            adj[rng.gen_range(0..adj.len())]
        );
    }
    s
}

/// Token ids of a tokenised sentence of `len` tokens (with `[CLS]` and `[SEP]`),
/// padded with zeros to `pad_to` when given; returns (ids, mask).
pub fn token_ids(rng: &mut StdRng, len: usize, pad_to: Option<usize>) -> (Vec<i64>, Vec<i64>) {
    const COMMON: [i64; 8] = [1996, 1010, 1012, 2000, 1037, 1997, 1998, 2003];
    let len = len.max(2);
    let total = pad_to.map_or(len, |p| p.max(len));
    let mut ids = Vec::with_capacity(total);
    ids.push(101);
    for _ in 1..len - 1 {
        if rng.gen_bool(0.3) {
            ids.push(COMMON[rng.gen_range(0..COMMON.len())]);
        } else {
            // Log-uniform over the word-piece vocabulary: frequent words have small ids.
            ids.push(999 + 29_522f64.powf(rng.gen::<f64>()) as i64);
        }
    }
    ids.push(102);
    let mut mask = vec![1; len];
    ids.resize(total, 0);
    mask.resize(total, 0);
    (ids, mask)
}

/// The nearest intensity `k/255` to `v` (clamped to [0, 1]), as a scanner
/// or `uint8 / 255.0` produces it.
pub fn quantise_pixel(v: f32) -> f32 {
    let k = (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
    f32::from(k) / 255.0
}

/// `k/255` as an f32 written by Python/numpy (shortest round-trip form).
fn pixel_text(v: f32) -> Option<&'static str> {
    static TABLE: OnceLock<Vec<String>> = OnceLock::new();
    if !(0.0..=1.0).contains(&v) {
        return None;
    }
    let k = (v * 255.0 + 0.5) as usize;
    if quantise_pixel(v) != v {
        return None;
    }
    let table = TABLE.get_or_init(|| {
        (0..=255)
            .map(|k| {
                let s = format!("{}", k as f32 / 255.0);
                if s.contains('.') {
                    s
                } else {
                    s + ".0"
                }
            })
            .collect()
    });
    table.get(k).map(String::as_str)
}

fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Writes `v` with at most `decimals` fraction digits, trailing zeros trimmed
/// but at least one kept (`1.0`, `0.25`), like Python's float repr of short
/// decimals. Non-finite values are written as Python does (`NaN`, `Infinity`).
pub fn push_float(buf: &mut Vec<u8>, v: f32, decimals: u8) {
    if !v.is_finite() {
        let text = if v.is_nan() {
            "NaN"
        } else if v > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        };
        buf.extend_from_slice(text.as_bytes());
        return;
    }
    if decimals == 4 {
        if let Some(t) = pixel_text(v) {
            buf.extend_from_slice(t.as_bytes());
            return;
        }
    }
    let scale = 10u64.pow(u32::from(decimals.min(9)));
    // Non-negative: adding 0.5 and truncating rounds.
    let scaled = f64::from(v.abs()) * scale as f64 + 0.5;
    if scaled >= 9e18 {
        let _ = write!(buf, "{:e}", v);
        return;
    }
    let scaled = scaled as u64;
    let (mut int, mut frac) = (scaled / scale, scaled % scale);
    let mut width = decimals.clamp(1, 9);
    while width > 1 && frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    // Filled from the right: fraction digits (zero-padded), point, integer
    // digits, sign; then copied in one piece.
    let mut text = [0u8; 32];
    let mut pos = text.len();
    for _ in 0..width {
        pos -= 1;
        text[pos] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    pos -= 1;
    text[pos] = b'.';
    loop {
        pos -= 1;
        text[pos] = b'0' + (int % 10) as u8;
        int /= 10;
        if int == 0 {
            break;
        }
    }
    if v < 0.0 && scaled != 0 {
        pos -= 1;
        text[pos] = b'-';
    }
    buf.extend_from_slice(&text[pos..]);
}

/// `v` as [`push_float`] writes it.
pub fn float_text(v: f32, decimals: u8) -> String {
    let mut buf = Vec::with_capacity(16);
    push_float(&mut buf, v, decimals);
    // push_float writes ASCII only.
    String::from_utf8(buf).unwrap_or_default()
}

fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

fn push_elements(buf: &mut Vec<u8>, data: &Data, range: std::ops::Range<usize>, spaced: bool) {
    for (n, i) in range.enumerate() {
        if n > 0 {
            if spaced {
                buf.extend_from_slice(b", ");
            } else {
                buf.push(b',');
            }
        }
        match data {
            // Most pixels are blank: the constant-size copy avoids a call.
            Data::F32(v, 4) if v[i] == 0.0 => buf.extend_from_slice(b"0.0"),
            Data::F32(v, d) => push_float(buf, v[i], *d),
            Data::Int(v) => {
                if v[i] < 0 {
                    buf.push(b'-');
                }
                push_u64(buf, v[i].unsigned_abs());
            }
            Data::Bytes(v) => push_json_str(buf, &v[i]),
            Data::Raw(_) => {}
        }
    }
}

/// Writes `data` as nested arrays following `shape` when the element count
/// matches, else flat.
fn push_data(buf: &mut Vec<u8>, t: &Tensor, style: JsonStyle) {
    let sep = if style.spaced { ", " } else { "," };
    if let Data::Raw(raw) = &t.data {
        buf.extend_from_slice(raw.as_bytes());
        return;
    }
    let n = t.data.len();
    let dims: Vec<usize> = t.shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
    let nested = style.nested && dims.len() > 1 && dims.iter().product::<usize>() == n && n > 0;
    if !nested {
        buf.push(b'[');
        push_elements(buf, &t.data, 0..n, style.spaced);
        buf.push(b']');
        return;
    }
    // Row-major nesting: before a row, open one bracket per dimension whose
    // block starts there; after it, close one per block that ends there.
    let row = dims[dims.len() - 1];
    let mut blocks = vec![row; dims.len()];
    for k in (0..dims.len() - 1).rev() {
        blocks[k] = blocks[k + 1] * dims[k];
    }
    let mut i = 0;
    while i < n {
        if i > 0 {
            buf.extend_from_slice(sep.as_bytes());
        }
        for _ in blocks.iter().filter(|&&b| i % b == 0) {
            buf.push(b'[');
        }
        push_elements(buf, &t.data, i..i + row, style.spaced);
        i += row;
        for _ in blocks.iter().filter(|&&b| i % b == 0) {
            buf.push(b']');
        }
    }
}

/// Raw little-endian bytes of a tensor (binary extension).
pub fn tensor_bytes(data: &Data) -> Vec<u8> {
    match data {
        Data::F32(v, _) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::Int(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::Bytes(v) => {
            let mut out = Vec::new();
            for s in v {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            out
        }
        Data::Raw(r) => r.as_bytes().to_vec(),
    }
}

/// Encodes the request as JSON. With `binary`, tensors are not written in
/// `data`; each input carries `parameters.binary_data_size` instead and the
/// returned JSON is the header part of a binary-extension body.
fn encode_header(req: &Infer, style: JsonStyle, binary: Option<&[usize]>) -> Vec<u8> {
    let (c, s) = if style.spaced { (": ", ", ") } else { (":", ",") };
    let elements: usize = req.inputs.iter().map(|t| t.data.len()).sum();
    let mut buf = Vec::with_capacity(256 + if binary.is_some() { 0 } else { elements * 10 });
    buf.push(b'{');
    let mut first = true;
    let mut key = |buf: &mut Vec<u8>, k: &str| {
        if !first {
            buf.extend_from_slice(s.as_bytes());
        }
        first = false;
        buf.push(b'"');
        buf.extend_from_slice(k.as_bytes());
        buf.push(b'"');
        buf.extend_from_slice(c.as_bytes());
    };
    if let Some(id) = &req.id {
        key(&mut buf, "id");
        push_json_str(&mut buf, id);
    }
    if let Some(p) = &req.parameters {
        key(&mut buf, "parameters");
        buf.extend_from_slice(p.as_bytes());
    }
    key(&mut buf, "inputs");
    buf.push(b'[');
    for (i, t) in req.inputs.iter().enumerate() {
        if i > 0 {
            buf.extend_from_slice(s.as_bytes());
        }
        let _ = write!(buf, "{{\"name\"{c}");
        push_json_str(&mut buf, &t.name);
        let _ = write!(buf, "{s}\"shape\"{c}[");
        for (j, d) in t.shape.iter().enumerate() {
            if j > 0 {
                buf.extend_from_slice(s.as_bytes());
            }
            let _ = write!(buf, "{d}");
        }
        let _ = write!(buf, "]{s}\"datatype\"{c}");
        push_json_str(&mut buf, &t.datatype);
        match binary {
            Some(sizes) => {
                let size = sizes.get(i).copied().unwrap_or(0);
                let _ = write!(buf, "{s}\"parameters\"{c}{{\"binary_data_size\"{c}{size}}}");
            }
            None => {
                let _ = write!(buf, "{s}\"data\"{c}");
                push_data(&mut buf, t, style);
            }
        }
        buf.push(b'}');
    }
    buf.push(b']');
    if !req.outputs.is_empty() {
        key(&mut buf, "outputs");
        buf.push(b'[');
        for (i, o) in req.outputs.iter().enumerate() {
            if i > 0 {
                buf.extend_from_slice(s.as_bytes());
            }
            let _ = write!(buf, "{{\"name\"{c}");
            push_json_str(&mut buf, o);
            if binary.is_some() {
                let _ = write!(buf, "{s}\"parameters\"{c}{{\"binary_data\"{c}true}}");
            }
            buf.push(b'}');
        }
        buf.push(b']');
    }
    buf.push(b'}');
    buf
}

/// The request as a JSON body.
pub fn encode_json(req: &Infer, style: JsonStyle) -> Vec<u8> {
    encode_header(req, style, None)
}

/// The request as a binary-extension body; returns the body and the length
/// of its JSON header (the `Inference-Header-Content-Length` value).
pub fn encode_binary(req: &Infer, style: JsonStyle) -> (Vec<u8>, usize) {
    let raws: Vec<Vec<u8>> = req.inputs.iter().map(|t| tensor_bytes(&t.data)).collect();
    let sizes: Vec<usize> = raws.iter().map(Vec::len).collect();
    encode_binary_with_sizes(req, style, &raws, &sizes)
}

/// Like [`encode_binary`] but with explicit tensor bytes and declared sizes
/// (which may disagree, for malformed requests).
pub fn encode_binary_with_sizes(req: &Infer, style: JsonStyle, raws: &[Vec<u8>], sizes: &[usize]) -> (Vec<u8>, usize) {
    let mut body = encode_header(req, style, Some(sizes));
    let len = body.len();
    for r in raws {
        body.extend_from_slice(r);
    }
    (body, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn floats_are_written_like_python_short_reprs() {
        let f = float_text;
        assert_eq!(f(1.0, 6), "1.0");
        assert_eq!(f(-0.25, 6), "-0.25");
        assert_eq!(f(149.62, 2), "149.62");
        assert_eq!(f(0.05, 2), "0.05");
        assert_eq!(f(-0.0000001, 6), "0.0");
        assert_eq!(f(0.0, 4), "0.0");
        assert_eq!(f(1.0, 4), "1.0");
        assert_eq!(f(128.0 / 255.0, 4), "0.5019608");
        assert_eq!(f(f32::NAN, 4), "NaN");
        assert_eq!(f(-12.345678, 6), "-12.345678");
        assert_eq!(f(0.000123, 6), "0.000123");
        assert_eq!(f(25691.16, 2), "25691.16");
        assert_eq!(f(7.0, 1), "7.0");
        assert!(f(3e20, 6).parse::<f64>().is_ok());
    }

    #[test]
    fn nested_and_flat_data_follow_the_shape() {
        let t = Tensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![2, 1, 2],
            data: Data::F32(vec![1.0, 2.0, 3.0, 4.0], 1),
        };
        let req = Infer { inputs: vec![t], ..Infer::default() };
        let nested = encode_json(&req, JsonStyle { spaced: false, nested: true });
        let v: serde_json::Value = serde_json::from_slice(&nested).expect("json");
        assert_eq!(v["inputs"][0]["data"], serde_json::json!([[[1.0, 2.0]], [[3.0, 4.0]]]));
        let flat = encode_json(&req, JsonStyle { spaced: true, nested: false });
        let v: serde_json::Value = serde_json::from_slice(&flat).expect("json");
        assert_eq!(v["inputs"][0]["data"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
        assert!(String::from_utf8_lossy(&flat).contains("\"shape\": [2, 1, 2]"));
    }

    #[test]
    fn samplers_stay_in_their_boxes() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut img = Vec::new();
        digit_image(&mut rng, 0.0, &mut img);
        assert_eq!(img.len(), 784);
        assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
        let ink = img.iter().filter(|v| **v > 0.0).count();
        assert!((40..400).contains(&ink), "{ink} inked pixels");
        let mut row = Vec::new();
        fraud_row(&mut rng, 13.5, 0.0, &mut row);
        assert_eq!(row.len(), FRAUD_WIDTH);
        assert!(row[29] >= 0.0);
        let (ids, mask) = token_ids(&mut rng, 10, Some(16));
        assert_eq!((ids.len(), mask.len(), ids[0], ids[9], ids[10]), (16, 16, 101, 102, 0));
    }
}
