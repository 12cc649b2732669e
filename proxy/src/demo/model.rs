//! Embedded demo model server speaking the Open Inference Protocol v2
//! (`KServe` v2 / Triton REST) over HTTP/1.1 and HTTP/2 (h2c prior knowledge).
//!
//! It serves one small but real model, [`MODEL_NAME`] (`"iris"`): a
//! multinomial logistic regression with fixed weights that maps the four iris
//! measurements (sepal length, sepal width, petal length, petal width, in cm)
//! to probabilities for `setosa`, `versicolor` and `virginica`.
//!
//! It also answers the five models of `meshward traffic` (see [`super::catalog`]),
//! so replayed generator traffic gets real answers.
//!
//! The server never panics on request data: every malformed request is
//! answered with an OIP error body `{"error": "..."}` and a 4xx status.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Name of the only model served.
pub const MODEL_NAME: &str = "iris";
/// Version of the only model served.
pub const MODEL_VERSION: &str = "1";
/// Documented name of the model's input tensor (any single input name is accepted).
pub const INPUT_NAME: &str = "input";
/// Class labels, in output order.
pub const CLASSES: [&str; 3] = ["setosa", "versicolor", "virginica"];
/// Largest accepted request body; larger bodies get `413 Payload Too Large`.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Largest accepted batch (first dimension of the input shape).
pub const MAX_BATCH: usize = 4096;

/// Distinct identities tracked in [`AppStats`]; further ones count as `"(other)"`.
const MAX_IDENTITIES: usize = 1024;
/// How long in-flight connections may take to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Slow-loris guard for HTTP/1 request heads.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Logistic-regression weights (rows: classes, columns: features), fitted
/// offline on the classic iris data set (multinomial, L2, C = 1).
const WEIGHTS: [[f64; 4]; 3] =
    [[-0.423, 0.967, -2.517, -1.079], [0.534, -0.321, -0.207, -0.944], [-0.111, -0.646, 2.724, 2.023]];
/// Per-class intercepts.
const BIAS: [f64; 3] = [9.849, 2.238, -12.087];

/// Request counters collected by [`serve`].
#[derive(Debug, Default, Clone)]
pub struct AppStats {
    /// Total HTTP requests received (all endpoints, including errors).
    pub requests: u64,
    /// Requests per value of the identity header (`"(none)"` when absent).
    pub identities: BTreeMap<String, u64>,
}

/// Runs the model on one feature vector and returns softmax class
/// probabilities in [`CLASSES`] order. Non-finite inputs yield NaNs.
#[must_use]
pub fn predict(features: &[f32; 4]) -> [f32; 3] {
    let mut logits = BIAS;
    for (logit, weights) in logits.iter_mut().zip(WEIGHTS.iter()) {
        *logit += weights.iter().zip(features).map(|(w, x)| w * f64::from(*x)).sum::<f64>();
    }
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps = logits.map(|z| (z - max).exp());
    let sum: f64 = exps.iter().sum();
    exps.map(|e| (e / sum) as f32)
}

/// Label of the most probable class.
fn label_of(probs: &[f32; 3]) -> &'static str {
    let mut best = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p > probs[best] {
            best = i;
        }
    }
    CLASSES[best]
}

/// Serves until `shutdown` resolves; counts requests and the value of
/// `identity_header` per request ("(none)" when absent) into `stats`.
///
/// After `shutdown` resolves the listener is closed, open connections are
/// asked to finish gracefully and are aborted after a short grace period.
///
/// # Errors
///
/// Currently none: accept errors (e.g. file-descriptor exhaustion) are
/// logged and retried so the demo keeps serving; the `Result` is kept for
/// callers that treat the server like any other listener task.
pub async fn serve(
    listener: TcpListener,
    identity_header: HeaderName,
    stats: Arc<Mutex<AppStats>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ctx = Arc::new(Ctx { identity_header, stats });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Best effort: latency matters more than packet count here.
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_conn(stream, Arc::clone(&ctx), stop_rx.clone()));
                }
                Err(err) => {
                    // Typically EMFILE or a reset before accept: back off, keep serving.
                    tracing::warn!(error = %err, "demo model: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open = conns.len(), "demo model: aborting connections after grace period");
        conns.shutdown().await;
    }
    Ok(())
}

/// Shared per-server state handed to every request.
struct Ctx {
    identity_header: HeaderName,
    stats: Arc<Mutex<AppStats>>,
}

/// Serves one accepted connection (HTTP/1.1 or HTTP/2, auto-detected).
async fn serve_conn(stream: TcpStream, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let svc = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(handle(req, &ctx).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(stream), svc));
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(err) = res {
                tracing::debug!(error = %err, "demo model: connection error");
            }
            return;
        }
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(err) = conn.await {
        tracing::debug!(error = %err, "demo model: connection error during shutdown");
    }
}

/// Records the request in the stats, then routes it.
async fn handle<B>(req: Request<B>, ctx: &Ctx) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    record(ctx, req.headers());
    match route(req).await {
        Ok(resp) => resp,
        Err(err) => json_response(err.status, &json!({ "error": err.message })),
    }
}

/// Counts one request and its identity.
fn record(ctx: &Ctx, headers: &http::HeaderMap) {
    let mut identity = headers
        .get(&ctx.identity_header)
        .map_or_else(|| "(none)".to_owned(), |v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut stats = ctx.stats.lock().unwrap_or_else(PoisonError::into_inner);
    stats.requests += 1;
    if stats.identities.len() >= MAX_IDENTITIES && !stats.identities.contains_key(&identity) {
        identity = "(other)".to_owned();
    }
    *stats.identities.entry(identity).or_insert(0) += 1;
}

/// An OIP error: HTTP status plus the `error` message.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

/// `400 Bad Request` with `message`.
fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
}

/// Endpoints of the OIP v2 REST surface that this server implements.
enum Endpoint {
    ServerMetadata,
    Live,
    Ready,
    ModelMetadata,
    ModelReady,
    Infer,
}

/// Maps method and path to an endpoint, validating model name and version.
async fn route<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let (endpoint, model, version) = match segments.as_slice() {
        ["v2"] => (Endpoint::ServerMetadata, None, None),
        ["v2", "health", "live"] => (Endpoint::Live, None, None),
        ["v2", "health", "ready"] => (Endpoint::Ready, None, None),
        ["v2", "models", name, rest @ ..] => {
            let (version, rest) = match rest {
                ["versions", v, rest @ ..] => (Some(*v), rest),
                _ => (None, rest),
            };
            let endpoint = match rest {
                [] => Endpoint::ModelMetadata,
                ["ready"] => Endpoint::ModelReady,
                ["infer"] => Endpoint::Infer,
                _ => return Err(not_found(path)),
            };
            (endpoint, Some(*name), version)
        }
        _ => return Err(not_found(path)),
    };
    if let Some(name) = model.filter(|n| *n != MODEL_NAME) {
        let Some(m) = super::catalog::lookup(name) else {
            return Err(ApiError { status: StatusCode::NOT_FOUND, message: format!("unknown model '{name}'") });
        };
        let version = version.map(str::to_owned);
        return catalog_route(req, m, version, endpoint).await;
    }
    if let Some(v) = version.filter(|v| *v != MODEL_VERSION) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("unknown version '{v}' of model '{MODEL_NAME}'"),
        });
    }
    let (wanted, allow) =
        if matches!(endpoint, Endpoint::Infer) { (Method::POST, "POST") } else { (Method::GET, "GET, HEAD") };
    let method_ok = req.method() == wanted || (wanted == Method::GET && req.method() == Method::HEAD);
    if !method_ok {
        let mut resp = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "error": format!("method {} not allowed; use {wanted}", req.method()) }),
        );
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        return Ok(resp);
    }
    let body = match endpoint {
        Endpoint::ServerMetadata => json!({
            "name": "meshward-demo-model",
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": [],
        }),
        Endpoint::Live => json!({ "live": true }),
        Endpoint::Ready => json!({ "ready": true }),
        Endpoint::ModelReady => json!({ "name": MODEL_NAME, "ready": true }),
        Endpoint::ModelMetadata => model_metadata(),
        Endpoint::Infer => infer(&read_body(req).await?)?,
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// The endpoints of a model of the traffic generator's catalogue.
async fn catalog_route<B>(
    req: Request<B>,
    model: crate::traffic::models::Model,
    version: Option<String>,
    endpoint: Endpoint,
) -> Result<Response<Full<Bytes>>, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let default = model.versions().last().map_or_else(|| "1".to_owned(), ToString::to_string);
    let version = version.unwrap_or(default);
    if !super::catalog::has_version(model, &version) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("unknown version '{version}' of model '{}'", model.name()),
        });
    }
    let wanted = if matches!(endpoint, Endpoint::Infer) { Method::POST } else { Method::GET };
    if req.method() != wanted {
        return Err(ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("method {} not allowed; use {wanted}", req.method()),
        });
    }
    let body = match endpoint {
        Endpoint::ModelReady => json!({ "name": model.name(), "ready": true }),
        Endpoint::Infer => {
            let header_len = req
                .headers()
                .get("inference-header-content-length")
                .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).ok_or(v.clone()))
                .transpose()
                .map_err(|v| bad_request(format!("invalid inference-header-content-length {v:?}")))?;
            let body = read_body(req).await?;
            let (json_part, rest) = super::catalog::json_part(&body, header_len).map_err(bad_request)?;
            super::catalog::infer(model, &version, json_part, rest).map_err(bad_request)?
        }
        _ => super::catalog::metadata(model),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `404 Not Found` for an unknown path.
fn not_found(path: &str) -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, message: format!("no such endpoint '{path}'") }
}

/// OIP model metadata for [`MODEL_NAME`].
fn model_metadata() -> Value {
    json!({
        "name": MODEL_NAME,
        "versions": [MODEL_VERSION],
        "platform": "meshward-embedded",
        "inputs": [{ "name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 4] }],
        "outputs": [
            { "name": "probabilities", "datatype": "FP32", "shape": [-1, 3] },
            { "name": "label", "datatype": "BYTES", "shape": [-1] },
        ],
    })
}

/// Reads the whole body, enforcing [`MAX_BODY_BYTES`].
async fn read_body<B>(req: Request<B>) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("request body exceeds {MAX_BODY_BYTES} bytes"),
    };
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(bad_request(format!("failed to read request body: {err}"))),
    }
}

/// OIP v2 inference request (fields this model does not use are ignored).
#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

/// One input tensor of an inference request.
#[derive(Deserialize)]
struct InferInput {
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

/// One requested output of an inference request.
#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
}

/// Validates an inference request body and runs the model on it.
fn infer(body: &[u8]) -> Result<Value, ApiError> {
    let req: InferRequest =
        serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid inference request: {e}")))?;
    let [input] = req.inputs.as_slice() else {
        return Err(bad_request(format!(
            "model '{MODEL_NAME}' expects exactly 1 input tensor, got {}",
            req.inputs.len()
        )));
    };
    if !matches!(input.datatype.as_str(), "FP32" | "FP64") {
        return Err(bad_request(format!("unsupported datatype '{}'; expected FP32 or FP64", input.datatype)));
    }
    let batch = match input.shape.as_slice() {
        [n, 4] => usize::try_from(*n).ok().filter(|n| (1..=MAX_BATCH).contains(n)),
        _ => None,
    }
    .ok_or_else(|| {
        bad_request(format!("invalid shape {:?}; expected [N, 4] with 1 <= N <= {MAX_BATCH}", input.shape))
    })?;
    let expected = batch * 4;
    let mut values = Vec::with_capacity(expected);
    flatten(&input.data, &mut values, expected)?;
    if values.len() != expected {
        return Err(bad_request(format!("shape {:?} needs {expected} elements, got {}", input.shape, values.len())));
    }
    let (want_probs, want_label) = match &req.outputs {
        None => (true, true),
        Some(outs) if outs.is_empty() => (true, true),
        Some(outs) => {
            if let Some(o) = outs.iter().find(|o| o.name != "probabilities" && o.name != "label") {
                return Err(bad_request(format!("unknown output '{}'", o.name)));
            }
            (outs.iter().any(|o| o.name == "probabilities"), outs.iter().any(|o| o.name == "label"))
        }
    };
    let mut probs = Vec::with_capacity(batch * 3);
    let mut labels = Vec::with_capacity(batch);
    for row in values.chunks_exact(4) {
        let features = [row[0], row[1], row[2], row[3]];
        let p = predict(&features);
        probs.extend_from_slice(&p);
        labels.push(label_of(&p));
    }
    let mut outputs = Vec::new();
    if want_probs {
        outputs.push(json!({ "name": "probabilities", "shape": [batch, 3], "datatype": "FP32", "data": probs }));
    }
    if want_label {
        outputs.push(json!({ "name": "label", "shape": [batch], "datatype": "BYTES", "data": labels }));
    }
    let mut resp = json!({ "model_name": MODEL_NAME, "model_version": MODEL_VERSION, "outputs": outputs });
    if let (Some(id), Some(obj)) = (req.id, resp.as_object_mut()) {
        obj.insert("id".to_owned(), Value::String(id));
    }
    Ok(resp)
}

/// Appends the numbers of a flat or nested JSON array to `out` (row-major),
/// rejecting non-numbers and values outside the FP32 range. Stops early once
/// more than `limit` elements were seen (the caller reports the mismatch).
fn flatten(value: &Value, out: &mut Vec<f32>, limit: usize) -> Result<(), ApiError> {
    match value {
        Value::Array(items) => {
            for item in items {
                if out.len() > limit {
                    break;
                }
                flatten(item, out, limit)?;
            }
            Ok(())
        }
        Value::Number(n) => {
            let x = n.as_f64().map(|x| x as f32).filter(|x| x.is_finite());
            let x = x.ok_or_else(|| bad_request(format!("value {n} is out of FP32 range")))?;
            out.push(x);
            Ok(())
        }
        other => Err(bad_request(format!("tensor data must be numbers, found {other}"))),
    }
}

/// JSON response with the given status.
fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx { identity_header: HeaderName::from_static("x-identity"), stats: Arc::default() }
    }

    async fn call(method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-identity", "spiffe://demo/ns/default/sa/client")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let resp = handle(req, &ctx()).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn infer_body(shape: &str, datatype: &str, data: &str) -> String {
        format!(r#"{{"inputs":[{{"name":"input","shape":{shape},"datatype":"{datatype}","data":{data}}}]}}"#)
    }

    #[test]
    fn predicts_classic_iris_examples() {
        let cases = [
            ([5.1, 3.5, 1.4, 0.2], "setosa"),
            ([6.0, 2.9, 4.5, 1.5], "versicolor"),
            ([6.9, 3.1, 5.8, 2.2], "virginica"),
        ];
        for (features, want) in cases {
            let p = predict(&features);
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
            assert_eq!(label_of(&p), want, "{features:?} -> {p:?}");
            assert!(p.iter().copied().fold(0.0, f32::max) > 0.6, "{p:?}");
        }
    }

    #[test]
    fn predict_survives_extreme_inputs() {
        let p = predict(&[f32::MAX, -f32::MAX, f32::MAX, 0.0]);
        assert!(p.iter().all(|x| x.is_finite()), "{p:?}");
        let _ = predict(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0]);
    }

    #[test]
    fn infers_batches_flat_and_nested() {
        let flat = infer(infer_body("[2,4]", "FP32", "[5.1,3.5,1.4,0.2,6.9,3.1,5.8,2.2]").as_bytes()).unwrap();
        let nested = infer(infer_body("[2,4]", "FP64", "[[5.1,3.5,1.4,0.2],[6.9,3.1,5.8,2.2]]").as_bytes()).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat["outputs"][0]["shape"], json!([2, 3]));
        assert_eq!(flat["outputs"][1]["data"], json!(["setosa", "virginica"]));
        assert!(flat.get("id").is_none());
        let body = r#"{"id":"r1","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[6,2.9,4.5,1.5]}],"outputs":[{"name":"label"}]}"#;
        let one = infer(body.as_bytes()).unwrap();
        assert_eq!(one["id"], "r1");
        assert_eq!(
            one["outputs"],
            json!([{ "name": "label", "shape": [1], "datatype": "BYTES", "data": ["versicolor"] }])
        );
    }

    #[test]
    fn rejects_malformed_requests() {
        let bad = [
            "not json".to_owned(),
            r#"{"inputs":[]}"#.to_owned(),
            infer_body("[1,3]", "FP32", "[1,2,3]"),
            infer_body("[4]", "FP32", "[1,2,3,4]"),
            infer_body("[0,4]", "FP32", "[]"),
            infer_body("[-1,4]", "FP32", "[1,2,3,4]"),
            infer_body("[1,4]", "INT32", "[1,2,3,4]"),
            infer_body("[2,4]", "FP32", "[1,2,3,4]"),
            infer_body("[1,4]", "FP32", "[1,2,3,4,5]"),
            infer_body("[1,4]", "FP32", r#"[1,2,"3",4]"#),
            infer_body("[1,4]", "FP64", "[1,2,1e300,4]"),
            infer_body("[1,4]", "FP32", "null"),
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"logits"}]}"#.to_owned(),
        ];
        for body in bad {
            let err = infer(body.as_bytes()).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(!err.message.is_empty());
        }
    }

    #[tokio::test]
    async fn routes_and_errors() {
        let ok = infer_body("[1,4]", "FP32", "[5.1,3.5,1.4,0.2]");
        assert_eq!(call(Method::GET, "/v2/health/live", "").await.0, StatusCode::OK);
        assert_eq!(call(Method::GET, "/v2/health/ready", "").await.0, StatusCode::OK);
        assert_eq!(call(Method::GET, "/v2", "").await.1["extensions"], json!([]));
        assert_eq!(call(Method::GET, "/v2/models/iris", "").await.1["name"], "iris");
        assert_eq!(call(Method::GET, "/v2/models/iris/versions/1", "").await.0, StatusCode::OK);
        assert_eq!(call(Method::GET, "/v2/models/iris/ready", "").await.0, StatusCode::OK);
        assert_eq!(call(Method::POST, "/v2/models/iris/infer", &ok).await.0, StatusCode::OK);
        assert_eq!(call(Method::POST, "/v2/models/iris/versions/1/infer", &ok).await.0, StatusCode::OK);
        let (status, body) = call(Method::POST, "/v2/models/resnet/infer", &ok).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("resnet"));
        assert_eq!(call(Method::GET, "/v2/models/iris/versions/7", "").await.0, StatusCode::NOT_FOUND);
        assert_eq!(call(Method::GET, "/v3/nope", "").await.0, StatusCode::NOT_FOUND);
        assert_eq!(call(Method::GET, "/v2/models/iris/infer", "").await.0, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(call(Method::POST, "/v2/models/iris/infer", "{").await.0, StatusCode::BAD_REQUEST);
        let huge = " ".repeat(MAX_BODY_BYTES + 1);
        let (status, body) = call(Method::POST, "/v2/models/iris/infer", &huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body["error"].is_string());
    }

    #[tokio::test]
    async fn serves_http2_and_counts_identities() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Mutex::new(AppStats::default()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server =
            tokio::spawn(serve(listener, HeaderName::from_static("x-identity"), Arc::clone(&stats), async move {
                let _ = rx.await;
            }));
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        for identity in [Some("alice"), Some("alice"), None] {
            let mut req = Request::builder().uri(format!("http://{addr}/v2/health/ready"));
            if let Some(id) = identity {
                req = req.header("x-identity", id);
            }
            let resp = sender.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.version(), http::Version::HTTP_2);
        }
        drop(sender);
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
        let stats = stats.lock().unwrap().clone();
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.identities.get("alice"), Some(&2));
        assert_eq!(stats.identities.get("(none)"), Some(&1));
    }
}
