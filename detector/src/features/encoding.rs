//! Request bodies sent compressed (`Content-Encoding: gzip` or `deflate`;
//! tritonclient's `request_compression_algorithm`, for one): scored as the
//! model server reads them, inflated, or every body feature would be blind
//! to them and compression would hide any payload.

use std::io::Read;

use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};

/// Most bytes a body is inflated to for scoring: a compressed body of a
/// few KiB can stand for gigabytes (a "zip bomb"); what lies past this is
/// not judged, as for any body longer than the sidecar inspects. Four times
/// the sidecar's default inspection limit: with its 256 requests scored at
/// once, at most 64 MiB, and 0.65 ms to inflate 256 KiB of tensor numbers
/// (measured, release build; a bomb of zeros inflates in 35 µs).
pub const MAX_INFLATED: usize = 256 << 10;

/// Inflates `body` into `out` if `encoding` names gzip or deflate. Returns
/// whether the inflated body is cut short (by [`MAX_INFLATED`], or because
/// `body` itself was a prefix), or `None` when the encoding is another one
/// (or none), or the body does not inflate: it is then scored as sent.
pub fn inflate(encoding: &str, body: &[u8], truncated: bool, out: &mut Vec<u8>) -> Option<bool> {
    let encoding = encoding.trim();
    let limit = MAX_INFLATED as u64 + 1;
    out.clear();
    let result = if encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip") {
        GzDecoder::new(body).take(limit).read_to_end(out)
    } else if encoding.eq_ignore_ascii_case("deflate") {
        // RFC 9110's deflate is zlib-wrapped; some clients send it raw.
        match ZlibDecoder::new(body).take(limit).read_to_end(out) {
            Ok(n) => Ok(n),
            Err(_) => {
                out.clear();
                DeflateDecoder::new(body).take(limit).read_to_end(out)
            }
        }
    } else {
        return None;
    };
    // A prefix of a compressed body ends mid-stream: what inflated is kept.
    let kept_from_prefix = truncated && !out.is_empty();
    if result.is_err() && !kept_from_prefix {
        return None;
    }
    let cut = out.len() > MAX_INFLATED || result.is_err();
    out.truncate(MAX_INFLATED);
    Some(cut || truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn gzip_and_deflate_bodies_inflate() {
        let body = br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.5]}]}"#;
        let mut out = Vec::new();
        assert_eq!(inflate("gzip", &gzip(body), false, &mut out), Some(false));
        assert_eq!(out, body);
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(body).expect("zlib");
        assert_eq!(inflate(" Deflate", &z.finish().expect("zlib"), false, &mut out), Some(false));
        assert_eq!(out, body);
        // Other encodings, and bodies that do not inflate, are scored as sent.
        assert_eq!(inflate("br", b"\x1b\x00", false, &mut out), None);
        assert_eq!(inflate("gzip", body, false, &mut out), None);
    }

    #[test]
    fn a_bomb_inflates_to_the_limit_and_a_prefix_to_what_it_holds() {
        let zeros = vec![0u8; 8 * MAX_INFLATED];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 16 * 1024, "{} bytes", bomb.len());
        let mut out = Vec::new();
        assert_eq!(inflate("gzip", &bomb, false, &mut out), Some(true));
        assert_eq!(out.len(), MAX_INFLATED);
        let text: Vec<u8> = (0..20_000u32).flat_map(|i| format!("{i},").into_bytes()).collect();
        let packed = gzip(&text);
        assert_eq!(inflate("gzip", &packed[..packed.len() / 2], true, &mut out), Some(true));
        assert!(!out.is_empty() && text.starts_with(&out));
    }
}
