//! # meshward-detector
//!
//! The anomaly detector of meshward: feature extraction from a request (and
//! its response), per-client behaviour windows, the online anomaly model,
//! score calibration, model snapshots and evaluation metrics.
//!
//! It never does I/O, never reads a clock of its own and never runs async
//! code: the proxy calls it with data and a timestamp and gets scores back.
//! That keeps every decision reproducible offline (`meshward eval`).
//!
//! Three pieces, split for concurrency:
//! - [`Model`]: immutable once built, `Send + Sync`; the proxy shares it in an
//!   `Arc` and swaps it whole when a new one is published.
//! - [`Clients`]: per-client sliding windows (bounded LRU), mutated by
//!   every scored request.
//! - [`Learner`]: the learning state; it takes [`Sample`]s of requests judged
//!   normal and publishes new models.
//!
//! ```
//! use meshward_detector::{score, Clients, Config, Learner, Model, Request};
//!
//! let mut learner = Learner::new(Config::default());
//! let mut model = Model::empty();
//! let mut clients = Clients::new(1000);
//! for i in 0..3000 {
//!     let uri = format!("/shop/item?id={}&qty={}", 100 + i % 50, 1 + i % 3);
//!     let req = Request { method: "GET", uri: &uri, headers: &[("accept", "text/html")], body: b"",
//!                         client: "10.0.0.1", ts: f64::from(i), truncated: false };
//!     let scored = score(&model, &mut clients, &req);
//!     learner.learn(&scored.sample);
//!     if let Some(m) = learner.maybe_publish() { model = m; }
//! }
//! let attack = Request { method: "GET", uri: "/shop/item?id=1%27%20OR%20%271%27=%271&qty=1",
//!                        headers: &[("accept", "text/html")], body: b"", client: "10.0.0.9", ts: 3001.0, truncated: false };
//! let v = score(&model, &mut clients, &attack).verdict;
//! assert!(v.flagged());
//! assert!(v.reasons[0].message().contains("query parameter 'id'"));
//! ```

#![warn(missing_docs)]

pub mod calibrate;
pub mod config;
pub mod features;
pub mod learner;
pub mod metrics;
pub mod model;
pub mod neighbours;
pub mod profile;
pub mod score;
pub mod shapiro;

pub use config::{Config, ConfigError, RawConfig};
pub use features::client::{Clients, CLOCK_BACK};
pub use features::request::Request;
pub use features::Sample;
pub use learner::{Learned, Learner};
pub use model::{Model, SnapshotError};
pub use score::{score, Band, Reason, Scored, Verdict};

#[cfg(test)]
mod tests;
