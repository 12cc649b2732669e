//! Bodies cut at the sidecar's inspect limit: the JSON that arrived, closed
//! after its last whole element, so that what arrived can be judged.

use super::oip::MAX_DEPTH;

/// A cut JSON body, closed.
#[derive(Debug)]
pub struct Closed {
    /// The JSON up to the cut, with the brackets still open there closed.
    pub json: Vec<u8>,
    /// The brackets (`[` or `{`) open at the cut, outermost first.
    pub open: Vec<u8>,
}

/// The first bytes of a cut JSON body, closed: everything up to its last
/// comma outside a string (so the element before it is complete), then the
/// brackets still open there, closed. `None` when the body's value is
/// already whole in these bytes (whitespace padding may follow: the caller
/// parses them as they are, and so sees the last value too), when there is
/// no such comma, the brackets do not pair, or they nest deeper than
/// [`MAX_DEPTH`].
///
/// The sidecar inspects only the first `max_inspect_bytes` of a body. A
/// 224x224x3 image written as JSON numbers is about 1 MB, so without this
/// such a request was one opaque `truncated` category and no tensor of it
/// was judged; now its name, datatype, shape and its first values are.
/// Two linear passes, on cut bodies only (the first finds the comma, the
/// second the brackets open before it).
pub fn close(json: &[u8]) -> Option<Closed> {
    // Calls `each(index, byte)` for every byte outside strings while it says so.
    fn outside_strings(json: &[u8], mut each: impl FnMut(usize, u8) -> bool) {
        let (mut in_string, mut escaped) = (false, false);
        for (i, &b) in json.iter().enumerate() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else if b == b'"' {
                in_string = true;
            } else if !each(i, b) {
                return;
            }
        }
    }
    let (mut cut, mut depth, mut whole) = (None, 0usize, false);
    outside_strings(json, |i, b| {
        match b {
            b',' => cut = Some(i),
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                whole = depth == 0;
            }
            _ => {}
        }
        !whole
    });
    if whole {
        return None;
    }
    let cut = cut?;
    let mut open = Vec::new();
    let mut paired = true;
    outside_strings(&json[..cut], |_, b| {
        match b {
            b'[' | b'{' => open.push(b),
            b']' | b'}' => paired = open.pop() == Some(if b == b']' { b'[' } else { b'{' }),
            _ => {}
        }
        paired && open.len() <= MAX_DEPTH
    });
    if !paired || open.is_empty() || open.len() > MAX_DEPTH {
        return None;
    }
    let mut closed = Vec::with_capacity(cut + open.len());
    closed.extend_from_slice(&json[..cut]);
    closed.extend(open.iter().rev().map(|b| if *b == b'[' { b']' } else { b'}' }));
    Some(Closed { json: closed, open })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_body_is_closed_after_its_last_whole_element() {
        let close = |s: &str| close(s.as_bytes()).map(|c| (String::from_utf8(c.json).expect("utf-8"), c.open));
        assert_eq!(
            close(r#"{"inputs": [{"name": "x", "shape": [1, 4], "data": [[1.5, 2.25], [3.0, 4."#),
            Some((
                r#"{"inputs": [{"name": "x", "shape": [1, 4], "data": [[1.5, 2.25], [3.0]]}]}"#.into(),
                b"{[{[[".to_vec()
            ))
        );
        // Commas and brackets inside strings (escaped quotes too) are text.
        assert_eq!(
            close(r#"{"id": "a\",[{b", "inputs": [{"name": "x,[y"#),
            Some((r#"{"id": "a\",[{b"}"#.into(), b"{".to_vec()))
        );
        assert_eq!(close(r#"{"inputs": [{"name"#), None, "no whole element");
        assert_eq!(close(&format!("{}{}", r#"{"data": [1, NaN]}"#, " ".repeat(64))), None, "whole, then padding");
        assert_eq!(close(r#"]}, 1, [2"#), None, "brackets that do not pair");
        let deep = format!("{}1, 2", "[".repeat(MAX_DEPTH + 1));
        assert_eq!(close(&deep), None, "deeper than sonic-rs is trusted with");
    }
}
