//! The parameter family: URL query and `x-www-form-urlencoded` parameters,
//! and the keys of a JSON body, each becoming one field observation
//! (decoded value: character classes, length, number, hash).

use super::request::{cap_name, ValueStats, MAX_FIELDS};
use super::{percent_decode, FieldKind, Sample};
use serde_json::Value;

/// Largest JSON body parsed for field profiles; larger ones only count in the
/// request vector (size, entropy).
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Parse `a=1&b=2` pairs into field observations of `kind`; returns the
/// number of pairs (including those past the field cap).
pub fn urlencoded(
    raw: &[u8],
    kind: FieldKind,
    sample: &mut Sample,
    stats: &mut ValueStats,
    scratch: &mut Vec<u8>,
) -> usize {
    let mut n = 0;
    for pair in raw.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        n += 1;
        if sample.fields.len() >= MAX_FIELDS {
            continue;
        }
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let extra = percent_decode(value, true, scratch);
        stats.add(scratch);
        match std::str::from_utf8(name) {
            Ok(name) if !name.bytes().any(|b| b == b'%' || b == b'+') => {
                sample.push_field(kind, cap_name(name), scratch, extra);
            }
            _ => {
                let mut decoded = Vec::new();
                percent_decode(name, true, &mut decoded);
                let name = String::from_utf8_lossy(&decoded);
                sample.push_field(kind, cap_name(&name), scratch, extra);
            }
        }
    }
    n
}

/// Top-level keys of a JSON object body (and one level of nested objects as
/// `outer.inner`, array elements as `key[]`); returns the number of keys.
/// A body that is not a JSON object yields no fields; a `truncated` one (the
/// first bytes of a longer body) is read up to its last whole element.
pub fn json_top_level(body: &[u8], truncated: bool, sample: &mut Sample, stats: &mut ValueStats) -> usize {
    if body.len() > MAX_JSON_BODY {
        return 0;
    }
    let closed = if truncated { super::cut::close(body) } else { None };
    let json = closed.as_ref().map_or(body, |c| c.json.as_slice());
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(json) else {
        return 0;
    };
    let mut name = String::new();
    for (k, v) in &map {
        json_field(FieldKind::Json, cap_name(k), v, sample, stats, &mut name, 1);
    }
    map.len()
}

/// One JSON value as field observation(s) named `key`; objects recurse
/// `depth` more levels.
pub(crate) fn json_field(
    kind: FieldKind,
    key: &str,
    v: &Value,
    sample: &mut Sample,
    stats: &mut ValueStats,
    name: &mut String,
    depth: u32,
) {
    if sample.fields.len() >= MAX_FIELDS {
        return;
    }
    match v {
        Value::String(s) => {
            stats.add(s.as_bytes());
            sample.push_field(kind, key, s.as_bytes(), 0);
        }
        Value::Number(n) => {
            let text = n.to_string();
            sample.push_field(kind, key, text.as_bytes(), 0);
        }
        Value::Bool(b) => sample.push_field(kind, key, if *b { b"true" } else { b"false" }, 0),
        Value::Null => sample.push_field(kind, key, b"null", 0),
        Value::Object(m) if depth > 0 => {
            sample.push_cat(kind, key, b"{object}");
            for (k, inner) in m.iter().take(16) {
                name.clear();
                name.push_str(key);
                name.push('.');
                name.push_str(cap_name(k));
                let n = std::mem::take(name);
                json_field(kind, &n, inner, sample, stats, name, depth - 1);
                *name = n;
            }
        }
        Value::Array(a) if depth > 0 => {
            sample.push_num(kind, &format!("{key}[].count"), a.len() as f64);
            let el = format!("{key}[]");
            // The first and the last four elements: a conversation's opening
            // instructions and its newest messages (where an injection arrives).
            let tail = a.len().saturating_sub(4).max(4);
            for inner in a.iter().take(4).chain(a.iter().skip(tail)) {
                json_field(kind, &el, inner, sample, stats, name, depth - 1);
            }
        }
        other => {
            let text = other.to_string();
            stats.add(text.as_bytes());
            sample.push_field(kind, key, text.as_bytes(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{byte_class, class};

    fn names(s: &Sample) -> Vec<String> {
        s.fields.iter().map(|f| s.name(f).to_string()).collect()
    }

    #[test]
    fn query_pairs_are_decoded() {
        let mut s = crate::score::empty_sample();
        let mut st = ValueStats::default();
        let mut scratch = Vec::new();
        let n = urlencoded(b"id=1%27+OR+1%3D1&flag&na%6De=x&&", FieldKind::Query, &mut s, &mut st, &mut scratch);
        assert_eq!(n, 3);
        assert_eq!(names(&s), ["id", "flag", "name"]);
        let id = &s.fields[0];
        assert_eq!(id.len, 9);
        assert!(id.classes & (1 << byte_class(b'\'')) != 0);
        assert!(id.classes & (1 << class::SPACE) != 0);
        assert!(id.classes & (1 << class::PERCENT_ENCODED) != 0);
        assert_eq!(s.fields[1].len, 0);
        assert!(st.special >= 1);
    }

    #[test]
    fn json_keys_nest_one_level() {
        let mut s = crate::score::empty_sample();
        let mut st = ValueStats::default();
        let n = json_top_level(br#"{"a": 5, "b": {"c": "x<y"}, "d": [1, 2]}"#, false, &mut s, &mut st);
        assert_eq!(n, 3);
        let ns = names(&s);
        assert!(ns.contains(&"a".to_string()));
        assert!(ns.contains(&"b.c".to_string()));
        assert!(ns.contains(&"d[]".to_string()));
        assert_eq!(s.fields[0].num, Some(5.0));
        assert_eq!(json_top_level(b"[1,2]", false, &mut s, &mut st), 0);
        assert_eq!(json_top_level(b"{not json", false, &mut s, &mut st), 0);
    }

    #[test]
    fn a_cut_json_body_gives_the_fields_that_arrived() {
        let body = br#"{"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hel"#;
        let mut s = crate::score::empty_sample();
        assert_eq!(json_top_level(body, false, &mut s, &mut ValueStats::default()), 0);
        assert_eq!(json_top_level(body, true, &mut s, &mut ValueStats::default()), 2);
        assert!(names(&s).contains(&"model".to_string()) && names(&s).contains(&"messages[]".to_string()));
    }
}
