//! `meshward traffic`: a generator of realistic, labelled Open Inference
//! Protocol v2 traffic in the format of [`crate::dataset`]
//! (`docs/eval-format.md`), deterministic for a seed.
//!
//! One simulated model server ([`models`]) is called by many normal clients
//! ([`clients`]), each with its own identity, library, models, rate (diurnal
//! swing, bursts), batch sizes and habits. The simulation runs in time order:
//! the first `train_requests` normal requests form the train file; the next
//! `test_requests` normal requests, with mild drift in the inputs and two
//! newly deployed clients, form the test file, interleaved in time with the
//! attacking clients of the chosen [`Scenario`]s ([`attacks`]).
//!
//! Every actor draws from its own random stream seeded from the run's seed,
//! so a seed always gives the same bytes.

pub mod attacks;
pub mod clients;
pub mod models;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use attacks::{AttackClient, Attacker};
pub use attacks::{Scenario, MIN_ATTACK_REQUESTS};
use clients::{IdKind, NormalClient, Prober};

use crate::dataset::{Label, Record};

/// Simulation start: 2025-12-01 07:30 UTC, so the train period covers a
/// morning ramp-up of the diurnal cycle.
pub const START_TS: f64 = 1_764_574_200.0;

/// What to generate.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// Seed of every random stream.
    pub seed: u64,
    /// Normal requests in the train file.
    pub train_requests: usize,
    /// Normal requests in the test file (attacks come on top).
    pub test_requests: usize,
    /// Attack scenarios in the test file.
    pub scenarios: Vec<Scenario>,
    /// Share of attack requests in the test file, in [0, 0.9]. Each
    /// attacking client still sends at least [`MIN_ATTACK_REQUESTS`].
    pub attack_share: f64,
    /// Normal clients present from the start (two more join in the test period).
    pub clients: usize,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            seed: 1,
            train_requests: 20_000,
            test_requests: 20_000,
            scenarios: Scenario::ALL.to_vec(),
            attack_share: 0.1,
            clients: 60,
        }
    }
}

/// Which file a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Normal traffic to learn from.
    Train,
    /// Normal traffic with drift, plus attacks.
    Test,
}

#[derive(Debug)]
enum Actor {
    Normal(NormalClient),
    Prober(Prober),
    Attack(AttackClient),
}

#[derive(Debug)]
struct Source {
    actor: Actor,
    rng: StdRng,
}

/// A heap key: earliest time first, then the lowest source index.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Due(f64, usize);

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// The simulation: an iterator over every record in time order, tagged with
/// the file it belongs to. It ends after the last test record.
#[derive(Debug)]
pub struct Simulation {
    cfg: TrafficConfig,
    sources: Vec<Source>,
    heap: BinaryHeap<Reverse<Due>>,
    phase: Phase,
    train_left: usize,
    test_left: usize,
    test_start: f64,
    test_span: f64,
    /// Sources that join at the start of the test period.
    late: Vec<usize>,
    taken: HashSet<String>,
    setup: StdRng,
}

fn source(actor: Actor, setup: &mut StdRng) -> Source {
    Source { actor, rng: StdRng::seed_from_u64(setup.gen()) }
}

fn id_kind(rng: &mut StdRng) -> IdKind {
    match rng.gen_range(0..20) {
        0..=11 => IdKind::Spiffe,
        12..=16 => IdKind::Subject,
        _ => IdKind::Ip,
    }
}

impl Simulation {
    /// A simulation for `cfg`.
    pub fn new(cfg: TrafficConfig) -> Simulation {
        let mut setup = StdRng::seed_from_u64(cfg.seed);
        let mut taken = HashSet::new();
        let mut sources = Vec::new();
        let mut late = Vec::new();
        for i in 0..cfg.clients + 2 {
            let kind = id_kind(&mut setup);
            let id = clients::identity(&mut setup, kind, &mut taken);
            let client = NormalClient::random(&mut setup, id, kind == IdKind::Subject, START_TS);
            if i >= cfg.clients {
                late.push(sources.len());
            }
            sources.push(source(Actor::Normal(client), &mut setup));
        }
        for _ in 0..3 {
            let ip = clients::identity(&mut setup, IdKind::Ip, &mut taken);
            let prober = Prober::new(&mut setup, ip);
            sources.push(source(Actor::Prober(prober), &mut setup));
        }
        let mut sim = Simulation {
            train_left: cfg.train_requests,
            test_left: cfg.test_requests,
            cfg,
            sources,
            heap: BinaryHeap::new(),
            phase: Phase::Train,
            test_start: START_TS,
            test_span: 1.0,
            late,
            taken,
            setup,
        };
        for i in 0..sim.sources.len() {
            if !sim.late.contains(&i) {
                sim.activate(i, START_TS);
            }
        }
        if sim.train_left == 0 {
            sim.start_test(START_TS);
        }
        sim
    }

    fn activate(&mut self, i: usize, t: f64) {
        let s = &mut self.sources[i];
        let gap = match &mut s.actor {
            Actor::Normal(c) => c.gap(&mut s.rng, t),
            Actor::Prober(p) => s.rng.gen_range(0.0..1.0) * p.gap(&mut s.rng),
            Actor::Attack(a) => a.gap(&mut s.rng),
        };
        self.heap.push(Reverse(Due(t + gap, i)));
    }

    /// Switches to the test period at `t`: late clients join, attackers are
    /// scheduled over the expected test span.
    fn start_test(&mut self, t: f64) {
        self.phase = Phase::Test;
        self.test_start = t;
        let observed_rate = if self.cfg.train_requests > 0 && t > START_TS {
            self.cfg.train_requests as f64 / (t - START_TS)
        } else {
            self.sources
                .iter()
                .map(|s| match &s.actor {
                    Actor::Normal(c) => c.rate,
                    Actor::Prober(_) => 0.1,
                    Actor::Attack(_) => 0.0,
                })
                .sum()
        };
        self.test_span = (self.cfg.test_requests as f64 / observed_rate.max(1e-3)).max(60.0);
        // Attackers are scheduled first: late clients cannot be compromised ones.
        self.schedule_attacks(t);
        for i in std::mem::take(&mut self.late) {
            self.activate(i, t);
        }
    }

    fn schedule_attacks(&mut self, t: f64) {
        let scenarios = self.cfg.scenarios.clone();
        if scenarios.is_empty() || self.cfg.test_requests == 0 {
            return;
        }
        let share = self.cfg.attack_share.clamp(0.0, 0.9);
        let total = (share / (1.0 - share) * self.cfg.test_requests as f64).round() as usize;
        let per_scenario = total / scenarios.len();
        let known: Vec<usize> = (0..self.sources.len())
            .filter(|&i| matches!(self.sources[i].actor, Actor::Normal(_)) && !self.late.contains(&i))
            .collect();
        let mut rng = StdRng::seed_from_u64(self.setup.gen());
        let rates: Vec<(f64, usize)> = known
            .iter()
            .filter_map(|&i| match &self.sources[i].actor {
                Actor::Normal(c) => Some((c.rate, i)),
                _ => None,
            })
            .collect();
        for scenario in scenarios {
            let attackers = (per_scenario / (MIN_ATTACK_REQUESTS * 6 / 5)).clamp(1, 5);
            for _ in 0..attackers {
                let n = (per_scenario / attackers).max(MIN_ATTACK_REQUESTS);
                let n = (n as f64 * rng.gen_range(1.0..1.2)).round() as usize;
                let known_client = if !known.is_empty() && rng.gen_bool(scenario.known_share()) {
                    let pick = if scenario == Scenario::Flood {
                        // A flood stands out most from a client that already
                        // sends steadily: pick among the busiest third.
                        let mut by_rate = rates.clone();
                        by_rate.sort_by(|a, b| b.0.total_cmp(&a.0));
                        by_rate[rng.gen_range(0..by_rate.len().div_ceil(3))].1
                    } else {
                        known[rng.gen_range(0..known.len())]
                    };
                    match &self.sources[pick].actor {
                        Actor::Normal(c) => Some(c.clone()),
                        _ => None,
                    }
                } else {
                    None
                };
                let kind = if scenario == Scenario::TokenStuffing { IdKind::Ip } else { id_kind(&mut rng) };
                let who = match &known_client {
                    Some(c) => Attacker::Known(c),
                    None => {
                        // A template drawn by request volume: attackers share
                        // the libraries of the traffic they hide in.
                        let total: f64 = rates.iter().map(|(r, _)| r).sum();
                        let mut x = rng.gen::<f64>() * total;
                        let template = rates.iter().find(|(r, _)| {
                            x -= r;
                            x <= 0.0
                        });
                        Attacker::New {
                            id: clients::identity(&mut rng, kind, &mut self.taken),
                            sub: kind == IdKind::Subject,
                            template: template.and_then(|(_, i)| match &self.sources[*i].actor {
                                Actor::Normal(c) => Some(c),
                                _ => None,
                            }),
                        }
                    }
                };
                let mut a = AttackClient::new(&mut rng, scenario, n, who, t);
                // Fit the attack inside the test period: start early enough,
                // speed up when even the whole period would be too short.
                let window = 0.85 * self.test_span;
                if n as f64 / a.rate > window {
                    a.rate = n as f64 / window;
                }
                let duration = n as f64 / a.rate;
                let start = t + 0.02 * self.test_span + rng.gen::<f64>() * (window - duration).max(0.0);
                self.sources.push(source(Actor::Attack(a), &mut rng));
                let i = self.sources.len() - 1;
                self.activate(i, start);
            }
        }
    }

    fn drift(&self, t: f64) -> f32 {
        match self.phase {
            Phase::Train => 0.0,
            Phase::Test => ((t - self.test_start) / self.test_span).clamp(0.0, 1.0) as f32,
        }
    }

    fn attacks_left(&self) -> bool {
        self.sources.iter().any(|s| matches!(&s.actor, Actor::Attack(a) if a.remaining > 0))
    }
}

impl Iterator for Simulation {
    type Item = (Phase, Record);

    fn next(&mut self) -> Option<(Phase, Record)> {
        loop {
            if self.phase == Phase::Test && self.test_left == 0 && !self.attacks_left() {
                return None;
            }
            let Reverse(Due(t, i)) = self.heap.pop()?;
            let drift = self.drift(t);
            let normal_done = self.phase == Phase::Test && self.test_left == 0;
            let s = &mut self.sources[i];
            let (record, next) = match &mut s.actor {
                // Normal traffic stops at its count; remaining attacks finish alone.
                Actor::Normal(_) | Actor::Prober(_) if normal_done => continue,
                Actor::Normal(c) => {
                    let r = c.request(&mut s.rng, t, drift);
                    (r, Some(t + c.gap(&mut s.rng, t)))
                }
                Actor::Prober(p) => {
                    let r = p.request(&mut s.rng, t);
                    (r, Some(t + p.gap(&mut s.rng)))
                }
                Actor::Attack(a) => {
                    let r = a.request(&mut s.rng, t, drift);
                    (r, (a.remaining > 0).then(|| t + a.gap(&mut s.rng)))
                }
            };
            if let Some(n) = next {
                self.heap.push(Reverse(Due(n, i)));
            }
            let phase = self.phase;
            if record.label == Label::Normal {
                match phase {
                    Phase::Train => {
                        self.train_left -= 1;
                        if self.train_left == 0 {
                            self.start_test(t);
                        }
                    }
                    Phase::Test => self.test_left -= 1,
                }
            }
            return Some((phase, record));
        }
    }
}

/// Counts of written lines per file, by label and scenario.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Train file: normal lines.
    pub train: u64,
    /// Test file: normal lines.
    pub test_normal: u64,
    /// Test file: attack lines per scenario name.
    pub test_attacks: BTreeMap<&'static str, u64>,
    /// Attacking clients per scenario name.
    pub attackers: BTreeMap<&'static str, u64>,
}

impl Summary {
    /// Total attack lines.
    pub fn attacks(&self) -> u64 {
        self.test_attacks.values().sum()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "train: {} normal; test: {} normal, {} attack", self.train, self.test_normal, self.attacks())?;
        let parts: Vec<String> = self
            .test_attacks
            .iter()
            .map(|(k, v)| format!("{k} {v}/{}", self.attackers.get(k).copied().unwrap_or(0)))
            .collect();
        if !parts.is_empty() {
            write!(f, " (requests/clients: {})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Lines are collected in memory and handed to the writer in chunks of
/// about this size (fewer, larger writes than a `BufWriter` per field).
const CHUNK: usize = 1 << 20;

/// A line buffer in front of a writer.
struct Chunked<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Chunked<W> {
    fn line(&mut self, record: &Record) -> io::Result<()> {
        record.append_json_line(&mut self.buf);
        if self.buf.len() >= CHUNK {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.inner.write_all(&self.buf)?;
        self.inner.flush()
    }
}

/// Runs the simulation for `cfg`, writing the train and test files (the
/// writers need no buffering of their own).
pub fn generate(cfg: &TrafficConfig, train: impl Write, test: impl Write) -> io::Result<Summary> {
    let mut train = Chunked { inner: train, buf: Vec::with_capacity(CHUNK + (64 << 10)) };
    let mut test = Chunked { inner: test, buf: Vec::with_capacity(CHUNK + (64 << 10)) };
    let mut summary = Summary::default();
    let mut seen: HashSet<(String, &'static str)> = HashSet::new();
    for (phase, record) in Simulation::new(cfg.clone()) {
        match (phase, record.label) {
            (Phase::Train, _) => {
                summary.train += 1;
                train.line(&record)?;
                continue;
            }
            (Phase::Test, Label::Normal) => summary.test_normal += 1,
            (Phase::Test, Label::Attack) => {
                let name = record
                    .scenario
                    .as_deref()
                    .and_then(|s| Scenario::ALL.iter().find(|sc| sc.name() == s))
                    .map_or("unknown", |s| s.name());
                *summary.test_attacks.entry(name).or_default() += 1;
                if seen.insert((record.client.clone(), name)) {
                    *summary.attackers.entry(name).or_default() += 1;
                }
            }
        }
        test.line(&record)?;
    }
    train.finish()?;
    test.finish()?;
    Ok(summary)
}

#[cfg(test)]
mod tests;
