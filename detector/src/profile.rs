//! Profiles: what each endpoint, parameter, header, input and client signal
//! looked like in traffic judged normal, and how surprising a new
//! observation is against them.
//!
//! Surprise is measured in bits (about `-log2` of the probability of seeing
//! something at least this unusual), so the families add up on one scale:
//! - unseen names and values use the Good-Turing estimate of the chance of
//!   something new, `(seen once + 1) / (observations + 2)`;
//! - characters use the share of learned values that contained that
//!   character class;
//! - lengths and numbers use the learned range and how far beyond it a value
//!   lies.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::features::{class, FieldKind, FieldObs};

/// The maps of profiles, keyed by name or path segment. foldhash instead of
/// std's SipHash: hashing the names looked up per request (a dozen fields,
/// the endpoint template, path segments) was 4% of `meshward eval`'s time.
/// Still seeded per process, so keys a client picks cannot be aimed at
/// collisions in advance; nothing depends on the iteration order.
pub type NameMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Observations a profile needs before it judges anything.
pub const MIN_OBS: u64 = 20;
/// Distinct values a field may have before it counts as high-cardinality
/// (and unseen values stop being surprising).
const MAX_CATS: usize = 32;
/// Field profiles kept per endpoint and kind.
const MAX_FIELDS_PER_KIND: usize = 512;
/// Endpoints (templates) kept.
const MAX_ENDPOINTS: usize = 4096;
/// Distinct children a path node keeps before it becomes a `{}` wildcard.
const MAX_CHILDREN: usize = 24;
/// Cap of the surprise of an unseen value of a field (bits).
const UNSEEN_VALUE_CAP: f64 = 10.0;
/// Cap of a broken invariant ([`FieldObs::invariant`]: NaN/Inf in a model
/// input where `n` learned requests had none, an inference body that no
/// longer parses where every learned one did): log2(n + 2) like an unseen
/// value, but above its cap, which sits below a busy service's threshold; no
/// model computes on such a request, and no real client sends it by accident.
pub const INVARIANT_CAP: f64 = 16.0;
/// Share of a field's values below which a character class is rare.
const RARE_CLASS: f64 = 0.02;
/// Bits taken off an unseen value per doubling of the distinct clients that
/// sent it (see [`FieldProfile::surprise_seen_by`]).
pub const SPREAD_DISCOUNT: f64 = 3.0;
/// Cap of one field's surprise, bits.
pub const FIELD_CAP: f64 = 24.0;

/// Streaming mean, variance, minimum and maximum (Welford).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Observations.
    pub n: u64,
    /// Mean.
    pub mean: f64,
    /// Sum of squared deviations.
    pub m2: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Stat {
    /// Add one value (non-finite values are ignored).
    pub fn push(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        if self.n == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.n += 1;
        let d = v - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (v - self.mean);
        if !self.m2.is_finite() || !self.mean.is_finite() {
            self.mean = 0.0;
            self.m2 = 0.0;
        }
    }

    /// Standard deviation (0 with fewer than two values).
    pub fn std(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt()
        }
    }
}

/// Why a field was surprising (the strongest part), for explanations.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldWhy {
    /// Character classes rarely or never seen in this field.
    Chars {
        /// The rare classes (bit set).
        classes: u64,
        /// How many values were learned.
        learned: u64,
    },
    /// Longer than anything learned.
    Long {
        /// Length of the value.
        len: u32,
        /// Longest learned.
        max: f64,
    },
    /// Shorter than anything learned.
    Short {
        /// Length of the value.
        len: u32,
        /// Shortest learned.
        min: f64,
    },
    /// A number outside the learned range.
    Range {
        /// The value.
        value: f64,
        /// Learned minimum.
        lo: f64,
        /// Learned maximum.
        hi: f64,
    },
    /// Not a number where numbers were always seen.
    NotNumeric,
    /// A value never seen in a low-cardinality field.
    UnseenValue,
    /// A broken invariant ([`FieldObs::invariant`]): the field held one value
    /// in every learned observation, and this one differs (NaN/Inf in a
    /// model input, an inference body that does not parse).
    Broken {
        /// The value, if numeric.
        value: Option<f64>,
        /// Observations that all held the invariant.
        learned: u64,
    },
}

/// Profile of one field (a parameter, header, input statistic or client signal).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldProfile {
    /// Observations.
    pub n: u64,
    /// Per character class: how many values contained it.
    pub classes: Vec<u32>,
    /// Value lengths.
    pub len: Stat,
    /// Numeric values.
    pub num: Stat,
    /// Distinct value hashes with counts; `None` once there were too many.
    pub cats: Option<Vec<(u64, u32)>>,
    /// Whether the field is in its endpoint's `required` list.
    #[serde(default)]
    pub required: bool,
    /// The largest numeric values learned, largest first.
    #[serde(default)]
    pub top: [f64; TOP],
    /// Learned values that had a character class rare at the time (below 2%
    /// of the values before them): how often this field surprises at all.
    #[serde(default)]
    pub rare_values: u64,
}

/// Largest values a field profile keeps: a client signal is judged against
/// the smallest of them (see [`FieldProfile::surprise`]).
pub const TOP: usize = 3;

impl FieldProfile {
    fn new() -> Self {
        FieldProfile { classes: vec![0; class::COUNT], cats: Some(Vec::new()), ..FieldProfile::default() }
    }

    /// Learn one observation.
    pub fn learn(&mut self, o: &FieldObs) {
        if self.n >= MIN_OBS && self.has_rare_class(o.classes) {
            self.rare_values += 1;
        }
        self.n += 1;
        let mut bits = o.classes;
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(c) = self.classes.get_mut(b) {
                *c = c.saturating_add(1);
            }
        }
        self.len.push(f64::from(o.len));
        if let Some(v) = o.num {
            self.num.push(v);
            if v.is_finite() && (self.num.n <= TOP as u64 || v > self.top[TOP - 1]) {
                let held = (self.num.n as usize - 1).min(TOP);
                let at = self.top[..held].iter().position(|t| v > *t).unwrap_or(held.min(TOP - 1));
                self.top.copy_within(at..TOP - 1, at + 1);
                self.top[at] = v;
            }
        }
        if let Some(cats) = &mut self.cats {
            if let Some(i) = cats.iter().position(|(h, _)| *h == o.hash) {
                cats[i].1 = cats[i].1.saturating_add(1);
            } else if cats.len() < MAX_CATS {
                cats.push((o.hash, 1));
            } else {
                self.cats = None;
            }
        }
    }

    /// Smoothed share of the learned values that contained character class `b`.
    fn class_share(&self, b: u32) -> f64 {
        let c = f64::from(self.classes.get(b as usize).copied().unwrap_or(0));
        (c + 0.5) / (self.n as f64 + 1.0)
    }

    fn has_rare_class(&self, classes: u64) -> bool {
        let mut bits = classes;
        while bits != 0 {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            if self.class_share(b) < RARE_CLASS {
                return true;
            }
        }
        false
    }

    /// Whether (nearly) every learned value was a number.
    pub fn is_numeric(&self) -> bool {
        self.num.n > 0 && self.num.n as f64 >= 0.98 * self.n as f64
    }

    /// Surprise of an observation (bits, capped) and its strongest reason.
    pub fn surprise(&self, o: &FieldObs) -> (f64, Option<FieldWhy>) {
        self.surprise_seen_by(o, || 1)
    }

    /// [`FieldProfile::surprise`], where an unseen value of a categorical
    /// field was sent lately by `seen_by()` distinct clients (asked only for
    /// such a value): each doubling of them takes
    /// [`SPREAD_DISCOUNT`] bits off the unseen value. A new product category
    /// or city that many users pick is the service changing; one client
    /// repeating an odd value is not. (Such values are never learned while
    /// flagged, so without this a new value above the threshold would be
    /// flagged for every user, forever.)
    pub fn surprise_seen_by(&self, o: &FieldObs, seen_by: impl FnOnce() -> u32) -> (f64, Option<FieldWhy>) {
        if self.n < MIN_OBS {
            return (0.0, None);
        }
        let n = self.n as f64;
        let mut best: (f64, Option<FieldWhy>) = (0.0, None);
        let mut total = 0.0;
        let mut consider = |s: f64, why: FieldWhy, total: &mut f64| {
            *total += s;
            if s > best.0 {
                best = (s, Some(why));
            }
        };

        // Character classes.
        let mut rare = 0u64;
        let mut s_chars = 0.0;
        let mut bits = o.classes;
        // Bits of a class, if it is rare in this field.
        let cost = |b: u32| {
            let p = self.class_share(b);
            // Letters and digits are how values legitimately change (names, IDs,
            // new wording); injection needs syntax: punctuation, controls,
            // encodings. New letters or digits count a little, the rest fully.
            let benign = matches!(b, class::UPPER | class::LOWER | class::DIGIT);
            (p < RARE_CLASS).then(|| if benign { (-p.log2()).min(3.0) } else { -p.log2() })
        };
        let (mut k, mut strongest) = (0u32, 0f64);
        while bits != 0 {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            if let Some(s) = cost(b) {
                k += 1;
                strongest = strongest.max(s);
                // A closing bracket after its opening one is one piece of syntax
                // (a remark in parentheses, a list), not a second rare event: the
                // pair counts as much as its rarer half. (The opening class has the
                // lower index, so it was counted first.)
                let open = CLOSING.iter().find(|(close, _)| *close == b).map(|(_, open)| *open);
                s_chars += match open.filter(|i| rare & (1 << i) != 0).and_then(&cost) {
                    Some(s_open) => (s - s_open).max(0.0),
                    None => s,
                };
                rare |= 1 << b;
            }
        }
        // In a field where values with some rare class are common (free text,
        // passwords: a tenth of them have an odd character), several rare
        // classes in one value are not independent events: the chance of the
        // set is P(some rare class) times each class's chance given one, so
        // every class past the first gives back -log2 P(some rare class).
        // Only where that chance is at least 1%: in a field that never had
        // odd characters, each new class is evidence of its own.
        let p_any = (self.rare_values as f64 + 0.5) / (n + 1.0);
        if k >= 2 && p_any >= 0.01 {
            s_chars = (s_chars + f64::from(k - 1) * p_any.log2()).max(strongest);
        }
        if rare != 0 {
            consider(s_chars.min(FIELD_CAP), FieldWhy::Chars { classes: rare, learned: self.n }, &mut total);
        }

        // Length.
        let len = f64::from(o.len);
        if self.len.n >= MIN_OBS {
            let ratio = (len + 1.0) / (self.len.max + 1.0);
            if ratio >= 1.5 {
                consider((3.0 * ratio.log2()).min(16.0), FieldWhy::Long { len: o.len, max: self.len.max }, &mut total);
            }
            let short = (self.len.min + 1.0) / (len + 1.0);
            if short >= 2.0 {
                consider((2.0 * short.log2()).min(8.0), FieldWhy::Short { len: o.len, min: self.len.min }, &mut total);
            }
        }

        // Numbers.
        if self.is_numeric() {
            match o.num {
                Some(v) => {
                    // A client signal's values are the clients' own doing: the top two
                    // learned (a slow attack's first requests, before it was flagged)
                    // do not widen the range that the next attacker is measured against.
                    // (`top` holds the maximum once kept from the start; a snapshot
                    // written before it existed loads it as zeros: use the maximum.)
                    let robust = o.kind == FieldKind::Client && self.num.n >= 100 && self.top[0] == self.num.max;
                    let (lo, hi) = (self.num.min, if robust { self.top[TOP - 1] } else { self.num.max });
                    let w = hi - lo;
                    let pad = 0.1 * w;
                    // A constant field has no spread to measure against: use a tenth
                    // of its magnitude, and at least 1 (a count or flag moving by one).
                    let scale = if w > 0.0 { w.max(self.num.std()) } else { (0.1 * hi.abs()).max(1.0) };
                    let excess = if v > hi + pad {
                        (v - hi) / scale
                    } else if v < lo - pad && o.kind != FieldKind::Client {
                        // Client signals count what a client does too much of (rate,
                        // credentials, errors, spread); doing less than any learned
                        // client (a prober quieter after a pause) is not a sign.
                        // PRADA, where low is the sign, is judged in `score`.
                        (lo - v) / scale
                    } else {
                        0.0
                    };
                    if excess > 0.0 {
                        let mut s = (2.0 + 4.0 * (1.0 + excess).log2()).min(20.0);
                        let mut why = FieldWhy::Range { value: v, lo, hi };
                        if w == 0.0 && excess >= 1.0 && o.kind != FieldKind::Client {
                            // A value that never changed in n observations (NaN count 0,
                            // batch 1, a flag) changing by a whole unit is an unseen value:
                            // Good-Turing with no value seen once, as for categories. (A
                            // share that was always 0 moving by 2% is not.)
                            let cap = if o.invariant { INVARIANT_CAP } else { UNSEEN_VALUE_CAP };
                            s = s.max((self.num.n as f64 + 2.0).log2().min(cap));
                            // Broken only upwards: a NaN count that was always 3 falling
                            // to 0 is a change, not a NaN where none was.
                            if o.invariant && v > hi {
                                why = FieldWhy::Broken { value: Some(v), learned: self.num.n };
                            }
                        }
                        consider(s, why, &mut total);
                    }
                }
                None if o.len > 0 => {
                    let p = ((n - self.num.n as f64) + 0.5) / (n + 1.0);
                    consider((-p.log2()).min(12.0), FieldWhy::NotNumeric, &mut total);
                }
                None => {}
            }
        } else if let Some(cats) = &self.cats {
            // Categories (only for non-numeric, low-cardinality fields).
            if self.n >= 30 && !cats.iter().any(|(h, _)| *h == o.hash) {
                let (s, why) = if o.invariant {
                    // Every learned request kept it, whatever other values were
                    // seen once; nor do many clients make it ordinary.
                    ((n + 2.0).log2().min(INVARIANT_CAP), FieldWhy::Broken { value: None, learned: self.n })
                } else {
                    let once = cats.iter().filter(|(_, c)| *c == 1).count() as f64;
                    let p = (once + 1.0) / (n + 2.0);
                    // Header values (tokens, user agents) follow the client population,
                    // which changes legitimately: they weigh less than parameter values.
                    let cap = if o.kind == FieldKind::Header { 6.0 } else { UNSEEN_VALUE_CAP };
                    ((-p.log2()).min(cap) - SPREAD_DISCOUNT * f64::from(seen_by().max(1)).log2(), FieldWhy::UnseenValue)
                };
                if s > 0.0 {
                    consider(s, why, &mut total);
                }
            }
        }
        (total.min(FIELD_CAP), best.1)
    }
}

/// Closing bracket classes and their opening ones: `()` and `[]`.
const CLOSING: [(u32, u32); 2] = [
    (crate::features::byte_class(b')'), crate::features::byte_class(b'(')),
    (crate::features::byte_class(b']'), crate::features::byte_class(b'[')),
];

/// Profile of one endpoint (or of the whole service, for headers, inputs and
/// client signals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointProfile {
    /// Requests learned.
    pub n: u64,
    /// Methods with counts.
    pub methods: Vec<(String, u64)>,
    /// Field profiles per [`FieldKind`] (indexed by [`FieldKind::index`]).
    pub fields: Vec<NameMap<FieldProfile>>,
    /// Per kind: field names seen in exactly one request (Good-Turing).
    pub once: Vec<u64>,
    /// Fields present in at least 99% of requests (after 50), checked for absence.
    pub required: Vec<(FieldKind, String)>,
}

impl Default for EndpointProfile {
    fn default() -> Self {
        EndpointProfile {
            n: 0,
            methods: Vec::new(),
            fields: vec![NameMap::default(); FieldKind::COUNT],
            once: vec![0; FieldKind::COUNT],
            required: Vec::new(),
        }
    }
}

impl EndpointProfile {
    /// The profile of a field, if learned.
    pub fn field(&self, kind: FieldKind, name: &str) -> Option<&FieldProfile> {
        self.fields.get(kind.index())?.get(name)
    }

    /// Surprise (bits) of an unseen field name of `kind` here.
    pub fn unseen_field(&self, kind: FieldKind) -> f64 {
        if self.n < MIN_OBS {
            return 0.0;
        }
        let once = self.once.get(kind.index()).copied().unwrap_or(0) as f64;
        (-((once + 1.0) / (self.n as f64 + 2.0)).log2()).min(12.0)
    }

    /// Surprise (bits) of `method` here (0 when seen).
    pub fn method_surprise(&self, method: &str) -> f64 {
        if self.n < MIN_OBS || self.methods.iter().any(|(m, _)| m == method) {
            return 0.0;
        }
        (-(1.0 / (self.n as f64 + 2.0)).log2()).min(10.0)
    }

    fn learn_method(&mut self, method: &str) {
        self.n += 1;
        if let Some(i) = self.methods.iter().position(|(m, _)| m == method) {
            self.methods[i].1 += 1;
        } else if self.methods.len() < 16 {
            self.methods.push((method.to_owned(), 1));
        }
    }

    fn learn_field(&mut self, o: &FieldObs, name: &str) {
        let Some(map) = self.fields.get_mut(o.kind.index()) else { return };
        let full = map.len() >= MAX_FIELDS_PER_KIND;
        match map.get_mut(name) {
            Some(p) => p.learn(o),
            None if !full => {
                let mut p = FieldProfile::new();
                p.learn(o);
                map.insert(name.to_owned(), p);
            }
            None => {}
        }
    }

    /// Recompute derived statistics (Good-Turing counts, required fields).
    fn refresh(&mut self) {
        self.required.clear();
        for (k, map) in self.fields.iter_mut().enumerate() {
            if let Some(o) = self.once.get_mut(k) {
                *o = map.values().filter(|p| p.n == 1).count() as u64;
            }
            let Some(kind) = kind_of(k) else { continue };
            if !matches!(kind, FieldKind::Query | FieldKind::Form | FieldKind::Json | FieldKind::Header) || self.n < 50
            {
                continue;
            }
            for (name, p) in map.iter_mut() {
                p.required = p.n as f64 >= 0.99 * self.n as f64 && !name.starts_with(':');
                if p.required {
                    self.required.push((kind, name.clone()));
                }
            }
        }
        self.required.sort();
    }
}

impl PartialOrd for FieldKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FieldKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.index().cmp(&other.index())
    }
}

fn kind_of(i: usize) -> Option<FieldKind> {
    [
        FieldKind::Query,
        FieldKind::Form,
        FieldKind::Json,
        FieldKind::Header,
        FieldKind::Tensor,
        FieldKind::TensorBytes,
        FieldKind::Client,
    ]
    .get(i)
    .copied()
}

/// Whether a kind is profiled per service (not per endpoint).
pub fn service_level(kind: FieldKind) -> bool {
    matches!(kind, FieldKind::Header | FieldKind::Tensor | FieldKind::TensorBytes | FieldKind::Client)
}

/// Path templates learned per service: a trie of path segments in which a
/// node with many distinct children collapses new ones into `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathTrie {
    /// Literal children.
    pub children: NameMap<PathTrie>,
    /// The `{}` child, once this node had too many distinct children.
    pub wildcard: Option<Box<PathTrie>>,
    /// Whether a learned path ends here.
    pub terminal: bool,
}

impl PathTrie {
    /// The template of a normalised path (`/a/{n}/b`), or `None` if unseen.
    pub fn lookup(&self, path: &str, out: &mut String) -> bool {
        out.clear();
        let mut node = self;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            out.push('/');
            if let Some(c) = node.children.get(seg) {
                out.push_str(seg);
                node = c;
            } else if let Some(w) = &node.wildcard {
                out.push_str("{}");
                node = w;
            } else {
                return false;
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        node.terminal
    }

    /// Whether `segs` lead from this node to a learned end.
    fn matches(&self, segs: &[&str]) -> bool {
        match segs.split_first() {
            None => self.terminal,
            Some((seg, rest)) => match self.children.get(*seg) {
                Some(c) => c.matches(rest),
                None => self.wildcard.as_ref().is_some_and(|w| w.matches(rest)),
            },
        }
    }

    /// For an unseen path: whether it is a learned path of a sibling with one
    /// segment swapped (`/v2/models/a/ready` when `/v2/models/b/ready` was
    /// learned and `a` is known). Such a combination is less surprising than
    /// a path of unknown shape.
    pub fn sibling_shape(&self, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut parent: Option<&PathTrie> = None;
        let mut node = self;
        for (d, seg) in segs.iter().enumerate() {
            let next = node.children.get(*seg).or(node.wildcard.as_deref());
            match next {
                Some(c) => {
                    parent = Some(node);
                    node = c;
                }
                // Never swap a top-level segment: /admin is not "like" /api.
                None if d < 2 => return false,
                None => {
                    return parent
                        .is_some_and(|p| p.children.values().any(|s| !std::ptr::eq(s, node) && s.matches(&segs[d..])))
                }
            }
        }
        // A parent resource of learned endpoints (`/v2/models/a/versions/3` when
        // `/v2/models/a/versions/3/infer` was learned), below the top levels:
        // REST services nearly always serve those.
        let parent_resource = segs.len() >= 3 && !node.terminal && !node.children.is_empty();
        parent_resource
            || (segs.len() >= 2
                && !node.terminal
                && parent.is_some_and(|p| p.children.values().any(|s| !std::ptr::eq(s, node) && s.terminal)))
    }

    /// Learn a normalised path; writes its template into `out`.
    pub fn learn(&mut self, path: &str, out: &mut String) {
        out.clear();
        let mut node = self;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            out.push('/');
            node = if node.children.contains_key(seg) {
                out.push_str(seg);
                match node.children.get_mut(seg) {
                    Some(c) => c,
                    None => return,
                }
            } else if node.wildcard.is_some() || node.children.len() >= MAX_CHILDREN {
                out.push_str("{}");
                node.wildcard.get_or_insert_with(Box::default)
            } else {
                out.push_str(seg);
                node.children.entry(seg.to_owned()).or_default()
            };
        }
        if out.is_empty() {
            out.push('/');
        }
        node.terminal = true;
    }
}

/// All profiles of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profiles {
    /// Requests learned.
    pub requests: u64,
    /// Path templates.
    pub trie: PathTrie,
    /// Per endpoint template.
    pub endpoints: NameMap<EndpointProfile>,
    /// Templates seen in exactly one request (Good-Turing).
    pub endpoints_once: u64,
    /// Service-level fields: headers, inputs, client signals.
    pub service: EndpointProfile,
    /// Per numeric input (`model/input`).
    pub inputs: NameMap<InputProfile>,
}

/// What was learned about one numeric input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputProfile {
    /// Requests learned.
    pub n: u64,
    /// Smallest element seen.
    pub lo: f64,
    /// Largest element seen.
    pub hi: f64,
    /// Statistics of each leading element position.
    pub positions: Vec<Stat>,
    /// Statistics of the per-position deviation of whole requests.
    pub deviation: Stat,
    /// Joint statistics of the first k positions, for k = 2..=`JOINT`,
    /// over the requests with at least k elements (index k - 2).
    #[serde(default)]
    pub joint: Vec<Joint>,
    /// Shift subtracted before the joint sums (the first values learned).
    #[serde(default)]
    pub shift: Vec<f64>,
    /// Inverse of the ridged correlation matrix of the leading positions,
    /// computed at publication (empty until enough was learned).
    #[serde(default)]
    pub inv_corr: Vec<f64>,
    /// Nearest-neighbour memory of the first row.
    #[serde(default)]
    pub neighbours: crate::neighbours::Neighbours,
}

/// Sums of the first k positions over the requests with at least k elements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Joint {
    /// Requests.
    pub n: f64,
    /// Per position: sum of the shifted values.
    pub sum: Vec<f64>,
    /// Row-major k x k: sum of products of the shifted values.
    pub ss: Vec<f64>,
}

/// Leading positions of an input whose correlations are learned: a query
/// that breaks them (a uniform sweep of a box, a synthetic point) is far in
/// Mahalanobis distance though every element is in range.
pub const JOINT: usize = 8;
/// Ridge added to the correlation matrix's diagonal: bounds how much a
/// direction of (near) zero learned variance can amplify a deviation (20x).
pub const RIDGE: f64 = 0.05;

impl InputProfile {
    /// The learned element range, once there is enough data.
    pub fn range(&self) -> Option<(f64, f64)> {
        (self.n >= MIN_OBS).then_some((self.lo, self.hi))
    }

    fn learn(&mut self, t: &crate::features::oip::TensorObs, suspicious: bool) {
        if self.n == 0 {
            self.lo = t.min;
            self.hi = t.max;
        } else {
            self.lo = self.lo.min(t.min);
            self.hi = self.hi.max(t.max);
        }
        self.n += 1;
        if self.positions.len() < t.lead.len() {
            self.positions.resize(t.lead.len(), Stat::default());
        }
        for (s, v) in self.positions.iter_mut().zip(&t.lead) {
            s.push(f64::from(*v));
        }
        let len = t.lead.len().min(JOINT);
        if len >= 2 && t.lead[..len].iter().all(|v| v.is_finite()) {
            let mut x = [0.0; JOINT];
            for (i, v) in t.lead[..len].iter().enumerate() {
                if self.shift.len() <= i {
                    self.shift.push(f64::from(*v));
                }
                x[i] = f64::from(*v) - self.shift[i];
            }
            if self.joint.len() < len - 1 {
                self.joint.resize(len - 1, Joint::default());
            }
            for k in 2..=len {
                let j = &mut self.joint[k - 2];
                if j.sum.len() != k {
                    j.sum = vec![0.0; k];
                    j.ss = vec![0.0; k * k];
                }
                j.n += 1.0;
                for a in 0..k {
                    j.sum[a] += x[a];
                    for b in 0..k {
                        j.ss[a * k + b] += x[a] * x[b];
                    }
                }
            }
        }
        if let Some(d) = t.deviation {
            self.deviation.push(d);
        }
        // What "far" means is learned from ordinary queries only: an
        // extraction's unflagged queries would otherwise widen the distances
        // its later queries are measured against.
        if let Some(row) = t.lead.get(..usize::from(t.row)).filter(|r| r.len() >= 2 && !suspicious) {
            self.neighbours.learn(row, t.nearest);
        }
    }
}

impl InputProfile {
    /// Invert the ridged correlation matrix of the leading positions.
    fn refresh(&mut self) {
        self.neighbours.refresh(&self.positions);
        self.inv_corr.clear();
        // The longest prefix that at least half the requests have.
        let Some((k, joint)) = (2..=self.joint.len() + 1).rev().map(|k| (k, &self.joint[k - 2])).find(|(k, j)| {
            j.n >= (MIN_OBS as f64).max(0.5 * self.n as f64) && j.sum.len() == *k && j.ss.len() == k * k
        }) else {
            return;
        };
        let n = joint.n;
        let mut c = vec![0.0; k * k];
        for a in 0..k {
            for b in 0..k {
                c[a * k + b] = joint.ss[a * k + b] / n - (joint.sum[a] / n) * (joint.sum[b] / n);
            }
        }
        let mut r = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                let (a, b) = (c[i * k + i], c[j * k + j]);
                r[i * k + j] = if i == j {
                    1.0 + RIDGE
                } else if a > 1e-12 && b > 1e-12 {
                    (c[i * k + j] / (a * b).sqrt()).clamp(-1.0, 1.0)
                } else {
                    0.0
                };
            }
        }
        if let Some(inv) = invert(&mut r, k) {
            self.inv_corr = inv;
        }
    }
}

/// Gauss-Jordan inverse of a `k` x `k` symmetric positive definite matrix
/// (row-major); `None` when it is numerically singular.
fn invert(a: &mut [f64], k: usize) -> Option<Vec<f64>> {
    let mut inv = vec![0.0; k * k];
    for i in 0..k {
        inv[i * k + i] = 1.0;
    }
    for col in 0..k {
        let piv = (col..k).max_by(|x, y| a[x * k + col].abs().total_cmp(&a[y * k + col].abs()))?;
        if a[piv * k + col].abs() < 1e-9 {
            return None;
        }
        for j in 0..k {
            a.swap(col * k + j, piv * k + j);
            inv.swap(col * k + j, piv * k + j);
        }
        let d = a[col * k + col];
        for j in 0..k {
            a[col * k + j] /= d;
            inv[col * k + j] /= d;
        }
        for row in 0..k {
            if row != col {
                let f = a[row * k + col];
                if f != 0.0 {
                    for j in 0..k {
                        a[row * k + j] -= f * a[col * k + j];
                        inv[row * k + j] -= f * inv[col * k + j];
                    }
                }
            }
        }
    }
    inv.iter().all(|v| v.is_finite()).then_some(inv)
}

impl Profiles {
    /// Surprise (bits) of an unseen endpoint.
    pub fn unseen_endpoint(&self) -> f64 {
        if self.requests < MIN_OBS {
            return 0.0;
        }
        (-((self.endpoints_once as f64 + 1.0) / (self.requests as f64 + 2.0)).log2()).min(14.0)
    }

    /// Learn one sample.
    pub fn learn(&mut self, sample: &crate::features::Sample, template: &mut String) {
        self.requests += 1;
        self.trie.learn(&sample.path, template);
        self.service.learn_method(&sample.method);
        let full = self.endpoints.len() >= MAX_ENDPOINTS;
        // Look up before inserting: `entry` would need an owned key (a String
        // copy per learned sample) though the endpoint is nearly always known.
        if !full && !self.endpoints.contains_key(template.as_str()) {
            self.endpoints.insert(template.clone(), EndpointProfile::default());
        }
        let mut ep = self.endpoints.get_mut(template.as_str());
        if let Some(e) = ep.as_deref_mut() {
            e.learn_method(&sample.method);
        }
        for t in &sample.tensors {
            let full = self.inputs.len() >= MAX_ENDPOINTS;
            match self.inputs.get_mut(&t.input) {
                Some(p) => p.learn(t, sample.suspicious),
                None if !full => self.inputs.entry(t.input.clone()).or_default().learn(t, sample.suspicious),
                None => {}
            }
        }
        for o in &sample.fields {
            let name = sample.name(o);
            if service_level(o.kind) {
                if sample.suspicious && o.kind == FieldKind::Client {
                    continue;
                }
                self.service.learn_field(o, name);
            } else if let Some(e) = ep.as_deref_mut() {
                e.learn_field(o, name);
            }
        }
    }

    /// Recompute derived statistics before publishing.
    pub fn refresh(&mut self) {
        for p in self.inputs.values_mut() {
            p.refresh();
        }
        self.endpoints_once = self.endpoints.values().filter(|e| e.n == 1).count() as u64;
        for e in self.endpoints.values_mut() {
            e.refresh();
        }
        self.service.refresh();
    }
}

impl crate::features::oip::InputRanges for Profiles {
    fn input(&self, input: &str) -> Option<&InputProfile> {
        self.inputs.get(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Sample;

    #[test]
    fn top_values_are_kept_largest_first() {
        let mut p = FieldProfile::new();
        for v in [5.0, 1.0, 9.0, 3.0, 9.0, f64::NAN, 2.0] {
            let o = FieldObs {
                kind: FieldKind::Client,
                name: (0, 0),
                classes: 0,
                len: 1,
                num: Some(v),
                hash: 0,
                invariant: false,
            };
            p.learn(&o);
        }
        assert_eq!(p.top, [9.0, 9.0, 5.0]);
        let mut q = FieldProfile::new();
        q.learn(&FieldObs {
            kind: FieldKind::Client,
            name: (0, 0),
            classes: 0,
            len: 1,
            num: Some(4.0),
            hash: 0,
            invariant: false,
        });
        assert_eq!(q.top[0], 4.0);
    }

    /// A text value's observation: its character classes and length.
    fn text(t: &str) -> FieldObs {
        let classes = t.bytes().fold(0u64, |c, b| c | 1 << crate::features::byte_class(b));
        FieldObs {
            kind: FieldKind::Form,
            name: (0, 0),
            classes,
            len: t.len() as u32,
            num: None,
            hash: 7,
            invariant: false,
        }
    }

    #[test]
    fn a_bracket_pair_counts_as_its_rarer_half() {
        let mut p = FieldProfile::new();
        for i in 0..2000 {
            p.learn(&text(if i % 2 == 0 { "what is the weather today" } else { "book a table, please" }));
        }
        let both = p.surprise(&text("what is the weather (today)")).0;
        let open = p.surprise(&text("what is the weather (today")).0;
        assert!(both > 5.0 && (both - open).abs() < 1e-9, "pair {both}, opening alone {open}");
        // Two unrelated rare classes still add up.
        let two = p.surprise(&text("what is the weather; today?")).0;
        assert!(two > 1.8 * open, "{two} vs {open}");
    }

    #[test]
    fn rare_classes_in_a_field_full_of_them_are_not_independent() {
        // Passwords: one in ten has some odd character, each character rare.
        let odd = ["!", "#", "$", "*", "?", "&", "@", "~", "^", "+"];
        let (mut pwd, mut id) = (FieldProfile::new(), FieldProfile::new());
        for i in 0..3000 {
            let v = if i % 10 == 0 { format!("secret{}{}", odd[(i / 10) % 10], i) } else { format!("secret{i}") };
            pwd.learn(&text(&v));
            id.learn(&text(&format!("A{i}")));
        }
        assert!(pwd.rare_values > 200, "{}", pwd.rare_values);
        let one = pwd.surprise(&text("abc!1")).0;
        let two = pwd.surprise(&text("abc!#1")).0;
        // The second class costs its chance given that the value has an odd one.
        assert!(two > one && two < 2.0 * one - 2.0, "one {one}, two {two}");
        // Where odd characters never occur, each one counts in full.
        let (a, b) = (id.surprise(&text("A1'")).0, id.surprise(&text("A1' --")).0);
        assert!(b >= (2.5 * a).min(FIELD_CAP), "{a} {b}");
    }

    #[test]
    fn a_profile_from_before_top_values_judges_against_its_maximum() {
        let obs = |v| FieldObs {
            kind: FieldKind::Client,
            name: (0, 0),
            classes: 0,
            len: 3,
            num: Some(v),
            hash: 0,
            invariant: false,
        };
        let mut p = FieldProfile::new();
        for i in 0..500 {
            p.learn(&obs(f64::from(i % 10)));
        }
        assert_eq!(p.surprise(&obs(9.0)).0, 0.0);
        // As loaded from an older snapshot: no top values (serde default).
        p.top = [0.0; TOP];
        assert_eq!(p.surprise(&obs(9.0)).0, 0.0);
        assert!(p.surprise(&obs(30.0)).0 > 2.0);
    }

    #[test]
    fn nan_where_none_was_learned_weighs_more_than_an_unseen_value() {
        let obs = |v, invariant| FieldObs {
            kind: FieldKind::Tensor,
            name: (0, 0),
            classes: 0,
            len: 0,
            num: Some(v),
            hash: 0,
            invariant,
        };
        let (mut nonfinite, mut batch) = (FieldProfile::new(), FieldProfile::new());
        for _ in 0..20_000 {
            nonfinite.learn(&obs(0.0, true));
            batch.learn(&obs(1.0, false));
        }
        // 20000 requests without one NaN: log2(20002) bits, not the 10 of an unseen value.
        assert!((nonfinite.surprise(&obs(1.0, true)).0 - 14.29).abs() < 0.01);
        // Other constant fields moving (a batch of 2 where 1 was learned) keep the cap.
        assert_eq!(batch.surprise(&obs(2.0, false)).0, 10.0);
    }

    #[test]
    fn client_signals_are_judged_above_only() {
        let obs =
            |kind, v| FieldObs { kind, name: (0, 0), classes: 0, len: 3, num: Some(v), hash: 0, invariant: false };
        let (mut client, mut param) = (FieldProfile::new(), FieldProfile::new());
        for i in 0..500 {
            // A rate that every learned client kept within 0.99-1.002.
            let v = 0.99 + f64::from(i % 13) * 0.001;
            client.learn(&obs(FieldKind::Client, v));
            param.learn(&obs(FieldKind::Query, v));
        }
        // Quieter than any learned client: nothing. A parameter below its range: something.
        assert_eq!(client.surprise(&obs(FieldKind::Client, 0.0)).0, 0.0);
        assert!(param.surprise(&obs(FieldKind::Query, 0.0)).0 > 2.0);
        assert!(client.surprise(&obs(FieldKind::Client, 5.0)).0 > 2.0);
    }

    #[test]
    fn joint_deviation_sees_broken_correlations() {
        use crate::features::oip::{deviation, deviation_joint, TensorObs};
        // Two strongly correlated inputs (petal length and width, say).
        let mut p = InputProfile::default();
        for i in 0..500 {
            let a = f64::from(i % 50) / 10.0;
            let b = a * 0.4 + f64::from(i % 7) * 0.02;
            let lead = vec![a as f32, b as f32];
            p.learn(
                &TensorObs { input: "m/x".into(), lead, min: 0.0, max: 5.0, deviation: None, row: 0, nearest: None },
                false,
            );
        }
        p.refresh();
        assert_eq!(p.inv_corr.len(), 4);
        let typical = [2.5, 1.05];
        let broken = [0.5, 1.9]; // both in range, but against the correlation
        let j_typ = deviation_joint(&typical, &p.positions, &p.inv_corr).expect("learned");
        let j_brk = deviation_joint(&broken, &p.positions, &p.inv_corr).expect("learned");
        let z_brk = deviation(&broken, &p.positions).expect("learned");
        assert!(j_typ < 1.5, "{j_typ}");
        assert!(j_brk > 2.0 * z_brk && j_brk > 4.0, "joint {j_brk} vs per-position {z_brk}");
    }

    fn obs(s: &mut Sample, kind: FieldKind, name: &str, v: &[u8]) -> FieldObs {
        s.fields.clear();
        s.names.clear();
        s.push_field(kind, name, v, 0);
        s.fields[0].clone()
    }

    #[test]
    fn rare_characters_and_lengths_are_surprising() {
        let mut s = crate::score::empty_sample();
        let mut p = FieldProfile::new();
        for i in 0..500 {
            let o = obs(&mut s, FieldKind::Query, "id", format!("{}", 1000 + i).as_bytes());
            p.learn(&o);
        }
        let normal = obs(&mut s, FieldKind::Query, "id", b"1234");
        assert_eq!(p.surprise(&normal).0, 0.0);
        let sqli = obs(&mut s, FieldKind::Query, "id", b"1' OR '1'='1");
        let (bits, why) = p.surprise(&sqli);
        assert!(bits > 15.0, "{bits}");
        assert!(matches!(why, Some(FieldWhy::Chars { .. } | FieldWhy::NotNumeric)), "{why:?}");
        let big = obs(&mut s, FieldKind::Query, "id", b"4000000");
        let (bits, why) = p.surprise(&big);
        assert!(bits > 8.0, "{bits}");
        assert!(matches!(why, Some(FieldWhy::Range { .. })), "{why:?}");
    }

    #[test]
    fn unseen_categories_only_for_low_cardinality() {
        let mut s = crate::score::empty_sample();
        let mut p = FieldProfile::new();
        for i in 0..300 {
            let o = obs(&mut s, FieldKind::Header, "accept", ["json", "text"][i % 2].as_bytes());
            p.learn(&o);
        }
        let (bits, why) = p.surprise(&obs(&mut s, FieldKind::Header, "accept", b"xml!"));
        assert!(bits > 7.0 && why.is_some(), "{bits}");
        let mut free = FieldProfile::new();
        for i in 0..300 {
            free.learn(&obs(&mut s, FieldKind::Header, "q", format!("word{i}x").as_bytes()));
        }
        assert!(free.cats.is_none());
        assert_eq!(free.surprise(&obs(&mut s, FieldKind::Header, "q", b"wordzz")).0, 0.0);
    }

    #[test]
    fn trie_collapses_high_cardinality_segments() {
        let mut t = PathTrie::default();
        let mut out = String::new();
        for i in 0..100 {
            t.learn(&format!("/static/file{i}.css"), &mut out);
        }
        t.learn("/api/items", &mut out);
        assert!(t.lookup("/static/other.css", &mut out));
        assert_eq!(out, "/static/{}");
        assert!(t.lookup("/static/file3.css", &mut out));
        assert_eq!(out, "/static/file3.css");
        assert!(t.lookup("/api/items", &mut out));
        assert!(!t.lookup("/api/admin", &mut out));
        assert!(!t.lookup("/api", &mut out));
        t.learn("/v2/models/a/infer", &mut out);
        t.learn("/v2/models/b/infer", &mut out);
        t.learn("/v2/models/b/ready", &mut out);
        t.learn("/v2/models/b", &mut out);
        assert!(t.sibling_shape("/v2/models/a/ready"));
        assert!(t.sibling_shape("/v2/models/a"));
        assert!(!t.sibling_shape("/v2/models/zzz/infer"));
        assert!(!t.sibling_shape("/v2/admin"));
        assert!(!t.sibling_shape("/v2/models/a/infer/x"));
    }
}
