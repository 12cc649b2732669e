//! # meshward-policies
//!
//! The policy language of meshward: the YAML file format
//! (`apiVersion: meshward.dev/v1`), validation with precise errors,
//! compilation into checked types and evaluation (authorization, JWT rules,
//! rate-limit keys, detector actions).
//!
//! It never does I/O beyond parsing what it is handed: the proxy reads and
//! watches files, this crate decides.
//!
//! The crate is founded with the workspace (issue #3); its content arrives
//! with the policy issue (#4). Until then the proxy enforces no policy.

#![warn(missing_docs)]
