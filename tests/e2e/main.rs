//! End-to-end tests: the real `meshward` binary, real sockets on loopback
//! (and, for transparent capture, a network namespace the test creates).
//! One test binary with modules keeps link time down.

mod util;

mod anomaly;
mod capture_init;
mod config;
mod demo;
mod eval_cli;
mod grpc;
mod inference_peers;
mod inject;
mod injector;
mod jwt;
mod lifecycle;
mod limits;
mod mesh;
mod policy;
mod policy_cli;
mod refusals;
mod traffic_cli;
mod transparent;
