//! `meshward policy`: tools for policy authors that run offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

/// Subcommands of `meshward policy`.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files or directories (*.yaml, *.yml); prints
    /// `file:line:column: message` per problem; exit 0 when all are valid, 1 otherwise.
    Check {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of a policy kind (for editor validation).
    Schema {
        /// The kind.
        #[arg(default_value = "AuthorizationPolicy")]
        kind: String,
    },
    /// Run table-driven cases (request -> expected decision) against policies;
    /// reports which policy and rule decided each case; exit 0 when all pass.
    Test {
        /// Policy files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Cases file (YAML: `cases: [{name, request: {method, path, peer, ip, headers, jwt}, anomaly: {band,
        /// clientSignal}, expect, policy, rule}]`).
        #[arg(long)]
        cases: PathBuf,
    },
}

type Loaded = Result<meshward_policies::compile::Policies, Vec<meshward_policies::compile::Diagnostic>>;

/// Reads and compiles the policy files under `paths` (the same reader the
/// sidecar uses); returns the file count too.
fn load(paths: &[PathBuf]) -> anyhow::Result<(usize, Loaded)> {
    let texts = crate::policy_store::read_files(paths)?;
    let refs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    Ok((texts.len(), meshward_policies::compile::load_all(&refs)))
}

/// Prints diagnostics; exit status 1.
fn report_invalid(diags: &[meshward_policies::compile::Diagnostic], files: usize) -> ExitCode {
    for d in diags {
        println!("{d}");
    }
    eprintln!("{} problems in {files} files", diags.len());
    ExitCode::from(1)
}

/// Runs `meshward policy ...`.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { paths } => match load(&paths)? {
            (files, Ok(policies)) => {
                let (a, r, j, x) = (
                    policies.authorization.len(),
                    policies.rate_limits.len(),
                    policies.authentication.len(),
                    policies.anomaly.len(),
                );
                println!(
                    "{} policies ({a} authorization, {j} request-authentication, {r} rate-limit, {x} anomaly) \
                     in {files} files: ok",
                    a + r + j + x
                );
                Ok(ExitCode::SUCCESS)
            }
            (files, Err(diags)) => Ok(report_invalid(&diags, files)),
        },
        PolicyCommand::Schema { kind } => match meshward_policies::format::schema(&kind) {
            Some(schema) => {
                println!("{}", serde_json::to_string_pretty(&schema)?);
                Ok(ExitCode::SUCCESS)
            }
            None => anyhow::bail!(
                "unknown kind \"{kind}\" (supported: AuthorizationPolicy, RequestAuthentication, RateLimitPolicy, \
                 AnomalyPolicy)"
            ),
        },
        PolicyCommand::Test { paths, cases } => {
            let policies = match load(&paths)? {
                (_, Ok(p)) => p,
                (files, Err(diags)) => return Ok(report_invalid(&diags, files)),
            };
            let text = std::fs::read_to_string(&cases).with_context(|| format!("{}", cases.display()))?;
            let parsed = meshward_policies::cases::parse_cases(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cases.display()))?;
            let results = meshward_policies::cases::run_cases(&policies, &parsed);
            for r in &results {
                match &r.expected {
                    None => println!("PASS  {}: {}", r.name, r.got),
                    Some(want) => println!("FAIL  {}: expected {want}, got {}", r.name, r.got),
                }
            }
            let failed = results.iter().filter(|r| !r.passed).count();
            println!("{} passed, {failed} failed", results.len() - failed);
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}
