//! Command-line interface: one module per subcommand.

pub mod certs;
pub mod eval;
pub mod init;
pub mod inject;
pub mod injector;
pub mod policy;
pub mod run;
pub mod traffic;

use std::path::PathBuf;

/// meshward: a security sidecar proxy for machine-learning inference services.
#[derive(Debug, clap::Parser)]
#[command(name = "meshward", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the sidecar (inbound and/or outbound listeners, admin server).
    Run {
        /// YAML configuration file; every field can also be set by a MESHWARD_* variable.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Development-only PKI: create a CA, issue SPIFFE workload certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Tools for policy authors: validate policy files offline.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Replay labelled traffic through the detector offline and print detection metrics as JSON.
    Eval(eval::EvalArgs),
    /// Run a complete local mesh with an embedded model server and traffic.
    Demo(crate::demo::DemoArgs),
    /// Inject the meshward sidecar into Kubernetes manifests (files, directories or stdin) and print them.
    Inject(inject::InjectArgs),
    /// Run the mutating admission webhook that injects the sidecar into new pods (HTTPS).
    Injector(injector::InjectorArgs),
    /// Write the traffic-capture iptables rules in this network namespace (the pod's capture init container; run
    /// elsewhere it captures that host's traffic: see --dry-run).
    Init(init::InitArgs),
    /// Wait until the local proxy's /ready answers 200 (postStart hook of legacy sidecars).
    WaitReady(init::WaitReadyArgs),
    /// Generate labelled Open Inference Protocol v2 traffic (train and test JSONL files) for `meshward eval`.
    Traffic(traffic::TrafficArgs),
}
