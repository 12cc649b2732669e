//! The client family: per-client sliding windows, keyed by the client string
//! (peer identity, JWT subject or IP), in a bounded LRU table.
//!
//! Per client it keeps decayed request counts (1 s and 10 s), the error flags
//! of the last 32 responses, the last 16 endpoints and request fingerprints,
//! a reputation (decayed mean of its recent anomaly scores), and for
//! inference clients the sketches of its last 16 tensors to one model, the
//! current chain of tiny perturbations, the last 32 nearest-query
//! distances for the PRADA test, and per model how far its queries lie from
//! learned inputs (mean deviation and share of novel queries, see
//! [`crate::neighbours`]); for clients that send text, the words of the last
//! text and how many texts in a row were nearly the same (see [`super::text`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::oip::SKETCH;
use super::request::Extra;
use super::text::TextSet;
use super::{fnv1a, FieldKind, Sample};
use crate::shapiro;

/// Sketches kept per client.
const SKETCHES: usize = 16;
/// Nearest-query distances kept per client (PRADA window).
const DISTANCES: usize = 32;
/// Endpoints and fingerprints kept per client.
const RECENT: usize = 16;
/// Fewest distances before W is computed.
pub const PRADA_MIN: usize = 20;
/// Relative step below which two successive queries count as a perturbation.
pub const PERTURBATION: f64 = 0.01;
/// Distinct credentials in a client's last 16 requests that are never
/// unusual (a token and its refresh).
pub const ORDINARY_CREDENTIALS: f64 = 2.0;
/// Seconds a request's timestamp may lie before its client's latest one
/// (requests finishing out of order) before the client's clock is taken to
/// have been reset (see [`ClientState::restart_clock`]).
pub const CLOCK_BACK: f64 = 1.0;
/// Seconds of silence after which a client's next request starts a new
/// session (a fresh login, a new cookie): distinct credentials are counted
/// within a session.
pub const SESSION_GAP: f64 = 600.0;
/// Share of all requests above which a client is a gateway (see [`Signals::gateway`]).
pub const GATEWAY_SHARE: f64 = 0.3;
/// Requests seen in total before any client can be called a gateway.
pub const GATEWAY_MIN_TOTAL: u64 = 1000;

/// One client's window. Fixed size: see the size test.
#[derive(Debug, Clone)]
pub struct ClientState {
    last_ts: f64,
    rate1: f32,
    rate10: f32,
    /// Highest 10 s rate of this client in earlier 30 s blocks (its own normal).
    rate_peak: f32,
    /// Highest 10 s rate in the current block, folded into the peak when it ends.
    rate_block: f32,
    block_start: f64,
    /// Highest 1 s rate in earlier 30 s blocks, and in the current one
    /// (the same blocks as the 10 s peak).
    rate1_peak: f32,
    rate1_block: f32,
    /// Decayed request count, 60 s time constant, and its own peak over
    /// earlier 120 s blocks (the longer-window baseline).
    rate60: f32,
    rate60_peak: f32,
    rate60_block: f32,
    block60_start: f64,
    sweep: f32,
    /// Per model (two most used recently): how its queries deviate.
    spread_models: [Spread; 2],
    reputation: f32,
    requests: u32,
    resp_bits: u32,
    resp_n: u8,
    recent_pos: u8,
    sk_n: u8,
    sk_pos: u8,
    md_n: u8,
    md_pos: u8,
    chain: u16,
    /// Texts in a row nearly the same as the one before.
    rephrased: u16,
    /// The texts of the client's last request with text.
    text: TextSet,
    /// Whether the client's last scored request was flagged: its response's
    /// error is then already explained and does not count as probing.
    last_flagged: bool,
    prada: f32,
    endpoints: [u32; RECENT],
    fingerprints: [u64; RECENT],
    credentials: [u32; RECENT],
    model: u64,
    sketch_models: [u32; SKETCHES],
    sketches: [[f32; SKETCH]; SKETCHES],
    distances: [f32; DISTANCES],
}

impl ClientState {
    fn new(ts: f64) -> Self {
        ClientState {
            last_ts: ts,
            rate1: 0.0,
            rate10: 0.0,
            rate_peak: 0.0,
            rate_block: 0.0,
            block_start: ts,
            rate1_peak: 0.0,
            rate1_block: 0.0,
            rate60: 0.0,
            rate60_peak: 0.0,
            rate60_block: 0.0,
            block60_start: ts,
            sweep: 0.0,
            spread_models: [Spread::default(); 2],
            reputation: 0.0,
            requests: 0,
            resp_bits: 0,
            resp_n: 0,
            recent_pos: 0,
            sk_n: 0,
            sk_pos: 0,
            md_n: 0,
            md_pos: 0,
            chain: 0,
            rephrased: 0,
            text: TextSet::default(),
            last_flagged: false,
            prada: f32::NAN,
            endpoints: [0; RECENT],
            fingerprints: [0; RECENT],
            credentials: [0; RECENT],
            model: 0,
            sketch_models: [0; SKETCHES],
            sketches: [[0.0; SKETCH]; SKETCHES],
            distances: [0.0; DISTANCES],
        }
    }

    /// Time went back by more than [`CLOCK_BACK`]: another recording or a
    /// reset clock, not requests arriving out of order. The time windows start
    /// again from `ts` (otherwise every request until the clock caught up
    /// would count with no decay: a flood from every client); what the client
    /// sent and its learned peaks stay.
    fn restart_clock(&mut self, ts: f64) {
        self.last_ts = ts;
        self.rate1 = 0.0;
        self.rate10 = 0.0;
        self.rate60 = 0.0;
        self.rate_block = 0.0;
        self.rate1_block = 0.0;
        self.rate60_block = 0.0;
        self.block_start = ts;
        self.block60_start = ts;
    }

    /// The client's reputation: decayed mean of its recent raw scores.
    pub fn reputation(&self) -> f64 {
        f64::from(self.reputation)
    }

    /// Requests seen from this client (saturating).
    pub fn requests(&self) -> u32 {
        self.requests
    }
}

/// How one client's queries to one model deviate from learned inputs.
#[derive(Debug, Clone, Copy, Default)]
struct Spread {
    /// Hash of the model name (low 32 bits).
    model: u32,
    /// Decayed mean of the input deviation, and how many were averaged.
    deviation: f32,
    deviations: u16,
    /// Decayed share of queries far from every learned input, and how many.
    far: f32,
    novelties: u16,
}

/// Signals of one request in its client's window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Decayed request count, 1 s time constant (about requests per second).
    pub rate1: f64,
    /// Decayed request count, 10 s time constant, capped at ten times the
    /// 1 s count so that it falls as soon as the client slows down (the
    /// ordinary requests after a burst are not blamed for it).
    pub rate10: f64,
    /// Decayed request count, 60 s time constant, capped likewise at six
    /// times the capped 10 s count.
    pub rate60: f64,
    /// The client's 60 s rate over its own peak 60 s rate in earlier 120 s
    /// blocks, after 100 requests (a sustained flood within short peaks).
    pub burst60: Option<f64>,
    /// The client's 10 s rate over its own peak 10 s rate in earlier 30 s
    /// blocks, after 100 requests.
    pub burst: Option<f64>,
    /// The client's 1 s rate over its own peak 1 s rate in earlier 30 s
    /// blocks, after 100 requests: rises within a few requests of a flood.
    pub burst1: Option<f64>,
    /// Decayed share of input elements held exactly fixed between successive
    /// queries that are not duplicates (a grid sweep varies a few at a time).
    pub sweep: Option<f64>,
    /// Distinct credentials among the last 16 requests that carried one.
    pub credentials: f64,
    /// Error share of the last responses (at least 8 seen).
    pub errors: Option<f64>,
    /// Distinct endpoints among the last 16 requests.
    pub endpoints: f64,
    /// Identical requests among the last 16 (requests with a body, spacing aside).
    pub duplicates: f64,
    /// Length of the current chain of tiny perturbations.
    pub chain: f64,
    /// How many requests with text in a row, up to this one, were each nearly
    /// the same as the one before (see [`TextSet::near`]); for requests with
    /// text only.
    pub rephrased: Option<f64>,
    /// PRADA W over the client's nearest-query distances.
    pub prada: Option<f64>,
    /// Decayed mean of the client's input deviations (after 8 inputs).
    pub spread: Option<f64>,
    /// Decayed share of the client's queries to this model that lie far from
    /// every learned input (after 8), weighed by how novel this one is, as
    /// odds (share / (1 - share)); only above a tenth.
    pub novel: Option<f64>,
    /// Reputation before this request.
    pub reputation: f64,
    /// Requests seen from this client, this one included.
    pub requests: u32,
    /// Whether this client carries more than [`GATEWAY_SHARE`] of all
    /// requests seen (after [`GATEWAY_MIN_TOTAL`]): an ingress gateway, a
    /// shared proxy, or a dataset without client keys. Its "behaviour" is
    /// the whole population's: an attacker's failures or scans would be
    /// blamed on every user behind it. Its requests are judged on their own,
    /// and every other signal here is left empty.
    pub gateway: bool,
    /// Whether the timestamps seen so far differ at all. If every request
    /// carried the same one, the rates and bursts are counts of requests
    /// with no time to decay over, and are left out.
    pub timed: bool,
}

impl Signals {
    /// Record the signals as [`FieldKind::Client`] observations (none for a gateway).
    pub fn push(&self, sample: &mut Sample) {
        if self.gateway {
            return;
        }
        if self.timed {
            sample.push_num(FieldKind::Client, "rate1s", self.rate1);
            sample.push_num(FieldKind::Client, "rate10s", self.rate10);
            sample.push_num(FieldKind::Client, "rate60s", self.rate60);
            if let Some(b) = self.burst {
                sample.push_num(FieldKind::Client, "burst", b);
            }
            if let Some(b) = self.burst60 {
                sample.push_num(FieldKind::Client, "burst60", b);
            }
            if let Some(b) = self.burst1 {
                sample.push_num(FieldKind::Client, "burst1", b);
            }
        }
        if let Some(w) = self.sweep {
            sample.push_num(FieldKind::Client, "sweep", w);
        }
        // Beyond two: a token refreshed within 16 requests is ordinary, however
        // few clients of the learned period happened to refresh one.
        sample.push_num(FieldKind::Client, "credentials", (self.credentials - ORDINARY_CREDENTIALS).max(0.0));
        if let Some(e) = self.errors {
            sample.push_num(FieldKind::Client, "errors", e);
        }
        sample.push_num(FieldKind::Client, "endpoints", self.endpoints);
        sample.push_num(FieldKind::Client, "duplicates", self.duplicates);
        sample.push_num(FieldKind::Client, "chain", self.chain);
        if let Some(r) = self.rephrased {
            sample.push_num(FieldKind::Client, "rephrased", r);
        }
        if let Some(w) = self.prada {
            sample.push_num(FieldKind::Client, "prada", w);
        }
        // Per input: inputs differ in how far their ordinary clients spread.
        // (`String::new` allocates nothing until a name is written.)
        let mut name = String::new();
        for (prefix, v) in [("spread:", self.spread), ("novel:", self.novel)] {
            if let Some(v) = v {
                name.clear();
                name.push_str(prefix);
                name.push_str(sample.tensors.first().map_or("", |t| t.input.as_str()));
                sample.push_num(FieldKind::Client, &name, v);
            }
        }
    }
}

/// What the client tables of one detector share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Requests seen, for the gateway share.
    total: AtomicU64,
    /// Values never learned, with the clients that sent them.
    novel: Mutex<NovelValues>,
}

/// Requests a client must have sent to count towards the spread of an unseen value.
pub const SPREAD_MIN_REQUESTS: u32 = 3;
/// Distinct clients remembered per unseen value.
pub const SPREAD_CLIENTS: usize = 4;
/// Unseen values remembered; the table starts over when full.
const NOVEL_VALUES: usize = 4096;

/// Unseen values of categorical fields (keyed by field and value) and up to
/// [`SPREAD_CLIENTS`] distinct clients that sent each (tags: low 32 bits of
/// the client hash, never 0).
#[derive(Debug, Default)]
struct NovelValues {
    seen: HashMap<u64, [u32; SPREAD_CLIENTS], foldhash::fast::RandomState>,
}

impl NovelValues {
    /// Adds `tag` (if any) to `key`'s clients; returns how many it has, at least 1.
    fn note(&mut self, key: u64, tag: Option<u32>) -> u32 {
        if self.seen.len() >= NOVEL_VALUES && !self.seen.contains_key(&key) {
            self.seen.clear();
        }
        let tags = self.seen.entry(key).or_default();
        if let Some(tag) = tag.filter(|t| !tags.contains(t)) {
            if let Some(free) = tags.iter_mut().find(|t| **t == 0) {
                *free = tag;
            }
        }
        (tags.iter().filter(|t| **t != 0).count() as u32).max(1)
    }
}

#[derive(Debug)]
struct Entry {
    key: u64,
    prev: u32,
    next: u32,
    state: ClientState,
}

const NIL: u32 = u32::MAX;

/// Per-client windows: a bounded LRU table (least recently seen client is
/// evicted first). Clients are keyed by a 64-bit FNV-1a hash of the client
/// string: two clients colliding would share a window, with probability
/// about n²/2⁶⁵.
///
/// A hand-made LRU (index-linked list in a `Vec` plus a `HashMap`): the
/// crate's dependency list is fixed by the project and an `lru` crate is not
/// on it; this is the textbook structure, one allocation per slot, O(1).
#[derive(Debug)]
pub struct Clients {
    max: usize,
    map: HashMap<u64, u32, foldhash::fast::RandomState>,
    slots: Vec<Entry>,
    head: u32,
    tail: u32,
    evicted: u64,
    /// What the tables of one detector share (the proxy shards its clients).
    shared: Arc<Shared>,
    /// The first timestamp seen, and whether any later one differed: a
    /// recording whose requests all carry one timestamp (a corpus without
    /// times) has no rates to measure.
    first_ts: Option<f64>,
    clock_moved: bool,
}

impl Clients {
    /// A table holding at most `max_clients` clients (at least 1).
    pub fn new(max_clients: usize) -> Self {
        Self::sharing(max_clients, Arc::default())
    }

    /// A table that shares with the other tables of one detector (shards of
    /// one client population) the request count behind the gateway share and
    /// the unseen values with the clients that sent them.
    pub fn sharing(max_clients: usize, shared: Arc<Shared>) -> Self {
        let max = max_clients.clamp(1, NIL as usize - 1);
        Clients {
            max,
            map: HashMap::default(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            evicted: 0,
            shared,
            first_ts: None,
            clock_moved: false,
        }
    }

    /// Clients currently tracked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Clients evicted so far to respect the bound.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Bytes one tracked client costs: its slot plus its hash-table entry
    /// (key, index and hashbrown's control byte, at its 7/8 load factor).
    pub fn bytes_per_client() -> usize {
        std::mem::size_of::<Entry>() + (std::mem::size_of::<(u64, u32)>() + 1) * 8 / 7 + 1
    }

    /// A client's state, if tracked (does not touch recency).
    pub fn get(&self, client: &str) -> Option<&ClientState> {
        let i = *self.map.get(&fnv1a(client.as_bytes()))?;
        self.slots.get(i as usize).map(|e| &e.state)
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        self.slots[i as usize].prev = NIL;
        self.slots[i as usize].next = self.head;
        if self.head != NIL {
            self.slots[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    /// The state of `client`, created (evicting the least recent) if new,
    /// and marked most recent.
    fn touch(&mut self, client: &str, ts: f64) -> &mut ClientState {
        let key = fnv1a(client.as_bytes());
        let i = match self.map.get(&key) {
            Some(&i) => {
                self.unlink(i);
                i
            }
            None if self.slots.len() < self.max => {
                let i = self.slots.len() as u32;
                self.slots.push(Entry { key, prev: NIL, next: NIL, state: ClientState::new(ts) });
                self.map.insert(key, i);
                i
            }
            None => {
                // Full: reuse the least recent slot. The table is non-empty here
                // because max >= 1 and slots.len() >= max.
                let i = self.tail;
                self.unlink(i);
                let old = self.slots[i as usize].key;
                self.map.remove(&old);
                self.evicted += 1;
                self.slots[i as usize] = Entry { key, prev: NIL, next: NIL, state: ClientState::new(ts) };
                self.map.insert(key, i);
                i
            }
        };
        self.push_front(i);
        &mut self.slots[i as usize].state
    }

    /// Records that `client` sent a value of a field never learned (`key`:
    /// field and value) and returns how many distinct clients sent it lately
    /// (1 to [`SPREAD_CLIENTS`]).
    ///
    /// The caller passes the client only if it is returning (at least
    /// [`SPREAD_MIN_REQUESTS`] requests, this one included): with a key per
    /// request (a random id, a botnet's one-shot addresses) one payload
    /// repeated would otherwise look like many users.
    pub fn novel_value(&self, key: u64, client: Option<&str>) -> u32 {
        let tag = client.map(|c| fnv1a(c.as_bytes()) as u32 | 1);
        // Poisoned only if a thread panicked while holding it; the table is
        // still a valid cache.
        let mut novel = self.shared.novel.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        novel.note(key, tag)
    }

    /// Whether the timestamps seen so far differ (see [`Signals::timed`]).
    pub fn timed(&self) -> bool {
        self.clock_moved
    }

    /// Update `client`'s window with one request and return its signals.
    /// `x` carries what extraction found: endpoint, fingerprint, credential,
    /// tensor sketch (with its model hash) and input deviation.
    pub fn observe_request(&mut self, client: &str, ts: f64, x: &Extra) -> Signals {
        let (endpoint, fingerprint, sketch, deviation) = (x.endpoint, x.fingerprint, x.sketch, x.deviation);
        // Relaxed: a count, read for a coarse share; no ordering with other data.
        let total = self.shared.total.fetch_add(1, Ordering::Relaxed) + 1;
        match self.first_ts {
            None => self.first_ts = Some(ts),
            Some(first) => self.clock_moved |= ts != first,
        }
        let timed = self.clock_moved;
        let st = self.touch(client, ts);
        if ts < st.last_ts - CLOCK_BACK {
            st.restart_clock(ts);
        }
        let dt = (ts - st.last_ts).max(0.0);
        if dt > SESSION_GAP {
            // A new session: its token or cookie replaces the last one's, and
            // the old ones are not credentials cycled now.
            st.credentials = [0; RECENT];
        }
        st.last_ts = st.last_ts.max(ts);
        st.rate1 = (f64::from(st.rate1) * (-dt).exp() + 1.0) as f32;
        st.rate10 = (f64::from(st.rate10) * (-dt / 10.0).exp() + 1.0) as f32;
        st.rate60 = (f64::from(st.rate60) * (-dt / 60.0).exp() + 1.0) as f32;
        // What the client does now: the longer windows count only as far as the
        // shorter ones agree, so they rise with a flood but drop when it stops.
        let rate10 = f64::from(st.rate10).min(10.0 * f64::from(st.rate1));
        let rate60 = f64::from(st.rate60).min(6.0 * rate10);
        // The client's own normal: its peak 10 s rate over earlier 30 s blocks
        // (the current block cannot raise its own baseline).
        if ts - st.block_start >= 30.0 {
            st.rate_peak = st.rate_peak.max(st.rate_block);
            st.rate_block = 0.0;
            st.rate1_peak = st.rate1_peak.max(st.rate1_block);
            st.rate1_block = 0.0;
            st.block_start = ts;
        }
        st.rate_block = st.rate_block.max(st.rate10);
        st.rate1_block = st.rate1_block.max(st.rate1);
        if ts - st.block60_start >= 120.0 {
            st.rate60_peak = st.rate60_peak.max(st.rate60_block);
            st.rate60_block = 0.0;
            st.block60_start = ts;
        }
        st.rate60_block = st.rate60_block.max(st.rate60);
        // A client's own normal exists only once one of its blocks has ended:
        // before that, a new client's ordinary rate is not a burst over itself.
        let burst = (st.requests >= 100 && st.rate_peak > 0.0).then(|| rate10 / f64::from(st.rate_peak).max(1.0));
        let burst1 = (st.requests >= 100 && st.rate1_peak > 0.0)
            .then(|| f64::from(st.rate1) / f64::from(st.rate1_peak).max(1.0));
        let burst60 = (st.requests >= 100 && st.rate60_peak > 0.0).then(|| rate60 / f64::from(st.rate60_peak).max(1.0));
        st.requests = st.requests.saturating_add(1);
        if total >= GATEWAY_MIN_TOTAL && f64::from(st.requests) > GATEWAY_SHARE * total as f64 {
            return Signals { gateway: true, requests: st.requests, ..Signals::default() };
        }

        let filled = (st.requests as usize).min(RECENT);
        let duplicates = if fingerprint == 0 {
            0 // no body: see `request::extract`
        } else {
            st.fingerprints[..filled.saturating_sub(1).min(RECENT)].iter().filter(|f| **f == fingerprint).count()
        };
        let pos = st.recent_pos as usize;
        st.endpoints[pos] = endpoint;
        st.fingerprints[pos] = fingerprint;
        st.credentials[pos] = x.credential.unwrap_or(0);
        st.recent_pos = ((pos + 1) % RECENT) as u8;
        let eps = &st.endpoints[..filled];
        let distinct = eps.iter().enumerate().filter(|(i, e)| !eps[..*i].contains(e)).count();
        let creds = &st.credentials[..filled];
        let credentials = creds.iter().enumerate().filter(|(i, c)| **c != 0 && !creds[..*i].contains(c)).count();

        let mut prada = None;
        // The chain counts for this request only if this request extended it.
        let mut chain = 0.0;
        let mut sweep = None;
        if let Some((model, sk)) = sketch {
            // Slots remember their model: a client interleaving models keeps one
            // history, and each query is compared with earlier ones to the same model.
            let tag = model as u32;
            let n = st.sk_n as usize;
            let same = |i: usize| st.sketch_models[i] == tag;
            let mut prev = None;
            for back in 1..=n {
                let i = (st.sk_pos as usize + SKETCHES - back) % SKETCHES;
                if same(i) {
                    prev = Some(i);
                    break;
                }
            }
            if let Some(prev_i) = prev {
                let prev = &st.sketches[prev_i];
                let step = dist(prev, &sk);
                let scale = (norm(prev) + norm(&sk)) / 2.0 + 1e-12;
                let rel = step / scale;
                // Coordinates held exactly (both zero is padding, not information).
                let live = prev.iter().zip(&sk).filter(|(a, b)| **a != 0.0 || **b != 0.0).count();
                let fixed = prev.iter().zip(&sk).filter(|(a, b)| a == b && **a != 0.0).count();
                if live > 0 && fixed < live {
                    let share = fixed as f64 / live as f64;
                    st.sweep = (f64::from(st.sweep) * 0.9 + share * 0.1) as f32;
                    sweep = Some(f64::from(st.sweep).min(share));
                }
                if rel > 0.0 && rel < PERTURBATION {
                    st.chain = st.chain.saturating_add(1);
                    chain = f64::from(st.chain);
                } else if rel >= PERTURBATION {
                    st.chain = 0;
                } else if st.chain > 0 {
                    // The same query again (or, of a body cut at the inspect
                    // limit, the same first bytes while the perturbed part went
                    // unseen): it is part of the chain but does not extend it.
                    chain = f64::from(st.chain);
                }
                let dmin =
                    (0..n).filter(|i| same(*i)).map(|i| dist(&st.sketches[i], &sk)).fold(f64::INFINITY, f64::min);
                if dmin > 0.0 && dmin.is_finite() {
                    st.distances[st.md_pos as usize] = dmin as f32;
                    st.md_pos = ((st.md_pos as usize + 1) % DISTANCES) as u8;
                    st.md_n = (st.md_n + 1).min(DISTANCES as u8);
                }
            }
            st.model = model;
            st.sketch_models[st.sk_pos as usize] = tag;
            st.sketches[st.sk_pos as usize] = sk;
            st.sk_pos = ((st.sk_pos as usize + 1) % SKETCHES) as u8;
            st.sk_n = (st.sk_n + 1).min(SKETCHES as u8);
            // W is recomputed every fourth distance (a sort and a dot product).
            if st.md_n as usize >= PRADA_MIN && (st.md_pos % 4 == 0 || st.prada.is_nan()) {
                let mut d = [0f64; DISTANCES];
                let m = st.md_n as usize;
                for (o, v) in d.iter_mut().zip(&st.distances[..m]) {
                    *o = f64::from(*v);
                }
                st.prada = shapiro::w(&mut d[..m]).map_or(f32::NAN, |w| w as f32);
            }
            if st.md_n as usize >= PRADA_MIN && !st.prada.is_nan() {
                prada = Some(f64::from(st.prada));
            }
        }
        let mut spread = None;
        let mut novel = None;
        let deviation = deviation.filter(|d| d.is_finite());
        if let (Some((model, _)), true) = (sketch, deviation.is_some() || x.novelty.is_some()) {
            let tag = model as u32;
            // Two model slots: the matching one, else the least used is replaced.
            let i = match st.spread_models.iter().position(|m| m.model == tag) {
                Some(i) => i,
                None => {
                    let used = |m: &Spread| m.deviations.max(m.novelties);
                    let i = usize::from(used(&st.spread_models[1]) < used(&st.spread_models[0]));
                    st.spread_models[i] = Spread { model: tag, ..Spread::default() };
                    i
                }
            };
            let m = &mut st.spread_models[i];
            if let Some(d) = deviation {
                let d = d.min(1e3);
                m.deviation =
                    if m.deviations == 0 { d as f32 } else { (f64::from(m.deviation) * 0.9 + d * 0.1) as f32 };
                m.deviations = m.deviations.saturating_add(1);
                // Counted for this request only as far as the request itself deviates:
                // a client's ordinary queries are not blamed for its odd ones.
                if m.deviations >= 8 {
                    spread = Some(f64::from(m.deviation).min(d));
                }
            }
            if let Some(n) = x.novelty {
                // From the share ordinary clients have (by definition of "far",
                // a tenth), so that one odd first query does not start at 100%.
                let prior = if m.novelties == 0 { 0.1 } else { f64::from(m.far) };
                m.far = (prior * 0.9 + f64::from(u8::from(n.far)) * 0.1) as f32;
                m.novelties = m.novelties.saturating_add(1);
                // Likewise: a query as close to learned ones as usual (ratio <= 1)
                // carries less of the share.
                // Recorded as odds (share / (1 - share)): a share is bounded by 1,
                // and 80% against the 60% ordinary clients reach is a far stronger
                // sign than its difference of 0.2 says; in odds it is 4 against 1.5.
                // Only above the tenth that ordinary queries are far by definition:
                // a young model that learned "up to 3%" must not call 10% an
                // extraction, nor measure 14% against a range of clients all at 10%.
                // (A client far a tenth of the time does rise just above it after
                // each far query, to odds of about 0.2: within the learned range.)
                let share = f64::from(m.far).min(0.99) * n.ratio.min(1.0);
                if m.novelties >= 8 && share > 0.1 {
                    novel = Some(share / (1.0 - share));
                }
            }
        }
        // Word substitutions (TextFooler) and membership inference send one
        // text over and over with small changes; ordinary users write anew.
        let rephrased = x.text.map(|t| {
            let near = t.near(&st.text);
            st.rephrased = if near { st.rephrased.saturating_add(1) } else { 0 };
            st.text = t;
            f64::from(st.rephrased)
        });
        let errors = (st.resp_n >= 8).then(|| f64::from(st.resp_bits.count_ones()) / f64::from(st.resp_n));
        Signals {
            rate1: f64::from(st.rate1),
            rate10,
            rate60,
            burst60,
            burst,
            burst1,
            sweep,
            credentials: credentials as f64,
            errors,
            endpoints: distinct as f64,
            duplicates: duplicates as f64,
            chain,
            rephrased,
            prada,
            spread,
            novel,
            reputation: f64::from(st.reputation),
            requests: st.requests,
            gateway: false,
            timed,
        }
    }

    /// Fold a request's raw score into its client's reputation.
    pub fn observe_score(&mut self, client: &str, raw: f64) {
        self.observe_verdict(client, raw, false);
    }

    /// Fold a request's raw score into its client's reputation and remember
    /// whether it was flagged (see [`Clients::observe_response`]).
    pub fn observe_verdict(&mut self, client: &str, raw: f64, flagged: bool) {
        if let Some(&i) = self.map.get(&fnv1a(client.as_bytes())) {
            let st = &mut self.slots[i as usize].state;
            st.last_flagged = flagged;
            let raw = if raw.is_finite() { raw.clamp(0.0, 40.0) } else { 40.0 };
            st.reputation = (f64::from(st.reputation) * 0.85 + raw * 0.15) as f32;
        }
    }

    /// Record a response to `client`: `status` >= 400 counts as an error.
    /// `latency` (seconds) is accepted for future signals and not used yet.
    ///
    /// The error share measures *unexplained* failures: the response to a
    /// request that was itself flagged is not counted (its failure is already
    /// on record), so the ordinary requests a client sends after an attack it
    /// was caught at are not blamed for the attack's errors, while a client
    /// whose unremarkable-looking requests keep failing (guessing IDs,
    /// credentials, paths) still builds up the signal.
    pub fn observe_response(&mut self, client: &str, status: u16, _latency: f64, ts: f64) {
        let st = self.touch(client, ts);
        if st.last_flagged {
            st.last_flagged = false;
            return;
        }
        st.resp_bits = (st.resp_bits << 1) | u32::from(status >= 400);
        st.resp_n = (st.resp_n + 1).min(32);
    }
}

fn dist(a: &[f32; SKETCH], b: &[f32; SKETCH]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt()
}

fn norm(a: &[f32; SKETCH]) -> f64 {
    a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(endpoint: u32, fingerprint: u64, sketch: Option<(u64, [f32; SKETCH])>) -> Extra {
        Extra { sketch, deviation: None, novelty: None, fingerprint, credential: None, endpoint, text: None }
    }

    /// One request of `client` at `ts`, after one each of three other
    /// clients, so that `client` is not a gateway.
    fn among_three_as_busy(c: &mut Clients, client: &str, ts: f64, id: u64) -> Signals {
        for other in ["o1", "o2", "o3"] {
            c.observe_request(other, ts, &ex(1, id, None));
        }
        c.observe_request(client, ts, &ex(0, id, None))
    }

    #[test]
    fn per_client_state_is_at_most_2_kib() {
        let bytes = Clients::bytes_per_client();
        // Measured: see docs/detector.md (slot plus table entry); the bound is 2 KiB.
        eprintln!("per-client state: {bytes} bytes");
        assert!(bytes <= 2048, "{bytes} bytes per client");
        assert!(bytes >= std::mem::size_of::<ClientState>());
    }

    #[test]
    fn lru_bound_holds_and_evicts_least_recent() {
        let mut c = Clients::new(3);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            c.observe_request(name, i as f64, &ex(0, 0, None));
        }
        c.observe_request("a", 3.0, &ex(0, 0, None)); // a is now most recent; b least
        c.observe_request("d", 4.0, &ex(0, 0, None));
        assert_eq!(c.len(), 3);
        assert_eq!(c.evicted(), 1);
        assert!(c.get("b").is_none());
        assert!(c.get("a").is_some() && c.get("c").is_some() && c.get("d").is_some());
        for i in 0..1000 {
            c.observe_request(&format!("x{i}"), 5.0, &ex(0, 0, None));
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn rates_duplicates_endpoints_errors() {
        let mut c = Clients::new(10);
        let mut s = Signals::default();
        for i in 0..20 {
            s = c.observe_request("a", f64::from(i) * 0.01, &ex(i as u32 % 4, 7, None));
        }
        assert!(s.rate1 > 15.0, "{}", s.rate1);
        assert_eq!(s.duplicates, 15.0);
        assert_eq!(s.endpoints, 4.0);
        for _ in 0..10 {
            c.observe_response("a", 404, 0.01, 1.0);
        }
        let s = c.observe_request("a", 1.0, &ex(0, 1, None));
        assert_eq!(s.errors, Some(1.0));
    }

    #[test]
    fn errors_of_flagged_requests_are_explained() {
        let mut c = Clients::new(10);
        for i in 0..10 {
            c.observe_request("caught", f64::from(i), &ex(0, i as u64, None));
            c.observe_verdict("caught", 20.0, true);
            c.observe_response("caught", 400, 0.01, f64::from(i));
            c.observe_request("quiet", f64::from(i), &ex(0, i as u64, None));
            c.observe_verdict("quiet", 0.0, false);
            c.observe_response("quiet", 404, 0.01, f64::from(i));
        }
        // The caught client's failures are on record already; the quiet one's are not.
        assert_eq!(c.observe_request("caught", 11.0, &ex(0, 99, None)).errors, None);
        assert_eq!(c.observe_request("quiet", 11.0, &ex(0, 99, None)).errors, Some(1.0));
    }

    #[test]
    fn rates_fall_when_a_burst_stops() {
        let mut c = Clients::new(10);
        let mut s = Signals::default();
        for i in 0..200 {
            s = c.observe_request("b", f64::from(i) * 0.05, &ex(0, i as u64, None));
        }
        assert!(s.rate10 > 50.0 && s.rate60 > 50.0, "{s:?}");
        // One ordinary request 5 s later: the 10 s window still holds the burst,
        // the request is judged on what the client does now.
        let after = c.observe_request("b", 15.0, &ex(0, 999, None));
        assert!(after.rate10 < 12.0 && s.rate10 > 100.0, "{after:?}");
        assert!(after.rate60 <= 6.0 * after.rate10 + 1e-9, "{after:?}");
    }

    #[test]
    fn a_flood_shows_over_the_clients_own_second_within_a_few_requests() {
        let mut c = Clients::new(10);
        let mut step = |ts: f64, id: u64| among_three_as_busy(&mut c, "f", ts, id);
        // Its own habit: a request every 2 s, and every tenth a pair 0.5 s apart.
        let mut ts = 0.0;
        let mut own_max = 0.0f64;
        for i in 0..300u64 {
            ts += if i % 10 == 0 { 0.5 } else { 2.0 };
            let s = step(ts, i);
            own_max = own_max.max(s.burst1.unwrap_or(0.0));
        }
        assert!(own_max <= 1.0 + 1e-9, "its own pairs set its peak: {own_max}");
        // Then ten a second: the 1 s ratio passes 2 by the fifth request,
        // while the 10 s one is still within twice its own.
        let mut flood = Vec::new();
        for i in 0..5u64 {
            ts += 0.1;
            flood.push(step(ts, 1000 + i));
        }
        let last = flood.last().expect("five requests");
        assert!(last.burst1.is_some_and(|b| b > 2.0), "{last:?}");
        assert!(last.burst.is_some_and(|b| b < 2.0), "{last:?}");
    }

    #[test]
    fn a_clock_that_goes_back_restarts_the_rates_not_stacks_them() {
        let mut c = Clients::new(10);
        // One request a second for 1000 s, then the same pace from t = 0 again
        // (a test file recorded before the train file ends).
        let mut step = |ts: f64, id: u64| among_three_as_busy(&mut c, "r", ts, id);
        for i in 0..1000 {
            step(f64::from(i), i as u64);
        }
        let mut s = Signals::default();
        for i in 0..200 {
            s = step(f64::from(i), 2000 + i as u64);
        }
        assert!(!s.gateway);
        assert!(s.rate1 < 2.0 && s.rate10 < 12.0, "{s:?}");
        // Requests finishing a little out of order are not a new clock.
        let late = c.observe_request("r", 199.5, &ex(0, 9999, None));
        assert!(late.rate1 > s.rate1, "{late:?}");
    }

    #[test]
    fn a_text_changed_a_word_at_a_time_is_counted_and_new_texts_are_not() {
        let mut c = Clients::new(10);
        let said = |t: &str| {
            let mut s = TextSet::default();
            s.add(t.as_bytes());
            Extra { text: Some(s), ..Extra::default() }
        };
        // An attacker swaps one word per request of one sentence.
        let mut words: Vec<&str> = "the service was slow and the staff seemed rude to every guest".split(' ').collect();
        let swaps = ["quick", "kind", "late", "calm", "warm", "cold", "loud", "odd"];
        let mut last = None;
        for (i, w) in swaps.iter().enumerate() {
            let at = (i * 5) % words.len();
            words[at] = w;
            last = c.observe_request("searcher", i as f64, &said(&words.join(" "))).rephrased;
        }
        assert!(last >= Some(6.0), "{last:?}");
        // A user writing new prompts, and a request without text.
        let prompts = [
            "summarise this report for the board",
            "translate the menu into french please",
            "what is the capital of peru",
        ];
        for (i, p) in prompts.iter().enumerate() {
            assert_eq!(c.observe_request("user", i as f64, &said(p)).rephrased, Some(0.0), "{p}");
        }
        assert_eq!(c.observe_request("user", 9.0, &Extra::default()).rephrased, None);
    }

    #[test]
    fn novel_share_separates_far_queries_from_ordinary_ones() {
        use crate::neighbours::Novelty;
        let mut c = Clients::new(10);
        let query = |far: bool| Extra {
            sketch: Some((7, [1.0; SKETCH])),
            deviation: None,
            novelty: Some(Novelty { ratio: if far { 3.0 } else { 0.8 }, far, beyond: 0.0, rare: 0.0 }),
            fingerprint: 0,
            credential: None,
            endpoint: 0,
            text: None,
        };
        let (mut ordinary_max, mut extractor) = (0.0f64, None);
        for i in 0..40 {
            let ordinary = c.observe_request("ordinary", f64::from(i), &query(i % 10 == 0)).novel;
            ordinary_max = ordinary_max.max(ordinary.unwrap_or(0.0));
            extractor = c.observe_request("extractor", f64::from(i), &query(i % 4 != 0)).novel;
        }
        // Odds, on every request: a client far a tenth of the time stays at
        // most about 0.2 (its share rises just above a tenth right after each
        // far query, and is recorded then); three quarters is about 3.
        let e = extractor.expect("after 8 queries");
        assert!(ordinary_max <= 0.25 && e > 1.5, "ordinary at most {ordinary_max}, extractor {e}");
        // The first queries of a client are not judged.
        assert_eq!(c.observe_request("new", 0.0, &query(true)).novel, None);
    }

    #[test]
    fn credentials_are_counted_within_a_session() {
        let mut c = Clients::new(10);
        let with = |cred: u32, id: u64| Extra { credential: Some(cred), ..ex(0, id, None) };
        // A mobile user: a new token each hourly session, a few requests each.
        let mut s = Signals::default();
        for session in 0..6u32 {
            for i in 0..3u32 {
                let ts = f64::from(session) * 3600.0 + f64::from(i) * 5.0;
                s = c.observe_request("phone", ts, &with(session + 1, u64::from(session * 10 + i)));
            }
        }
        assert_eq!(s.credentials, 1.0, "{s:?}");
        // Six tokens within a minute are six.
        for i in 0..6u32 {
            s = c.observe_request("stuffer", f64::from(i), &with(100 + i, u64::from(i)));
        }
        assert_eq!(s.credentials, 6.0, "{s:?}");
    }

    #[test]
    fn a_recording_without_times_has_no_rates() {
        let pushed = |ts: &dyn Fn(u32) -> f64| {
            let mut c = Clients::new(10);
            let mut last = Signals::default();
            for i in 0..300 {
                last = c.observe_request(&format!("c{}", i % 5), ts(i), &ex(0, u64::from(i), None));
            }
            let mut sample = crate::score::empty_sample();
            last.push(&mut sample);
            sample.fields.iter().map(|f| sample.name(f).to_owned()).collect::<Vec<_>>()
        };
        // Every request at t = 0: sixty requests "in no time" per client is not a flood.
        let untimed = pushed(&|_| 0.0);
        assert!(!untimed.iter().any(|n| n.starts_with("rate") || n.starts_with("burst")), "{untimed:?}");
        assert!(untimed.iter().any(|n| n == "duplicates"), "{untimed:?}");
        let timed = pushed(&|i| f64::from(i));
        assert!(timed.iter().any(|n| n == "rate1s"), "{timed:?}");
    }

    #[test]
    fn a_client_carrying_most_traffic_is_a_gateway_without_signals() {
        let total = Arc::default();
        let (mut a, mut b) = (Clients::sharing(10, Arc::clone(&total)), Clients::sharing(10, total));
        let mut last = Signals::default();
        for i in 0..GATEWAY_MIN_TOTAL as u32 {
            // The gateway sends half of all requests; 50 small clients the rest,
            // counted in another shard.
            last = a.observe_request("gateway", f64::from(i), &ex(i % 7, u64::from(i), None));
            let s = b.observe_request(&format!("user-{}", i % 50), f64::from(i), &ex(0, 1, None));
            assert!(!s.gateway);
        }
        assert!(last.gateway, "{last:?}");
        assert_eq!((last.endpoints, last.errors, last.reputation), (0.0, None, 0.0));
        let mut sample = crate::score::empty_sample();
        last.push(&mut sample);
        assert!(sample.fields.is_empty());
        // Below the minimum total, nobody is a gateway.
        let mut c = Clients::new(10);
        assert!(!(0..100).any(|i| c.observe_request("only", f64::from(i), &ex(0, 0, None)).gateway));
    }

    #[test]
    fn perturbation_chain_counts_tiny_steps() {
        let mut c = Clients::new(10);
        let base = [1.0f32; SKETCH];
        let mut s = Signals::default();
        for i in 0..10 {
            let mut sk = base;
            sk[0] += i as f32 * 1e-3;
            s = c.observe_request("adv", f64::from(i), &ex(0, i as u64, Some((1, sk))));
        }
        assert_eq!(s.chain, 9.0);
        // The same query again (a body cut at the inspect limit whose perturbed
        // part went unseen) belongs to the chain without extending it.
        let mut last = base;
        last[0] += 9e-3;
        let s = c.observe_request("adv", 10.0, &ex(0, 9, Some((1, last))));
        assert_eq!(s.chain, 9.0);
        let s = c.observe_request("adv", 11.0, &ex(0, 99, Some((1, [5.0; SKETCH]))));
        assert_eq!(s.chain, 0.0);
        // Outside a chain, a repeated query is no chain.
        let s = c.observe_request("adv", 12.0, &ex(0, 99, Some((1, [5.0; SKETCH]))));
        assert_eq!(s.chain, 0.0);
    }
}
