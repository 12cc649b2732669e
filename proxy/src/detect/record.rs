//! `detector.record`: every scored request appended to a file in the
//! `meshward eval` format (docs/eval-format.md), with the score the sidecar
//! gave it, so traffic seen in staging can be labelled and evaluated offline
//! and a sidecar's verdicts can be replayed with `meshward eval`.
//!
//! Lines go over a bounded queue to a writer thread (a full queue drops the
//! line and counts it); the file stops growing at `record_max_bytes`.
//! Credentials are pseudonymised: each letter and digit of the values of
//! `authorization`, `proxy-authorization`, `cookie`, `set-cookie` and
//! `x-api-key` is replaced by one of the same class drawn from a stream keyed
//! by SHA-256 of a random per-process key and the value (other bytes stay).
//! Length, character classes and which requests carried the same credential
//! survive, so most of the detector's features of them (credential churn
//! included) are kept, while the secret is gone and cannot be recovered from
//! the file. The detector also learns which exact values a header takes, so a
//! request whose credential the model learned scores higher offline under its
//! pseudonym; `record_credentials: true` writes credentials as they are, for a
//! recording that reproduces the sidecar's scores exactly (keep such a file
//! as secret as the credentials).

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crate::dataset::{Label, Record};
use crate::metrics::{Metrics, ResultLabel};

/// Lines waiting for the writer.
const QUEUE: usize = 4096;

/// Headers whose values are masked in recordings.
const SECRET_HEADERS: [&str; 5] = ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"];

/// The recorder handle.
#[derive(Debug)]
pub struct Recorder {
    tx: SyncSender<String>,
    metrics: Arc<Metrics>,
    /// Random per-process key of the pseudonyms (never written anywhere);
    /// `None`: credentials are written as they are (`record_credentials`).
    key: Option<[u8; 32]>,
}

/// Pseudonymises a credential under `key`: same length and character
/// classes; equal values map to equal pseudonyms, different ones (almost
/// surely) to different ones. An authentication scheme (`Bearer `,
/// `Basic `) and a JWT's first segment (its header: algorithm and key id,
/// no secret) are kept as they are.
pub fn mask(key: &[u8; 32], value: &str) -> String {
    let (scheme, rest) = match value.split_once(' ') {
        Some((s, r)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => (&value[..=s.len()], r),
        _ => ("", value),
    };
    let (jwt_header, secret) = match rest.split_once('.') {
        Some((h, r)) if h.starts_with("eyJ") => (&rest[..=h.len()], r),
        _ => ("", rest),
    };
    format!("{scheme}{jwt_header}{}", pseudonym(key, value, secret))
}

/// `secret` with each letter and digit drawn from a stream keyed by `key` and `whole`.
fn pseudonym(key: &[u8; 32], whole: &str, secret: &str) -> String {
    use rand::{Rng, SeedableRng};
    use sha2::{Digest, Sha256};
    let seed: [u8; 32] = Sha256::new().chain_update(key).chain_update(whole.as_bytes()).finalize().into();
    let mut rng = rand::rngs::StdRng::from_seed(seed);
    secret
        .chars()
        .map(|c| match c {
            'A'..='Z' => char::from(b'A' + rng.gen_range(0..26u8)),
            'a'..='z' => char::from(b'a' + rng.gen_range(0..26u8)),
            '0'..='9' => char::from(b'0' + rng.gen_range(0..10u8)),
            c => c,
        })
        .collect()
}

impl Recorder {
    /// Opens (appends to) `path` and starts the writer thread.
    pub fn start(
        path: &std::path::Path,
        max_bytes: u64,
        credentials: bool,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Recorder> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("detector.record: cannot open {}: {e}", path.display()))?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = sync_channel(QUEUE);
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("meshward-recorder".into())
            .spawn(move || write_loop(&rx, file, written, max_bytes, &m))?;
        Ok(Recorder { tx, metrics, key: (!credentials).then(rand::random) })
    }

    /// Queues one scored request (never waits).
    #[allow(clippy::too_many_arguments)] // one line of the eval format, every field named
    pub fn record(
        &self,
        ts: f64,
        client: &str,
        method: &str,
        uri: &str,
        headers: &http::HeaderMap,
        (body, cut): (&[u8], bool),
        status: Option<u16>,
        latency_ms: f64,
        verdict: (f64, &str, &str),
    ) {
        let headers = headers
            .iter()
            .filter_map(|(n, v)| {
                let v = v.to_str().ok()?;
                let v = match &self.key {
                    Some(key) if SECRET_HEADERS.contains(&n.as_str()) => mask(key, v),
                    _ => v.to_owned(),
                };
                Some((n.as_str().to_owned(), v))
            })
            .collect();
        let rec = Record {
            ts,
            client: client.to_owned(),
            method: method.to_owned(),
            uri: uri.to_owned(),
            headers,
            body: body.to_vec(),
            label: Label::Normal,
            scenario: None,
            status,
            latency_ms: Some(latency_ms),
        };
        let mut line = rec.to_json_line();
        // The sidecar's verdict as extra keys (eval ignores unknown keys).
        if line.ends_with('}') {
            line.pop();
            let (score, band, action) = verdict;
            if cut {
                // Only the inspected prefix is in the line (see `RecordRef::body_truncated`).
                line.push_str(",\"body_truncated\":true");
            }
            line.push_str(&format!(",\"score\":{score},\"band\":\"{band}\",\"action\":\"{action}\"}}\n"));
        }
        let outcome = match self.tx.try_send(line) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "dropped",
            Err(TrySendError::Disconnected(_)) => "stopped",
        };
        self.metrics.detector_records.get_or_create(&ResultLabel { result: outcome }).inc();
    }
}

fn write_loop(rx: &Receiver<String>, file: std::fs::File, mut written: u64, max_bytes: u64, m: &Metrics) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut out = std::io::BufWriter::new(file);
    let mut warned = false;
    loop {
        let line = match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(line) => line,
            // Idle: flush, so the file is current whenever traffic pauses.
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let len = line.len() as u64;
        let result = if written + len > max_bytes {
            if !warned {
                tracing::warn!(
                    max_bytes,
                    "detector.record: the file reached record_max_bytes; later requests are not recorded"
                );
                warned = true;
            }
            "full"
        } else if out.write_all(line.as_bytes()).is_ok() {
            written += len;
            "written"
        } else {
            "error"
        };
        m.detector_records.get_or_create(&ResultLabel { result }).inc();
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                'A'..='Z' => 'X',
                'a'..='z' => 'x',
                '0'..='9' => '0',
                c => c,
            })
            .collect()
    }

    #[test]
    fn a_cut_body_is_recorded_as_such_and_replays_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.jsonl");
        let rec = Recorder::start(&path, 1 << 20, false, Metrics::new()).expect("start");
        let headers = http::HeaderMap::new();
        for cut in [false, true] {
            rec.record(
                1.0,
                "c",
                "POST",
                "/v2/models/m/infer",
                &headers,
                (b"{\"inputs\"", cut),
                None,
                1.0,
                (0.1, "normal", "allow"),
            );
        }
        drop(rec);
        // The writer thread flushes within its 100 ms idle tick, and at its end.
        let started = std::time::Instant::now();
        let lines = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2 || started.elapsed() > std::time::Duration::from_secs(5) {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let cut: Vec<bool> = lines
            .lines()
            .map(|l| crate::dataset::RecordRef::from_json_line(l).expect("an eval line").body_truncated)
            .collect();
        assert_eq!(cut, [false, true]);
    }

    #[test]
    fn credentials_keep_shape_and_identity_but_lose_their_value() {
        let key = [7u8; 32];
        let token = "Bearer eyJhbGciOi.eyJzdWIiOiJhbGljZSJ9.J9-x_1";
        let masked = mask(&key, token);
        assert_eq!(shape(&masked), shape(token));
        assert!(masked.starts_with("Bearer eyJhbGciOi."), "scheme and JWT header kept: {masked}");
        assert!(!masked.contains("eyJzdWIiOiJhbGljZSJ9") && !masked.ends_with("J9-x_1"), "{masked}");
        assert_eq!(mask(&key, token), masked, "the same credential, the same pseudonym");
        assert_ne!(mask(&key, "Bearer eyJhbGciOi.eyJzdWIiOiJhbGljZSJ9.J9-x_2"), masked, "another credential");
        assert_eq!(shape(&mask(&key, "session=abc123; theme=dark")), shape("session=abc123; theme=dark"));
        assert_ne!(mask(&[8u8; 32], token), masked, "another process, other pseudonyms");
    }
}
