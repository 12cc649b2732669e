//! Checked policy types, and the loader that turns policy files into them
//! with `file:line:column: message` diagnostics quoting the bad value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::format::{self, RawAuthorizationPolicy, RawCondition, RawOperation, RawRule, RawSource, API_VERSION};
use crate::matcher::Pattern;

/// Where something was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File name as given to the loader.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where.
    pub location: Location,
    /// What is wrong, quoting the value and saying what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// What an authorization policy does when one of its rules matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The request may pass (if no DENY matches).
    Allow,
    /// The request is refused.
    Deny,
    /// The match is logged and counted; no effect on the verdict.
    Audit,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Audit => "AUDIT",
        })
    }
}

/// Which workloads a policy applies to: its namespace (none: mesh-wide) and
/// the labels its `selector` requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    /// `metadata.namespace`; `None` attaches mesh-wide.
    pub namespace: Option<String>,
    /// `spec.selector.matchLabels`; empty: every workload in scope.
    pub match_labels: BTreeMap<String, String>,
}

impl Attachment {
    /// True if a policy with this attachment applies to `w`.
    pub fn applies_to(&self, w: &Workload) -> bool {
        let ns_ok = match (&self.namespace, &w.namespace) {
            (None, _) => true,
            (Some(p), Some(w)) => p == w,
            (Some(_), None) => false,
        };
        ns_ok && self.match_labels.iter().all(|(k, v)| w.labels.get(k) == Some(v))
    }
}

/// The workload a sidecar protects, as policies see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// Its namespace.
    pub namespace: Option<String>,
    /// Its pod labels.
    pub labels: BTreeMap<String, String>,
}

/// A checked `AuthorizationPolicy`.
#[derive(Debug, Clone)]
pub struct AuthorizationPolicy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, if any.
    pub namespace: Option<String>,
    /// Which workloads it applies to.
    pub attach: Attachment,
    /// Where the document starts.
    pub location: Location,
    /// What a match does.
    pub action: Action,
    /// Evaluated and counted, not enforced.
    pub dry_run: bool,
    /// Rules; the policy matches when any rule matches.
    pub rules: Vec<Rule>,
}

/// A checked rule: every non-empty part must match.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// Any of these sources.
    pub from: Vec<Source>,
    /// Any of these operations.
    pub to: Vec<Operation>,
    /// All of these conditions.
    pub when: Vec<Condition>,
}

/// A checked source.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// Peer SPIFFE IDs.
    pub principals: Vec<Pattern>,
    /// Negated.
    pub not_principals: Vec<Pattern>,
    /// Peer namespaces.
    pub namespaces: Vec<Pattern>,
    /// Negated.
    pub not_namespaces: Vec<Pattern>,
    /// Client IP blocks.
    pub ip_blocks: Vec<IpNet>,
    /// Negated.
    pub not_ip_blocks: Vec<IpNet>,
    /// JWT `iss/sub`.
    pub request_principals: Vec<Pattern>,
    /// Negated.
    pub not_request_principals: Vec<Pattern>,
}

/// A checked operation.
#[derive(Debug, Clone, Default)]
pub struct Operation {
    /// Upper-case methods.
    pub methods: Vec<String>,
    /// Negated.
    pub not_methods: Vec<String>,
    /// Paths.
    pub paths: Vec<Pattern>,
    /// Negated.
    pub not_paths: Vec<Pattern>,
    /// Ports.
    pub ports: Vec<u16>,
    /// Negated.
    pub not_ports: Vec<u16>,
}

/// What a condition looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `request.auth.claims[a][b]...`: a path into the verified JWT's claims.
    Claim(Vec<String>),
    /// `request.headers[name]` (lower-case name).
    Header(String),
    /// `request.auth.principal`: `iss/sub`.
    RequestPrincipal,
    /// `source.principal`: the peer SPIFFE ID.
    SourcePrincipal,
    /// `source.namespace`.
    SourceNamespace,
    /// `source.ip`.
    SourceIp,
}

/// Values a condition accepts.
#[derive(Debug, Clone)]
pub enum Values {
    /// String patterns.
    Patterns {
        /// Any matches.
        values: Vec<Pattern>,
        /// None may match.
        not_values: Vec<Pattern>,
    },
    /// IP blocks (for `source.ip`).
    Ips {
        /// Any contains.
        values: Vec<IpNet>,
        /// None may contain.
        not_values: Vec<IpNet>,
    },
}

/// A checked condition.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The attribute.
    pub key: Key,
    /// The accepted values.
    pub values: Values,
}

/// Loads every document of one policy file. All problems are reported, not only the first.
pub fn load_file(file: &str, text: &str) -> Result<Vec<AuthorizationPolicy>, Vec<Diagnostic>> {
    load_set(&[(file, text)])
}

/// Every kind of policy in a set.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// Authorization policies, in order.
    pub authorization: Vec<AuthorizationPolicy>,
    /// Rate-limit policies, in order.
    pub rate_limits: Vec<crate::ratelimit::RateLimitPolicy>,
    /// JWT authentication policies, in order.
    pub authentication: Vec<crate::jwt::RequestAuthentication>,
    /// Anomaly policies (what to do with detector verdicts), in order.
    pub anomaly: Vec<crate::anomaly::AnomalyPolicy>,
}

impl Policies {
    /// The policies that apply to workload `w`; `None` (a sidecar that was
    /// not told its workload) keeps every policy.
    pub fn for_workload(&self, w: Option<&Workload>) -> Policies {
        let Some(w) = w else { return self.clone() };
        Policies {
            authorization: self.authorization.iter().filter(|p| p.attach.applies_to(w)).cloned().collect(),
            rate_limits: self.rate_limits.iter().filter(|p| p.attach.applies_to(w)).cloned().collect(),
            authentication: self.authentication.iter().filter(|p| p.attach.applies_to(w)).cloned().collect(),
            anomaly: self.anomaly.iter().filter(|p| p.attach.applies_to(w)).cloned().collect(),
        }
    }

    /// True when no policy of any kind is loaded.
    pub fn is_empty(&self) -> bool {
        self.authorization.is_empty()
            && self.rate_limits.is_empty()
            && self.authentication.is_empty()
            && self.anomaly.is_empty()
    }
}

/// Loads a set of files as one policy set and keeps only the authorization
/// policies (see [`load_all`] for every kind).
pub fn load_set(files: &[(&str, &str)]) -> Result<Vec<AuthorizationPolicy>, Vec<Diagnostic>> {
    load_all(files).map(|p| p.authorization)
}

/// Loads a set of files (name, contents) as one policy set, in order; names
/// must be unique per kind and namespace across the whole set.
pub fn load_all(files: &[(&str, &str)]) -> Result<Policies, Vec<Diagnostic>> {
    let mut set = Policies::default();
    let mut names: Vec<(&'static str, Option<String>, String, Location)> = Vec::new();
    let mut diags = Vec::new();
    for (file, text) in files {
        // A lone CR is a line break to YAML but not to `file:line` readers;
        // refuse it rather than report positions that point elsewhere.
        if let Some(at) =
            text.bytes().enumerate().position(|(i, b)| b == b'\r' && text.as_bytes().get(i + 1) != Some(&b'\n'))
        {
            let line = text[..at].matches('\n').count() + 1;
            let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
            diags.push(Diagnostic {
                location: Location { file: (*file).to_owned(), line, column },
                message: "bare CR line ending (expected LF or CRLF)".to_owned(),
            });
            continue;
        }
        for doc in split_documents(text) {
            let ctx = Doc { file, text: doc.text, first_line: doc.first_line };
            let (kind, ns, name) = match load_document(&ctx) {
                Ok(Some(Loaded::Authorization(p))) => {
                    let key = ("AuthorizationPolicy", p.namespace.clone(), p.name.clone());
                    set.authorization.push(p);
                    key
                }
                Ok(Some(Loaded::RateLimit(p))) => {
                    let key = ("RateLimitPolicy", p.attach.namespace.clone(), p.name.clone());
                    set.rate_limits.push(p);
                    key
                }
                Ok(Some(Loaded::Authentication(p))) => {
                    let key = ("RequestAuthentication", p.attach.namespace.clone(), p.name.clone());
                    set.authentication.push(p);
                    key
                }
                Ok(Some(Loaded::Anomaly(p))) => {
                    let key = ("AnomalyPolicy", p.attach.namespace.clone(), p.name.clone());
                    set.anomaly.push(p);
                    key
                }
                Ok(None) => continue,
                Err(d) => {
                    diags.extend(d);
                    continue;
                }
            };
            let here = ctx.at(1, 1);
            if let Some((_, _, _, first)) = names.iter().find(|(k, n, m, _)| *k == kind && *n == ns && *m == name) {
                diags.push(Diagnostic {
                    location: here.clone(),
                    message: format!("duplicate policy name \"{name}\" (first defined at {first})"),
                });
            }
            names.push((kind, ns, name, here));
        }
    }
    if diags.is_empty() {
        Ok(set)
    } else {
        Err(diags)
    }
}

/// The kinds this version reads, for messages.
const SUPPORTED_KINDS: &str = "AuthorizationPolicy, RequestAuthentication, RateLimitPolicy, AnomalyPolicy";

/// The attachment written in a document's metadata and selector.
fn attachment(meta: &format::RawMetadata, selector: Option<&format::RawSelector>) -> Attachment {
    Attachment {
        namespace: meta.namespace.clone().filter(|n| !n.is_empty()),
        match_labels: selector.map(|s| s.match_labels.clone()).unwrap_or_default(),
    }
}

enum Loaded {
    Authorization(AuthorizationPolicy),
    RateLimit(crate::ratelimit::RateLimitPolicy),
    Authentication(crate::jwt::RequestAuthentication),
    Anomaly(crate::anomaly::AnomalyPolicy),
}

struct RawDoc<'a> {
    text: &'a str,
    first_line: usize,
}

/// Splits at lines that are `---` (optionally followed by a comment).
fn split_documents(text: &str) -> Vec<RawDoc<'_>> {
    let mut docs = Vec::new();
    let (mut start, mut first_line, mut offset) = (0usize, 1usize, 0usize);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t.starts_with("---#") {
            docs.push(RawDoc { text: &text[start..offset], first_line });
            start = offset + line.len();
            first_line = i + 2;
        }
        offset += line.len();
    }
    docs.push(RawDoc { text: &text[start..], first_line });
    docs
}

struct Doc<'a> {
    file: &'a str,
    text: &'a str,
    first_line: usize,
}

impl Doc<'_> {
    fn at(&self, line: usize, column: usize) -> Location {
        Location { file: self.file.to_owned(), line: self.first_line + line.saturating_sub(1), column }
    }

    /// The first place `needle` appears in this document (or its start).
    fn find(&self, needle: &str) -> Location {
        for (i, line) in self.text.lines().enumerate() {
            if let Some(col) = line.find(needle) {
                return self.at(i + 1, col + 1);
            }
        }
        self.at(1, 1)
    }

    fn err(&self, needle: &str, message: String) -> Diagnostic {
        Diagnostic { location: self.find(needle), message }
    }
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

fn load_document(doc: &Doc<'_>) -> Result<Option<Loaded>, Vec<Diagnostic>> {
    if is_blank(doc.text) {
        return Ok(None);
    }
    let yaml_err = |e: serde_yaml::Error| {
        let loc = e.location().map_or(doc.at(1, 1), |l| doc.at(l.line(), l.column()));
        vec![Diagnostic { location: loc, message: e.to_string().split(" at line ").next().unwrap_or("").to_owned() }]
    };
    let header: format::RawHeader = serde_yaml::from_str(doc.text).map_err(yaml_err)?;
    match header.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(vec![doc.err(other, format!("unknown apiVersion \"{other}\" (expected {API_VERSION})"))])
        }
        None => return Err(vec![Diagnostic { location: doc.at(1, 1), message: "missing apiVersion".into() }]),
    }
    match header.kind.as_deref() {
        Some("AuthorizationPolicy") => {}
        Some("RateLimitPolicy") => {
            let raw: crate::format::RawRateLimitPolicy = serde_yaml::from_str(doc.text).map_err(yaml_err)?;
            check_name(doc, &raw.metadata.name).map_err(|d| vec![d])?;
            let attach = attachment(&raw.metadata, raw.spec.selector.as_ref());
            let mut op = |ctx: &str, o: &RawOperation, d: &mut Vec<Diagnostic>| compile_operation(doc, ctx, o, d);
            let err = |needle: &str, message: String| doc.err(needle, message);
            return crate::ratelimit::compile(raw, attach, &mut op, &err).map(|p| Some(Loaded::RateLimit(p)));
        }
        Some("RequestAuthentication") => {
            let raw: crate::format::RawRequestAuthentication = serde_yaml::from_str(doc.text).map_err(yaml_err)?;
            check_name(doc, &raw.metadata.name).map_err(|d| vec![d])?;
            let attach = attachment(&raw.metadata, raw.spec.selector.as_ref());
            let err = |needle: &str, message: String| doc.err(needle, message);
            return crate::jwt::compile(raw, attach, doc.at(1, 1), &err).map(|p| Some(Loaded::Authentication(p)));
        }
        Some("AnomalyPolicy") => {
            let raw: crate::format::RawAnomalyPolicy = serde_yaml::from_str(doc.text).map_err(yaml_err)?;
            check_name(doc, &raw.metadata.name).map_err(|d| vec![d])?;
            let attach = attachment(&raw.metadata, raw.spec.selector.as_ref());
            let mut op = |ctx: &str, o: &RawOperation, d: &mut Vec<Diagnostic>| compile_operation(doc, ctx, o, d);
            let err = |needle: &str, message: String| doc.err(needle, message);
            return crate::anomaly::compile(raw, attach, doc.at(1, 1), &mut op, &err).map(|p| Some(Loaded::Anomaly(p)));
        }
        Some(k) => return Err(vec![doc.err(k, format!("unknown kind \"{k}\" (expected one of {SUPPORTED_KINDS})"))]),
        None => return Err(vec![Diagnostic { location: doc.at(1, 1), message: "missing kind".into() }]),
    }
    let raw: RawAuthorizationPolicy = serde_yaml::from_str(doc.text).map_err(yaml_err)?;
    compile_authorization(doc, raw).map(|p| Some(Loaded::Authorization(p)))
}

fn compile_authorization(doc: &Doc<'_>, raw: RawAuthorizationPolicy) -> Result<AuthorizationPolicy, Vec<Diagnostic>> {
    let attach = attachment(&raw.metadata, raw.spec.selector.as_ref());
    let name = raw.metadata.name;
    let mut diags = Vec::new();
    if name.is_empty()
        || name.len() > 253
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        diags
            .push(doc.err(&name, format!("invalid name \"{name}\" (expected lower-case letters, digits, '-' or '.')")));
    }
    let action = match raw.spec.action.as_deref().unwrap_or("ALLOW") {
        "ALLOW" => Action::Allow,
        "DENY" => Action::Deny,
        "AUDIT" => Action::Audit,
        other => {
            diags.push(
                doc.err(other, format!("policy '{name}': unknown action \"{other}\" (expected ALLOW, DENY or AUDIT)")),
            );
            Action::Allow
        }
    };
    if action != Action::Allow && raw.spec.rules.is_empty() {
        diags.push(doc.err("spec", format!("policy '{name}': a {action} policy without rules never matches")));
    }
    let mut rules = Vec::new();
    for (i, r) in raw.spec.rules.into_iter().enumerate() {
        let ctx = format!("policy '{name}', rule {}", i + 1);
        match compile_rule(doc, &ctx, r) {
            Ok(rule) => rules.push(rule),
            Err(d) => diags.extend(d),
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(AuthorizationPolicy {
        name,
        namespace: raw.metadata.namespace,
        attach,
        location: doc.at(1, 1),
        action,
        dry_run: raw.spec.dry_run,
        rules,
    })
}

fn check_name(doc: &Doc<'_>, name: &str) -> Result<(), Diagnostic> {
    if name.is_empty()
        || name.len() > 253
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(doc.err(name, format!("invalid name \"{name}\" (expected lower-case letters, digits, '-' or '.')")));
    }
    Ok(())
}

fn compile_rule(doc: &Doc<'_>, ctx: &str, raw: RawRule) -> Result<Rule, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut rule = Rule::default();
    for f in raw.from {
        rule.from.push(compile_source(doc, ctx, &f.source, &mut diags));
    }
    for t in raw.to {
        rule.to.push(compile_operation(doc, ctx, &t.operation, &mut diags));
    }
    for c in raw.when {
        if let Some(cond) = compile_condition(doc, ctx, &c, &mut diags) {
            rule.when.push(cond);
        }
    }
    if diags.is_empty() {
        Ok(rule)
    } else {
        Err(diags)
    }
}

fn patterns(
    doc: &Doc<'_>,
    ctx: &str,
    field: &str,
    values: &[String],
    parse: fn(&str) -> Result<Pattern, crate::matcher::PatternError>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Pattern> {
    values
        .iter()
        .filter_map(|v| match parse(v) {
            Ok(p) => Some(p),
            Err(e) => {
                diags.push(doc.err(v, format!("{ctx}: {field}: invalid pattern \"{v}\" ({e})")));
                None
            }
        })
        .collect()
}

fn ip_blocks(doc: &Doc<'_>, ctx: &str, field: &str, values: &[String], diags: &mut Vec<Diagnostic>) -> Vec<IpNet> {
    values
        .iter()
        .filter_map(|v| {
            let parsed = v.parse::<IpNet>().ok().or_else(|| v.parse::<IpAddr>().ok().map(IpNet::from));
            if parsed.is_none() {
                diags.push(doc.err(v, format!("{ctx}: {field}: \"{v}\" is not an IP address or CIDR block")));
            }
            parsed
        })
        .collect()
}

/// A positive list every value of which is also negated can never match.
fn never<T: PartialEq>(
    doc: &Doc<'_>,
    ctx: &str,
    field: &str,
    pos: &[T],
    neg: &[T],
    needle: &str,
    diags: &mut Vec<Diagnostic>,
) {
    if !pos.is_empty() && pos.iter().all(|p| neg.contains(p)) {
        let lower = field[..1].to_ascii_lowercase() + &field[1..];
        diags.push(doc.err(needle, format!("{ctx}: {lower} and not{field} cancel out: this rule can never match")));
    }
}

fn compile_source(doc: &Doc<'_>, ctx: &str, s: &RawSource, diags: &mut Vec<Diagnostic>) -> Source {
    let src = Source {
        principals: patterns(doc, ctx, "principals", &s.principals, Pattern::glob, diags),
        not_principals: patterns(doc, ctx, "notPrincipals", &s.not_principals, Pattern::glob, diags),
        namespaces: patterns(doc, ctx, "namespaces", &s.namespaces, Pattern::glob, diags),
        not_namespaces: patterns(doc, ctx, "notNamespaces", &s.not_namespaces, Pattern::glob, diags),
        ip_blocks: ip_blocks(doc, ctx, "ipBlocks", &s.ip_blocks, diags),
        not_ip_blocks: ip_blocks(doc, ctx, "notIpBlocks", &s.not_ip_blocks, diags),
        request_principals: patterns(doc, ctx, "requestPrincipals", &s.request_principals, Pattern::glob, diags),
        not_request_principals: patterns(
            doc,
            ctx,
            "notRequestPrincipals",
            &s.not_request_principals,
            Pattern::glob,
            diags,
        ),
    };
    let first = |v: &[String]| v.first().cloned().unwrap_or_default();
    never(doc, ctx, "Principals", &src.principals, &src.not_principals, &first(&s.principals), diags);
    never(doc, ctx, "Namespaces", &src.namespaces, &src.not_namespaces, &first(&s.namespaces), diags);
    src
}

fn compile_operation(doc: &Doc<'_>, ctx: &str, o: &RawOperation, diags: &mut Vec<Diagnostic>) -> Operation {
    let method = |m: &String, field: &str, diags: &mut Vec<Diagnostic>| {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            diags.push(doc.err(m, format!("{ctx}: {field}: \"{m}\" is not an HTTP method")));
        }
        m.to_ascii_uppercase()
    };
    let op = Operation {
        methods: o.methods.iter().map(|m| method(m, "methods", diags)).collect(),
        not_methods: o.not_methods.iter().map(|m| method(m, "notMethods", diags)).collect(),
        paths: patterns(doc, ctx, "paths", &o.paths, Pattern::path, diags),
        not_paths: patterns(doc, ctx, "notPaths", &o.not_paths, Pattern::path, diags),
        ports: o.ports.clone(),
        not_ports: o.not_ports.clone(),
    };
    for p in o.ports.iter().chain(&o.not_ports) {
        if *p == 0 {
            diags.push(doc.err("ports", format!("{ctx}: port 0 is not a port")));
        }
    }
    let first = |v: &[String]| v.first().cloned().unwrap_or_default();
    never(doc, ctx, "Methods", &op.methods, &op.not_methods, &first(&o.methods), diags);
    never(doc, ctx, "Paths", &op.paths, &op.not_paths, &first(&o.paths), diags);
    never(doc, ctx, "Ports", &op.ports, &op.not_ports, "ports", diags);
    op
}

fn compile_condition(doc: &Doc<'_>, ctx: &str, c: &RawCondition, diags: &mut Vec<Diagnostic>) -> Option<Condition> {
    let key = match parse_key(&c.key) {
        Some(k) => k,
        None => {
            diags.push(doc.err(
                &c.key,
                format!(
                    "{ctx}: unknown condition key \"{}\" (expected request.auth.claims[NAME], request.headers[NAME], \
                     request.auth.principal, source.principal, source.namespace or source.ip)",
                    c.key
                ),
            ));
            return None;
        }
    };
    if c.values.is_empty() && c.not_values.is_empty() {
        diags.push(doc.err(&c.key, format!("{ctx}: condition \"{}\" needs values or notValues", c.key)));
        return None;
    }
    let values = if key == Key::SourceIp {
        Values::Ips {
            values: ip_blocks(doc, ctx, "values", &c.values, diags),
            not_values: ip_blocks(doc, ctx, "notValues", &c.not_values, diags),
        }
    } else {
        let v = patterns(doc, ctx, "values", &c.values, Pattern::glob, diags);
        let nv = patterns(doc, ctx, "notValues", &c.not_values, Pattern::glob, diags);
        never(doc, ctx, "Values", &v, &nv, &c.key, diags);
        Values::Patterns { values: v, not_values: nv }
    };
    Some(Condition { key, values })
}

/// Parses a condition key.
fn parse_key(k: &str) -> Option<Key> {
    match k {
        "request.auth.principal" => return Some(Key::RequestPrincipal),
        "source.principal" => return Some(Key::SourcePrincipal),
        "source.namespace" => return Some(Key::SourceNamespace),
        "source.ip" => return Some(Key::SourceIp),
        _ => {}
    }
    let bracketed = |rest: &str| -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut r = rest;
        while !r.is_empty() {
            let inner = r.strip_prefix('[')?;
            let end = inner.find(']')?;
            let name = &inner[..end];
            if name.is_empty() {
                return None;
            }
            out.push(name.to_owned());
            r = &inner[end + 1..];
        }
        (!out.is_empty()).then_some(out)
    };
    if let Some(rest) = k.strip_prefix("request.auth.claims") {
        return bracketed(rest).map(Key::Claim);
    }
    if let Some(rest) = k.strip_prefix("request.headers") {
        return bracketed(rest).filter(|v| v.len() == 1).map(|mut v| Key::Header(v.remove(0).to_ascii_lowercase()));
    }
    None
}
