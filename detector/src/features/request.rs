//! The request family: request line, path normalisation, headers, body bytes,
//! and the driver that fills a [`Sample`] from a [`Request`].

use super::text::TextSet;
use super::{classes_of, is_special, oip, params, percent_decode, FieldKind, Sample, DIM};

/// One request as the detector sees it: borrowed, with the caller's clock.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Request target in origin form (`/path?query`).
    pub uri: &'a str,
    /// Header fields in arrival order; names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// Request body (possibly truncated by the caller).
    pub body: &'a [u8],
    /// Who called: peer identity, JWT subject or IP address.
    pub client: &'a str,
    /// Arrival time in seconds (any epoch, monotone per client is enough).
    pub ts: f64,
    /// Whether `body` is only the first part of a longer body (the sidecar
    /// inspects a bounded prefix): what did not arrive is not judged, so a
    /// cut inference body that does not parse is no broken invariant.
    pub truncated: bool,
}

/// Maximum number of fields taken from one request (query + form + JSON +
/// headers + tensors); the rest are counted in the vector only.
pub const MAX_FIELDS: usize = 96;
/// Field names longer than this are cut (on a char boundary).
pub const MAX_NAME: usize = 64;
/// Body bytes looked at for entropy and non-printable share.
const BODY_STATS_BYTES: usize = 4096;

/// What extraction found besides the sample: inputs for the client window.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// A sketch of the first numeric tensor (for perturbation chains and PRADA),
    /// with the hash of the model name it was sent to.
    pub sketch: Option<(u64, [f32; oip::SKETCH])>,
    /// Per-position deviation of that tensor from learned inputs.
    pub deviation: Option<f64>,
    /// How novel that tensor's first row is.
    pub novelty: Option<crate::neighbours::Novelty>,
    /// Fingerprint of method, URI and body, whitespace aside for small bodies
    /// (duplicate detection); 0 for a request without a body.
    pub fingerprint: u64,
    /// Hash of the credential the request carried (`authorization`, `cookie`,
    /// `x-api-key` or `api-key` header), if any.
    pub credential: Option<u32>,
    /// Identity of the endpoint (method and template), set by the scorer.
    pub endpoint: u32,
    /// The request's text (BYTES elements, prompts, long parameter values),
    /// if it had any.
    pub text: Option<TextSet>,
}

/// Split an origin-form URI into path and query (a fragment is dropped).
pub fn split_uri(uri: &str) -> (&str, &str) {
    let uri = uri.split('#').next().unwrap_or("");
    match uri.split_once('?') {
        Some((p, q)) => (p, q),
        None => (uri, ""),
    }
}

/// Normalise a path: numbers become `{n}`, UUIDs `{uuid}`, long hex or long
/// mixed letter-digit tokens `{id}`; empty segments are dropped. Written
/// into `out` as `/seg/seg`.
pub fn normalise_path(path: &str, out: &mut String) {
    out.clear();
    // Usually no longer than the path: one allocation, not one per doubling.
    out.reserve(path.len() + 1);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment_class(seg).unwrap_or(seg));
    }
    if out.is_empty() {
        out.push('/');
    }
}

/// The placeholder for a volatile path segment, or `None` for a literal.
pub fn segment_class(seg: &str) -> Option<&'static str> {
    let b = seg.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        return Some("{n}");
    }
    if b.len() == 36
        && b.iter()
            .enumerate()
            .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
    {
        return Some("{uuid}");
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if b.len() >= 16 && digits > 0 && b.iter().all(u8::is_ascii_hexdigit) {
        return Some("{id}");
    }
    if b.len() >= 24 && digits >= 2 && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_')) {
        return Some("{id}");
    }
    None
}

/// Cut a name to [`MAX_NAME`] bytes on a char boundary.
pub fn cap_name(name: &str) -> &str {
    if name.len() <= MAX_NAME {
        return name;
    }
    let mut end = MAX_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Shannon entropy (bits per byte) and non-printable share of a byte string.
pub fn byte_stats(bytes: &[u8]) -> (f64, f64) {
    let bytes = &bytes[..bytes.len().min(BODY_STATS_BYTES)];
    if bytes.is_empty() {
        return (0.0, 0.0);
    }
    // Four partial histograms: consecutive equal bytes (runs of spaces,
    // digits) no longer wait on each other's counter update. This function
    // took a fifth less time in `meshward eval` (perf). Integer counts: the
    // merged histogram is the same.
    let mut part = [[0u32; 256]; 4];
    let mut quads = bytes.chunks_exact(4);
    for q in &mut quads {
        part[0][usize::from(q[0])] += 1;
        part[1][usize::from(q[1])] += 1;
        part[2][usize::from(q[2])] += 1;
        part[3][usize::from(q[3])] += 1;
    }
    for &b in quads.remainder() {
        part[0][usize::from(b)] += 1;
    }
    // One pass merges the parts, counts non-printable bytes (a mask, no
    // filter) and lists the non-zero counts without a branch per byte value;
    // the entropy sum then runs over those in the same (byte) order, so it
    // is the same to the bit. byte_stats took 15% less time in `meshward eval`.
    let mut nonzero = [0u32; 256];
    let mut distinct = 0;
    let mut nonprint = 0u32;
    for (i, &np) in NON_PRINTABLE.iter().enumerate() {
        let c = part[0][i] + part[1][i] + part[2][i] + part[3][i];
        nonprint += c & np;
        nonzero[distinct] = c;
        distinct += usize::from(c > 0);
    }
    let n = bytes.len() as f64;
    let mut h = 0.0;
    for &c in &nonzero[..distinct] {
        let p = f64::from(c) / n;
        h -= p * p.log2();
    }
    (h, f64::from(nonprint) / n)
}

/// All ones for the bytes [`byte_stats`] counts as non-printable (not ASCII
/// graphic, space, tab, CR or LF), zero for the others.
const NON_PRINTABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if !(c.is_ascii_graphic() || c == b' ' || c == b'\n' || c == b'\r' || c == b'\t') {
            t[b] = u32::MAX;
        }
        b += 1;
    }
    t
};

/// Per-request accumulator of value statistics over all parameter values.
#[derive(Debug, Default, Clone, Copy)]
pub struct ValueStats {
    /// Value bytes seen.
    pub bytes: u32,
    /// Of which special characters (see [`is_special`]).
    pub special: u32,
    /// Of which upper-case letters.
    pub upper: u32,
    /// Of which non-ASCII bytes.
    pub non_ascii: u32,
    /// The values that read as text (see [`TextSet`]).
    pub text: TextSet,
}

impl ValueStats {
    /// Count one value.
    pub fn add(&mut self, v: &[u8]) {
        self.text.add(v);
        self.bytes = self.bytes.saturating_add(v.len() as u32);
        for &b in v {
            self.special += u32::from(is_special(b));
            self.upper += u32::from(b.is_ascii_uppercase());
            self.non_ascii += u32::from(b >= 0x80);
        }
    }

    fn share(&self, x: u32) -> f64 {
        if self.bytes == 0 {
            0.0
        } else {
            f64::from(x) / f64::from(self.bytes)
        }
    }
}

/// Header value lookup, case-insensitive.
pub fn header<'a>(headers: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
}

/// Fill `sample` from `req`. `ranges` gives learned element ranges of OIP
/// inputs (from the model) for the "share outside the learned range" stat.
pub fn extract(req: &Request<'_>, ranges: &dyn oip::InputRanges, sample: &mut Sample, scratch: &mut Vec<u8>) -> Extra {
    sample.ts = req.ts;
    sample.method.clear();
    sample.method.push_str(cap_name(req.method));
    let (path, query) = split_uri(req.uri);
    normalise_path(path, &mut sample.path);
    let mut v = [0.0f64; DIM];
    let mut stats = ValueStats::default();

    // Path characters (decoded) as a service-level field: traversal, encodings.
    let extra = percent_decode(path.as_bytes(), false, scratch);
    sample.push_field(FieldKind::Header, ":path", scratch, extra);
    // The file extension of the last segment, as a category: a scanner looks
    // for backups and configuration (.bak, .old, .inc, .git) that a site's
    // own new pages (.jsp like the others) do not have.
    let last = scratch.rsplit(|b| *b == b'/').next().unwrap_or_default();
    let ext = match last.iter().rposition(|b| *b == b'.') {
        Some(dot) if last.len() - dot <= 9 => &last[dot + 1..],
        Some(_) => b"(long)".as_slice(),
        None => b"".as_slice(),
    };
    let mut lower = [0u8; 8];
    let lower = &mut lower[..ext.len()];
    lower.copy_from_slice(ext);
    lower.make_ascii_lowercase();
    sample.push_cat(FieldKind::Header, ":path#ext", lower);
    let digits = path.bytes().filter(u8::is_ascii_digit).count();

    let nq = params::urlencoded(query.as_bytes(), FieldKind::Query, sample, &mut stats, scratch);

    let mut ct = "";
    let mut encoding = None;
    let mut header_bytes = 0usize;
    let mut oip_header_len = None;
    let mut declared_len = None;
    let mut credential = None;
    for (i, (name, value)) in req.headers.iter().enumerate() {
        header_bytes += name.len() + value.len() + 4;
        if i >= 64 {
            continue;
        }
        let start = sample.names.len();
        sample.names.push_str(cap_name(name));
        sample.names[start..].make_ascii_lowercase();
        let lname = &sample.names[start..];
        let vb = value.as_bytes();
        // Byte-wise FNV-1a is slow on long values (bearer tokens): hashed once
        // for both the field and the credential.
        let hash = super::fnv1a(vb);
        if lname == "content-type" {
            ct = value;
        } else if lname == "content-encoding" {
            encoding = Some(*value);
        } else if lname == "content-length" {
            declared_len = value.trim().parse::<usize>().ok();
        } else if lname == "inference-header-content-length" {
            oip_header_len = value.trim().parse::<usize>().ok();
        } else if matches!(lname, "authorization" | "cookie" | "x-api-key" | "api-key") && credential.is_none() {
            credential = Some(hash as u32);
        }
        sample.fields.push(super::FieldObs {
            kind: FieldKind::Header,
            name: (start as u32, sample.names.len() as u32),
            classes: classes_of(vb),
            len: vb.len() as u32,
            num: super::parse_num(vb),
            hash,
            invariant: false,
        });
    }

    let mut body_fields = 0usize;
    let mut elements = 0f64;
    let mut sketch = None;
    let mut deviation = None;
    let mut novelty = None;
    // A compressed body is scored as the model server reads it (see `encoding`).
    let mut inflated = Vec::new();
    let inflate = encoding.and_then(|e| super::encoding::inflate(e, req.body, req.truncated, &mut inflated));
    let inflated_body = inflate.is_some();
    let (body, truncated) = match inflate {
        Some(cut) => (&inflated[..], cut),
        None => (req.body, req.truncated),
    };
    if !body.is_empty() {
        let ct_l = ct.as_bytes();
        let is_form = contains_ignore_case(ct_l, b"x-www-form-urlencoded");
        let looks_json = contains_ignore_case(ct_l, b"json")
            || oip_header_len.is_some()
            || body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'{');
        if is_form {
            body_fields = params::urlencoded(body, FieldKind::Form, sample, &mut stats, scratch);
        } else if looks_json {
            let is_infer = path.ends_with("/infer") || oip_header_len.is_some();
            let done = if is_infer {
                match oip::extract(body, oip_header_len, truncated, oip::model_name(path), ranges, sample, &mut stats) {
                    Some(s) => {
                        body_fields = s.inputs;
                        elements = s.elements as f64;
                        sketch = s.sketch;
                        deviation = s.deviation;
                        novelty = s.novelty;
                        true
                    }
                    None => false,
                }
            } else {
                false
            };
            if !done {
                body_fields = params::json_top_level(body, truncated, sample, &mut stats);
            }
        }
    }
    let (entropy, nonprint) = byte_stats(body);

    v[0] = ln1p(req.uri.len());
    v[1] = ln1p(query.len());
    v[2] = nq as f64;
    // A cut body is as long as it says it is (a compressed one's length is
    // that of its compressed bytes: the inflated prefix is measured).
    let declared_len = declared_len.filter(|_| truncated && !inflated_body).unwrap_or(0);
    v[3] = ln1p(body.len().max(declared_len));
    v[4] = entropy;
    v[5] = nonprint;
    v[6] = if req.uri.is_empty() {
        0.0
    } else {
        req.uri.bytes().filter(|b| *b == b'%').count() as f64 / req.uri.len() as f64
    };
    v[7] = stats.share(stats.special);
    v[8] = req.headers.len() as f64;
    v[9] = ln1p(header_bytes);
    v[10] = path.split('/').filter(|s| !s.is_empty()).count() as f64;
    v[11] = if path.is_empty() { 0.0 } else { digits as f64 / path.len() as f64 };
    v[12] = body_fields as f64;
    v[13] = elements.ln_1p();
    v[14] = stats.share(stats.upper);
    v[15] = stats.share(stats.non_ascii);
    sample.vector = v;

    // Only requests with a body are fingerprinted (0: none): a poll or health
    // check is the same GET every time by nature, and counting those would
    // set the learned range of identical requests at "all of them".
    let fp = if body.is_empty() {
        0
    } else {
        super::fingerprint(req.method.as_bytes())
            ^ super::fingerprint(req.uri.as_bytes()).rotate_left(17)
            ^ super::fingerprint_words(body).rotate_left(31)
    };
    Extra {
        sketch,
        deviation,
        novelty,
        fingerprint: fp,
        credential,
        endpoint: 0,
        text: (!stats.text.is_empty()).then_some(stats.text),
    }
}

#[inline]
fn ln1p(n: usize) -> f64 {
    (n as f64).ln_1p()
}

/// Whether `hay` contains `needle`, ASCII case-insensitively.
pub fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_collapse_volatile_segments() {
        let mut out = String::new();
        normalise_path("/users/12345/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301/x", &mut out);
        assert_eq!(out, "/users/{n}/orders/{uuid}/x");
        normalise_path("/blob/deadbeefdeadbeef1234//", &mut out);
        assert_eq!(out, "/blob/{id}");
        normalise_path("", &mut out);
        assert_eq!(out, "/");
        normalise_path("/v2/models/iris/infer", &mut out);
        assert_eq!(out, "/v2/models/iris/infer");
    }

    #[test]
    fn the_path_extension_is_a_category() {
        let ext = |uri: &str| {
            let mut sample = crate::score::empty_sample();
            let req = Request { method: "GET", uri, headers: &[], body: b"", client: "c", ts: 0.0, truncated: false };
            extract(&req, &oip::NoRanges, &mut sample, &mut Vec::new());
            let o = sample.fields.iter().find(|f| sample.name(f) == ":path#ext").expect("pushed");
            (o.hash, o.len)
        };
        assert_eq!(ext("/shop/index.jsp?x=1"), ext("/shop/news.JSP"));
        assert_ne!(ext("/shop/index.jsp"), ext("/shop/index.jsp.bak"));
        assert_eq!(ext("/shop/").1, 0);
        assert_eq!(ext("/a/file.averyverylongext").1, "(long)".len() as u32);
    }

    #[test]
    fn uri_splits_query_and_drops_fragment() {
        assert_eq!(split_uri("/a/b?x=1&y=2#frag"), ("/a/b", "x=1&y=2"));
        assert_eq!(split_uri("/a"), ("/a", ""));
    }

    #[test]
    fn entropy_and_non_printables() {
        let (h, np) = byte_stats(b"aaaa");
        assert_eq!(h, 0.0);
        assert_eq!(np, 0.0);
        let all: Vec<u8> = (0..=255).collect();
        let (h, np) = byte_stats(&all);
        assert!((h - 8.0).abs() < 1e-9);
        assert!(np > 0.5);
    }

    #[test]
    fn headers_become_lower_case_fields() {
        let headers = [("Content-Type", "text/plain"), ("X-Thing", "1")];
        let req = Request {
            method: "GET",
            uri: "/a?q=1",
            headers: &headers,
            body: b"",
            client: "c",
            ts: 0.0,
            truncated: false,
        };
        let mut s = crate::score::empty_sample();
        let mut scratch = Vec::new();
        extract(&req, &oip::NoRanges, &mut s, &mut scratch);
        let names: Vec<&str> = s.fields.iter().map(|f| s.name(f)).collect();
        assert!(names.contains(&"content-type"));
        assert!(names.contains(&"x-thing"));
        assert!(names.contains(&"q"));
        assert_eq!(s.vector[2], 1.0);
    }

    #[test]
    fn a_chats_fixed_prompt_does_not_make_its_requests_alike() {
        let text = |body: &str| {
            let headers = [("content-type", "application/json")];
            let req = Request {
                method: "POST",
                uri: "/v1/chat/completions",
                headers: &headers,
                body: body.as_bytes(),
                client: "c",
                ts: 0.0,
                truncated: false,
            };
            extract(&req, &oip::NoRanges, &mut crate::score::empty_sample(), &mut Vec::new()).text
        };
        // Keys sort after "messages" (serde_json orders them); a long
        // conversation's newest message is read (the last elements of arrays).
        let chat = |question: &str, history: usize| {
            let turns: Vec<String> = (0..history)
                .map(|i| format!(r#"{{"role": "user", "content": "earlier question number {i} here"}}"#))
                .collect();
            format!(
                r#"{{"model": "m", "messages": [{{"role": "system", "content": "You are a helpful assistant for the support team of a large online shop."}}, {}{{"role": "user", "content": "{question}"}}], "tools": [{{"description": "look up an order by its number and return its status"}}]}}"#,
                turns.iter().map(|t| format!("{t}, ")).collect::<String>()
            )
        };
        for history in [0, 12] {
            let a = text(&chat("how do I reset my password", history)).expect("text");
            let b = text(&chat("where is my parcel from last week", history)).expect("text");
            let a2 = text(&chat("how do I reset my  Password ", history)).expect("text");
            let a3 = text(&chat("how do I reset my login", history)).expect("text");
            assert!(!b.near(&a), "history {history}");
            assert!(a2.near(&a) && a3.near(&a), "history {history}");
        }
        assert_eq!(text(r#"{"model": "m", "n": 2}"#), None);
    }
}
