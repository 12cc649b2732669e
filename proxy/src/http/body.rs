//! The body type that flows through the proxy: streamed, never buffered.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

/// Boxed error of a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any body meshward forwards or produces.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Constructors for [`ProxyBody`].
pub trait ProxyBodyExt {
    /// A body of fixed bytes.
    fn full(bytes: Bytes) -> ProxyBody;
    /// An empty body.
    fn empty() -> ProxyBody;
}

impl ProxyBodyExt for ProxyBody {
    fn full(bytes: Bytes) -> ProxyBody {
        Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
    }

    fn empty() -> ProxyBody {
        Empty::new().map_err(|never| match never {}).boxed_unsync()
    }
}

/// Streams `body`, failing once more than `limit` bytes went through.
pub fn limited<B>(body: B, limit: u64) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    http_body_util::Limited::new(body, limit).boxed_unsync()
}
