//! The mutating webhook's one decision: an `admission.k8s.io/v1`
//! AdmissionReview body in, an AdmissionReview response out (a base64
//! JSONPatch when the pod was injected). Pure: the HTTP server in
//! `cli::injector` hands over the bytes and sends back what this returns.
//!
//! The patch is the difference between the pod as received and the pod
//! after [`inject_pod`], the same function
//! `meshward inject` uses, so both produce the same pod. A reinvoked review
//! (the API server may call twice) sees an injected pod, re-injects it to the
//! same result, and gets no patch.

use base64::Engine as _;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube_core::DynamicObject;
use serde_json::Value;

use super::inject::{inject_pod, InjectError, Outcome, Settings, Skip};

const API_VERSION: &str = "admission.k8s.io/v1";

/// What the webhook did, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A patch that injects the sidecar.
    Injected,
    /// Already injected the same way: allowed, no patch.
    Unchanged,
    /// Allowed without a patch, for this reason.
    Skipped(Skip),
    /// Not a pod (or no object): allowed untouched.
    Ignored,
    /// Refused: an annotation has an invalid value or the pod has an impossible shape.
    Refused,
    /// The body was not an AdmissionReview.
    Malformed,
}

impl Decision {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Unchanged => "unchanged",
            Self::Skipped(Skip::OptedOut) => "skipped_opted_out",
            Self::Skipped(Skip::HostNetwork) => "skipped_host_network",
            Self::Ignored => "ignored",
            Self::Refused => "refused",
            Self::Malformed => "malformed",
        }
    }
}

/// The HTTP answer to one review.
#[derive(Debug)]
pub struct Answer {
    /// 200, or 400 when the body is not a review at all (no uid to answer to).
    pub status: u16,
    /// A JSON AdmissionReview with `response` set.
    pub body: Vec<u8>,
    /// What was decided.
    pub decision: Decision,
}

/// Handles one AdmissionReview request body.
pub fn review(body: &[u8], settings: &Settings) -> Answer {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return malformed(body, &format!("not an AdmissionReview: {e}")),
    };
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return malformed(body, "AdmissionReview has no request"),
    };
    // Only new pods: a running pod's containers cannot change.
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod" && req.operation == Operation::Create;
    let Some(object) = req.object.as_ref().filter(|_| is_pod) else {
        return answer(AdmissionResponse::from(&req), Decision::Ignored);
    };
    let original = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            return answer(AdmissionResponse::from(&req).deny(format!("cannot read the pod: {e}")), Decision::Refused)
        }
    };
    let mut pod: serde_yaml::Value = match serde_yaml::to_value(&original) {
        Ok(v) => v,
        Err(e) => {
            return answer(AdmissionResponse::from(&req).deny(format!("cannot read the pod: {e}")), Decision::Refused)
        }
    };
    match inject_pod_object(&mut pod, settings) {
        Err(e) => {
            let mut resp = AdmissionResponse::from(&req).deny(format!("meshward: {e}"));
            resp.result.code = 400;
            answer(resp, Decision::Refused)
        }
        Ok(report) => {
            let mut resp = AdmissionResponse::from(&req);
            if !report.warnings.is_empty() {
                resp.warnings = Some(report.warnings.iter().map(|w| format!("meshward: {w}")).collect());
            }
            match report.outcome {
                Outcome::Skipped(skip) => {
                    resp.result.message = skip.reason().to_owned();
                    answer(resp, Decision::Skipped(skip))
                }
                Outcome::Injected => {
                    let injected: Value = match serde_json::to_value(&pod) {
                        Ok(v) => v,
                        Err(e) => return answer(resp.deny(format!("meshward: {e}")), Decision::Refused),
                    };
                    let patch = json_patch::diff(&original, &injected);
                    if patch.0.is_empty() {
                        return answer(resp, Decision::Unchanged);
                    }
                    match resp.with_patch(patch) {
                        Ok(r) => answer(r, Decision::Injected),
                        Err(e) => answer(
                            AdmissionResponse::from(&req).deny(format!("meshward: cannot encode the patch: {e}")),
                            Decision::Refused,
                        ),
                    }
                }
            }
        }
    }
}

/// Injects a whole Pod object (its `metadata` and `spec`).
fn inject_pod_object(pod: &mut serde_yaml::Value, settings: &Settings) -> Result<super::inject::Report, InjectError> {
    let map = pod.as_mapping_mut().ok_or_else(|| InjectError::Shape("the pod is not an object".into()))?;
    let mut metadata = map.remove("metadata").unwrap_or(serde_yaml::Value::Null);
    let Some(mut spec) = map.remove("spec") else {
        return Err(InjectError::Shape("the pod has no spec".into()));
    };
    let result = inject_pod(&mut metadata, &mut spec, &Default::default(), settings);
    map.insert("metadata".into(), metadata);
    map.insert("spec".into(), spec);
    result
}

fn answer(mut resp: AdmissionResponse, decision: Decision) -> Answer {
    resp.types.api_version = API_VERSION.into();
    resp.types.kind = "AdmissionReview".into();
    let mut review = serde_json::to_value(resp.into_review()).unwrap_or_default();
    // kube-core serializes the patch bytes as a JSON array of numbers; the
    // API documents (and every other webhook sends) a base64 string.
    if let Some(patch) = review.pointer_mut("/response/patch") {
        if let Some(bytes) = patch
            .as_array()
            .map(|a| a.iter().filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect::<Vec<u8>>())
        {
            *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
    let body = serde_json::to_vec(&review).unwrap_or_default();
    Answer { status: 200, body, decision }
}

/// An error review. With a request uid (the body was JSON with
/// `request.uid`), the API server gets a normal refusal it can show;
/// without one the answer is a 400.
fn malformed(body: &[u8], message: &str) -> Answer {
    let uid = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/request/uid").and_then(Value::as_str).map(str::to_owned));
    let mut resp = AdmissionResponse::invalid(format!("meshward: {message}"));
    resp.result.code = 400;
    let status = if let Some(uid) = uid {
        resp.uid = uid;
        200
    } else {
        400
    };
    Answer { status, ..answer(resp, Decision::Malformed) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review_of(pod: &Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "ml",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": false
            }
        }))
        .expect("json")
    }

    fn pod() -> Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "model-", "namespace": "ml", "labels": {"app": "model"}},
            "spec": {"containers": [{"name": "model", "image": "model:1", "ports": [{"containerPort": 8080}]}]}
        })
    }

    fn response(a: &Answer) -> Value {
        let v: Value = serde_json::from_slice(&a.body).expect("json answer");
        assert_eq!(v["apiVersion"], API_VERSION);
        v["response"].clone()
    }

    fn apply(pod: &Value, a: &Answer) -> Value {
        let r = response(a);
        let patch = base64::engine::general_purpose::STANDARD.decode(r["patch"].as_str().expect("patch")).expect("b64");
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("patch json");
        let mut out = pod.clone();
        json_patch::patch(&mut out, &patch).expect("patch applies");
        out
    }

    #[test]
    fn injects_then_reinvocation_gives_no_patch() {
        let s = Settings::default();
        let first = review(&review_of(&pod()), &s);
        assert_eq!((first.status, first.decision), (200, Decision::Injected));
        let r = response(&first);
        assert_eq!(
            (r["allowed"].as_bool(), r["uid"].as_str()),
            (Some(true), Some("705ab4f5-6393-11e8-b7cc-42010a800002"))
        );
        assert_eq!(r["patchType"], "JSONPatch");
        let injected = apply(&pod(), &first);
        assert_eq!(injected["spec"]["initContainers"][1]["name"], "meshward-proxy");
        let again = review(&review_of(&injected), &s);
        assert_eq!(again.decision, Decision::Unchanged);
        assert!(response(&again).get("patch").is_none());
    }

    #[test]
    fn updates_and_other_kinds_are_allowed_untouched() {
        let s = Settings::default();
        let body = String::from_utf8(review_of(&pod())).expect("utf8").replace("\"CREATE\"", "\"UPDATE\"");
        let a = review(body.as_bytes(), &s);
        assert_eq!(a.decision, Decision::Ignored);
        assert!(response(&a).get("patch").is_none());
    }

    #[test]
    fn host_network_and_opted_out_are_allowed_untouched_with_a_reason() {
        let s = Settings::default();
        let mut p = pod();
        p["spec"]["hostNetwork"] = true.into();
        let a = review(&review_of(&p), &s);
        assert_eq!(a.decision, Decision::Skipped(Skip::HostNetwork));
        let r = response(&a);
        assert!(r["allowed"].as_bool() == Some(true) && r.get("patch").is_none());
        assert!(r["status"]["message"].as_str().is_some_and(|m| m.contains("hostNetwork")), "{r}");
        let mut p = pod();
        p["metadata"]["annotations"] =
            serde_json::json!({"meshward.dev/inject": "disabled", "meshward.dev/colour": "x"});
        let a = review(&review_of(&p), &s);
        assert_eq!(a.decision, Decision::Skipped(Skip::OptedOut));
        let r = response(&a);
        assert!(r["warnings"][0].as_str().is_some_and(|w| w.contains("meshward.dev/colour")), "{r}");
    }

    /// Truncations and byte flips of a valid review (what a broken proxy
    /// or a fuzzer sends): always a JSON AdmissionReview answer, never a
    /// panic, and a patch only for reviews that still parse.
    #[test]
    fn mangled_reviews_always_get_an_answer() {
        let s = Settings::default();
        let valid = review_of(&pod());
        let mut cases: Vec<Vec<u8>> = (0..valid.len()).step_by(7).map(|n| valid[..n].to_vec()).collect();
        for (i, byte) in [b'"', b'{', b'}', b'[', b':', b',', 0xff, b'0'].into_iter().enumerate() {
            for pos in (i..valid.len()).step_by(13) {
                let mut m = valid.clone();
                m[pos] = byte;
                cases.push(m);
            }
        }
        let mut answered = [0usize; 2];
        for body in &cases {
            let a = review(body, &s);
            let v: Value = serde_json::from_slice(&a.body).expect("answer is JSON");
            assert_eq!(v["kind"], "AdmissionReview");
            assert!(a.status == 200 || a.status == 400);
            if v["response"].get("patch").is_some() {
                assert!(serde_json::from_slice::<Value>(body).is_ok());
            }
            answered[usize::from(a.decision == Decision::Malformed)] += 1;
        }
        assert!(answered[0] > 0 && answered[1] > 0, "{answered:?}");
    }

    #[test]
    fn bad_annotation_is_refused_and_malformed_bodies_answered() {
        let s = Settings::default();
        let mut p = pod();
        p["metadata"]["annotations"] = serde_json::json!({"meshward.dev/skip-inbound-ports": "http"});
        let a = review(&review_of(&p), &s);
        assert_eq!(a.decision, Decision::Refused);
        let r = response(&a);
        assert_eq!(r["allowed"], false);
        assert!(r["status"]["message"].as_str().is_some_and(|m| m.contains("skip-inbound-ports")), "{r}");

        for body in [&b"{not json"[..], b"{}", b"[]", b"{\"request\": 5}", b""] {
            let a = review(body, &s);
            assert_eq!((a.status, a.decision), (400, Decision::Malformed), "{:?}", String::from_utf8_lossy(body));
            assert_eq!(response(&a)["allowed"], false);
        }
        let with_uid =
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":7}}"#;
        let a = review(with_uid, &s);
        assert_eq!((a.status, a.decision), (200, Decision::Malformed));
        assert_eq!(response(&a)["uid"], "u-1");
    }
}
