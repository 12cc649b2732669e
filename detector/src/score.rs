//! Scoring: one request against a [`Model`] and its client's window, to a
//! [`Verdict`] (score in [0, 1], band, ranked reasons) and a [`Sample`] the
//! caller hands back to learning when the request was judged normal.
//!
//! The raw score is the sum of the surprises (bits) of every family: the
//! endpoint, each field against its profile, fields that are usually there
//! but missing, the distance to the nearest k-means cluster, the client's
//! behaviour signals and its reputation. Bits add like log-probabilities of
//! independent evidence, so one very rare thing or several moderately rare
//! things both score high. `score = raw / (raw + 10)`.

use std::fmt;

use crate::features::client::{Clients, ORDINARY_CREDENTIALS, PRADA_MIN, SPREAD_MIN_REQUESTS};
use crate::features::request::{extract, Request};
use crate::features::{class_name, fnv1a, FieldKind, Sample, DIM, FEATURE_NAMES};
use crate::model::Model;
use crate::profile::{service_level, FieldWhy, FIELD_CAP, SPREAD_DISCOUNT};

/// Bits at which the score is 0.5.
pub const HALF_SCORE_BITS: f64 = 10.0;
/// Surprise of an unseen path that a sibling path has (bits).
pub const SIBLING_BITS: f64 = 5.0;
/// Most bits the request shape (k-means distance) adds: below the smallest
/// anomalous threshold, so the shape alone never flags a request.
pub const SHAPE_CAP: f64 = 7.0;
/// Most bits one query's distance to learned inputs adds: below the smallest
/// anomalous threshold, so it flags only with other evidence.
pub const NOVELTY_CAP: f64 = 6.0;
/// Learned observations, in multiples of 1/budget, that an invariant must
/// have held in before breaking it flags a request by itself: at the
/// budget's rate, ordinary traffic would have broken it once by then. (Three,
/// the rule of three's 95%, left NaN requests of a service trained on 2,000
/// requests unflagged in a probe, at no false positive saved anywhere.)
pub const BROKEN_BUDGETS: f64 = 1.0;

/// Whether `why` is a broken invariant that held long enough to decide on
/// its own at this budget (see [`BROKEN_BUDGETS`]); the learner refuses
/// such samples by the same rule.
pub(crate) fn settled_invariant_broken(why: &FieldWhy, fp_budget: f64) -> bool {
    matches!(why, FieldWhy::Broken { learned, .. } if *learned as f64 * fp_budget >= BROKEN_BUDGETS)
}
/// Most bits a client's reputation adds to one request.
pub const REPUTATION_CAP: f64 = 6.0;
/// Reputation (decayed mean of recent excess bits over the suspicious
/// threshold) from which a client's behaviour is not learned.
pub const SUSPECT_REPUTATION: f64 = 0.5;
/// Reasons kept in a verdict.
pub const MAX_REASONS: usize = 5;
/// PRADA's threshold on W (Juuti et al.): below it, queries look synthetic.
pub const PRADA_DELTA: f64 = 0.9;
/// How far below the lowest W learned from normal clients a client must fall.
pub const PRADA_MARGIN: f64 = 0.1;

/// Score band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Band {
    /// The model is still warming up: no verdict.
    WarmingUp,
    /// Below the suspicious threshold.
    Normal,
    /// Between the suspicious and the anomalous thresholds.
    Suspicious,
    /// At or above the anomalous threshold (the false-positive budget).
    Anomalous,
}

impl Band {
    /// Lower-case name (`normal`, `suspicious`, `anomalous`, `warming_up`).
    pub fn as_str(self) -> &'static str {
        match self {
            Band::WarmingUp => "warming_up",
            Band::Normal => "normal",
            Band::Suspicious => "suspicious",
            Band::Anomalous => "anomalous",
        }
    }
}

/// Feature family of a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Endpoint and method.
    Endpoint,
    /// Query, form and JSON parameters.
    Params,
    /// Headers and the path's characters.
    Headers,
    /// OIP v2 inputs.
    Inference,
    /// The request vector's distance to learned traffic (k-means).
    Shape,
    /// Per-client behaviour.
    Client,
}

/// What made a request unusual.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// The endpoint was never learned.
    UnseenEndpoint {
        /// Method.
        method: String,
        /// Normalised path.
        path: String,
        /// Whether a sibling has this shape (see `PathTrie::sibling_shape`).
        sibling: bool,
    },
    /// The method was never learned on this endpoint.
    UnseenMethod {
        /// Method.
        method: String,
        /// Endpoint template.
        template: String,
    },
    /// A field name never learned here.
    UnseenField,
    /// A field present in nearly every learned request is missing.
    Missing,
    /// A field's value was unusual.
    Field(FieldWhy),
    /// Far from every k-means cluster.
    Shape {
        /// Distance over the cluster's radius.
        ratio: f64,
        /// Feature contributing most to the distance.
        feature: &'static str,
        /// Its standardised deviation from the centroid.
        deviation: f64,
    },
    /// The query is far from every learned input.
    Novel {
        /// Its distance to the nearest learned input over the 99.9th
        /// percentile of ordinary queries' distances.
        beyond: f64,
    },
    /// PRADA: the client's nearest-query distances are not normal.
    Prada {
        /// Shapiro-Wilk W.
        w: f64,
    },
    /// The client's recent requests scored high.
    Reputation {
        /// Decayed mean raw score of its recent requests.
        reputation: f64,
    },
}

/// One reason, with its share of the raw score.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    /// Family.
    pub family: Family,
    /// Field kind, when about a field.
    pub kind: Option<FieldKind>,
    /// Field or feature name.
    pub name: String,
    /// Bits this reason added to the raw score.
    pub contribution: f64,
    /// Details.
    pub why: Why,
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1e6 || (v != 0.0 && v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn field_label(kind: Option<FieldKind>, name: &str) -> String {
    match kind {
        Some(FieldKind::Tensor) => {
            let (input, stat) = name.rsplit_once('.').unwrap_or((name, ""));
            if stat.is_empty() {
                format!("input '{input}'")
            } else {
                format!("input '{input}' {stat}")
            }
        }
        Some(FieldKind::Header) if name == ":path" => "the path".to_string(),
        Some(FieldKind::Header) if name == ":path#ext" => "the path's file extension".to_string(),
        Some(k) => format!("{} '{name}'", k.noun()),
        None => format!("'{name}'"),
    }
}

fn client_sentence(name: &str, v: f64, hi: f64) -> Option<String> {
    let times =
        if hi > 0.0 { format!(", {:.0}x the highest learned ({})", v / hi, fmt_num(hi)) } else { String::new() };
    Some(match name {
        "rate1s" | "rate10s" | "rate60s" => format!("client request rate {} per {}{times}: flood", fmt_num(v), &name[4..]),
        "errors" => format!("{:.0}% of the client's recent requests failed{times}: probing", v * 100.0),
        "endpoints" => format!("client touched {v:.0} distinct endpoints in its last 16 requests{times}: scanning"),
        "duplicates" => format!("client repeated the same request {v:.0} times in its last 16{times}"),
        "burst" => format!("client sends {v:.0}x its own usual request rate{times}: flood"),
        "burst1" => format!("client sends {v:.0}x its own usual request rate over a second{times}: flood"),
        "burst60" => format!("client sends {v:.0}x its own usual request rate over a minute{times}: flood"),
        // Recorded beyond the ordinary two (see `Signals::push`).
        "credentials" => format!(
            "client used {:.0} different credentials in its last 16 requests (ordinary clients: up to {:.0}): \
             credential stuffing",
            v + ORDINARY_CREDENTIALS,
            hi + ORDINARY_CREDENTIALS
        ),
        "sweep" => format!(
            "client queries hold {:.0}% of the input fixed and vary the rest{times}: possible model extraction (grid sweep)",
            v * 100.0
        ),
        "rephrased" => format!(
            "client sent {:.0} texts in a row, each nearly the same as the one before{times}: \
             possible adversarial word search or membership inference",
            v + 1.0
        ),
        "chain" => format!(
            "client sends a chain of {v:.0} tiny perturbations of one input{times}: possible adversarial search"
        ),
        n if n.starts_with("spread") => {
            format!("client queries look uniformly spread: possible model extraction (mean deviation {v:.1} sd{times})")
        }
        n if n.starts_with("novel") => {
            // Recorded as odds (see `Signals::novel`): back to shares.
            let share = |odds: f64| 100.0 * odds / (1.0 + odds);
            let ordinary = format!("up to {:.0}%", share(hi));
            format!(
                "{:.0}% of the client's recent queries lie far from every learned input (ordinary clients: {ordinary}): \
                 possible model extraction",
                share(v)
            )
        }
        "prada" => format!("client queries look uniformly spread: possible model extraction (PRADA W = {v:.2})"),
        _ => return None,
    })
}

impl Reason {
    /// A sentence a security engineer understands.
    pub fn message(&self) -> String {
        let label = field_label(self.kind, &self.name);
        match &self.why {
            Why::UnseenEndpoint { method, path, sibling: false } => format!("unseen endpoint {method} {path}"),
            Why::UnseenEndpoint { method, path, sibling: true } => {
                format!("unseen endpoint {method} {path} (known for a sibling path)")
            }
            Why::UnseenMethod { method, template } => format!("method {method} never seen on {template}"),
            Why::UnseenField => format!("unseen {}", label),
            Why::Missing => format!("usual {label} missing"),
            Why::Field(FieldWhy::Chars { classes, learned }) => {
                let mut names = Vec::new();
                let mut bits = *classes;
                while bits != 0 && names.len() < 6 {
                    let b = bits.trailing_zeros();
                    bits &= bits - 1;
                    names.push(class_name(b));
                }
                format!("unusual characters {} in {label} (rare in its {learned} learned values)", names.join(" "))
            }
            Why::Field(FieldWhy::Long { len, max }) => {
                format!("{label} is {len} bytes long, {:.0}x the longest learned ({max:.0})", f64::from(*len) / max.max(1.0))
            }
            Why::Field(FieldWhy::Short { len, min }) => format!("{label} is {len} bytes long, shorter than ever learned ({min:.0})"),
            Why::Field(FieldWhy::Range { value, lo, hi }) => {
                if self.kind == Some(FieldKind::Client) {
                    if let Some(s) = client_sentence(&self.name, *value, *hi) {
                        return s;
                    }
                }
                if *value > *hi && *hi > 0.0 && value / hi >= 2.0 {
                    format!("{label} {:.0}x above the learned range ({} to {})", value / hi, fmt_num(*lo), fmt_num(*hi))
                } else if *value > *hi {
                    format!("{label} {} above the learned range ({} to {})", fmt_num(*value), fmt_num(*lo), fmt_num(*hi))
                } else {
                    format!("{label} {} below the learned range ({} to {})", fmt_num(*value), fmt_num(*lo), fmt_num(*hi))
                }
            }
            Why::Field(FieldWhy::NotNumeric) => format!("non-numeric value in numeric {label}"),
            Why::Field(FieldWhy::UnseenValue) => format!("unseen value of {label}"),
            Why::Field(FieldWhy::Broken { value, learned }) => match self.name.rsplit_once('.') {
                Some((input, "nonfinite")) => format!(
                    "{} NaN/Inf values in input '{input}' (none in {learned} learned requests)",
                    fmt_num(value.unwrap_or(0.0))
                ),
                Some((model, "request")) => {
                    format!("inference request to model '{model}' does not parse (all {learned} learned ones did)")
                }
                _ => format!("{label} broke what all {learned} learned requests kept"),
            },
            Why::Shape { ratio, feature, deviation } => format!(
                "request shape unlike learned traffic ({ratio:.1}x the nearest cluster's radius; {feature} {deviation:+.1} sd)"
            ),
            Why::Novel { beyond } if *beyond > 1.0 => format!(
                "{label} lies far from every learned input ({beyond:.1}x the distance 99.9% of ordinary queries stay within)"
            ),
            Why::Novel { .. } => format!("{label} lies farther from every learned input than 99% of ordinary queries"),
            Why::Prada { w } => {
                format!("client queries look uniformly spread: possible model extraction (PRADA W = {w:.2})")
            }
            Why::Reputation { reputation } => {
                format!("client's recent requests were anomalous (mean surprise {reputation:.1} bits)")
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// The detector's judgement of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Anomaly score in [0, 1] (monotone in `raw`).
    pub score: f64,
    /// Raw score: surprise in bits (the request's own evidence plus its
    /// client's reputation).
    pub raw: f64,
    /// The request's own evidence, without reputation: the band is decided on it.
    pub own: f64,
    /// Band from the calibrated thresholds.
    pub band: Band,
    /// Top reasons, largest contribution first.
    pub reasons: Vec<Reason>,
    /// Version of the model that judged.
    pub model_version: u64,
}

impl Verdict {
    /// Whether the request was flagged (band anomalous).
    pub fn flagged(&self) -> bool {
        self.band == Band::Anomalous
    }
}

/// A verdict with the sample to hand back to learning.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The judgement.
    pub verdict: Verdict,
    /// What the request looked like.
    pub sample: Sample,
}

/// A sample with nothing in it.
pub fn empty_sample() -> Sample {
    Sample {
        ts: 0.0,
        method: String::new(),
        path: String::new(),
        vector: [0.0; DIM],
        // Room for an OIP request's fields (about 35, 600 bytes of names):
        // growing past the old 24 fields and 256 bytes reallocated both.
        names: String::with_capacity(640),
        fields: Vec::with_capacity(48),
        tensors: Vec::new(),
        raw: 0.0,
        flagged: false,
        warming_up: true,
        suspicious: false,
        new_endpoint: false,
        model_samples: 0,
    }
}

struct Acc {
    raw: f64,
    reasons: Vec<Reason>,
}

/// Surprises of one input's statistics, combined as max + 1/4 of the rest.
#[derive(Default)]
struct Group {
    key: String,
    items: Vec<(f64, Reason)>,
}

impl Group {
    fn flush(&mut self, acc: &mut Acc) {
        if self.items.is_empty() {
            return;
        }
        let sum: f64 = self.items.iter().map(|(b, _)| b).sum();
        let max = self.items.iter().map(|(b, _)| *b).fold(0.0, f64::max);
        let factor = (max + 0.25 * (sum - max)) / sum;
        for (bits, reason) in self.items.drain(..) {
            acc.add(bits * factor, || reason);
        }
    }
}

impl Acc {
    fn add(&mut self, bits: f64, make: impl FnOnce() -> Reason) {
        if bits.is_nan() || bits <= 0.0 {
            return;
        }
        self.raw += bits;
        if bits >= 1.0 {
            let mut r = make();
            r.contribution = bits;
            self.reasons.push(r);
        }
    }
}

/// Score one request. Updates the client's window in `clients` (rate,
/// history, reputation) whatever the verdict.
pub fn score(model: &Model, clients: &mut Clients, req: &Request<'_>) -> Scored {
    let mut sample = empty_sample();
    let mut scratch = Vec::new();
    let mut extra = extract(req, &model.profiles, &mut sample, &mut scratch);
    let profiles = &model.profiles;
    let mut acc = Acc { raw: 0.0, reasons: Vec::new() };

    // Endpoint.
    let mut template = String::with_capacity(sample.path.len() + 8);
    let known = profiles.trie.lookup(&sample.path, &mut template);
    let endpoint = if known { profiles.endpoints.get(template.as_str()) } else { None };

    // Client window.
    extra.endpoint =
        (fnv1a(sample.method.as_bytes()) ^ fnv1a(if known { &template } else { &sample.path }.as_bytes())) as u32;
    let signals = clients.observe_request(req.client, req.ts, &extra);
    signals.push(&mut sample);
    // Spread of unseen values and routes: counted only from returning clients.
    let returning = signals.requests >= SPREAD_MIN_REQUESTS;

    match endpoint {
        None => {
            sample.new_endpoint = true;
            let sibling = profiles.trie.sibling_shape(&sample.path);
            let bits = if sibling { profiles.unseen_endpoint().min(SIBLING_BITS) } else { profiles.unseen_endpoint() };
            // A new page that many clients open is the site growing (as for
            // unseen values, `FieldProfile::surprise_seen_by`); a scanner's
            // wordlist from many addresses still has the backup and config
            // extensions no page of the site has (`:path#ext`).
            let key = fnv1a(sample.path.as_bytes()).rotate_left(29) ^ 0x656e64;
            let seen_by = clients.novel_value(key, returning.then_some(req.client));
            let bits = (bits - SPREAD_DISCOUNT * f64::from(seen_by).log2()).max(0.0);
            acc.add(bits, || Reason {
                family: Family::Endpoint,
                kind: None,
                name: sample.path.clone(),
                contribution: 0.0,
                why: Why::UnseenEndpoint { method: sample.method.clone(), path: sample.path.clone(), sibling },
            })
        }
        Some(ep) => acc.add(ep.method_surprise(&sample.method), || Reason {
            family: Family::Endpoint,
            kind: None,
            name: template.clone(),
            contribution: 0.0,
            why: Why::UnseenMethod { method: sample.method.clone(), template: template.clone() },
        }),
    }
    // Fields. The statistics of one input (min, max, mean, L2, ...) move together,
    // and so do the elements of one BYTES input: each input counts its strongest
    // surprise plus a quarter of the rest.
    let mut group = Group::default();
    let mut required_seen = [0usize; 2];
    // Whether a broken invariant held often enough to be rarer than the budget.
    let mut decisive = false;
    for o in &sample.fields {
        let name = sample.name(o);
        let owner = if service_level(o.kind) { Some(&profiles.service) } else { endpoint };
        let Some(owner) = owner else { continue };
        let family = family_of(o.kind);
        let key = match o.kind {
            FieldKind::Tensor => name.rsplit_once('.').map_or(name, |(a, _)| a),
            FieldKind::TensorBytes => name,
            _ => "",
        };
        // Most fields are not grouped (empty key): skip the string comparison.
        if (key.is_empty() != group.key.is_empty()) || (!key.is_empty() && key != group.key) {
            group.flush(&mut acc);
            group.key.clear();
            group.key.push_str(key);
        }
        if o.kind == FieldKind::Client && name == "prada" {
            continue; // judged below, against PRADA's own threshold
        }
        let (bits, why) = match owner.field(o.kind, name) {
            // An unseen endpoint necessarily has an unseen path: counted once, above.
            Some(p) if endpoint.is_none() && o.kind == FieldKind::Header && name == ":path" => match p.surprise(o) {
                (_, Some(FieldWhy::UnseenValue)) => continue,
                (bits, Some(why)) => (bits, Why::Field(why)),
                _ => continue,
            },
            Some(p) => {
                if p.required {
                    required_seen[usize::from(service_level(o.kind))] += 1;
                }
                // How many clients sent this value lately, if unseen (one table
                // for the detector: it is evidence of spread, not learning).
                let seen_by = || {
                    clients
                        .novel_value(fnv1a(name.as_bytes()) ^ o.hash.rotate_left(17), returning.then_some(req.client))
                };
                match p.surprise_seen_by(o, seen_by) {
                    (bits, Some(why)) => (bits, Why::Field(why)),
                    _ => continue,
                }
            }
            None if o.kind != FieldKind::Client => (owner.unseen_field(o.kind), Why::UnseenField),
            None => continue,
        };
        if let Why::Field(w) = &why {
            decisive |= settled_invariant_broken(w, model.fp_budget);
        }
        let make = || Reason { family, kind: Some(o.kind), name: name.to_string(), contribution: 0.0, why };
        if group.key.is_empty() {
            acc.add(bits, make);
        } else if bits > 0.0 {
            group.items.push((bits, make()));
        }
    }
    group.flush(&mut acc);

    // Usual fields that are missing. The field loop counted the required ones
    // it saw; only when a count falls short are names compared.
    let owners = [(endpoint, required_seen[0]), (Some(&profiles.service), required_seen[1])];
    for (owner, seen) in owners {
        let Some(owner) = owner else { continue };
        if seen == owner.required.len() {
            continue;
        }
        for (kind, name) in &owner.required {
            if sample.fields.iter().any(|o| o.kind == *kind && sample.name(o) == name) {
                continue;
            }
            let present = owner.field(*kind, name).map_or(0, |p| p.n) as f64;
            let n = owner.n as f64;
            let p_missing = ((n - present).max(0.0) + 0.5) / (n + 1.0);
            acc.add((-p_missing.log2()).min(8.0), || Reason {
                family: family_of(*kind),
                kind: Some(*kind),
                name: name.clone(),
                contribution: 0.0,
                why: Why::Missing,
            });
        }
    }

    // Shape: distance to the nearest cluster.
    if let Some((c, d, radius, z)) = model.clusters.nearest(&sample.vector) {
        let ratio = d / radius.max(1e-6);
        if ratio > 1.0 {
            // The shape is a weak, combined signal (k-means in a 16-number
            // space): it ranks, and flags only together with other evidence.
            let bits = (4.0 * ratio.log2()).min(SHAPE_CAP);
            acc.add(bits, || {
                let centroid = &model.clusters.centroids[c];
                let (j, dev) = (0..DIM).map(|j| (j, z[j] - centroid[j])).fold((0, 0.0f64), |b, x| {
                    if x.1.abs() > b.1.abs() {
                        x
                    } else {
                        b
                    }
                });
                Reason {
                    family: Family::Shape,
                    kind: None,
                    name: FEATURE_NAMES[j].to_string(),
                    contribution: 0.0,
                    why: Why::Shape { ratio, feature: FEATURE_NAMES[j], deviation: dev },
                }
            });
        }
    }

    // A query farther from learned inputs than ordinary queries get (beyond
    // the 99th percentile of a mature histogram, fully beyond the 99.9th):
    // one extraction query can show that before its client has a share of
    // far queries.
    if let Some(n) = extra.novelty.filter(|n| n.rare > 0.0) {
        let bits = if n.beyond > 1.0 { 3.0 + 4.0 * n.beyond.log2() } else { 3.0 * n.rare };
        acc.add(bits.min(NOVELTY_CAP), || Reason {
            family: Family::Inference,
            kind: Some(FieldKind::Tensor),
            name: sample.tensors.first().map_or_else(String::new, |t| t.input.clone()),
            contribution: 0.0,
            why: Why::Novel { beyond: n.beyond },
        });
    }

    // PRADA: the published threshold, unless normal clients go lower.
    if let Some(w) = signals.prada {
        let learned_min =
            profiles.service.field(FieldKind::Client, "prada").filter(|p| p.num.n >= 50).map(|p| p.num.min);
        // Normal clients' W wanders below its learned minimum now and then: keep a margin.
        let delta = learned_min.map_or(PRADA_DELTA, |m| (m - PRADA_MARGIN).min(PRADA_DELTA));
        if w < delta && signals.requests as usize >= PRADA_MIN {
            acc.add((6.0 + 40.0 * (delta - w)).min(FIELD_CAP), || Reason {
                family: Family::Client,
                kind: Some(FieldKind::Client),
                name: "prada".into(),
                contribution: 0.0,
                why: Why::Prada { w },
            });
        }
    }

    // A broken invariant is flagged whatever else the request holds once it
    // held in 1/budget learned requests (see `BROKEN_BUDGETS`). Its own bits,
    // log2 of the count, stay below the anomalous threshold of a busy
    // service; yet no model computes on a NaN or an unreadable body. The lift
    // is the broken invariant's, so its reason carries it.
    let lift = if decisive && model.ready { (model.thresholds.anomalous - acc.raw).max(0.0) } else { 0.0 };
    if lift > 0.0 {
        acc.raw += lift;
        let held = |r: &Reason| match r.why {
            Why::Field(FieldWhy::Broken { learned, .. }) => learned,
            _ => 0,
        };
        if let Some(r) = acc.reasons.iter_mut().max_by_key(|r| held(r)) {
            r.contribution += lift;
        }
    }
    let own = acc.raw;

    // Reputation: a quarter of the client's recent mean surprise beyond the
    // suspicious threshold (ordinary noise builds none).
    // It raises the score (ranking, alerts) but never the band: a request is
    // flagged on its own evidence, so a client's ordinary requests are not
    // blocked for its odd ones.
    let rep = (0.25 * signals.reputation).min(REPUTATION_CAP);
    acc.add(rep, || Reason {
        family: Family::Client,
        kind: None,
        name: "reputation".into(),
        contribution: 0.0,
        why: Why::Reputation { reputation: signals.reputation },
    });

    let raw = acc.raw;
    let excess = if model.ready { own - model.thresholds.suspicious } else { 0.0 };
    let band = if !model.ready {
        Band::WarmingUp
    } else if own >= model.thresholds.anomalous {
        Band::Anomalous
    } else if own >= model.thresholds.suspicious {
        Band::Suspicious
    } else {
        Band::Normal
    };
    clients.observe_verdict(req.client, excess.max(0.0), band == Band::Anomalous);
    let mut reasons = acc.reasons;
    reasons.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
    reasons.truncate(MAX_REASONS);
    sample.raw = own;
    sample.flagged = band == Band::Anomalous;
    sample.warming_up = band == Band::WarmingUp;
    // A client with a recent record does not teach what ordinary clients do
    // either: an extraction that is flagged one request in three would
    // otherwise lift the learned share of far queries with the other two.
    sample.suspicious = band >= Band::Suspicious || signals.reputation >= SUSPECT_REPUTATION;
    sample.model_samples = model.samples;
    Scored {
        verdict: Verdict {
            score: raw / (raw + HALF_SCORE_BITS),
            raw,
            own,
            band,
            reasons,
            model_version: model.version,
        },
        sample,
    }
}

fn family_of(kind: FieldKind) -> Family {
    match kind {
        FieldKind::Query | FieldKind::Form | FieldKind::Json => Family::Params,
        FieldKind::Header => Family::Headers,
        FieldKind::Tensor | FieldKind::TensorBytes => Family::Inference,
        FieldKind::Client => Family::Client,
    }
}
