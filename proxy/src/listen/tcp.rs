//! Opaque TCP: bytes copied both ways until either side closes.

use tokio::io::{AsyncRead, AsyncWrite};

/// Copies between `a` and `b` until both directions are done; logs the totals.
pub async fn splice<A, B>(mut a: A, mut b: B, what: &str)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut a, &mut b).await {
        Ok((up, down)) => tracing::debug!(what, bytes_up = up, bytes_down = down, "opaque connection closed"),
        Err(e) => tracing::debug!(what, error = %e, "opaque connection failed"),
    }
}
