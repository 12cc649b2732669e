//! The loaded policy set: read from files, swapped atomically when they
//! change (polled by content hash, like certificates; see `tls::store`), and
//! evaluated per request so changes reach already-open connections.
//! A set that does not validate at start is fatal; on reload it is refused,
//! logged with its diagnostics and counted, and the last good set stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use meshward_policies::anomaly::AnomalyPolicy;
use meshward_policies::compile::{load_all, AuthorizationPolicy, Diagnostic, Workload};
use meshward_policies::jwt::{JwtRule, RequestAuthentication};
use meshward_policies::ratelimit::RateLimitPolicy;
use sha2::{Digest, Sha256};

/// One loaded, valid policy set.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Authorization policies in file order.
    pub policies: Vec<AuthorizationPolicy>,
    /// Rate-limit policies in file order.
    pub rate_limits: Vec<RateLimitPolicy>,
    /// JWT authentication policies in file order.
    pub authentication: Vec<RequestAuthentication>,
    /// Anomaly policies in file order.
    pub anomaly: Vec<AnomalyPolicy>,
    /// Names of loaded policies that do not attach to this workload.
    pub not_attached: Vec<String>,
    /// Files and the SHA-256 of their content.
    pub files: Vec<(String, String)>,
    /// SHA-256 over all files.
    pub hash: String,
    /// When it was loaded.
    pub loaded_at: Option<SystemTime>,
}

/// Why a policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file or directory could not be read.
    #[error("{0}")]
    Read(String),
    /// The files do not validate.
    #[error("{} problems:\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

/// The current policy set.
#[derive(Debug)]
pub struct PolicyStore {
    paths: Vec<PathBuf>,
    workload: Option<Workload>,
    current: ArcSwap<PolicySet>,
}

impl PolicyStore {
    /// Loads `paths` now; an invalid set is an error (fail closed at start).
    /// Only policies that attach to `workload` apply (all of them without one).
    pub fn load(paths: Vec<PathBuf>, workload: Option<Workload>) -> Result<Self, PolicyError> {
        let set = read_set(&paths, workload.as_ref())?;
        Ok(Self { paths, workload, current: ArcSwap::from_pointee(set) })
    }

    /// The current set.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Reloads if the files changed. `Ok(true)` when a new set was swapped in.
    pub fn reload(&self) -> Result<bool, PolicyError> {
        if self.paths.is_empty() {
            return Ok(false);
        }
        let set = read_set(&self.paths, self.workload.as_ref())?;
        if set.hash == self.current().hash {
            return Ok(false);
        }
        self.current.store(Arc::new(set));
        Ok(true)
    }
}

/// Policy files under `paths`: files as given, directories' `*.yaml`/`*.yml`
/// (recursively, skipping `..`-prefixed Kubernetes volume internals), sorted.
pub fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PolicyError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| PolicyError::Read(format!("{}: {e}", p.display())))?;
        if meta.is_dir() {
            collect_dir(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PolicyError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| PolicyError::Read(format!("{}: {e}", dir.display())))?
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

/// Every policy file under `paths` as (name, contents), in load order.
pub fn read_files(paths: &[PathBuf]) -> Result<Vec<(String, String)>, PolicyError> {
    policy_files(paths)?
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| PolicyError::Read(format!("{}: {e}", f.display())))?;
            Ok((f.display().to_string(), text))
        })
        .collect()
}

impl PolicySet {
    /// Every JWT rule of the attached policies.
    pub fn jwt_rules(&self) -> Vec<&JwtRule> {
        self.authentication.iter().flat_map(|p| &p.rules).collect()
    }
}

fn read_set(paths: &[PathBuf], workload: Option<&Workload>) -> Result<PolicySet, PolicyError> {
    if paths.is_empty() {
        return Ok(PolicySet { loaded_at: Some(SystemTime::now()), ..PolicySet::default() });
    }
    let texts = read_files(paths)?;
    let mut all = Sha256::new();
    let mut hashes = Vec::new();
    for (name, text) in &texts {
        let h = Sha256::digest(text.as_bytes());
        all.update(name.as_bytes());
        all.update(h);
        hashes.push((name.clone(), hex(&h)));
    }
    let refs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let loaded = load_all(&refs).map_err(PolicyError::Invalid)?;
    let set = loaded.for_workload(workload);
    let names = |p: &meshward_policies::compile::Policies| -> Vec<String> {
        let a = p.authorization.iter().map(|x| format!("AuthorizationPolicy/{}", x.name));
        let r = p.rate_limits.iter().map(|x| format!("RateLimitPolicy/{}", x.name));
        let j = p.authentication.iter().map(|x| format!("RequestAuthentication/{}", x.name));
        let d = p.anomaly.iter().map(|x| format!("AnomalyPolicy/{}", x.name));
        a.chain(r).chain(j).chain(d).collect()
    };
    let attached = names(&set);
    let not_attached = names(&loaded).into_iter().filter(|n| !attached.contains(n)).collect();
    Ok(PolicySet {
        policies: set.authorization,
        rate_limits: set.rate_limits,
        authentication: set.authentication,
        anomaly: set.anomaly,
        not_attached,
        files: hashes,
        hash: hex(&all.finalize()),
        loaded_at: Some(SystemTime::now()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
