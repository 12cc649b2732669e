//! Reading the JSON part of an OIP v2 request fast, without giving up
//! serde_json's limits.
//!
//! sonic-rs reads tensor data faster than serde_json: `meshward eval` on
//! the generator's traffic went from 62–65k to 72–74k requests/s on one
//! core, every score the same (`eval --scores` compared with `cmp` on seeds
//! 1, 7 and 42; perf had serde_json's number reading at a fifth of the time).
//! Keeping each `data` array raw and reading plain numbers in a loop of our
//! own was tried and was slower: sonic-rs's skip over the raw array cost as
//! much as reading it.
//!
//! But sonic-rs skips unknown keys without a depth limit: a 200 KB body with
//! a 100k-deep `"outputs"` value overflowed the stack (the class of
//! cloudwego/sonic-rs#239). A body with more `[` and `{` bytes than
//! [`MAX_DEPTH`] could nest that deep, so it goes to serde_json, which skips
//! without recursion and refuses deeper data with an error. That also sends
//! a batch of more than 128 rows to serde_json, at serde_json's speed.

use super::oip::InferRequest;

/// Nesting deeper than this is refused (serde_json's own recursion limit).
const MAX_DEPTH: usize = 128;

/// Parses the JSON part of an OIP request; `None` if it is not one.
pub fn parse(json: &[u8]) -> Option<InferRequest<'_>> {
    let openers = memchr::memchr2_iter(b'[', b'{', json).take(MAX_DEPTH + 1).count();
    if openers > MAX_DEPTH {
        serde_json::from_slice(json).ok()
    } else {
        sonic_rs::from_slice(json).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_with_serde_json() {
        let body = br#"{"id": "1", "parameters": {"p": [1, {"q": 2}]}, "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "data": [1.5, -2, 1e-05, 0.30000001192092896, 2.5E+3]},
            {"name": "b\u00e9", "shape": [1], "datatype": "BYTES", "data": ["x\"y"], "parameters": {"content_type": "str"}},
            {"name": "c", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 8}},
            {"name": "d", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, true]]}],
            "outputs": [{"name": "o"}]}"#;
        let ours = parse(body).expect("parses");
        let theirs: InferRequest = serde_json::from_slice(body).expect("parses");
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        for bad in [
            &br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1,]}]}"#[..],
            br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [01]}]}"#,
            br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1e400]}]}"#,
            br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [NaN]}]}"#,
            b"{\"inputs\": [{\"name\": \"\xff\", \"shape\": [1], \"datatype\": \"FP32\"}]}",
            br#"{"inputs": []} x"#,
            b"{\"inputs\": 5}",
        ] {
            assert!(parse(bad).is_none(), "{}", String::from_utf8_lossy(bad));
            assert!(serde_json::from_slice::<InferRequest>(bad).is_err());
        }
    }
}
