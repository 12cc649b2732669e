//! Inputs the fuzz checks found failing because of meshward bugs (framing
//! guard), now fixed: kept as regression tests.

use meshward_fuzz::check_http1_request_head;

/// 4 configuration bytes (see `check_http1_request_head`), then the connection's bytes.
fn input(cfg: [u8; 4], bytes: &[u8]) -> Vec<u8> {
    [&cfg[..], bytes].concat()
}

/// The bare-LF check scans the whole read buffer, not just the head: a body
/// (or an empty line before the next request) with a `\n` that arrives in
/// the same read as its head is refused with 400 "bare LF in request head";
/// the same bytes in smaller reads pass.
#[test]
fn body_with_newline_in_the_same_read_as_its_head() {
    let req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\na\nb\n";
    check_http1_request_head(&input([0, 0, 1, 1], req));
}

#[test]
fn lf_empty_line_between_pipelined_requests() {
    let reqs = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    check_http1_request_head(&input([0, 0, 1, 1], reqs));
}

/// When one read holds the end of a body and then a valid head and then a
/// refused head, the body bytes are dropped (`poll_read` resets the buffer
/// to `start` on error) while the validated head after them is still
/// delivered: hyper counts the next request's bytes as the body, and
/// parses bytes the guard treated as body as a request of their own.
#[test]
fn refusal_after_body_bytes_in_the_same_read() {
    let smuggled =
        b"POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let h2 = format!("POST /h2 HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", smuggled.len());
    let h1 = format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", h2.len());
    let bad = b"GET /bad HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
    let first_read = u8::try_from(h1.len()).expect("short head");
    let bytes = [h1.as_bytes(), &vec![b'p'; h2.len()], h2.as_bytes(), smuggled, bad].concat();
    // First read: exactly head 1; second read: everything else.
    check_http1_request_head(&input([0, 0, first_read, 0], &bytes));
}
