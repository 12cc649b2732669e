//! Feature extraction: what a request looks like, as numbers and as field
//! observations, before any model is consulted.
//!
//! One module per family: [`request`] (request line, headers, body bytes),
//! [`params`] (query, form and JSON parameters), [`oip`] (Open Inference
//! Protocol v2 payloads) and [`client`] (per-client sliding windows).
//! Everything here works on borrowed bytes; the only allocations are the
//! [`Sample`] the caller may hand back to learning.

pub mod client;
pub mod cut;
pub mod encoding;
pub mod oip;
pub mod params;
pub mod request;
pub mod text;

use serde::{Deserialize, Serialize};

/// Number of request-level numeric features (the vector the k-means model sees).
pub const DIM: usize = 16;

/// Names of the numeric features, in vector order (used in explanations).
pub const FEATURE_NAMES: [&str; DIM] = [
    "URI length",
    "query length",
    "query parameter count",
    "body size",
    "body byte entropy",
    "non-printable body bytes",
    "percent-encoding density",
    "special characters in parameter values",
    "header count",
    "header bytes",
    "path depth",
    "digits in path",
    "body field count",
    "tensor elements",
    "upper-case share in parameter values",
    "non-ASCII share in parameter values",
];

/// Character classes of a field value, as bits of a `u64`.
///
/// Bits 0..32 are the 32 ASCII punctuation characters in [`PUNCT`] order;
/// then the classes below. A value's class set is the union over its bytes
/// (after percent-decoding for URL and form parameters).
pub mod class {
    /// `A-Z`.
    pub const UPPER: u32 = 32;
    /// `a-z`.
    pub const LOWER: u32 = 33;
    /// `0-9`.
    pub const DIGIT: u32 = 34;
    /// The space character.
    pub const SPACE: u32 = 35;
    /// Control characters (tab, CR, LF, DEL, ...), except NUL.
    pub const CONTROL: u32 = 36;
    /// Bytes >= 0x80 (non-ASCII text or binary).
    pub const NON_ASCII: u32 = 37;
    /// The raw value held `%XX` escapes.
    pub const PERCENT_ENCODED: u32 = 38;
    /// The raw value held an escaped `%` (`%25`): double encoding.
    pub const DOUBLE_ENCODED: u32 = 39;
    /// A NUL byte.
    pub const NUL: u32 = 40;
    /// Number of classes (bits in use).
    pub const COUNT: usize = 41;
}

/// The 32 ASCII punctuation characters, in class-bit order.
pub const PUNCT: &[u8; 32] = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Class bit for one byte.
#[inline]
pub const fn byte_class(b: u8) -> u32 {
    match b {
        b'A'..=b'Z' => class::UPPER,
        b'a'..=b'z' => class::LOWER,
        b'0'..=b'9' => class::DIGIT,
        b' ' => class::SPACE,
        0 => class::NUL,
        1..=31 | 127 => class::CONTROL,
        128..=255 => class::NON_ASCII,
        _ => PUNCT_INDEX[b as usize] as u32,
    }
}

/// Index of each ASCII punctuation byte in [`PUNCT`] (0 for other bytes; only
/// read for punctuation).
const PUNCT_INDEX: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < PUNCT.len() {
        t[PUNCT[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Human name of a class bit, for explanations.
pub fn class_name(bit: u32) -> String {
    match bit {
        class::UPPER => "upper-case letters".into(),
        class::LOWER => "lower-case letters".into(),
        class::DIGIT => "digits".into(),
        class::SPACE => "spaces".into(),
        class::CONTROL => "control characters".into(),
        class::NON_ASCII => "non-ASCII bytes".into(),
        class::PERCENT_ENCODED => "percent-encoding".into(),
        class::DOUBLE_ENCODED => "double percent-encoding".into(),
        class::NUL => "NUL bytes".into(),
        b if (b as usize) < PUNCT.len() => format!("'{}'", PUNCT[b as usize] as char),
        _ => "unknown class".into(),
    }
}

/// Whether a class bit is a "special" character for web attacks
/// (`'"<>;()|&$%` and friends), counted in the request vector.
#[inline]
pub fn is_special(b: u8) -> bool {
    matches!(b, b'\'' | b'"' | b'<' | b'>' | b';' | b'(' | b')' | b'|' | b'&' | b'$' | b'`' | b'\\' | b'{' | b'}' | 0)
}

/// FNV-1a, 64 bit. Value hashes are stored in model snapshots, so they must
/// not change between Rust releases (std's `DefaultHasher` may); the
/// dependency list of this crate is fixed by the project, and this is six
/// lines.
#[inline]
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Fingerprint of a byte string (foldhash with a fixed seed). Used only to
/// count identical requests in a client's window, never stored, so the
/// function may change. Byte-wise FNV-1a cost about 1 µs per KiB of body;
/// a serial eight-byte multiply-rotate still cost 1.1% of `meshward eval`,
/// foldhash (16 bytes and independent lanes per step) 0.9% less.
#[inline]
pub fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0x9e37_79b9_7f4a_7c15).hash_one(bytes)
}

/// Largest body fingerprinted without its whitespace (see [`fingerprint_words`]).
pub const SPACING_BLIND_UP_TO: usize = 512;

/// [`fingerprint`] of the bytes other than ASCII whitespace: bodies that
/// differ only in spacing (JSON formatting, a prompt resent with one more
/// space: the cheapest near-duplicate for membership inference) fingerprint
/// alike.
///
/// Only for bodies up to [`SPACING_BLIND_UP_TO`] bytes (prompts, small JSON
/// calls; larger ones get [`fingerprint`]): dropping the whitespace of a 1 KiB tensor body cost 1.3 µs of the
/// 6.1 µs its scoring takes (criterion), and a large body resent with other
/// spacing is a client changing libraries, not the near-duplicate attack.
pub fn fingerprint_words(bytes: &[u8]) -> u64 {
    if bytes.len() > SPACING_BLIND_UP_TO || !bytes.iter().any(u8::is_ascii_whitespace) {
        return fingerprint(bytes);
    }
    let mut packed = [0u8; SPACING_BLIND_UP_TO];
    let mut n = 0;
    for &b in bytes.iter().filter(|b| !b.is_ascii_whitespace()) {
        packed[n] = b;
        n += 1;
    }
    fingerprint(&packed[..n])
}

/// Where a field came from; profiles are kept per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldKind {
    /// A URL query parameter.
    Query,
    /// An `application/x-www-form-urlencoded` body parameter.
    Form,
    /// A top-level key of a JSON body, or an OIP `parameters` key.
    Json,
    /// A request header (profiled per service, not per endpoint).
    Header,
    /// A statistic of one OIP v2 input tensor (`model/input.stat`).
    Tensor,
    /// One element of an OIP v2 BYTES input (`model/input`).
    TensorBytes,
    /// A per-client behaviour signal (profiled across the client population).
    Client,
}

impl FieldKind {
    /// Number of kinds.
    pub const COUNT: usize = 7;

    /// Dense index of the kind.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Word used in explanations.
    pub fn noun(self) -> &'static str {
        match self {
            FieldKind::Query => "query parameter",
            FieldKind::Form => "form parameter",
            FieldKind::Json => "JSON field",
            FieldKind::Header => "header",
            FieldKind::Tensor => "input",
            FieldKind::TensorBytes => "BYTES input",
            FieldKind::Client => "client signal",
        }
    }
}

/// One observed field: what profiles need to score and to learn it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldObs {
    /// Where it came from.
    pub kind: FieldKind,
    /// Byte range of its name in [`Sample::names`].
    pub name: (u32, u32),
    /// Character classes of the (decoded) value.
    pub classes: u64,
    /// Length of the (decoded) value in bytes.
    pub len: u32,
    /// The value as a finite number, when it is one.
    pub num: Option<f64>,
    /// FNV-1a hash of the (decoded) value, for low-cardinality fields.
    pub hash: u64,
    /// Whether a change of this field breaks what every served request has
    /// (NaN/Inf in a model input, an inference body that does not parse):
    /// see [`crate::profile::INVARIANT_CAP`].
    pub invariant: bool,
}

/// What one request looked like: the numeric vector, the endpoint, every
/// field observation and the client's signals. Produced by
/// [`crate::score::score`] and handed back to [`crate::learner::Learner::learn`]
/// when the request was judged normal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Arrival time, seconds.
    pub ts: f64,
    /// Request method (upper-case as sent).
    pub method: String,
    /// Normalised path segments (numbers, UUIDs and long hex collapsed),
    /// joined by `/`; the learner builds templates from these.
    pub path: String,
    /// Request-level numeric features (raw, not standardised).
    pub vector: [f64; DIM],
    /// Field names, concatenated; [`FieldObs::name`] indexes into it.
    pub names: String,
    /// Field observations.
    pub fields: Vec<FieldObs>,
    /// Leading elements (at most [`oip::POSITIONS`]) of each numeric input,
    /// by `model/input`, for the learned per-position statistics.
    pub tensors: Vec<oip::TensorObs>,
    /// The request's own anomaly score (surprise bits, without the client's
    /// reputation), for calibration.
    pub raw: f64,
    /// Whether the verdict flagged it (band anomalous); such samples are refused.
    pub flagged: bool,
    /// Whether the model was still warming up when it was scored.
    pub warming_up: bool,
    /// Whether the verdict was suspicious or above, or the client's recent
    /// requests were: the client-behaviour baselines (rates, bursts, errors,
    /// shares of far queries, ...) do not learn from it, so a flood, probe or
    /// extraction that ramps up slowly or hides between odd requests cannot
    /// raise them.
    pub suspicious: bool,
    /// Whether its endpoint was unknown to the scoring model. A suspicious
    /// sample does not create an endpoint: a scanner's probe that stayed
    /// below the threshold would otherwise make the next scanner's hit on the
    /// same path score nothing.
    pub new_endpoint: bool,
    /// Samples the scoring model had learned (calibration skips young models).
    pub model_samples: u64,
}

impl Sample {
    /// The name of one field observation.
    pub fn name(&self, f: &FieldObs) -> &str {
        self.names.get(f.name.0 as usize..f.name.1 as usize).unwrap_or("")
    }

    /// Appends `name` to the name arena and returns its range.
    fn intern(&mut self, name: &str) -> (u32, u32) {
        let start = self.names.len() as u32;
        self.names.push_str(name);
        (start, self.names.len() as u32)
    }

    /// Add a field observation for a value given as bytes.
    pub(crate) fn push_field(&mut self, kind: FieldKind, name: &str, value: &[u8], extra_classes: u64) {
        if let Some(target) = url_target(value) {
            // A URL's scheme and kind of host, as one category of `name#url`:
            // a callback or image field that always held https URLs to names
            // now pointing at an address literal, localhost or file:// (SSRF)
            // has the same characters as before, but not the same target.
            let mut field = String::with_capacity(name.len() + 4);
            field.push_str(name);
            field.push_str("#url");
            self.push_cat(kind, &field, target.as_bytes());
        }
        let name = self.intern(name);
        self.fields.push(FieldObs {
            kind,
            name,
            classes: classes_of(value) | extra_classes,
            len: value.len().min(u32::MAX as usize) as u32,
            num: parse_num(value),
            hash: fnv1a(value),
            invariant: false,
        });
    }

    /// Add a numeric field observation (tensor statistics, client signals).
    pub(crate) fn push_num(&mut self, kind: FieldKind, name: &str, v: f64) {
        let name = self.intern(name);
        let v = if v.is_finite() { v } else { 0.0 };
        self.fields.push(FieldObs {
            kind,
            name,
            classes: 1 << class::DIGIT,
            len: 0,
            num: Some(v),
            hash: v.to_bits(),
            invariant: false,
        });
    }

    /// Add a categorical field observation (a datatype, a shape).
    pub(crate) fn push_cat(&mut self, kind: FieldKind, name: &str, value: &[u8]) {
        let name = self.intern(name);
        self.fields.push(FieldObs {
            kind,
            name,
            classes: 0,
            len: value.len().min(u32::MAX as usize) as u32,
            num: None,
            hash: fnv1a(value),
            invariant: false,
        });
    }

    /// Mark the field just pushed as an invariant (see [`FieldObs::invariant`]).
    pub(crate) fn invariant_last(&mut self) {
        if let Some(f) = self.fields.last_mut() {
            f.invariant = true;
        }
    }
}

/// The class bit of every byte as a mask, so that [`classes_of`] is one load
/// and one OR per byte instead of the branchy [`byte_class`] match per byte
/// of every header and parameter value (a bearer token is about 800 bytes).
const CLASS_MASK: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = 1u64 << byte_class(b as u8);
        b += 1;
    }
    t
};

/// Class set of a byte string.
#[inline]
pub fn classes_of(value: &[u8]) -> u64 {
    value.iter().fold(0u64, |set, b| set | CLASS_MASK[usize::from(*b)])
}

/// A value as a finite number (at most 32 bytes; no `NaN`/`inf` words).
#[inline]
pub fn parse_num(value: &[u8]) -> Option<f64> {
    if value.is_empty() || value.len() > 32 {
        return None;
    }
    let first = value[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return None;
    }
    let s = std::str::from_utf8(value).ok()?;
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Percent-decode `raw` into `out` (cleared first); `+` becomes a space when
/// `plus_is_space`. Returns the extra classes the raw form carried
/// ([`class::PERCENT_ENCODED`], [`class::DOUBLE_ENCODED`]).
pub fn percent_decode(raw: &[u8], plus_is_space: bool, out: &mut Vec<u8>) -> u64 {
    out.clear();
    // Decoding never lengthens: one allocation at most, not one per doubling.
    out.reserve(raw.len());
    let mut extra = 0u64;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                let v = h * 16 + l;
                extra |= 1 << class::PERCENT_ENCODED;
                // `%25` is double encoding only when it encodes an escape
                // (`%2527`); a literal percent sign (a password, "50%") is not.
                if v == b'%' && raw.len() > i + 4 && hex(raw[i + 3]).is_some() && hex(raw[i + 4]).is_some() {
                    extra |= 1 << class::DOUBLE_ENCODED;
                }
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if plus_is_space && b == b'+' { b' ' } else { b });
        i += 1;
    }
    extra
}

/// For a value of the form `scheme://authority...`: the scheme (lower-case)
/// and the kind of host, `scheme|kind`, kind one of `ip` (an address
/// literal, in any of the dotted, decimal, hex or bracketed IPv6 forms),
/// `local` (localhost), `none` (empty, as `file:///etc/passwd`) or `name`.
/// The host is what follows the last `@` of the authority, without its port.
pub fn url_target(value: &[u8]) -> Option<String> {
    let sep = value.windows(3).take(17).position(|w| w == b"://")?;
    let scheme = &value[..sep];
    let first = *scheme.first()?;
    if !first.is_ascii_alphabetic() || !scheme.iter().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b)) {
        return None;
    }
    let rest = &value[sep + 3..];
    let authority = &rest[..rest.iter().position(|b| b"/?#".contains(b)).unwrap_or(rest.len())];
    let host = match authority.iter().rposition(|b| *b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let host = if host.first() == Some(&b'[') {
        &host[..host.iter().position(|b| *b == b']').map_or(host.len(), |i| i + 1)]
    } else {
        &host[..host.iter().position(|b| *b == b':').unwrap_or(host.len())]
    };
    let host = host.to_ascii_lowercase();
    let kind = if host.is_empty() {
        "none"
    } else if host == b"localhost" || host.ends_with(b".localhost") {
        "local"
    } else if host.first() == Some(&b'[')
        || host.iter().all(|b| b.is_ascii_digit() || *b == b'.')
        || (host.starts_with(b"0x") && host[2..].iter().all(|b| b.is_ascii_hexdigit() || *b == b'.'))
    {
        "ip"
    } else {
        "name"
    };
    let mut out = String::from_utf8_lossy(scheme).to_ascii_lowercase();
    out.push('|');
    out.push_str(kind);
    Some(out)
}

#[inline]
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_attack_characters() {
        let c = classes_of(b"1' OR '1'='1");
        assert!(c & (1 << byte_class(b'\'')) != 0);
        assert!(c & (1 << class::SPACE) != 0);
        assert!(c & (1 << class::UPPER) != 0);
        assert_eq!(class_name(byte_class(b'<')), "'<'");
    }

    #[test]
    fn percent_decoding_marks_encodings() {
        let mut out = Vec::new();
        let extra = percent_decode(b"a%27b+c%2527%zz%4", true, &mut out);
        assert_eq!(out, b"a'b c%27%zz%4");
        assert!(extra & (1 << class::PERCENT_ENCODED) != 0);
        assert!(extra & (1 << class::DOUBLE_ENCODED) != 0);
        // A percent sign sent as %25 is not an escape of an escape.
        for literal in [&b"50%25 off"[..], b"pa%25ss", b"100%25", b"%25zz"] {
            let extra = percent_decode(literal, true, &mut out);
            assert!(extra & (1 << class::DOUBLE_ENCODED) == 0, "{}", String::from_utf8_lossy(literal));
        }
    }

    #[test]
    fn url_targets_name_scheme_and_host_kind() {
        let t = |v: &str| url_target(v.as_bytes());
        assert_eq!(t("https://cdn.example.com/img/1.png").as_deref(), Some("https|name"));
        assert_eq!(t("http://169.254.169.254/latest/meta-data/").as_deref(), Some("http|ip"));
        assert_eq!(t("http://0x7f000001/").as_deref(), Some("http|ip"));
        assert_eq!(t("http://2130706433:80/").as_deref(), Some("http|ip"));
        assert_eq!(t("http://[::1]:8080/admin").as_deref(), Some("http|ip"));
        assert_eq!(t("http://cdn.example.com@127.0.0.1/").as_deref(), Some("http|ip"));
        assert_eq!(t("gopher://localhost:25/_HELO").as_deref(), Some("gopher|local"));
        assert_eq!(t("file:///etc/passwd").as_deref(), Some("file|none"));
        assert_eq!(t("HTTPS://Example.COM").as_deref(), Some("https|name"));
        assert_eq!(t("a://").as_deref(), Some("a|none"));
        for plain in ["hello", "1http://x", "see https://x.com", "://x", ""] {
            assert_eq!(t(plain), None, "{plain}");
        }
    }

    #[test]
    fn word_fingerprints_ignore_spacing_only() {
        let f = fingerprint_words;
        assert_eq!(
            f(b"{\"text\": \"is this in your training set?\"}"),
            f(b"{\"text\":\"is  this in your\ntraining set?\" }")
        );
        assert_ne!(f(b"is this in your training set?"), f(b"is this in my training set?"));
    }

    #[test]
    fn numbers_are_finite_only() {
        assert_eq!(parse_num(b"12.5"), Some(12.5));
        assert_eq!(parse_num(b"-3e2"), Some(-300.0));
        assert_eq!(parse_num(b"NaN"), None);
        assert_eq!(parse_num(b"1e999"), None);
        assert_eq!(parse_num(b"abc"), None);
    }
}
