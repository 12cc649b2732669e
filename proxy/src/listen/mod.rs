//! Listeners: accept loops with a connection limit, and per-connection setup
//! for each direction.

pub mod inbound;
pub mod orig_dst;
pub mod outbound;
pub mod tcp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{Direction, DirectionLabel, Metrics, ReasonLabels};

/// Accepts connections until `shutdown`, at most `max_connections` at once;
/// each accepted connection runs `handle` on its own task, tracked so that
/// shutdown can wait for it.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    direction: Direction,
    max_connections: usize,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    let handle = Arc::new(handle);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, %direction, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.connections_refused.get_or_create(&ReasonLabels { direction, reason: "connection_limit" }).inc();
            tracing::warn!(%peer, %direction, max_connections, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let label = DirectionLabel { direction };
        metrics.connections.get_or_create(&label).inc();
        metrics.open_connections.get_or_create(&label).inc();
        let (metrics, handle) = (metrics.clone(), handle.clone());
        tracker.spawn(async move {
            handle(stream, peer).await;
            metrics.open_connections.get_or_create(&label).dec();
            drop(permit);
        });
    }
}
