//! String patterns used by rules: exact, `*`-prefix/suffix globs as in Istio,
//! and path templates such as `/v2/models/{model}/infer` (a `{name}` matches
//! one non-empty path segment).

use std::fmt;

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: anything, including empty.
    Any,
    /// Exact value.
    Exact(String),
    /// `abc*`.
    Prefix(String),
    /// `*abc`.
    Suffix(String),
    /// Path template: literal segments and `{name}` placeholders.
    Template(Vec<Segment>),
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this.
    Literal(String),
    /// Any one non-empty segment.
    Param(String),
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub &'static str);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Pattern {
    /// Parses a glob (`*` only at the start or the end, once).
    pub fn glob(s: &str) -> Result<Self, PatternError> {
        if s.is_empty() {
            return Err(PatternError("empty pattern"));
        }
        if s == "*" {
            return Ok(Self::Any);
        }
        let stars = s.matches('*').count();
        match (stars, s.strip_prefix('*'), s.strip_suffix('*')) {
            (0, _, _) => Ok(Self::Exact(s.to_owned())),
            (1, Some(rest), _) => Ok(Self::Suffix(rest.to_owned())),
            (1, _, Some(rest)) => Ok(Self::Prefix(rest.to_owned())),
            _ => Err(PatternError("'*' is allowed once, at the start or the end")),
        }
    }

    /// Parses a path: a glob, or a template when it holds `{`.
    pub fn path(s: &str) -> Result<Self, PatternError> {
        if !s.starts_with('/') && !s.starts_with('*') {
            return Err(PatternError("a path starts with '/' (or '*')"));
        }
        if !s.contains('{') && !s.contains('}') {
            return Self::glob(s);
        }
        if s.contains('*') {
            return Err(PatternError("a path template cannot also hold '*'"));
        }
        let mut segs = Vec::new();
        for seg in s[1..].split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(PatternError("a template parameter is {name} with letters, digits or '_'"));
                }
                segs.push(Segment::Param(name.to_owned()));
            } else if seg.contains('{') || seg.contains('}') {
                return Err(PatternError("a template parameter must be a whole path segment"));
            } else {
                segs.push(Segment::Literal(seg.to_owned()));
            }
        }
        Ok(Self::Template(segs))
    }

    /// True when `v` matches.
    pub fn matches(&self, v: &str) -> bool {
        match self {
            Self::Any => true,
            // SPIFFE IDs and paths share long prefixes ("spiffe://cluster.local/ns/")
            // and differ near the end: compare the last byte first, then the
            // rest (measured in benches/eval.rs: authz_100_rules_*).
            Self::Exact(e) => v.len() == e.len() && v.as_bytes().last() == e.as_bytes().last() && v == e,
            Self::Prefix(p) => {
                v.len() >= p.len()
                    && v.as_bytes().get(p.len().wrapping_sub(1)) == p.as_bytes().last()
                    && v.starts_with(p.as_str())
            }
            Self::Suffix(s) => v.ends_with(s.as_str()),
            Self::Template(segs) => {
                let Some(rest) = v.strip_prefix('/') else { return false };
                let mut parts = rest.split('/');
                for seg in segs {
                    match (seg, parts.next()) {
                        (Segment::Literal(l), Some(p)) if l == p => {}
                        (Segment::Param(_), Some(p)) if !p.is_empty() => {}
                        _ => return false,
                    }
                }
                parts.next().is_none()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_istio() {
        let p = Pattern::glob("spiffe://cluster.local/ns/gw/sa/*").expect("glob");
        assert!(p.matches("spiffe://cluster.local/ns/gw/sa/api"));
        assert!(!p.matches("spiffe://cluster.local/ns/other/sa/api"));
        assert!(Pattern::glob("*/admin").expect("glob").matches("/v2/admin"));
        assert!(Pattern::glob("*").expect("glob").matches(""));
        assert_eq!(Pattern::glob("a*b").expect_err("middle star").0, "'*' is allowed once, at the start or the end");
        assert!(Pattern::glob("*a*").is_err());
    }

    #[test]
    fn templates_match_one_segment_per_parameter() {
        let t = Pattern::path("/v2/models/{model}/infer").expect("template");
        assert!(t.matches("/v2/models/iris/infer"));
        assert!(!t.matches("/v2/models//infer"));
        assert!(!t.matches("/v2/models/a/b/infer"));
        assert!(!t.matches("/v2/models/iris/infer/x"));
        assert!(Pattern::path("/v2/{a-b}").is_err());
        assert!(Pattern::path("/v2/x{a}").is_err());
        assert!(Pattern::path("v2").is_err());
    }
}
