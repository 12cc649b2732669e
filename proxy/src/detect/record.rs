//! `detector.record`: every scored request appended to a file in the
//! `meshward eval` format (docs/eval-format.md), with the score the sidecar
//! gave it, so traffic seen in staging can be labelled and evaluated offline
//! and a sidecar's verdicts can be replayed with `meshward eval`.
//!
//! Lines go over a bounded queue to a writer thread (a full queue drops the
//! line and counts it); the file stops growing at `record_max_bytes`.
//! Credentials are masked: the values of `authorization`,
//! `proxy-authorization`, `cookie`, `set-cookie` and `x-api-key` keep their
//! length and character classes (upper case -> `X`, lower case -> `x`,
//! digit -> `0`, other bytes unchanged), so the detector's features of
//! them are unchanged while the secret is gone.

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
}

/// Masks a credential, keeping its length and character classes.
pub fn mask(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            'A'..='Z' => 'X',
            'a'..='z' => 'x',
            '0'..='9' => '0',
            c => c,
        })
        .collect()
}

impl Recorder {
    /// Opens (appends to) `path` and starts the writer thread.
    pub fn start(path: &std::path::Path, max_bytes: u64, metrics: Arc<Metrics>) -> anyhow::Result<Recorder> {
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
        Ok(Recorder { tx, metrics })
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
        body: &[u8],
        status: Option<u16>,
        latency_ms: f64,
        verdict: (f64, &str, &str),
    ) {
        let headers = headers
            .iter()
            .filter_map(|(n, v)| {
                let v = v.to_str().ok()?;
                let v = if SECRET_HEADERS.contains(&n.as_str()) { mask(v) } else { v.to_owned() };
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

    #[test]
    fn credentials_keep_shape_but_lose_their_value() {
        assert_eq!(mask("Bearer eyJhbGciOi.J9-x_1"), "Xxxxxx xxXxxXxxXx.X0-x_0");
    }
}
