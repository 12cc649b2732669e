//! `meshward policy`: tools for policy authors that run offline.

use std::path::{Path, PathBuf};
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
        /// Cases file (YAML: `cases: [{name, request: {method, path, peer, ip, headers, jwt}, expect, policy, rule}]`).
        #[arg(long)]
        cases: PathBuf,
    },
}

/// Policy files under `paths`: files as given, directories' `*.yaml`/`*.yml`
/// (recursively, skipping `..`-prefixed Kubernetes volume internals), sorted.
pub fn policy_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if meta.is_dir() {
            collect_dir(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("..")))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_dir(&p, out)?;
        } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

type Loaded = Result<meshward_policies::compile::Policies, Vec<meshward_policies::compile::Diagnostic>>;

/// Reads and compiles the policy files under `paths`; returns the file count too.
fn load(paths: &[PathBuf]) -> anyhow::Result<(usize, Loaded)> {
    let files = policy_files(paths)?;
    let mut texts = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    let refs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    Ok((files.len(), meshward_policies::compile::load_all(&refs)))
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
                let (a, r) = (policies.authorization.len(), policies.rate_limits.len());
                println!("{} policies ({a} authorization, {r} rate-limit) in {files} files: ok", a + r);
                Ok(ExitCode::SUCCESS)
            }
            (files, Err(diags)) => Ok(report_invalid(&diags, files)),
        },
        PolicyCommand::Schema { kind } => match meshward_policies::format::schema(&kind) {
            Some(schema) => {
                println!("{}", serde_json::to_string_pretty(&schema)?);
                Ok(ExitCode::SUCCESS)
            }
            None => anyhow::bail!("unknown kind \"{kind}\" (supported: AuthorizationPolicy, RateLimitPolicy)"),
        },
        PolicyCommand::Test { paths, cases } => {
            let policies = match load(&paths)? {
                (_, Ok(p)) => p.authorization,
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
