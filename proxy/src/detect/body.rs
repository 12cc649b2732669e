//! Reading the first bytes of a request body for the detector without
//! losing any: the frames read are replayed, in order, ahead of the rest of
//! the stream, so what reaches the app is byte-identical (trailers included).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::http::body::{BoxError, ProxyBody};

/// The inspected prefix of a body and the body to forward.
pub struct Inspected {
    /// Up to the inspection limit of the body's first bytes (contiguous).
    pub prefix: Bytes,
    /// Whether the body ended while it was read (`prefix` is the whole body
    /// unless `cut`).
    pub complete: bool,
    /// Whether the byte limit cut the body: `prefix` is its first `limit`
    /// bytes and more followed. (Not when the wait ran out: how long a body
    /// takes is the client's choice, and a body judged as cut is not read
    /// for tensors, so a client could hide one by sending it slowly.)
    pub cut: bool,
    /// The whole body, prefix first, then whatever was not read yet.
    pub body: ProxyBody,
}

/// Reads `body` until it ends, `limit` bytes were read, or `wait` passed
/// (a streaming client that waits for an answer is not held up longer).
/// A body error while reading is kept and replayed to the upstream, which
/// fails the request as it would have without inspection.
pub async fn inspect(mut body: ProxyBody, limit: usize, wait: Duration) -> Inspected {
    let mut frames: VecDeque<Result<Frame<Bytes>, BoxError>> = VecDeque::new();
    let mut prefix = BytesMut::new();
    let mut complete = body.is_end_stream();
    let mut cut = false;
    let deadline = tokio::time::Instant::now() + wait;
    while !complete && prefix.len() < limit {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_elapsed) => break,
            Ok(None) => complete = true,
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let room = limit - prefix.len();
                    cut |= data.len() > room;
                    prefix.extend_from_slice(&data[..data.len().min(room)]);
                } else {
                    // Trailers end the body.
                    complete = true;
                }
                frames.push_back(Ok(frame));
            }
            Ok(Some(Err(e))) => {
                frames.push_back(Err(e));
                complete = true;
            }
        }
        if !complete && body.is_end_stream() {
            complete = true;
        }
    }
    cut |= !complete && prefix.len() >= limit;
    let rest = if complete { None } else { Some(body) };
    Inspected { prefix: prefix.freeze(), complete, cut, body: Replayed { frames, rest }.boxed_unsync() }
}

/// Frames already read, then the rest of the stream.
struct Replayed {
    frames: VecDeque<Result<Frame<Bytes>, BoxError>>,
    rest: Option<ProxyBody>,
}

impl Body for Replayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(frame));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 =
            self.frames.iter().filter_map(|f| f.as_ref().ok()?.data_ref().map(|d| d.len() as u64)).sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let h = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + buffered);
                if let Some(upper) = h.upper() {
                    out.set_upper(upper + buffered);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::ProxyBodyExt;
    use http_body_util::StreamBody;

    fn chunks(parts: &[&'static [u8]]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p)))).collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    async fn all(body: ProxyBody) -> Vec<u8> {
        body.collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_small_body_is_read_whole_and_forwarded_unchanged() {
        let got = inspect(chunks(&[b"{\"inputs\":", b"[]}"]), 1024, Duration::from_secs(1)).await;
        assert!(got.complete && !got.cut);
        assert_eq!(&got.prefix[..], b"{\"inputs\":[]}");
        assert_eq!(all(got.body).await, b"{\"inputs\":[]}");
    }

    #[tokio::test]
    async fn a_large_body_is_cut_for_inspection_but_forwarded_whole() {
        let got = inspect(chunks(&[b"0123456789", b"abcdef", b"XYZ"]), 12, Duration::from_secs(1)).await;
        assert!(!got.complete && got.cut);
        assert_eq!(&got.prefix[..], b"0123456789ab");
        assert_eq!(all(got.body).await, b"0123456789abcdefXYZ");
    }

    #[tokio::test]
    async fn one_frame_past_the_limit_is_cut_though_the_body_ended() {
        // A sized body arrives as one frame and ends with it.
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789abcdefXYZ"))
            .map_err(|e| match e {})
            .boxed_unsync();
        let got = inspect(body, 12, Duration::from_secs(1)).await;
        assert!(got.complete && got.cut);
        assert_eq!(&got.prefix[..], b"0123456789ab");
        assert_eq!(all(got.body).await, b"0123456789abcdefXYZ");
        // Exactly the limit, ended: the whole body. (A stream that stops at
        // the limit without saying it ended counts as cut: more may follow.)
        let body =
            http_body_util::Full::new(Bytes::from_static(b"0123456789ab")).map_err(|e| match e {}).boxed_unsync();
        let got = inspect(body, 12, Duration::from_secs(1)).await;
        assert!(got.complete && !got.cut, "a body of exactly the limit is whole");
    }

    #[tokio::test]
    async fn an_empty_body_is_complete_at_once() {
        let got = inspect(ProxyBody::empty(), 1024, Duration::from_secs(1)).await;
        assert!(got.complete && got.prefix.is_empty());
        assert!(all(got.body).await.is_empty());
    }

    #[tokio::test]
    async fn a_stalled_stream_is_not_held_past_the_wait() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let body = StreamBody::new(stream).boxed_unsync();
        tx.send(Ok(Frame::data(Bytes::from_static(b"first")))).await.expect("send");
        let started = tokio::time::Instant::now();
        let got = inspect(body, 1024, Duration::from_millis(50)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        // Slow, not cut: judged on what came.
        assert!(!got.complete && !got.cut);
        assert_eq!(&got.prefix[..], b"first");
        tx.send(Ok(Frame::data(Bytes::from_static(b"-second")))).await.expect("send");
        drop(tx);
        assert_eq!(all(got.body).await, b"first-second");
    }
}
