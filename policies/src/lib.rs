//! # meshward-policies
//!
//! The policy language of meshward: the YAML file format
//! (`apiVersion: meshward.dev/v1`, Kubernetes-shaped, several documents per
//! file), validation with `file:line:column` diagnostics that quote the bad
//! value, compilation into checked types ([`compile`]) and evaluation
//! ([`eval`]) with Istio's semantics.
//!
//! It never does I/O beyond parsing what it is handed: the proxy reads and
//! watches files, this crate decides.
//!
//! Kinds: `AuthorizationPolicy` (ALLOW / DENY / AUDIT, dry-run),
//! `RequestAuthentication` (JWT, [`jwt`]), `RateLimitPolicy`
//! ([`ratelimit`]) and `AnomalyPolicy` (what to do with the detector's
//! verdicts, [`anomaly`]; this crate never depends on the detector); each
//! attaches to workloads by namespace and selector ([`compile::Attachment`]).
//!
//! ```
//! let yaml = "apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: gw-only}\n\
//! spec:\n  rules:\n  - from: [{source: {principals: ['spiffe://cluster.local/ns/gw/sa/*']}}]\n";
//! let policies = meshward_policies::compile::load_file("p.yaml", yaml).expect("valid");
//! let headers: Vec<(&str, &str)> = Vec::new();
//! let req = meshward_policies::eval::RequestAttrs {
//!     method: "POST", path: "/v2/models/iris/infer", port: 8080,
//!     peer: Some("spiffe://cluster.local/ns/gw/sa/api"), source_ip: [10, 0, 0, 1].into(),
//!     headers: &headers, jwt: None,
//! };
//! let d = meshward_policies::eval::evaluate(&policies, &req);
//! assert_eq!(d.verdict, meshward_policies::eval::Verdict::Allow);
//! ```

#![warn(missing_docs)]

pub mod anomaly;
pub mod cases;
pub mod compile;
pub mod eval;
pub mod format;
pub mod jwt;
pub mod matcher;
pub mod ratelimit;
#[cfg(any(test, feature = "test-keys"))]
pub mod testkeys;

#[cfg(test)]
mod tests;
