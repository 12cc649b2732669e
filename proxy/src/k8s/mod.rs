//! Kubernetes injection, as pure functions: pod objects in, injected pod
//! objects out ([`inject`]), the `meshward.dev/*` annotations users set
//! ([`annotations`]), AdmissionReview handling for the webhook
//! ([`admission`]) and the iptables rules of the capture init container
//! ([`capture`]).
//!
//! Nothing here opens a socket, reads a file or runs a command: the
//! `inject`, `injector` and `init` subcommands in [`crate::cli`] do the I/O
//! and call these functions, so `meshward inject` and the webhook share one
//! injection.

pub mod admission;
pub mod annotations;
pub mod capture;
pub mod inject;
