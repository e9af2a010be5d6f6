//! A webhook receiver on loopback for the tests: a real HTTP(S) server that
//! keeps every request it gets (time, headers, body) and answers the status
//! the test sets; and an independent check of `keygate-signature`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// True when `keygate-signature` is HMAC-SHA256 of `t.body` with `secret`.
    pub fn signed_with(&self, secret: &str) -> bool {
        let header = self.headers["keygate-signature"].to_str().unwrap();
        let (t, v1) = header.split_once(',').unwrap();
        let t = t.strip_prefix("t=").unwrap();
        let v1 = v1.strip_prefix("v1=").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{}", self.body).as_bytes());
        mac.verify_slice(&hex::decode(v1).unwrap()).is_ok()
    }
}

#[derive(Default)]
struct Shared {
    got: Mutex<Vec<Received>>,
    status: AtomicU16,
}

/// A running receiver.
pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Listens on a free loopback port, answering `status`.
    pub async fn start(status: u16) -> Receiver {
        let (shared, app) = app(status);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, shared }
    }

    /// Listens with TLS (`config`) on a free loopback port, answering
    /// `status`; its URL is `https://127.0.0.1:<port>/hook`.
    pub async fn start_tls(status: u16, config: tokio_rustls::rustls::ServerConfig) -> Receiver {
        let (shared, app) = app(status);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/hook", listener.local_addr().unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Receiver { url, shared }
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    pub fn got(&self) -> Vec<Received> {
        self.shared.got.lock().unwrap().clone()
    }

    /// Waits up to `within` for at least `n` requests; returns them all.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.got();
            if got.len() >= n || start.elapsed() > within {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The receiver's state, and its app answering `status`.
fn app(status: u16) -> (Arc<Shared>, Router) {
    let shared = Arc::new(Shared::default());
    shared.status.store(status, Ordering::SeqCst);
    let app = Router::new()
        .route("/hook", post(take))
        .with_state(Arc::clone(&shared));
    (shared, app)
}

async fn take(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let received = Received {
        at: Instant::now(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    shared.got.lock().unwrap().push(received);
    StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap()
}
