//! `meshward eval`: replay labelled traffic through the detector, offline,
//! and print detection metrics as one JSON object on stdout.
//!
//! The train file is learned from (every request scored, then learned, as
//! during warm-up in the sidecar). The test file is then processed in
//! arrival order as the sidecar would: score first, then learn from the
//! request unless it was flagged, then feed its response (status) to the
//! client's window. Progress goes to stderr.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};
use meshward_detector::{metrics, score, Clients, Config, Learner, Model, RawConfig, Request, CLOCK_BACK};
use serde_json::{json, Value};

use crate::dataset::{read_records, Label, RecordRef};
use crate::detect::config::{DEFAULT_MAX_INSPECT_BYTES, MAX_INSPECT_BYTES};

/// Arguments of `meshward eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Normal traffic to learn from (JSONL, see docs/eval-format.md). Required unless --load-model.
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Labelled traffic to score, in arrival order (JSONL).
    #[arg(long)]
    pub test: PathBuf,
    /// Skip and count bad lines instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// Share of normal requests allowed to be flagged (calibrates the anomalous band).
    #[arg(long, default_value_t = 0.001)]
    pub fp_budget: f64,
    /// Write the model learned from --train (before the test file) to this file.
    #[arg(long)]
    pub save_model: Option<PathBuf>,
    /// Start from a model snapshot (from --save-model) instead of an empty one.
    #[arg(long)]
    pub load_model: Option<PathBuf>,
    /// Print the N highest-scoring normal and the N lowest-scoring attack requests
    /// of the test file, with their reasons, to stderr (for tuning).
    #[arg(long, default_value_t = 0)]
    pub show: usize,
    /// Write one tab-separated line per test request (label, scenario, client, own bits, raw bits,
    /// band, top reasons) to this file, for offline analysis.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// Learn nothing from the test file (as a sidecar with `detector.learn: false`): every
    /// test request is judged by the model trained or loaded before it.
    #[arg(long)]
    pub freeze: bool,
    /// Judge only the first N bytes of each body, as a sidecar with the same
    /// `detector.max_inspect_bytes` does (the rest of a longer body is not inspected).
    #[arg(long, default_value_t = DEFAULT_MAX_INSPECT_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(0..=MAX_INSPECT_BYTES))]
    pub max_inspect_bytes: u64,
    /// Write one JSON line per test request, in order: `{"line", "client", "score", "band"}`
    /// (compare with the `score` of a sidecar's `detector.record` file).
    #[arg(long)]
    pub scores: Option<PathBuf>,
}

/// Requests between progress lines on stderr.
const PROGRESS_EVERY: u64 = 100_000;
/// A client counts as caught when flagged within this many of its test requests.
const FIRST_REQUESTS: u32 = 50;

/// The detector state of one replay.
struct Replay {
    model: Model,
    learner: Learner,
    clients: Clients,
    /// Learn from each request after scoring it (off with --freeze in the test phase).
    learn: bool,
    /// Body bytes inspected (the sidecar's `detector.max_inspect_bytes`).
    max_inspect_bytes: usize,
}

impl Replay {
    /// Score one record, learn from it unless flagged, feed its response.
    fn step(&mut self, r: &RecordRef<'_>) -> meshward_detector::Verdict {
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (&*n.0, &*v.0)).collect();
        // The sidecar's cut: a body past the limit is judged on its first bytes.
        let inspected = &r.body[..r.body.len().min(self.max_inspect_bytes)];
        let req = Request {
            method: &r.method,
            uri: &r.uri,
            headers: &headers,
            body: inspected,
            client: &r.client,
            ts: r.ts,
            truncated: r.body_truncated || inspected.len() < r.body.len(),
        };
        let scored = score(&self.model, &mut self.clients, &req);
        if self.learn {
            self.learner.learn(&scored.sample);
            if let Some(m) = self.learner.maybe_publish() {
                self.model = m;
            }
        }
        if let Some(status) = r.status {
            let latency = r.latency_ms.unwrap_or(0.0) / 1000.0;
            self.clients.observe_response(&r.client, status, latency, r.ts);
        }
        scored.verdict
    }
}

/// Reads a traffic file, calling `each` per record; returns skipped lines.
fn replay_file(path: &Path, skip_bad: bool, phase: &str, mut each: impl FnMut(RecordRef<'_>)) -> anyhow::Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open {} file {}", phase, path.display()))?;
    let mut records = read_records(BufReader::with_capacity(1 << 16, file), skip_bad);
    let mut n = 0u64;
    while let Some(done) = records.next_map(&mut each) {
        done.with_context(|| format!("{} file {}", phase, path.display()))?;
        n += 1;
        if n % PROGRESS_EVERY == 0 {
            eprintln!("meshward eval: {phase}: {n} requests");
        }
    }
    for e in records.skipped_errors() {
        eprintln!("meshward eval: {phase}: skipped {e}");
    }
    Ok(records.skipped())
}

/// Keep the `n` highest-scoring normal and `n` lowest-scoring attack entries.
fn keep_extremes(v: &mut Vec<(f64, bool, String, String)>, n: usize) {
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let normal = v.iter().filter(|e| !e.1).take(n).cloned();
    let mut attack: Vec<_> = v.iter().rev().filter(|e| e.1).take(n).cloned().collect();
    attack.reverse();
    *v = normal.chain(attack).collect();
}

/// Per client: its test requests, and how it was caught.
#[derive(Default)]
struct ClientTally {
    requests: u32,
    attacks: u32,
    /// Requests since (and including) its first attack request.
    since_attack: u32,
    /// Flagged within its first `FIRST_REQUESTS` test requests.
    flagged_early: bool,
    /// Flagged within `FIRST_REQUESTS` requests from its first attack.
    flagged_after_attack: bool,
}

/// Runs `meshward eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let cfg = Config::try_from(RawConfig { fp_budget: Some(args.fp_budget), ..RawConfig::default() })?;
    let (model, learner) = match &args.load_model {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
            let model = Model::from_snapshot(&bytes).with_context(|| format!("model {}", path.display()))?;
            let learner = Learner::from_model(cfg.clone(), &model);
            (model, learner)
        }
        None => (Model::empty(), Learner::new(cfg.clone())),
    };
    if args.train.is_none() && args.load_model.is_none() {
        bail!("nothing to learn from: give --train or --load-model");
    }
    let mut replay = Replay {
        model,
        learner,
        clients: Clients::new(cfg.max_clients),
        learn: true,
        max_inspect_bytes: usize::try_from(args.max_inspect_bytes).unwrap_or(usize::MAX),
    };

    let mut skipped = 0;
    let mut train_requests = 0u64;
    let train_start = Instant::now();
    let mut train_end = f64::NEG_INFINITY;
    if let Some(train) = &args.train {
        skipped += replay_file(train, args.skip_bad, "train", |r| {
            train_end = train_end.max(r.ts);
            replay.step(&r);
            train_requests += 1;
        })?;
        replay.model = replay.learner.model();
    }
    let train_seconds = train_start.elapsed().as_secs_f64();
    if let Some(path) = &args.save_model {
        std::fs::write(path, replay.model.snapshot())
            .with_context(|| format!("cannot write model {}", path.display()))?;
    }
    if !replay.model.ready {
        eprintln!(
            "meshward eval: warning: the model is still warming up after {} train requests (needs {}); early test requests get no verdict",
            replay.learner.learned(),
            cfg.warmup_samples
        );
    }

    let mut scores = Vec::new();
    let mut attack = Vec::new();
    let mut flagged = Vec::new();
    let mut scenario_of: Vec<Option<u32>> = Vec::new();
    let mut scenario_names: Vec<String> = Vec::new();
    let mut scenario_ids: HashMap<String, u32> = HashMap::new();
    let mut tallies: HashMap<String, ClientTally> = HashMap::new();
    let mut warming = 0u64;
    // (score, label, line summary, reasons) of the extremes, when --show asks for them.
    let mut shown: Vec<(f64, bool, String, String)> = Vec::new();
    let mut dump = match &args.dump {
        Some(p) => {
            Some(BufWriter::new(File::create(p).with_context(|| format!("cannot create dump file {}", p.display()))?))
        }
        None => None,
    };
    let mut dump_error: Option<std::io::Error> = None;
    let mut scores_out = match &args.scores {
        Some(p) => {
            Some(BufWriter::new(File::create(p).with_context(|| format!("cannot create scores file {}", p.display()))?))
        }
        None => None,
    };
    let mut scores_error: Option<std::io::Error> = None;
    replay.learn = !args.freeze;
    let test_start = Instant::now();
    let mut line = 0u64;
    let mut test_start_ts = None;
    // Time spent scoring and learning each line (`requests_per_second`);
    // reading and decoding the file is eval's own.
    let mut detector_time = std::time::Duration::ZERO;
    skipped += replay_file(&args.test, args.skip_bad, "test", |r| {
        test_start_ts.get_or_insert(r.ts);
        let started = Instant::now();
        let v = replay.step(&r);
        detector_time += started.elapsed();
        let is_attack = r.label == Label::Attack;
        line += 1;
        if let Some(out) = scores_out.as_mut() {
            let row = json!({"line": line, "client": r.client, "score": v.score, "band": v.band.as_str()});
            if let Err(e) = writeln!(out, "{row}") {
                scores_error.get_or_insert(e);
            }
        }
        if let Some(out) = dump.as_mut() {
            let reasons: Vec<String> =
                v.reasons.iter().take(3).map(|x| format!("{:.1} {}", x.contribution, x.message())).collect();
            let line = format!(
                "{}\t{}\t{}\t{:.2}\t{:.2}\t{}\t{}\n",
                if is_attack { "attack" } else { "normal" },
                r.scenario.as_deref().unwrap_or("-"),
                r.client,
                v.own,
                v.raw,
                v.band.as_str(),
                reasons.join("; ").replace(['\t', '\n'], " ")
            );
            if let Err(e) = out.write_all(line.as_bytes()) {
                dump_error.get_or_insert(e);
            }
        }
        if args.show > 0 {
            let reasons: Vec<String> =
                v.reasons.iter().map(|x| format!("{:.1} {}", x.contribution, x.message())).collect();
            let what = format!("{} {} {} {}", r.client, r.method, r.uri, r.scenario.as_deref().unwrap_or(""));
            shown.push((v.raw, is_attack, what, reasons.join("; ")));
            if shown.len() > 20 * args.show + 1000 {
                keep_extremes(&mut shown, args.show);
            }
        }
        warming += u64::from(v.band == meshward_detector::Band::WarmingUp);
        scores.push(v.score);
        attack.push(is_attack);
        flagged.push(v.flagged());
        scenario_of.push(if is_attack {
            let name = r.scenario.as_deref().unwrap_or("unnamed");
            let next = scenario_ids.len() as u32;
            let id = *scenario_ids.entry(name.to_owned()).or_insert_with(|| {
                scenario_names.push(name.to_owned());
                next
            });
            Some(id)
        } else {
            None
        });
        // Only a new client's name is copied.
        if !tallies.contains_key(r.client.as_ref()) {
            tallies.insert(r.client.to_string(), ClientTally::default());
        }
        let Some(t) = tallies.get_mut(r.client.as_ref()) else { return }; // inserted just above
        t.requests += 1;
        t.attacks += u32::from(is_attack);
        if t.requests <= FIRST_REQUESTS && v.flagged() {
            t.flagged_early = true;
        }
        // A client that turns hostile mid-file (a flood from a known client) is
        // judged from its first attack request on.
        if t.attacks > 0 {
            t.since_attack += 1;
            if t.since_attack <= FIRST_REQUESTS && v.flagged() {
                t.flagged_after_attack = true;
            }
        }
    })?;
    let test_seconds = test_start.elapsed().as_secs_f64();
    let detector_seconds = detector_time.as_secs_f64();
    if let Some(first) = test_start_ts.filter(|t| *t < train_end - CLOCK_BACK) {
        eprintln!(
            "meshward eval: note: the test file starts {:.0} s before the train file ends; each client's rate windows restart at its first test request",
            train_end - first
        );
    }
    if !replay.clients.timed() {
        eprintln!("meshward eval: note: every request carries the same timestamp; rates and bursts are not measured");
    }
    if let Some(mut out) = scores_out {
        if let Some(e) = scores_error.take() {
            return Err(e).context("cannot write the scores file");
        }
        out.flush().context("cannot write the scores file")?;
    }
    if let Some(mut out) = dump {
        if let Some(e) = dump_error.take() {
            return Err(e).context("cannot write the dump file");
        }
        out.flush().context("cannot write the dump file")?;
    }
    if args.show > 0 {
        keep_extremes(&mut shown, args.show);
        for (raw, is_attack, what, reasons) in &shown {
            let label = if *is_attack { "attack" } else { "normal" };
            eprintln!("{label} {raw:.1} bits: {what}: {reasons}");
        }
    }

    let n = scores.len();
    let attacks = attack.iter().filter(|a| **a).count();
    let normal_scores: Vec<f64> = scores.iter().zip(&attack).filter(|(_, a)| !**a).map(|(s, _)| *s).collect();
    let mut scenarios = serde_json::Map::new();
    for (id, name) in scenario_names.iter().enumerate() {
        let mine: Vec<usize> = (0..n).filter(|i| scenario_of[*i] == Some(id as u32)).collect();
        let detected = mine.iter().filter(|i| flagged[**i]).count() as f64 / mine.len().max(1) as f64;
        let mut s: Vec<f64> = normal_scores.clone();
        let mut a = vec![false; s.len()];
        s.extend(mine.iter().map(|i| scores[*i]));
        a.resize(s.len(), true);
        scenarios.insert(
            name.clone(),
            json!({"requests": mine.len(), "detected": detected, "auroc": metrics::auroc(&s, &a)}),
        );
    }
    let attacking: Vec<&ClientTally> = tallies.values().filter(|t| t.attacks > 0).collect();
    let caught = attacking.iter().filter(|t| t.flagged_after_attack).count();
    let caught_from_start = attacking.iter().filter(|t| t.flagged_early).count();
    let op = metrics::operating_point(&flagged, &attack);
    let out: Value = json!({
        "requests": n,
        "attacks": attacks,
        "auroc": metrics::auroc(&scores, &attack),
        "auprc": metrics::auprc(&scores, &attack),
        "tpr_at_fpr": {
            "0.001": metrics::tpr_at_fpr(&scores, &attack, 0.001),
            "0.01": metrics::tpr_at_fpr(&scores, &attack, 0.01),
        },
        "operating_point": {"tpr": op.tpr, "fpr": op.fpr},
        "scenarios": scenarios,
        "clients": {
            "attacking": attacking.len(),
            "flagged_within_50": if attacking.is_empty() { Value::Null } else { json!(caught as f64 / attacking.len() as f64) },
            "flagged_within_first_50": if attacking.is_empty() { Value::Null } else { json!(caught_from_start as f64 / attacking.len() as f64) },
            "total": tallies.len(),
        },
        "requests_per_second": if detector_seconds > 0.0 { n as f64 / detector_seconds } else { 0.0 },
        "wall_requests_per_second": if test_seconds > 0.0 { n as f64 / test_seconds } else { 0.0 },
        "skipped": skipped,
        "train_requests": train_requests,
        "train_seconds": train_seconds,
        "warming_up": warming,
        "model": {
            "version": replay.model.version,
            "learned": replay.learner.learned(),
            "refused": replay.learner.refused(),
            "fp_budget": cfg.fp_budget,
            "thresholds": {"suspicious": replay.model.thresholds.suspicious, "anomalous": replay.model.thresholds.anomalous},
        },
    });
    println!("{out}");
    Ok(())
}
