//! The detector runtime without sockets: verdicts, fail modes, learning.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use meshward_detector::Request;
use meshward_policies::anomaly::AnomalyPolicy;
use meshward_policies::eval::RequestAttrs;

use super::enforce::enforce;
use super::{Detector, DetectorConfig};
use crate::http::error::ProxyError;
use crate::metrics::Metrics;
use crate::ratelimit::Limiters;

fn policies(fail_mode: &str) -> Vec<AnomalyPolicy> {
    let yaml = format!(
        "apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {{name: guard}}\nspec:\n  onDetectorUnavailable: {fail_mode}\n  rules:\n  - anomalous: block\n"
    );
    meshward_policies::compile::load_all(&[("guard.yaml", &yaml)]).expect("valid policy").anomaly
}

fn detector(max_concurrent: usize) -> (Detector, Arc<Metrics>) {
    let metrics = Metrics::new();
    let cfg = DetectorConfig { max_concurrent, learn: false, ..DetectorConfig::default() };
    (Detector::start(cfg, metrics.clone()).expect("detector"), metrics)
}

fn request(ts: f64) -> Request<'static> {
    Request {
        method: "POST",
        uri: "/v2/models/m/infer",
        headers: &[("content-type", "application/json")],
        body: br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1.0]}]}"#,
        client: "10.0.0.1",
        ts,
        truncated: false,
    }
}

fn attrs<'a>(headers: &'a Vec<(&'a str, &'a str)>) -> RequestAttrs<'a> {
    RequestAttrs {
        method: "POST",
        path: "/v2/models/m/infer",
        port: 8080,
        peer: None,
        source_ip: "10.0.0.1".parse().expect("ip"),
        headers,
        jwt: None,
    }
}

#[test]
fn an_overloaded_detector_fails_open_or_closed_as_the_policy_says_and_counts_it() {
    let headers = Vec::new();
    for (mode, refused, action) in [("open", false, "unavailable_open"), ("closed", true, "unavailable_closed")] {
        let (det, metrics) = detector(1);
        // One scoring already in flight: the next one finds the detector overloaded.
        det.in_flight.fetch_add(1, Ordering::AcqRel);
        let (d, result) = enforce(&det, &policies(mode), &request(1.0), &attrs(&headers), &Limiters::default(), "t");
        assert_eq!(d.action, action);
        assert_eq!(matches!(result, Err(ProxyError::DetectorUnavailable(_))), refused, "{mode}: {result:?}");
        let m = metrics.encode();
        assert!(m.contains(&format!("action=\"{action}\",reason=\"overloaded\",policy=\"guard\"")), "{m}");
        det.in_flight.fetch_sub(1, Ordering::AcqRel);
        let (_, result) = enforce(&det, &policies(mode), &request(2.0), &attrs(&headers), &Limiters::default(), "t");
        assert!(result.is_ok(), "{mode}: a free detector judges (and warms up): {result:?}");
    }
}

#[test]
fn without_an_anomaly_policy_the_detector_only_scores() {
    let headers = Vec::new();
    let (det, _) = detector(4);
    let (d, result) = enforce(&det, &[], &request(1.0), &attrs(&headers), &Limiters::default(), "t");
    assert!(result.is_ok());
    assert!(d.decision.is_none() && !d.alerting());
    assert_eq!((d.band, d.action), ("warming_up", "allow"));
}
