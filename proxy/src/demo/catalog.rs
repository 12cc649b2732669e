//! The models of `meshward traffic` ([`crate::traffic::models::Model`]) as
//! the embedded demo server answers them, so that replayed generator traffic
//! gets real OIP v2 answers (200 with outputs for a well-formed request, 400
//! naming the problem otherwise) instead of `404 unknown model`.
//!
//! The outputs are small deterministic functions of the inputs (a logistic
//! score, a softmax over pixel sums, a word-count sentiment, a hashed
//! embedding): cheap, stable, and with a confidence that varies with the
//! input, which is what the sidecar's response features look at.

use serde_json::{json, Value};

use crate::traffic::models::Model;

/// A generator model by its URL name.
#[must_use]
pub fn lookup(name: &str) -> Option<Model> {
    Model::ALL.into_iter().find(|m| m.name() == name)
}

/// Whether `version` (a URL segment) is loaded for `model`.
#[must_use]
pub fn has_version(model: Model, version: &str) -> bool {
    model.versions().iter().any(|v| v.to_string() == version)
}

/// Inputs the model takes: name, datatype, elements per batch row (0: any).
fn inputs(model: Model) -> &'static [(&'static str, &'static str)] {
    match model {
        Model::Fraud => &[("features", "FP32")],
        Model::Iris => &[("input", "FP32")],
        Model::Digits => &[("input_1", "FP32")],
        Model::Sentiment => &[("text", "BYTES")],
        Model::Embed => &[("input_ids", "INT64"), ("attention_mask", "INT64")],
    }
}

/// OIP model metadata.
#[must_use]
pub fn metadata(model: Model) -> Value {
    let shape = |m: Model| match m {
        Model::Digits => json!([1, 1, 28, 28]),
        Model::Sentiment => json!([-1]),
        Model::Embed => json!([1, -1]),
        _ => json!([-1, m.width()]),
    };
    json!({
        "name": model.name(),
        "versions": model.versions().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "platform": "meshward-embedded",
        "inputs": inputs(model).iter().map(|(n, d)| json!({"name": n, "datatype": d, "shape": shape(model)})).collect::<Vec<_>>(),
        "outputs": [{ "name": model.output(), "datatype": if model == Model::Sentiment { "BYTES" } else { "FP32" }, "shape": [-1] }],
    })
}

/// Splits a request body into its JSON part: the whole body, or with the
/// binary tensor extension its first `header_len` bytes. Returns the JSON and
/// the number of binary bytes after it.
pub fn json_part(body: &[u8], header_len: Option<usize>) -> Result<(&[u8], usize), String> {
    match header_len {
        None => Ok((body, 0)),
        Some(n) if n <= body.len() => Ok((&body[..n], body.len() - n)),
        Some(n) => Err(format!("inference-header-content-length {n} exceeds the body's {} bytes", body.len())),
    }
}

/// Counts the scalar leaves of a (possibly nested) JSON array.
fn leaves(v: &Value, out: &mut Vec<f64>, strings: &mut Vec<String>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| leaves(i, out, strings)),
        Value::Number(n) => {
            let x = n.as_f64().filter(|x| x.is_finite()).ok_or_else(|| format!("value {n} is not a finite number"))?;
            out.push(x);
            Ok(())
        }
        Value::String(s) => {
            strings.push(s.clone());
            Ok(())
        }
        other => Err(format!("tensor data must be numbers or strings, found {other}")),
    }
}

/// Validates an inference request for `model` and computes its answer.
/// `binary_bytes` is the size of the binary section after the JSON header.
pub fn infer(model: Model, version: &str, json_body: &[u8], binary_bytes: usize) -> Result<Value, String> {
    let req: Value = serde_json::from_slice(json_body).map_err(|e| format!("invalid inference request: {e}"))?;
    let given = req.get("inputs").and_then(Value::as_array).ok_or("missing \"inputs\" array")?;
    let wanted = inputs(model);
    if given.len() != wanted.len() {
        return Err(format!("model '{}' expects {} input(s), got {}", model.name(), wanted.len(), given.len()));
    }
    let mut declared_binary = 0usize;
    let mut tensors: Vec<(Vec<i64>, Vec<f64>, Vec<String>)> = Vec::new();
    for (name, datatype) in wanted {
        let t = given
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| format!("model '{}' expects an input named '{name}'", model.name()))?;
        let dt = t.get("datatype").and_then(Value::as_str).unwrap_or("");
        if dt != *datatype {
            return Err(format!("input '{name}': datatype '{dt}' (expected {datatype})"));
        }
        let shape: Vec<i64> = t
            .get("shape")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_i64).collect())
            .ok_or_else(|| format!("input '{name}': missing shape"))?;
        if shape.iter().any(|d| *d < 1 || *d > 1 << 20) {
            return Err(format!("input '{name}': invalid shape {shape:?}"));
        }
        let elements: i64 = shape.iter().product();
        let (mut nums, mut strs) = (Vec::new(), Vec::new());
        if let Some(size) = t.get("parameters").and_then(|p| p.get("binary_data_size")).and_then(Value::as_u64) {
            declared_binary += usize::try_from(size).unwrap_or(usize::MAX);
            // Binary data is not decoded: the answer uses the shape only.
        } else {
            leaves(t.get("data").ok_or_else(|| format!("input '{name}': missing data"))?, &mut nums, &mut strs)?;
            let n = (nums.len() + strs.len()) as i64;
            if n != elements {
                return Err(format!("input '{name}': shape {shape:?} needs {elements} elements, got {n}"));
            }
            if *datatype == "BYTES" && !nums.is_empty() || *datatype != "BYTES" && !strs.is_empty() {
                return Err(format!("input '{name}': data does not match datatype {datatype}"));
            }
        }
        check_shape(model, name, &shape)?;
        tensors.push((shape, nums, strs));
    }
    if declared_binary != binary_bytes {
        return Err(format!("binary_data_size totals {declared_binary} bytes but {binary_bytes} follow the header"));
    }
    // Every model takes at least one input and one tensor was kept per input.
    let Some((shape, nums, strs)) = tensors.first() else { return Err("no inputs".to_owned()) };
    let output = answer(model, shape, nums, strs);
    let mut resp = json!({ "model_name": model.name(), "model_version": version, "outputs": [output] });
    if let (Some(id), Some(obj)) = (req.get("id").cloned(), resp.as_object_mut()) {
        obj.insert("id".to_owned(), id);
    }
    Ok(resp)
}

/// The shape rules of each model.
fn check_shape(model: Model, name: &str, shape: &[i64]) -> Result<(), String> {
    let ok = match model {
        Model::Fraud | Model::Iris => shape.len() == 2 && shape[1] == model.width() as i64,
        Model::Digits => shape == [1, 1, 28, 28],
        Model::Sentiment => shape.len() == 1,
        Model::Embed => shape.len() == 2 && shape[0] == 1,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("input '{name}' of model '{}': unsupported shape {shape:?}", model.name()))
    }
}

/// The output tensor for valid inputs (binary inputs give the answer for zeros).
fn answer(model: Model, shape: &[i64], nums: &[f64], strs: &[String]) -> Value {
    let rows = shape.first().and_then(|d| usize::try_from(*d).ok()).unwrap_or(1).max(1);
    let row = |i: usize, w: usize| nums.get(i * w..(i + 1) * w).unwrap_or(&[]);
    match model {
        Model::Fraud => {
            let p: Vec<f64> = (0..rows)
                .map(|i| {
                    let r = row(i, model.width());
                    let z = r.iter().skip(1).take(28).map(|x| x.abs()).sum::<f64>() / 28.0
                        + r.get(29).map_or(0.0, |a| a / 2500.0)
                        - 2.5;
                    round4(1.0 / (1.0 + (-z).exp()))
                })
                .collect();
            json!({ "name": model.output(), "shape": [rows, 1], "datatype": "FP32", "data": p })
        }
        Model::Iris => {
            let mut p = Vec::with_capacity(rows * 3);
            for i in 0..rows {
                let r = row(i, 4);
                let f = [0, 1, 2, 3].map(|j| r.get(j).copied().unwrap_or(0.0) as f32);
                p.extend(super::model::predict(&f).map(|x| round4(f64::from(x))));
            }
            json!({ "name": model.output(), "shape": [rows, 3], "datatype": "FP32", "data": p })
        }
        Model::Digits => {
            // Ten logits from the ink in ten horizontal bands of the image.
            let logits: Vec<f64> = (0..10).map(|b| nums.iter().skip(b * 78).take(78).sum::<f64>() / 8.0).collect();
            json!({ "name": model.output(), "shape": [1, 10], "datatype": "FP32", "data": softmax(&logits) })
        }
        Model::Sentiment => {
            let labels: Vec<&str> = (0..rows)
                .map(|i| strs.get(i).map_or(0, |s| s.split_whitespace().count()))
                .map(|words| if words % 2 == 0 { "positive" } else { "negative" })
                .collect();
            json!({ "name": model.output(), "shape": [rows], "datatype": "BYTES", "data": labels })
        }
        Model::Embed => {
            let mut e = [0.0f64; 8];
            for (i, id) in nums.iter().enumerate() {
                e[i % 8] += (id * 0.618_033_988_7).fract() - 0.5;
            }
            let norm = e.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
            let data: Vec<f64> = e.iter().map(|x| round4(x / norm)).collect();
            json!({ "name": model.output(), "shape": [1, 8], "datatype": "FP32", "data": data })
        }
    }
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|x| (x - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| round4(x / s)).collect()
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::traffic::{Phase, Simulation, TrafficConfig};

    /// Every normal generator inference request is answered 200 by this
    /// catalogue (the replayed warm-up traffic must not be errors).
    #[test]
    fn normal_generator_requests_get_answers() {
        let cfg = TrafficConfig { train_requests: 2000, test_requests: 0, clients: 30, ..TrafficConfig::default() };
        let mut answered = 0;
        for (phase, r) in Simulation::new(cfg) {
            assert_eq!(phase, Phase::Train);
            let segs: Vec<&str> = r.uri.split('?').next().unwrap().split('/').collect();
            if r.method != "POST" || segs.last() != Some(&"infer") {
                continue;
            }
            let model = lookup(segs[3]).unwrap_or_else(|| panic!("unknown model in {}", r.uri));
            let header_len = r
                .headers
                .iter()
                .find(|(k, _)| k == "inference-header-content-length")
                .map(|(_, v)| v.parse::<usize>().unwrap());
            let (json_body, rest) = json_part(&r.body, header_len).unwrap();
            let out = infer(model, "1", json_body, rest).unwrap_or_else(|e| panic!("{}: {e}", r.uri));
            assert_eq!(out["model_name"], model.name());
            answered += 1;
        }
        assert!(answered > 1000, "{answered}");
    }

    #[test]
    fn malformed_requests_are_refused_with_the_reason() {
        let fraud = lookup("fraud_detector").unwrap();
        let e =
            infer(fraud, "4", br#"{"inputs":[{"name":"features","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}"#, 0);
        assert!(e.unwrap_err().contains("unsupported shape [1, 3]"));
        let e =
            infer(fraud, "4", br#"{"inputs":[{"name":"features","datatype":"BYTES","shape":[1],"data":["x"]}]}"#, 0);
        assert!(e.unwrap_err().contains("datatype 'BYTES'"));
        let e = infer(
            lookup("iris_classifier").unwrap(),
            "1",
            br#"{"inputs":[{"name":"input","datatype":"FP32","shape":[2,4],"data":[1,2,3,4]}]}"#,
            0,
        );
        assert!(e.unwrap_err().contains("needs 8 elements, got 4"));
        assert!(json_part(b"{}", Some(3)).is_err());
        assert!(has_version(fraud, "3") && !has_version(fraud, "2"));
        assert!(lookup("resnet").is_none());
    }
}
