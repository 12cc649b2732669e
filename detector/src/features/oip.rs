//! The inference-payload family: Open Inference Protocol v2 requests (JSON,
//! and the binary tensor extension where `Inference-Header-Content-Length: N`
//! says the first N body bytes are JSON and raw little-endian tensors follow,
//! sized by each input's `parameters.binary_data_size`).
//!
//! Each input becomes a handful of [`FieldKind::Tensor`] observations named
//! `model/input.stat` (datatype, shape, batch, element count, shape/data
//! mismatch, min, max, mean, std, L2 norm, NaN/Inf count, share of values
//! outside the learned range) and, for BYTES inputs, one
//! [`FieldKind::TensorBytes`] observation per element. Never panics on any
//! bytes: a body that does not parse is itself an observation
//! (`model.request = invalid`).

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::params::json_field;
use super::request::{cap_name, ValueStats, MAX_FIELDS};
use super::{FieldKind, Sample};

/// Dimensions of a tensor sketch (means of equal chunks of the flat tensor).
pub const SKETCH: usize = 8;
/// BYTES elements taken as field observations per input.
const MAX_BYTES_ELEMENTS: usize = 16;
/// Numeric elements kept per input (statistics cover these).
const MAX_ELEMENTS: usize = 1 << 20;

/// Leading elements of an input with learned per-position statistics.
pub const POSITIONS: usize = 32;

/// What the model learned about inputs, by `model/input` (the model provides it).
pub trait InputRanges {
    /// The learned profile of an input, if any.
    fn input(&self, input: &str) -> Option<&crate::profile::InputProfile>;
}

/// No learned ranges (tests, warm-up).
#[derive(Debug, Clone, Copy)]
pub struct NoRanges;

impl InputRanges for NoRanges {
    fn input(&self, _: &str) -> Option<&crate::profile::InputProfile> {
        None
    }
}

/// The leading elements and range of one numeric input, for learning.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorObs {
    /// `model/input`.
    pub input: String,
    /// The first [`POSITIONS`] elements.
    pub lead: Vec<f32>,
    /// Smallest finite element.
    pub min: f64,
    /// Largest finite element.
    pub max: f64,
    /// Per-position deviation, when positions were learned.
    pub deviation: Option<f64>,
    /// Elements of the first row (see [`crate::neighbours::row`]) in
    /// `lead`; 0 when it has none.
    #[serde(default)]
    pub row: u8,
    /// Distance of the first row to its nearest learned row, when measured.
    #[serde(default)]
    pub nearest: Option<f64>,
}

/// Root mean square of the per-position z-scores of the leading elements
/// against their learned statistics: about 1 for inputs like the learned
/// ones, larger for inputs spread over the whole domain or shifted.
pub fn deviation(values: &[f64], positions: &[crate::profile::Stat]) -> Option<f64> {
    deviation_joint(values, positions, &[])
}

/// [`deviation`] in whitened coordinates: the leading positions count by
/// their Mahalanobis distance under the learned correlations (`inv_corr`,
/// see [`crate::profile::InputProfile::inv_corr`]), the rest by their
/// z-scores. Still about 1 for inputs like the learned ones; larger for
/// queries that break the learned correlations (a uniform sweep of the box).
pub fn deviation_joint(values: &[f64], positions: &[crate::profile::Stat], inv_corr: &[f64]) -> Option<f64> {
    let mut sum = 0.0;
    let mut n = 0usize;
    let k = (inv_corr.len() as f64).sqrt() as usize;
    let mut skip = 0;
    if k >= 2
        && k * k == inv_corr.len()
        && values.len() >= k
        && positions.len() >= k
        && positions[..k].iter().all(|p| p.n >= crate::profile::MIN_OBS)
        && values[..k].iter().all(|v| v.is_finite())
    {
        let mut z = [0.0; crate::profile::JOINT];
        for ((o, v), p) in z.iter_mut().zip(values).zip(positions).take(k) {
            let sd = p.std().max(1e-6 * p.mean.abs()).max(1e-9);
            *o = ((v - p.mean) / sd).clamp(-1e3, 1e3);
        }
        let mut d2 = 0.0;
        for i in 0..k {
            let row = &inv_corr[i * k..(i + 1) * k];
            d2 += z[i] * row.iter().zip(&z[..k]).map(|(a, b)| a * b).sum::<f64>();
        }
        // The ridge keeps the matrix positive definite: d2 >= 0 up to rounding.
        sum += d2.max(0.0);
        n += k;
        skip = k;
    }
    for (v, p) in values.iter().zip(positions).skip(skip) {
        if p.n < crate::profile::MIN_OBS || !v.is_finite() {
            continue;
        }
        let sd = p.std().max(1e-6 * p.mean.abs()).max(1e-9);
        let z = ((v - p.mean) / sd).clamp(-1e3, 1e3);
        sum += z * z;
        n += 1;
    }
    (n > 0).then(|| (sum / n as f64).sqrt())
}

/// What the OIP extraction found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Number of inputs.
    pub inputs: usize,
    /// Total elements over all inputs.
    pub elements: usize,
    /// Sketch of the first numeric input, with the hash of the model name.
    pub sketch: Option<(u64, [f32; SKETCH])>,
    /// Per-position deviation of the first numeric input (see [`deviation`]).
    pub deviation: Option<f64>,
    /// How novel the first numeric input's first row is.
    pub novelty: Option<crate::neighbours::Novelty>,
}

/// A flattened `data` array: numbers (bools as 0/1) and strings.
#[derive(Debug, Default)]
pub struct Flat {
    /// Numeric elements (at most `MAX_ELEMENTS`).
    pub nums: Vec<f64>,
    /// The first BYTES elements.
    pub strs: Vec<String>,
    /// All elements seen, numeric or not.
    pub count: usize,
    /// Elements that were neither number, bool nor string (null, objects).
    pub other: usize,
    /// Strings that spell a non-finite number (`"NaN"`, `"-Infinity"`, ...;
    /// see [`non_finite_word`]), also kept in `nums` as that number.
    pub words: usize,
}

struct FlatSeed<'a>(&'a mut Flat);

impl<'de> DeserializeSeed<'de> for FlatSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl FlatSeed<'_> {
    fn num(self, v: f64) {
        self.0.count += 1;
        if self.0.nums.len() < MAX_ELEMENTS {
            self.0.nums.push(v);
        }
    }
}

impl<'de> Visitor<'de> for FlatSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor data array")
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.num(v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.num(v as f64);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.num(v as f64);
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.num(f64::from(u8::from(v)));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.count += 1;
        if let Some(x) = non_finite_word(v) {
            // A number tensor's NaN as a string (or as a bare token, quoted by
            // `quote_non_finite`); the datatype decides in `extract`.
            self.0.words += 1;
            if self.0.nums.len() < MAX_ELEMENTS {
                self.0.nums.push(x);
            }
        }
        if self.0.strs.len() < MAX_BYTES_ELEMENTS {
            self.0.strs.push(v.to_owned());
        }
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.count += 1;
        self.0.other += 1;
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        self.0.count += 1;
        self.0.other += 1;
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(FlatSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

fn flat<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<Flat>, D::Error> {
    // Room for small tensors up front: growing from empty cost one
    // reallocation per doubling from 4 (eight for a 784-pixel image, now four).
    let mut f = Flat { nums: Vec::with_capacity(64), ..Flat::default() };
    FlatSeed(&mut f).deserialize(d)?;
    Ok(Some(f))
}

/// One OIP v2 request input. Its name and datatype borrow from the body
/// (unless escaped): two allocations fewer per input.
#[derive(Debug, Deserialize)]
pub struct Input<'a> {
    /// Input name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Declared shape (numbers; anything else fails the parse).
    pub shape: Vec<f64>,
    /// Declared datatype (`FP32`, `INT64`, `BYTES`, ...).
    #[serde(borrow)]
    pub datatype: Cow<'a, str>,
    /// Per-input parameters (`binary_data_size`, ...).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Flattened data, when sent in JSON.
    #[serde(default, deserialize_with = "flat")]
    pub data: Option<Flat>,
}

/// An OIP v2 inference request.
#[derive(Debug, Deserialize)]
pub struct InferRequest<'a> {
    /// Request-level parameters.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// The inputs.
    #[serde(borrow)]
    pub inputs: Vec<Input<'a>>,
}

/// Bytes per element of a fixed-size datatype (`None` for BYTES or unknown).
pub fn dtype_size(dt: &str) -> Option<usize> {
    Some(match dt {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" | "BF16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

/// Decode little-endian tensor bytes of a fixed-size datatype into `out`.
/// The datatype picks the conversion once: matching its name for every
/// element was most of this function's time (1% of `meshward eval`).
pub fn decode_binary(dt: &str, bytes: &[u8], out: &mut Vec<f64>) {
    match dt {
        "BOOL" | "UINT8" => decode_each(bytes, out, |[a]: [u8; 1]| f64::from(a)),
        "INT8" => decode_each(bytes, out, |[a]: [u8; 1]| f64::from(a as i8)),
        "INT16" => decode_each(bytes, out, |b: [u8; 2]| f64::from(i16::from_le_bytes(b))),
        "UINT16" => decode_each(bytes, out, |b: [u8; 2]| f64::from(u16::from_le_bytes(b))),
        "FP16" => decode_each(bytes, out, |b: [u8; 2]| f16_to_f64(u16::from_le_bytes(b))),
        "BF16" => {
            decode_each(bytes, out, |b: [u8; 2]| f64::from(f32::from_bits(u32::from(u16::from_le_bytes(b)) << 16)))
        }
        "INT32" => decode_each(bytes, out, |b: [u8; 4]| f64::from(i32::from_le_bytes(b))),
        "UINT32" => decode_each(bytes, out, |b: [u8; 4]| f64::from(u32::from_le_bytes(b))),
        "FP32" => decode_each(bytes, out, |b: [u8; 4]| f64::from(f32::from_le_bytes(b))),
        "INT64" => decode_each(bytes, out, |b: [u8; 8]| i64::from_le_bytes(b) as f64),
        "UINT64" => decode_each(bytes, out, |b: [u8; 8]| u64::from_le_bytes(b) as f64),
        "FP64" => decode_each(bytes, out, f64::from_le_bytes),
        _ => {}
    }
}

/// Converts each whole `N`-byte element of `bytes` (at most `MAX_ELEMENTS`).
fn decode_each<const N: usize>(bytes: &[u8], out: &mut Vec<f64>, convert: impl Fn([u8; N]) -> f64) {
    // `chunks_exact(N)` yields N-byte slices only: the conversion to an array cannot fail.
    out.extend(bytes.chunks_exact(N).take(MAX_ELEMENTS).map(|c| c.try_into().map_or(0.0, &convert)));
}

/// IEEE half precision to f64 (no `half` crate for one conversion).
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Split binary BYTES tensor data (4-byte LE length prefixes) into elements.
fn decode_binary_bytes(bytes: &[u8], strs: &mut Vec<String>) -> usize {
    let mut rest = bytes;
    let mut n = 0;
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        let take = len.min(rest.len());
        if strs.len() < MAX_BYTES_ELEMENTS {
            strs.push(String::from_utf8_lossy(&rest[..take]).into_owned());
        }
        rest = &rest[take..];
        n += 1;
    }
    n
}

/// The model name in an OIP path (`/v2/models/{name}/...`), or `_`.
pub fn model_name(path: &str) -> &str {
    let mut segs = path.split('/');
    while let Some(s) = segs.next() {
        if s == "models" {
            return segs.next().map(cap_name).unwrap_or("_");
        }
    }
    "_"
}

/// The non-finite number a string spells, as clients write NaN and
/// infinities where JSON has no way to: Python's `json.dumps` (`NaN`,
/// `Infinity`, `-Infinity`), C and numpy (`nan`, `inf`, `-inf`); any case.
pub fn non_finite_word(s: &str) -> Option<f64> {
    if s.len() > 9 {
        return None;
    }
    let (sign, word) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    if word.eq_ignore_ascii_case("nan") {
        Some(f64::NAN)
    } else if word.eq_ignore_ascii_case("inf") || word.eq_ignore_ascii_case("infinity") {
        Some(sign * f64::INFINITY)
    } else {
        None
    }
}

/// A copy of a body that did not parse, with what Python's `json.dumps`
/// writes for non-finite floats made valid JSON: the bare tokens `NaN`,
/// `Infinity` and `-Infinity`, and numbers beyond f64 (`1e999`), become
/// strings (`"NaN"`, `"Infinity"`, ...) that [`non_finite_word`] reads
/// back. Model servers that parse with Python accept such bodies, so the
/// detector must see the NaN rather than a body it cannot read. `None` when
/// there is nothing to rewrite. Strings are copied unread, escapes and all;
/// whatever else is wrong stays wrong and fails the second parse.
fn quote_non_finite(json: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(json.len() + 16);
    let (mut i, mut changed) = (0, false);
    while i < json.len() {
        let c = json[i];
        if c == b'"' {
            // Copy the string through its closing quote (a backslash escapes
            // the next byte, whatever it is).
            let start = i;
            i += 1;
            while i < json.len() && json[i] != b'"' {
                i += if json[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(json.len());
            out.extend_from_slice(&json[start..i]);
            continue;
        }
        if c == b'-' || c.is_ascii_alphanumeric() {
            // A bare token: a number, a literal, or what Python wrote for NaN.
            let is_token = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.');
            let end = i + json[i..].iter().position(|b| !is_token(b)).unwrap_or(json.len() - i);
            let token = &json[i..end];
            let word = std::str::from_utf8(token).ok();
            let quote = match word {
                Some(w @ ("NaN" | "Infinity" | "-Infinity")) => Some(w),
                Some(w) if c == b'-' || c.is_ascii_digit() => match w.parse::<f64>() {
                    Ok(x) if x == f64::INFINITY => Some("Infinity"),
                    Ok(x) if x == f64::NEG_INFINITY => Some("-Infinity"),
                    _ => None,
                },
                _ => None,
            };
            match quote {
                Some(w) => {
                    out.push(b'"');
                    out.extend_from_slice(w.as_bytes());
                    out.push(b'"');
                    changed = true;
                }
                None => out.extend_from_slice(token),
            }
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    changed.then_some(out)
}

/// Nesting that sonic-rs is trusted with (serde_json's own recursion limit).
pub(crate) const MAX_DEPTH: usize = 128;

/// Parses the JSON part of an OIP request; `None` if it is not one.
///
/// sonic-rs reads tensor data faster than serde_json: `meshward eval` on the
/// generator's traffic went from 62–65k to 72–74k requests/s on one core,
/// every score the same (`eval --scores` compared with `cmp` on seeds 1, 7
/// and 42; perf had serde_json's number reading at a fifth of the time).
/// Keeping each `data` array raw and reading plain numbers in a loop of our
/// own was tried and was slower: sonic-rs's skip over the raw array cost as
/// much as reading it.
///
/// But sonic-rs skips values (unknown keys, and any array or object where
/// another type was expected, before it reports the error) by recursion
/// without a depth limit: a 100k-deep value overflowed the stack (the class
/// of cloudwego/sonic-rs#232 and #239). So only a body with at most
/// [`MAX_DEPTH`] `[` and `{` bytes, which cannot nest deeper whatever its
/// strings hold, goes to sonic-rs (one `memchr` pass); any other (a batch of
/// nested rows, say) goes to serde_json, which skips without recursion and
/// refuses deeper data with an error. A string-aware depth scan instead was
/// tried and reviewed: sonic-rs skips the four bytes after `\u` unchecked,
/// so a 43 KB body could hide 20k levels from such a scan.
fn parse(json: &[u8]) -> Option<InferRequest<'_>> {
    let openers = memchr::memchr2_iter(b'[', b'{', json).take(MAX_DEPTH + 1).count();
    if openers <= MAX_DEPTH {
        sonic_rs::from_slice(json).ok()
    } else {
        serde_json::from_slice(json).ok()
    }
}

/// Extract OIP v2 fields from `body` into `sample`. Returns `None` when the
/// body is not an OIP request at all (no `inputs` key): the caller falls back
/// to generic JSON fields. A malformed OIP request yields an `invalid`
/// observation and `Some`; a `truncated` body (the first bytes of a longer
/// one) that does not parse yields a `truncated` observation, no invariant,
/// and its binary tensors are not called short for data that did not arrive.
pub fn extract(
    body: &[u8],
    header_len: Option<usize>,
    truncated: bool,
    model: &str,
    ranges: &dyn InputRanges,
    sample: &mut Sample,
    stats: &mut ValueStats,
) -> Option<Summary> {
    let (json, mut binary) = match header_len {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(_) => (body, &body[body.len()..]),
        None => (body, &body[body.len()..]),
    };
    let mut name = String::with_capacity(64);
    name.push_str(model);
    name.push_str(".request");
    // A cut body (its JSON part did not all arrive) is read up to its last
    // complete element: inputs after it did not arrive, and if the cut fell
    // inside an input (an object in an array in the body's object:
    // `{"inputs": [{`), the last input's data may be short or missing.
    let maybe_cut = truncated && header_len.is_none_or(|n| n > body.len());
    let closed = if maybe_cut { super::cut::close(json) } else { None };
    let json_cut = closed.is_some();
    let in_last_input = closed.as_ref().is_some_and(|c| c.open.starts_with(b"{[{"));
    let json = closed.as_ref().map_or(json, |c| c.json.as_slice());
    let quoted; // the body with NaN and infinities quoted, if it needed that
    let parsed = match parse(json) {
        Some(r) => Some(r),
        None if !super::request::contains_ignore_case(json, b"\"inputs\"") => return None,
        None => {
            quoted = quote_non_finite(json);
            quoted.as_deref().and_then(parse)
        }
    };
    let req = match parsed {
        Some(r) => r,
        None => {
            if truncated {
                // A category like any other (no invariant): learned where
                // large bodies are ordinary, unseen where they are not.
                sample.push_cat(FieldKind::Tensor, &name, b"truncated");
                return Some(Summary::default());
            }
            sample.push_cat(FieldKind::Tensor, &name, b"invalid");
            sample.invariant_last();
            return Some(Summary::default());
        }
    };
    let declared_binary = header_len.is_some();
    sample.push_cat(FieldKind::Tensor, &name, if declared_binary { b"binary" } else { b"json" });
    name.truncate(model.len());
    name.push_str(".inputs");
    if !json_cut {
        sample.push_num(FieldKind::Tensor, &name, req.inputs.len() as f64);
    }
    let mut scratch_name = String::new();
    if let Some(params) = &req.parameters {
        for (k, v) in params.iter().take(32) {
            name.clear();
            name.push_str("parameters.");
            name.push_str(cap_name(k));
            json_field(FieldKind::Json, &name, v, sample, stats, &mut scratch_name, 0);
        }
    }
    let mut summary = Summary { inputs: req.inputs.len(), ..Summary::default() };
    let mut nums = Vec::new();
    let mut strs = Vec::new();
    let last = req.inputs.len().saturating_sub(1);
    for (index, input) in req.inputs.into_iter().enumerate().take(32) {
        if sample.fields.len() >= MAX_FIELDS {
            break;
        }
        name.clear();
        name.push_str(model);
        name.push('/');
        name.push_str(cap_name(&input.name));
        let base = name.len();
        nums.clear();
        strs.clear();
        // Declared element count from the shape (negative or fractional dims count as mismatch).
        let mut declared: f64 = 1.0;
        let mut bad_shape = false;
        for d in &input.shape {
            if *d < 0.0 || d.fract() != 0.0 {
                bad_shape = true;
            }
            declared *= d.max(0.0);
        }
        let bin_size = input.parameters.as_ref().and_then(|p| p.get("binary_data_size")).and_then(Value::as_u64);
        let mut count = 0usize;
        let mut mismatch = bad_shape;
        // The body ended (at the inspect limit) within this input's data.
        let cut;
        match (input.data, bin_size) {
            (Some(f), _) => {
                nums = f.nums;
                strs = f.strs;
                count = f.count;
                cut = in_last_input && index == last && (count as f64) < declared;
                mismatch |= f.other > 0;
                if input.datatype == "BYTES" {
                    // Text that happens to read "nan" is text here. (JSON numbers
                    // are finite: every non-finite value came from such a word.)
                    if f.words > 0 {
                        nums.retain(|v| v.is_finite());
                    }
                } else if f.words > 0 {
                    // A NaN in a number tensor is a number (counted as
                    // non-finite), not a string element.
                    strs.retain(|s| non_finite_word(s).is_none());
                }
            }
            (None, Some(size)) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                let take = size.min(binary.len());
                let (mine, rest) = binary.split_at(take);
                binary = rest;
                cut = truncated && take < size;
                mismatch |= take < size && !cut;
                if input.datatype == "BYTES" {
                    count = decode_binary_bytes(mine, &mut strs);
                } else {
                    decode_binary(&input.datatype, mine, &mut nums);
                    count = nums.len();
                    mismatch |= !cut && dtype_size(&input.datatype).is_none_or(|s| mine.len() % s != 0);
                }
            }
            // Data the cut kept from arriving is not missing.
            (None, None) => {
                cut = in_last_input && index == last;
                mismatch |= !cut;
            }
        }
        mismatch |= declared != count as f64 && !cut;
        summary.elements += count;

        let put = |sample: &mut Sample, name: &mut String, stat: &str, v: f64| {
            name.truncate(base);
            name.push_str(stat);
            sample.push_num(FieldKind::Tensor, name, v);
        };
        name.push_str(".dtype");
        sample.push_cat(FieldKind::Tensor, &name, input.datatype.as_bytes());
        name.truncate(base);
        name.push_str(".shape");
        let shape_key = shape_key(&input.shape);
        sample.push_cat(FieldKind::Tensor, &name, shape_key.as_bytes());
        put(sample, &mut name, ".batch", input.shape.first().copied().unwrap_or(0.0));
        // Of a cut input, the count it declares (what arrived depends on
        // how its numbers were written).
        put(sample, &mut name, ".elements", if cut { declared } else { count as f64 });
        put(sample, &mut name, ".mismatch", f64::from(u8::from(mismatch)));
        if let Some(params) = &input.parameters {
            for (k, v) in params.iter().filter(|(k, _)| k.as_str() != "binary_data_size").take(16) {
                name.truncate(base);
                name.push_str(".parameters.");
                name.push_str(cap_name(k));
                let n = name.clone();
                json_field(FieldKind::Json, &n, v, sample, stats, &mut scratch_name, 0);
            }
        }
        if !nums.is_empty() {
            name.truncate(base);
            let learned = ranges.input(&name);
            let st = tensor_stats(&nums, learned.and_then(|p| p.range()));
            put(sample, &mut name, ".min", st.min);
            put(sample, &mut name, ".max", st.max);
            put(sample, &mut name, ".mean", st.mean);
            put(sample, &mut name, ".std", st.std);
            put(sample, &mut name, ".l2", st.l2);
            put(sample, &mut name, ".nonfinite", st.nonfinite as f64);
            sample.invariant_last();
            put(sample, &mut name, ".outside", st.outside);
            name.truncate(base);
            let dev = learned.and_then(|p| deviation_joint(&nums, &p.positions, &p.inv_corr));
            if let Some(d) = dev {
                put(sample, &mut name, ".deviation", d);
            }
            let row = crate::neighbours::row(&nums, &input.shape);
            let nearest = learned.zip(row).and_then(|(p, r)| p.neighbours.distance(r));
            let novelty = learned.zip(nearest).and_then(|(p, d)| p.neighbours.judge(d));
            name.truncate(base);
            if sample.tensors.len() < 8 {
                let lead = nums.iter().take(POSITIONS).map(|v| *v as f32).collect();
                let row = row.map_or(0, |r| r.len() as u8);
                let (min, max) = (st.min, st.max);
                sample.tensors.push(TensorObs { input: name.clone(), lead, min, max, deviation: dev, row, nearest });
            }
            if summary.sketch.is_none() {
                // For the client window: relative to this input's usual deviation,
                // so that inputs of different widths compare.
                let usual = learned.map(|p| &p.deviation).filter(|d| d.n >= crate::profile::MIN_OBS);
                summary.deviation = dev.zip(usual).map(|(d, u)| d / u.mean.max(1e-9));
                summary.novelty = novelty;
                summary.sketch = Some((super::fnv1a(model.as_bytes()), sketch(&nums)));
            }
        }
        if !strs.is_empty() {
            name.truncate(base);
            for s in &strs {
                stats.add(s.as_bytes());
                sample.push_field(FieldKind::TensorBytes, &name, s.as_bytes(), 0);
            }
        }
    }
    Some(summary)
}

/// Shape as a category: rank and the non-batch dimensions (`b,4,4`).
fn shape_key(shape: &[f64]) -> String {
    let mut s = String::with_capacity(16);
    for (i, d) in shape.iter().enumerate().take(8) {
        if i == 0 {
            s.push('b');
        } else {
            s.push(',');
            // Written in place: `format!` allocated a String per dimension.
            let _ = write!(s, "{d}");
        }
    }
    s
}

/// Statistics of a tensor's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorStats {
    /// Smallest finite value.
    pub min: f64,
    /// Largest finite value.
    pub max: f64,
    /// Mean of finite values.
    pub mean: f64,
    /// Standard deviation of finite values.
    pub std: f64,
    /// L2 norm of finite values.
    pub l2: f64,
    /// NaN and infinite values.
    pub nonfinite: usize,
    /// Share of finite values outside the learned range (0 without one).
    pub outside: f64,
}

/// Compute [`TensorStats`]; `range` is the learned element range.
pub fn tensor_stats(values: &[f64], range: Option<(f64, f64)>) -> TensorStats {
    let (mut min, mut max, mut sum, mut sq, mut n, mut nonfinite, mut outside) =
        (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0.0, 0usize, 0usize, 0usize);
    let (lo, hi) = range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
    let pad = if hi > lo && (hi - lo).is_finite() { (hi - lo) * 0.05 } else { 0.0 };
    for &v in values {
        if !v.is_finite() {
            nonfinite += 1;
            continue;
        }
        // `v` is finite here: the NaN handling of `f64::min`/`max` (which LLVM
        // lowers to `v < min ? v : min` plus a NaN select, kept in memory across
        // iterations) only slowed this loop. Same ties, same bits; the loop
        // took 70% of `oip::extract`'s own time before.
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum += v;
        sq += v * v;
        n += 1;
        outside += usize::from(v < lo - pad || v > hi + pad);
    }
    if n == 0 {
        return TensorStats { min: 0.0, max: 0.0, mean: 0.0, std: 0.0, l2: 0.0, nonfinite, outside: 0.0 };
    }
    let nf = n as f64;
    let mean = sum / nf;
    let var = (sq / nf - mean * mean).max(0.0);
    TensorStats { min, max, mean, std: var.sqrt(), l2: sq.sqrt(), nonfinite, outside: outside as f64 / nf }
}

/// Sketch of a tensor: means of [`SKETCH`] equal chunks (zero-padded).
pub fn sketch(values: &[f64]) -> [f32; SKETCH] {
    let mut out = [0f32; SKETCH];
    if values.is_empty() {
        return out;
    }
    let chunk = values.len().div_ceil(SKETCH);
    for (i, c) in values.chunks(chunk).enumerate().take(SKETCH) {
        let finite = c.iter().filter(|v| v.is_finite());
        let (s, n) = finite.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        out[i] = if n == 0 { 0.0 } else { (s / n as f64) as f32 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &Sample) -> Vec<(String, Option<f64>)> {
        s.fields.iter().map(|f| (s.name(f).to_string(), f.num)).collect()
    }

    fn get(s: &Sample, name: &str) -> Option<f64> {
        fields(s).into_iter().find(|(n, _)| n == name).and_then(|(_, v)| v)
    }

    /// The sample of a JSON inference body to model `m`, nothing learned.
    fn extracted(body: &[u8], truncated: bool) -> Sample {
        let mut s = crate::score::empty_sample();
        extract(body, None, truncated, "m", &NoRanges, &mut s, &mut ValueStats::default()).expect("oip");
        s
    }

    #[test]
    fn json_inputs_become_stats() {
        let body = br#"{"parameters": {"priority": 1}, "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}"#;
        let mut s = crate::score::empty_sample();
        let mut st = ValueStats::default();
        let sum = extract(body, None, false, "iris", &NoRanges, &mut s, &mut st).expect("oip");
        assert_eq!(sum.inputs, 1);
        assert_eq!(sum.elements, 4);
        assert_eq!(get(&s, "iris/x.min"), Some(1.0));
        assert_eq!(get(&s, "iris/x.max"), Some(4.0));
        assert_eq!(get(&s, "iris/x.mean"), Some(2.5));
        assert_eq!(get(&s, "iris/x.mismatch"), Some(0.0));
        assert_eq!(get(&s, "parameters.priority"), Some(1.0));
        assert!(sum.sketch.is_some());
    }

    #[test]
    fn shape_mismatch_and_bad_shapes_are_seen() {
        let body = br#"{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}]}"#;
        let s = extracted(body, false);
        assert_eq!(get(&s, "m/x.mismatch"), Some(1.0));
        let body = br#"{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}"#;
        let s = extracted(body, false);
        assert_eq!(get(&s, "m/x.mismatch"), Some(1.0));
    }

    #[test]
    fn binary_extension_is_decoded() {
        let json = br#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}, {"name": "t", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 7}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&f32::NAN.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"a<b");
        let mut s = crate::score::empty_sample();
        let sum =
            extract(&body, Some(json.len()), false, "m", &NoRanges, &mut s, &mut ValueStats::default()).expect("oip");
        assert_eq!(sum.elements, 3);
        assert_eq!(get(&s, "m/x.nonfinite"), Some(1.0));
        assert_eq!(get(&s, "m/x.max"), Some(1.5));
        assert!(s.fields.iter().any(|f| f.kind == FieldKind::TensorBytes && f.len == 3));
    }

    #[test]
    fn binary_data_cut_by_the_prefix_is_no_mismatch() {
        let json = br#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        // Cut inside the second element, too.
        body.extend_from_slice(&[0, 0]);
        for (truncated, mismatch) in [(true, 0.0), (false, 1.0)] {
            let mut s = crate::score::empty_sample();
            extract(&body, Some(json.len()), truncated, "m", &NoRanges, &mut s, &mut ValueStats::default())
                .expect("oip");
            assert_eq!(get(&s, "m/x.mismatch"), Some(mismatch), "truncated: {truncated}");
        }
    }

    #[test]
    fn a_cut_json_body_is_judged_on_the_elements_that_arrived() {
        let body = br#"{"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["hi"]}, {"name": "x", "shape": [1, 6], "datatype": "FP32", "data": [1.5, NaN, 3.0, 4.2"#;
        for (truncated, judged) in [(true, true), (false, false)] {
            let s = extracted(body, truncated);
            let request = s.fields.iter().find(|f| s.name(f) == "m.request").expect("request category");
            let as_json = request.hash == crate::features::fnv1a(b"json");
            assert_eq!(as_json, judged, "truncated: {truncated}");
            if judged {
                // The last input ends early without being short; the number of
                // inputs is not known (more may follow).
                assert_eq!(get(&s, "m/x.mismatch"), Some(0.0));
                assert_eq!(get(&s, "m/x.elements"), Some(6.0));
                assert_eq!(get(&s, "m/x.nonfinite"), Some(1.0));
                assert_eq!(get(&s, "m/x.max"), Some(3.0));
                assert_eq!(get(&s, "m/t.mismatch"), Some(0.0));
                assert!(fields(&s).iter().all(|(n, _)| n != "m.inputs"), "{:?}", fields(&s));
            }
        }
        // Data that ends inside the prefix is short, cut or not.
        let short = br#"{"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": [1.5, 3.0]}], "parameters": {"a": 1, "b"#;
        let s = extracted(short, true);
        assert_eq!(get(&s, "m/x.mismatch"), Some(1.0));
        // Cut before the data's first comma: the data did not arrive, it is
        // not missing.
        let early = br#"{"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": [1.5"#;
        let s = extracted(early, true);
        assert_eq!(get(&s, "m/x.mismatch"), Some(0.0));
        // A whole body padded past the limit: its last value is read.
        let mut padded =
            br#"{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.5, 3.0, NaN]}]}"#.to_vec();
        padded.resize(padded.len() + 4096, b' ');
        let s = extracted(&padded, true);
        assert_eq!(get(&s, "m/x.nonfinite"), Some(1.0));
        assert_eq!(get(&s, "m/x.mismatch"), Some(0.0));
    }

    #[test]
    fn invalid_oip_is_an_observation_and_non_oip_is_none() {
        let mut s = crate::score::empty_sample();
        let r =
            extract(br#"{"inputs": [{"name": 5}]}"#, None, false, "m", &NoRanges, &mut s, &mut ValueStats::default());
        assert!(r.is_some());
        assert_eq!(s.fields.len(), 1);
        let r = extract(br#"{"query": "x"}"#, None, false, "m", &NoRanges, &mut s, &mut ValueStats::default());
        assert!(r.is_none());
    }

    #[test]
    fn non_finite_numbers_as_clients_write_them_are_read() {
        // Python's json.dumps writes bare NaN and Infinity; numbers past f64
        // overflow; numpy users send "nan" strings. Each is a non-finite element.
        let cases = [("[NaN, 1.0]", 1.0), ("[Infinity, -Infinity, 2]", 2.0), ("[1e999, -1e400, 3]", 2.0)];
        let cases = cases.into_iter().chain([(r#"["nan", "-INF", 4]"#, 2.0), ("[[NaN], [5]]", 1.0)]);
        for (data, nonfinite) in cases {
            let n = data.matches(',').count() + 1;
            let body =
                format!(r#"{{"inputs": [{{"name": "x", "shape": [{n}], "datatype": "FP32", "data": {data}}}]}}"#);
            let s = extracted(body.as_bytes(), false);
            assert_eq!(get(&s, "m/x.nonfinite"), Some(nonfinite), "{data}: {:?}", fields(&s));
            assert_eq!(get(&s, "m/x.mismatch"), Some(0.0), "{data}");
            assert_eq!(get(&s, "m/x.elements"), Some(n as f64), "{data}");
            assert!(!s.fields.iter().any(|f| f.kind == FieldKind::TensorBytes), "{data}: a number is no text");
            assert!(
                s.fields.iter().any(|f| s.name(f) == "m.request" && f.hash == fnv(b"json")),
                "{data}: read as JSON"
            );
        }
        // In a BYTES input the same words are text; in strings they are left alone.
        let body = br#"{"parameters": {"note": "NaN"}, "inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["nan", "Infinity"]}, {"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}, {"name": "u", "shape": [2], "datatype": "BYTES", "data": [1, "nan"]}]}"#;
        let s = extracted(body, false);
        assert_eq!(get(&s, "m/x.nonfinite"), Some(1.0));
        assert_eq!(get(&s, "m/t.nonfinite"), None, "{:?}", fields(&s));
        assert_eq!(get(&s, "m/u.nonfinite"), Some(0.0), "{:?}", fields(&s));
        let texts: Vec<u32> = s.fields.iter().filter(|f| f.kind == FieldKind::TensorBytes).map(|f| f.len).collect();
        assert_eq!(texts, [3, 8, 3]);
    }

    fn fnv(b: &[u8]) -> u64 {
        crate::features::fnv1a(b)
    }

    #[test]
    fn quoting_touches_bare_non_finite_tokens_only() {
        assert_eq!(quote_non_finite(br#"{"a": "NaN, Infinity", "b": [1, 2e5, -0.5]}"#), None);
        let q = quote_non_finite(br#"{"a\"NaN": [NaN, 1e5, -1e999, true, "\\", Infinity]}"#);
        assert_eq!(
            String::from_utf8_lossy(&q.expect("rewritten")),
            r#"{"a\"NaN": ["NaN", 1e5, "-Infinity", true, "\\", "Infinity"]}"#
        );
        // A body broken otherwise stays broken.
        let q = quote_non_finite(br#"{"inputs": [NaN,, 1]}"#).expect("rewritten");
        assert!(parse(&q).is_none());
    }

    #[test]
    fn deep_nesting_anywhere_is_read_or_refused_not_a_crash() {
        // 100k levels: sonic-rs skips an unknown key, or an array where a
        // string, number or object was expected, by unbounded recursion, which
        // overflows the stack and aborts the process. Past the depth guard in
        // `parse`, serde_json reads or refuses them.
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        // A string of closers before the deep value.
        let fooled = format!(r#""\"{}""#, "]".repeat(200));
        // 20k levels hidden from a depth scan that takes `\u` for a two-byte
        // escape: sonic-rs reads `"\u"]]..."` as one string, such a scan as closers.
        let hidden_chunk = format!(r#"{}"\u"{}","\u"xyz","#, "[".repeat(100), "]".repeat(100));
        let hidden = format!("{}1", hidden_chunk.repeat(200));
        let bodies = [
            format!(r#"{{"outputs": {deep}, "inputs": []}}"#),
            format!(r#"{{"id": {fooled}, "outputs": {deep}, "inputs": []}}"#),
            format!(r#"{{"inputs": [{{"name": "x", "shape": [1], "datatype": "FP32", "extra": {deep}}}]}}"#),
            format!(r#"{{"inputs": [{{"name": "x", "shape": [1], "datatype": "FP32", "data": [{{"k": {deep}}}]}}]}}"#),
            format!(r#"{{"inputs": [{{"name": "x", "shape": {deep}, "datatype": "FP32"}}]}}"#),
            format!(r#"{{"inputs": [{{"name": {deep}, "shape": [1], "datatype": "FP32"}}]}}"#),
            format!(r#"{{"inputs": [{{"name": "x", "shape": [1], "datatype": {deep}}}]}}"#),
            format!(r#"{{"inputs": {{"a": {deep}}}}}"#),
            format!(r#"{{"inputs": [{deep}]}}"#),
            format!(r#"{{"parameters": {deep}, "inputs": []}}"#),
            format!(r#"{{"inputs": [], "parameters": {{"p": {deep}}}}}"#),
            format!(r#"{{"outputs": {hidden}, "inputs": []}}"#),
            format!(r#"{{"inputs": [{{"name": "x", "shape": {hidden}, "datatype": "FP32"}}]}}"#),
            deep,
        ];
        for body in bodies {
            // Within the 128-level guard a release build needs less than 256
            // KiB of stack for such bodies (measured; tokio's threads have 2
            // MiB). Unoptimised frames are several times larger.
            let stack = if cfg!(debug_assertions) { 16 << 20 } else { 512 << 10 };
            let parse = move || {
                let mut s = crate::score::empty_sample();
                let r = extract(body.as_bytes(), None, false, "m", &NoRanges, &mut s, &mut ValueStats::default());
                if body.contains("\"inputs\"") {
                    assert!(r.is_some());
                    assert_eq!(fields(&s)[0].0, "m.request");
                }
            };
            let t = std::thread::Builder::new().stack_size(stack).spawn(parse).expect("thread");
            t.join().expect("read or refused, not a crash");
        }
    }

    #[test]
    fn nested_rows_read_as_the_flat_tensor() {
        let rows: Vec<String> = (0..200).map(|i| format!("[{i}, 0.5]")).collect();
        let many = format!(
            r#"{{"inputs": [{{"name": "x", "shape": [200, 2], "datatype": "FP32", "data": [{}]}}]}}"#,
            rows.join(",")
        );
        let flat: Vec<String> = (0..200).map(|i| format!("{i}, 0.5")).collect();
        let few = format!(
            r#"{{"inputs": [{{"name": "x", "shape": [200, 2], "datatype": "FP32", "data": [{}]}}]}}"#,
            flat.join(",")
        );
        let read = |body: &str| {
            let s = extracted(body.as_bytes(), false);
            fields(&s)
        };
        let (a, b) = (read(&many), read(&few));
        assert_eq!(a, b);
        assert!(a.contains(&("m/x.max".to_string(), Some(199.0))), "{a:?}");
    }

    #[test]
    fn requests_parse_as_with_serde_json() {
        let body = br#"{"id": "1", "parameters": {"p": [1, {"q": 2}]}, "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "data": [1.5, -2, 1e-05, 0.30000001192092896, 2.5E+3]},
            {"name": "b\u00e9", "shape": [1], "datatype": "BYTES", "data": ["x\"y"], "parameters": {"content_type": "str"}},
            {"name": "c", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 8}},
            {"name": "d", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, true]]}],
            "outputs": [{"name": "o"}]}"#;
        let ours = parse(body).expect("parses");
        let theirs: InferRequest = serde_json::from_slice(body).expect("parses");
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        for bad in [
            &br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1,]}]}"#[..],
            br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [01]}]}"#,
            br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1e400]}]}"#,
            br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [NaN]}]}"#,
            b"{\"inputs\": [{\"name\": \"\xff\", \"shape\": [1], \"datatype\": \"FP32\"}]}",
            br#"{"inputs": []} x"#,
            b"{\"inputs\": 5}",
        ] {
            assert!(parse(bad).is_none(), "{}", String::from_utf8_lossy(bad));
            assert!(serde_json::from_slice::<InferRequest>(bad).is_err());
        }
    }

    #[test]
    fn outside_share_uses_learned_range() {
        let st = tensor_stats(&[0.0, 0.5, 1.0, 40.0], Some((0.0, 1.0)));
        assert_eq!(st.outside, 0.25);
        assert_eq!(st.nonfinite, 0);
        assert!((f16_to_f64(0x3c00) - 1.0).abs() < 1e-12);
    }
}
