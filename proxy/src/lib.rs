//! # meshward
//!
//! A security sidecar proxy for machine-learning inference services. This
//! library is the `meshward` binary's body: listeners, TLS and identity,
//! HTTP forwarding, the request pipeline, the admin server and the CLI
//! subcommands. Decisions about what is allowed or suspicious belong to the
//! `meshward-policies` and `meshward-detector` crates; this crate owns every
//! socket, file and timer.
//!
//! Start reading at [`pipeline`] (the request's life) and [`cli::run`].
//! Kubernetes sidecar injection and capture rules are pure functions in
//! [`k8s`]; `cli::{inject, injector, init}` do their I/O.

#![warn(missing_docs)]

pub mod admin;
pub mod alerts;
pub mod authn;
pub mod cli;
pub mod config;
pub mod dataset;
pub mod demo;
pub mod detect;
pub mod http;
pub mod jwks;
pub mod k8s;
pub mod listen;
pub mod metrics;
pub mod pipeline;
pub mod policy_store;
pub mod ratelimit;
pub mod tls;
pub mod traffic;
