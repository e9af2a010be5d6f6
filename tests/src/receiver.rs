//! A webhook receiver for the e2e tests: a plain HTTP/1.1 server on
//! loopback (one request per connection) that keeps every request's
//! headers and body and answers 200; a tarpit (accepts, never answers);
//! and the check of `keygate-signature` (HMAC-SHA256 of `<t>.<body>` with
//! the webhook's secret).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request: its header lines (lowercase names) and body.
#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Hook {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True when `keygate-signature` signs the body with `secret`.
    pub fn signed_with(&self, secret: &str) -> bool {
        let Some(sig) = self.header("keygate-signature") else {
            return false;
        };
        let Some((t, v1)) = sig.split_once(',') else {
            return false;
        };
        let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{}", self.body).as_bytes());
        hex::decode(v1).is_ok_and(|v| mac.verify_slice(&v).is_ok())
    }
}

/// A running receiver.
pub struct HookReceiver {
    pub url: String,
    got: Arc<Mutex<Vec<Hook>>>,
}

impl HookReceiver {
    pub async fn start() -> HookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&got);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let keep = Arc::clone(&keep);
                tokio::spawn(async move {
                    if let Some(hook) = serve(stream).await {
                        keep.lock().unwrap().push(hook);
                    }
                });
            }
        });
        HookReceiver { url, got }
    }

    /// Waits up to `within` for `n` requests; returns what arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Hook> {
        let start = Instant::now();
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n || start.elapsed() > within {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A receiver that accepts connections and holds them, never answering.
pub struct Tarpit {
    pub url: String,
    accepted: Arc<AtomicUsize>,
}

impl Tarpit {
    pub async fn start() -> Tarpit {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Tarpit { url, accepted }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits up to `within` until `n` connections were accepted; returns how many were.
    pub async fn wait_for(&self, n: usize, within: Duration) -> usize {
        let start = Instant::now();
        loop {
            let got = self.accepted();
            if got >= n || start.elapsed() > within {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads one request and answers 200.
async fn serve(mut stream: TcpStream) -> Option<Hook> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let _ = stream.write_all(answer).await;
    Some(Hook {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
