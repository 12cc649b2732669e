//! The `meshward` binary: parse the CLI, load and validate config (exit 64
//! before binding anything if it is invalid), start the runtime, hand over.

use std::process::ExitCode;

use clap::Parser as _;
use meshward::cli::{self, Cli, Command};
use meshward::config::{Config, LogFormat};
use meshward::policy_store::PolicyStore;

/// Exit code for an invalid configuration (EX_CONFIG-style usage error).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => match Config::load(config.as_deref(), std::env::vars()) {
            Err(e) => {
                eprintln!("meshward: invalid configuration: {e:#}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Ok(config) => {
                // Policies are security decisions: an invalid set at start is fatal.
                let policies = match PolicyStore::load(config.policy_paths.clone(), config.workload.clone()) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("meshward: invalid policy: {e:#}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                };
                init_logging(config.log.format, &config.log.level);
                runtime(config.worker_threads).and_then(|rt| rt.block_on(cli::run::run(config, policies)))
            }
        },
        Command::Certs(cmd) => cli::certs::run(cmd),
        Command::Eval(args) => cli::eval::run(&args),
        Command::Traffic(args) => cli::traffic::run(args),
        Command::Inject(args) => cli::inject::run(&args),
        Command::Injector(args) => {
            init_logging(LogFormat::Auto, "info");
            runtime(1).and_then(|rt| rt.block_on(cli::injector::run(args)))
        }
        Command::Init(args) => cli::init::run(&args),
        Command::WaitReady(args) => cli::init::wait_ready(&args),
        Command::Policy(cmd) => match cli::policy::run(cmd) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Demo(args) => {
            init_logging(LogFormat::Text, "warn,meshward::pipeline=error");
            runtime(0).and_then(|rt| rt.block_on(meshward::demo::run(args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: one thread (the sidecar default, measured cheapest per
/// request in `tests/bench/mesh.sh`), `n` workers, or one per CPU for 0.
fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    Ok(b.enable_all().build()?)
}

fn init_logging(format: LogFormat, level: &str) {
    use std::io::IsTerminal as _;
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
