//! `serve`: binds the address, starts the upkeep and serves until SIGINT or
//! SIGTERM, then gives open requests (long-polls included) a short grace.

use crate::api::{self, AppState};
use crate::feed::Feed;
use crate::maintenance::{self, Upkeep};
use crate::service::Service;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Shorter feed tokens get a warning.
const MIN_TOKEN_LEN: usize = 16;
/// Time open requests get to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Serves `service` on `listen` until stopped, with snapshot pages of at
/// most `feed_page_keys` keys.
pub async fn serve(
    service: Arc<Service>,
    listen: SocketAddr,
    feed_token: &str,
    feed_page_keys: usize,
    upkeep: Upkeep,
) -> Result<(), String> {
    if feed_token.len() < MIN_TOKEN_LEN {
        tracing::warn!("the feed token is shorter than {MIN_TOKEN_LEN} characters");
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    maintenance::spawn(service.shared_store(), upkeep);
    let version = *service.store().version().borrow();
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%address, version, "control plane listening");
    let app = api::router(AppState {
        service,
        feed: Arc::new(Feed::new(feed_token, feed_page_keys)),
    });
    let (stop, stopped) = watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let mut stopped = stopped;
        // An error means the sender is gone: stop as well.
        let _ = stopped.wait_for(|s| *s).await;
    });
    tokio::select! {
        result = server.into_future() => result.map_err(|e| e.to_string()),
        () = async {
            stop_signal().await;
            tracing::info!("stopping");
            stop.send_replace(true);
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    }
}

async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}
