//! `serve`: binds the address, starts the upkeep and serves HTTP/1 until
//! SIGINT or SIGTERM, then gives open requests (long-polls included) a short
//! grace.
//!
//! What a client may hold is bounded ([`Limits`], SPEC §15): at most
//! `max_connections` connections are served at once (the next wait in the
//! listen queue), and a connection that does not complete a request head
//! within `header_timeout` of its start or of its previous answer is
//! closed (hyper's header-read timer: a stalled client and an idle
//! keep-alive connection alike; a request being answered, such as a feed
//! long-poll, is never cut).
//!
//! Its parsing limits are above Envoy's (60 KiB of headers, 100 headers), so
//! a request Envoy lets through is never refused here for its size; what
//! hyper refuses while parsing a request sent directly is answered in JSON
//! too ([`crate::unparsed`]).

use crate::data_planes::Registry;
use crate::dispatch;
use crate::feed::FeedEndpoint;
use crate::leaks::spikes;
use crate::maintenance::{self, Upkeep};
use crate::operator_token::OperatorToken;
use crate::routes;
use crate::service::Service;
use crate::signin::signup::SignUp;
use crate::signin::SignInState;
use crate::state::AppState;
use crate::unparsed::JsonRefusals;
use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use keygate::errors::ErrorFormat;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OnceCell, Semaphore};
use tower_layer::Layer;

/// Shorter feed tokens get a warning.
const MIN_TOKEN_LEN: usize = 16;
/// Time open requests get to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Largest request line and headers (Envoy's limit: 60 KiB).
const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Most headers in a request (Envoy's limit: 100, plus the few it adds).
const MAX_HEADERS: usize = 256;

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub listen: SocketAddr,
    /// The bearer token of the key table feed.
    pub feed_token: String,
    /// Most keys in one snapshot page.
    pub feed_page_keys: usize,
    /// The dialect of every JSON error.
    pub error_format: ErrorFormat,
    /// The operator API's token (the API is off without one).
    pub operator: OperatorToken,
    /// When webhook deliveries are retried.
    pub webhooks: dispatch::Settings,
    /// Who may sign up.
    pub sign_up: SignUp,
    /// What one client may hold.
    pub limits: Limits,
}

/// What clients may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a complete request head (idle keep-alive included).
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `service` at `endpoint` until stopped.
pub async fn serve(
    service: Arc<Service>,
    endpoint: Endpoint,
    upkeep: Upkeep,
) -> Result<(), String> {
    let Endpoint {
        listen,
        feed_token,
        feed_page_keys,
        error_format,
        operator,
        webhooks,
        sign_up,
        limits,
    } = endpoint;
    if feed_token.len() < MIN_TOKEN_LEN {
        tracing::warn!("the feed token is shorter than {MIN_TOKEN_LEN} characters");
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    service
        .warn_unknown_plans()
        .await
        .map_err(|e| e.to_string())?;
    maintenance::spawn(service.shared_store(), upkeep);
    spikes::spawn(Arc::clone(&service));
    let wake = Arc::clone(service.events_queued());
    let egress = Arc::clone(service.egress());
    dispatch::spawn(service.shared_store(), wake, egress, &webhooks)?;
    let version = *service.store().version().borrow();
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%address, version, operator_api = operator.is_configured(),
                   "control plane listening");
    let planes = Arc::new(Registry::new(Arc::clone(service.delivery())));
    planes
        .reload(service.store())
        .await
        .map_err(|e| e.to_string())?;
    planes.spawn(service.shared_store());
    let app = routes::router(AppState {
        feed: Arc::new(FeedEndpoint::new(&feed_token, feed_page_keys, planes)),
        service,
        operator: Arc::new(operator),
        sign_in: Arc::new(SignInState {
            sign_up,
            unknown: OnceCell::new(),
        }),
        error_format,
    });
    let (stop, stopped) = watch::channel(false);
    tokio::select! {
        () = accept(listener, app, error_format, limits, stopped) => Ok(()),
        () = async {
            stop_signal().await;
            tracing::info!("stopping");
            stop.send_replace(true);
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    }
}

/// Serves every connection until `stopped`, then waits for the open ones.
async fn accept(
    listener: TcpListener,
    app: Router,
    format: ErrorFormat,
    limits: Limits,
    stopped: watch::Receiver<bool>,
) {
    // Each connection holds a sender: `recv` ends once all have closed.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut stop = stopped.clone();
    loop {
        // A free slot first: over the cap, connections wait in the backlog.
        let accepted = async {
            let slot = Arc::clone(&slots).acquire_owned().await;
            (slot, listener.accept().await)
        };
        tokio::select! {
            (slot, accepted) = accepted => match accepted {
                Ok((stream, peer)) => {
                    let (app, stopped, open) = (app.clone(), stopped.clone(), open.clone());
                    let timeout = limits.header_timeout;
                    tokio::spawn(async move {
                        connection(stream, peer, app, format, timeout, stopped).await;
                        drop((open, slot));
                    });
                }
                // Out of file descriptors and the like: try again shortly.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // An error means the sender is gone: stop as well.
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    drop(open);
    let _ = all_closed.recv().await;
}

/// Serves one connection (its requests carry the peer's address as
/// `ConnectInfo`); once `stopped`, it ends after the request in flight.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    format: ErrorFormat,
    header_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(JsonRefusals::new(stream, format));
    let mut builder = http1::Builder::new();
    builder
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let app = Extension(ConnectInfo(peer)).layer(app);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended");
            }
            return;
        }
        _ = stopped.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
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
