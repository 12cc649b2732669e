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

/// Runs `meshward policy ...`.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { paths } => {
            let files = policy_files(&paths)?;
            let mut texts = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
                texts.push((f.display().to_string(), text));
            }
            let refs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
            match meshward_policies::compile::load_set(&refs) {
                Ok(policies) => {
                    println!("{} policies in {} files: ok", policies.len(), files.len());
                    Ok(ExitCode::SUCCESS)
                }
                Err(diags) => {
                    for d in &diags {
                        println!("{d}");
                    }
                    eprintln!("{} problems in {} files", diags.len(), files.len());
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
