//! # meshward-detector
//!
//! The anomaly detector of meshward: it owns feature extraction from an
//! inference request (and its response), per-client behaviour windows, the
//! online anomaly model, score calibration, model snapshots and evaluation
//! metrics.
//!
//! It never does I/O, never reads a clock of its own and never runs async
//! code: the proxy calls it with data and a timestamp and gets scores back.
//! That keeps every decision reproducible offline (`meshward eval`).
//!
//! The crate is founded with the workspace (issue #3); its content arrives
//! with the detector issue (#5). Until then the proxy does not call it.

#![warn(missing_docs)]
