//! `meshward traffic`: writes labelled Open Inference Protocol v2 traffic
//! (train and test files in the `docs/eval-format.md` JSONL format).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;

use crate::traffic::{Scenario, TrafficConfig};

/// Arguments of `meshward traffic`.
#[derive(Debug, clap::Args)]
#[command(after_help = scenario_help())]
pub struct TrafficArgs {
    /// Train file: normal traffic only, the earlier period ("-" for stdout).
    #[arg(long)]
    pub train: PathBuf,
    /// Test file: the continued normal traffic with mild drift, interleaved in
    /// time with the attack scenarios ("-" for stdout).
    #[arg(long)]
    pub test: PathBuf,
    /// Seed; the same seed and options give byte-identical files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Normal requests in the train file.
    #[arg(long, default_value_t = 20_000)]
    pub train_requests: usize,
    /// Normal requests in the test file (attack requests come on top).
    #[arg(long, default_value_t = 20_000)]
    pub test_requests: usize,
    /// Attack scenarios in the test file: comma-separated names, "all" or "none" (see below).
    #[arg(long, default_value = "all", value_parser = parse_scenarios)]
    pub scenarios: ScenarioList,
    /// Share of attack requests in the test file (0 to 0.9). Every attacking
    /// client still sends at least 60 requests, so small files get more.
    #[arg(long, default_value_t = 0.1, value_parser = parse_share)]
    pub attack_share: f64,
    /// Normal clients present from the start (two more join in the test period).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub clients: u16,
}

/// A parsed `--scenarios` value.
#[derive(Debug, Clone)]
pub struct ScenarioList(pub Vec<Scenario>);

fn parse_scenarios(s: &str) -> Result<ScenarioList, String> {
    match s.trim() {
        "all" => return Ok(ScenarioList(Scenario::ALL.to_vec())),
        "none" => return Ok(ScenarioList(Vec::new())),
        _ => {}
    }
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let sc: Scenario = name.parse()?;
        if !out.contains(&sc) {
            out.push(sc);
        }
    }
    Ok(ScenarioList(out))
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=0.9).contains(&v) => Ok(v),
        _ => Err(format!("invalid attack share \"{s}\" (expected a number from 0 to 0.9)")),
    }
}

fn scenario_help() -> String {
    let mut s = String::from("Scenarios (the `scenario` value of attack lines):\n");
    for sc in Scenario::ALL {
        s.push_str(&format!("  {:<24} {}\n", sc.name(), sc.description()));
    }
    s.push_str("\nFormat: docs/eval-format.md. Use with: meshward eval --train TRAIN --test TEST");
    s
}

fn open(path: &Path) -> anyhow::Result<Box<dyn Write>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdout().lock()));
    }
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Box::new(f))
}

/// Runs `meshward traffic`.
pub fn run(args: TrafficArgs) -> anyhow::Result<()> {
    let stdout = Path::new("-");
    if args.train == stdout && args.test == stdout {
        anyhow::bail!("--train and --test cannot both be \"-\" (stdout)");
    }
    if args.train == args.test {
        anyhow::bail!("--train and --test name the same file {}", args.train.display());
    }
    let cfg = TrafficConfig {
        seed: args.seed,
        train_requests: args.train_requests,
        test_requests: args.test_requests,
        scenarios: args.scenarios.0,
        attack_share: args.attack_share,
        clients: usize::from(args.clients),
    };
    let started = Instant::now();
    let train = open(&args.train)?;
    let test = open(&args.test)?;
    let summary = crate::traffic::generate(&cfg, train, test).context("writing traffic")?;
    let secs = started.elapsed().as_secs_f64();
    let lines = summary.train + summary.test_normal + summary.attacks();
    eprintln!(
        "meshward traffic: {summary}; {lines} lines in {secs:.2} s ({:.0} lines/s)",
        lines as f64 / secs.max(1e-9)
    );
    Ok(())
}
