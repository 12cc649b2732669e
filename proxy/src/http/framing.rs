//! The HTTP/1 framing guard: refuses requests whose framing two parsers could
//! read differently, before hyper (or the app behind us) sees a byte of them.
//!
//! hyper resolves ambiguous framing leniently (it drops a `Content-Length`
//! that arrives with `Transfer-Encoding`, and merges identical duplicate
//! lengths), which is safe for hyper itself but hides the attempt; an
//! attacker probing for request smuggling should get a 400 and the
//! connection closed, and the app should never see the request. So every
//! HTTP/1 server connection reads through this guard. It validates each
//! request head with `httparse` and then follows the body framing
//! (`Content-Length` bytes, or chunk by chunk) to know where the next head
//! starts. Body bytes are inspected in place in hyper's buffer, never copied.
//!
//! Refused: `Content-Length` together with `Transfer-Encoding`, more than one
//! `Content-Length` (even equal), a non-numeric length, any transfer coding
//! other than a single `chunked`, obsolete line folding, a bare LF in the
//! head or in chunk framing, and heads larger than the limit (431).
//!
//! The guard also enforces `limits.header_read_timeout` from the first byte
//! of a head: hyper's own timer cannot, since hyper sees no byte of a head
//! until the guard has validated all of it.
//!
//! On a violation the guard delivers what was already validated, then reports
//! end of stream to hyper; when hyper shuts the connection down the guard
//! writes the error response itself (from [`ProxyError`]) and closes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::error::ProxyError;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// `n` body bytes left.
    Fixed(u64),
    /// Chunk size line: value so far, digits seen, inside an extension, saw CR.
    ChunkSize { value: u64, digits: u8, ext: bool, cr: bool },
    /// `n` chunk data bytes left.
    ChunkData(u64),
    /// CRLF after chunk data; `cr` once the CR was seen.
    ChunkDataEnd { cr: bool },
    /// Trailer section: bytes on the current line, saw CR.
    Trailer { line: usize, cr: bool },
    /// Not HTTP/1 framing (HTTP/2 prior knowledge): pass everything.
    Passthrough,
}

/// Wraps a server-side connection and enforces unambiguous HTTP/1 framing.
#[derive(Debug)]
pub struct FramingGuard<IO> {
    inner: IO,
    state: State,
    first: bool,
    head: Vec<u8>,
    out: BytesMut,
    max_head: usize,
    head_timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    failed: Option<ProxyError>,
    rejected: Option<ProxyError>,
    response: Option<(Vec<u8>, usize)>,
}

impl<IO> FramingGuard<IO> {
    /// Guards `inner`; heads longer than `max_head` bytes are refused with
    /// 431, heads not complete `head_timeout` after their first byte with 408.
    pub fn new(inner: IO, max_head: usize, head_timeout: Duration) -> Self {
        Self {
            inner,
            state: State::Head,
            first: true,
            head: Vec::new(),
            out: BytesMut::new(),
            max_head,
            head_timeout,
            deadline: None,
            failed: None,
            rejected: None,
            response: None,
        }
    }

    /// The violation that closed this connection, if any.
    pub fn rejection(&self) -> Option<&ProxyError> {
        self.rejected.as_ref()
    }

    fn reject(&mut self, e: ProxyError) {
        self.response = Some((e.to_http1_bytes(), 0));
        self.rejected = Some(e);
        self.head.clear();
        self.deadline = None;
    }

    /// Starts the head timer when a head is partially received; stops it otherwise.
    fn arm_deadline(&mut self) {
        if self.state == State::Head && !self.head.is_empty() {
            if self.deadline.is_none() {
                self.deadline = Some(Box::pin(tokio::time::sleep(self.head_timeout)));
            }
        } else {
            self.deadline = None;
        }
    }

    /// Feeds freshly read bytes. Returns how many leading bytes may go to
    /// hyper as they are; the rest was taken into `head` (and possibly
    /// moved, validated, to `out`).
    fn feed(&mut self, data: &[u8]) -> Result<usize, ProxyError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Head => {
                    // Everything from here on waits for head validation. The
                    // `i` bytes before it are valid body bytes and pass even
                    // if a later head is refused (the refusal waits in `failed`).
                    self.head.extend_from_slice(&data[i..]);
                    if let Err(e) = self.drain_heads() {
                        self.failed = Some(e);
                    }
                    return Ok(i);
                }
                State::Passthrough => return Ok(data.len()),
                _ => i += self.step_body(&data[i..])?,
            }
        }
        Ok(data.len())
    }

    /// Consumes body framing bytes from `data`; returns how many.
    fn step_body(&mut self, data: &[u8]) -> Result<usize, ProxyError> {
        match self.state {
            State::Fixed(n) => {
                let take = n.min(data.len() as u64);
                self.state = if take == n { State::Head } else { State::Fixed(n - take) };
                Ok(take as usize)
            }
            State::ChunkData(n) => {
                let take = n.min(data.len() as u64);
                self.state = if take == n { State::ChunkDataEnd { cr: false } } else { State::ChunkData(n - take) };
                Ok(take as usize)
            }
            _ => {
                self.step_byte(data[0])?;
                Ok(1)
            }
        }
    }

    fn step_byte(&mut self, b: u8) -> Result<(), ProxyError> {
        self.state = match (self.state, b) {
            (State::ChunkSize { cr: true, value, digits, .. }, b'\n') => {
                if digits == 0 {
                    return Err(ProxyError::Framing("chunk size missing"));
                }
                if value == 0 {
                    State::Trailer { line: 0, cr: false }
                } else {
                    State::ChunkData(value)
                }
            }
            (State::ChunkSize { cr: true, .. }, _) => return Err(ProxyError::Framing("bare CR in chunk size line")),
            (State::ChunkSize { .. }, b'\n') => return Err(ProxyError::Framing("bare LF in chunked body")),
            (State::ChunkSize { value, digits, ext, .. }, b'\r') => State::ChunkSize { value, digits, ext, cr: true },
            (State::ChunkSize { value, digits, ext: false, .. }, b) if b.is_ascii_hexdigit() => {
                if digits >= 15 {
                    return Err(ProxyError::Framing("chunk size too large"));
                }
                let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                State::ChunkSize { value: value * 16 + d, digits: digits + 1, ext: false, cr: false }
            }
            (State::ChunkSize { value, digits, ext: false, .. }, b';' | b' ' | b'\t') if digits > 0 => {
                State::ChunkSize { value, digits, ext: true, cr: false }
            }
            (State::ChunkSize { ext: false, .. }, _) => return Err(ProxyError::Framing("invalid chunk size")),
            (s @ State::ChunkSize { ext: true, .. }, _) => s,
            (State::ChunkDataEnd { cr: false }, b'\r') => State::ChunkDataEnd { cr: true },
            (State::ChunkDataEnd { cr: true }, b'\n') => {
                State::ChunkSize { value: 0, digits: 0, ext: false, cr: false }
            }
            (State::ChunkDataEnd { .. }, _) => return Err(ProxyError::Framing("chunk data not followed by CRLF")),
            (State::Trailer { line, cr: false }, b'\r') => State::Trailer { line, cr: true },
            (State::Trailer { line: 0, cr: true }, b'\n') => State::Head,
            (State::Trailer { cr: true, .. }, b'\n') => State::Trailer { line: 0, cr: false },
            (State::Trailer { .. }, b'\n') => return Err(ProxyError::Framing("bare LF in trailers")),
            (State::Trailer { cr: true, .. }, _) => return Err(ProxyError::Framing("bare CR in trailers")),
            (State::Trailer { line, .. }, _) => {
                if line >= 8192 {
                    return Err(ProxyError::HeadersTooLarge);
                }
                State::Trailer { line: line + 1, cr: false }
            }
            (s, _) => s,
        };
        Ok(())
    }

    /// Validates every complete head in `self.head`, moving validated bytes
    /// (and the body bytes that follow them) to `out`.
    fn drain_heads(&mut self) -> Result<(), ProxyError> {
        loop {
            if self.state != State::Head {
                // Body bytes that arrived together with their head.
                let buf = std::mem::take(&mut self.head);
                let mut i = 0;
                while i < buf.len() && !matches!(self.state, State::Head | State::Passthrough) {
                    i += self.step_body(&buf[i..])?;
                }
                if self.state == State::Passthrough {
                    i = buf.len();
                }
                self.out.extend_from_slice(&buf[..i]);
                self.head = buf[i..].to_vec();
                if self.head.is_empty() {
                    return Ok(());
                }
                continue;
            }
            // Empty lines before a request line are allowed (RFC 9112 2.2); drop them.
            let skip = self.head.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
            self.head.drain(..skip);
            if self.head.is_empty() {
                return Ok(());
            }
            if self.first {
                let n = self.head.len().min(H2_PREFACE.len());
                if self.head[..n] == H2_PREFACE[..n] {
                    if n < H2_PREFACE.len() {
                        return Ok(()); // wait for the whole preface
                    }
                    self.state = State::Passthrough;
                    self.out.extend_from_slice(&self.head);
                    self.head.clear();
                    return Ok(());
                }
            }
            let Some(end) = find_head_end(&self.head) else {
                // Refuse a bare LF as soon as it arrives: such a head never
                // ends in CRLFCRLF. (Only head bytes are buffered here.)
                if self.head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') {
                    return Err(ProxyError::Framing("bare LF in request head"));
                }
                if self.head.len() > self.max_head {
                    return Err(ProxyError::HeadersTooLarge);
                }
                return Ok(());
            };
            if end > self.max_head {
                return Err(ProxyError::HeadersTooLarge);
            }
            self.state = check_head(&self.head[..end])?;
            self.first = false;
            self.deadline = None;
            self.out.extend_from_slice(&self.head[..end]);
            self.head.drain(..end);
        }
    }
}

/// Index just past the `\r\n\r\n` that ends a head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Validates one complete head and returns the body state that follows it.
fn check_head(head: &[u8]) -> Result<State, ProxyError> {
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err(ProxyError::Framing("bare LF in request head"));
        }
        if b == b'\n' && matches!(head.get(i + 1), Some(b' ' | b'\t')) {
            return Err(ProxyError::Framing("obsolete line folding"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(ProxyError::BadRequest("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(ProxyError::HeadersTooLarge),
        Err(_) => return Err(ProxyError::BadRequest("malformed request head")),
    }
    if req.method == Some("CONNECT") {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    let mut lengths = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let mut codings = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let (cl, cl2, te, te2) = (lengths.next(), lengths.next(), codings.next(), codings.next());
    if cl2.is_some() {
        return Err(ProxyError::Framing("duplicate content-length"));
    }
    if te2.is_some() {
        return Err(ProxyError::Framing("duplicate transfer-encoding"));
    }
    match (cl, te) {
        (Some(_), Some(_)) => Err(ProxyError::Framing("both content-length and transfer-encoding")),
        (None, Some(te)) => {
            if req.version != Some(1) {
                return Err(ProxyError::Framing("transfer-encoding in HTTP/1.0"));
            }
            if !te.value.eq_ignore_ascii_case(b"chunked") {
                return Err(ProxyError::Framing("unsupported transfer-encoding"));
            }
            Ok(State::ChunkSize { value: 0, digits: 0, ext: false, cr: false })
        }
        (Some(cl), None) => {
            if cl.value.is_empty() || cl.value.len() > 19 || !cl.value.iter().all(u8::is_ascii_digit) {
                return Err(ProxyError::Framing("invalid content-length"));
            }
            let n: u64 = std::str::from_utf8(cl.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(ProxyError::Framing("invalid content-length"))?;
            Ok(if n == 0 { State::Head } else { State::Fixed(n) })
        }
        (None, None) => Ok(State::Head),
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.rejected.is_some() {
                return Poll::Ready(Ok(())); // end of stream for hyper
            }
            let start = buf.filled().len();
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            if polled.is_pending() {
                // A partial head is waiting: enforce the head deadline.
                if let Some(deadline) = this.deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.reject(ProxyError::HeaderTimeout);
                        continue;
                    }
                }
                return Poll::Pending;
            }
            ready!(polled)?;
            let end = buf.filled().len();
            if end == start {
                return Poll::Ready(Ok(())); // real end of stream
            }
            // Inspected in place: body bytes are never copied.
            match this.feed(&buf.filled()[start..end]) {
                Ok(pass) => {
                    buf.set_filled(start + pass);
                    if let Some(e) = this.failed.take() {
                        this.reject(e);
                    }
                    this.arm_deadline();
                    if pass > 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                Err(e) => {
                    buf.set_filled(start);
                    this.reject(e);
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while let Some((bytes, written)) = this.response.as_mut() {
            if *written == bytes.len() {
                ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
                this.response = None;
                break;
            }
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns what hyper would see
    /// and the violation, if any.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, Option<String>) {
        let mut g = FramingGuard::new((), 8192, Duration::from_secs(10));
        let mut seen = Vec::new();
        for piece in input.chunks(step) {
            match g.feed(piece) {
                Ok(n) => {
                    seen.extend_from_slice(&piece[..n]);
                    if let Some(e) = g.failed.take() {
                        seen.extend_from_slice(&g.out.split());
                        return (seen, Some(e.to_string()));
                    }
                }
                Err(e) => {
                    // Validated bytes still reach hyper before the end of stream.
                    seen.extend_from_slice(&g.out.split());
                    return (seen, Some(e.to_string()));
                }
            }
            seen.extend_from_slice(&g.out.split());
        }
        (seen, None)
    }

    fn ok(input: &[u8]) {
        for step in [1, 3, 7, 64, input.len()] {
            let (seen, err) = run(input, step);
            assert_eq!(err, None, "step {step}: {}", String::from_utf8_lossy(input));
            assert_eq!(seen, input, "step {step}");
        }
    }

    fn refused(input: &[u8], reason: &str) {
        for step in [1, 5, input.len()] {
            let (_, err) = run(input, step);
            let err = err.unwrap_or_else(|| panic!("accepted: {}", String::from_utf8_lossy(input)));
            assert!(err.contains(reason), "step {step}: {err}");
        }
    }

    #[test]
    fn passes_keep_alive_requests_with_bodies() {
        ok(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
GET /y HTTP/1.1\r\nHost: a\r\n\r\n");
        ok(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n\
POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\ngrpc-status: 0\r\n\r\n");
    }

    #[test]
    fn body_bytes_that_look_like_smuggling_are_just_body() {
        ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 48\r\n\r\nGET /admin HTTP/1.1\r\nContent-Length: 1\r\n\r\n12345");
    }

    #[test]
    fn passes_http2_prior_knowledge() {
        let mut input = H2_PREFACE.to_vec();
        input.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\r\n\n\n");
        ok(&input);
    }

    #[test]
    fn refuses_ambiguous_framing() {
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "both content-length and transfer-encoding",
        );
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            "both content-length and transfer-encoding",
        );
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
            "duplicate content-length",
        );
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcd", "invalid content-length");
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd", "invalid content-length");
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported transfer-encoding");
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "unsupported transfer-encoding",
        );
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", "obsolete line folding");
        refused(b"GET / HTTP/1.1\nHost: a\r\n\r\n", "bare LF in request head");
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", "bare LF");
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n",
            "chunk data not followed by CRLF",
        );
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size");
    }

    #[test]
    fn a_second_bad_request_is_refused_after_the_first_passes() {
        let good = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut input = good.to_vec();
        input.extend_from_slice(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
        let (seen, err) = run(&input, input.len());
        assert_eq!(seen, good);
        assert!(err.is_some());
    }

    #[test]
    fn newlines_in_a_body_read_together_with_its_head_are_body() {
        ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n{\n\"a\":1}GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn oversized_heads_get_431() {
        let mut input = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 10_000));
        let (_, err) = run(&input, 1000);
        assert_eq!(err.as_deref(), Some("request headers too large"));
    }
}
