//! A tiny key-table feed server that follows docs/feed-protocol.md.
//!
//! It serves one fixed snapshot: `since` absent, `0` or another version gets
//! the snapshot (200); `since` equal to its version is held for `wait`
//! seconds, then answered 304 (the table never changes here). Good for
//! throughput, memory and load-time numbers, which measure the filter;
//! revocation is measured against the real control plane instead.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A running feed server; stops when dropped.
pub struct FeedServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    body: Vec<u8>,
    version: u64,
    token: String,
    stop: AtomicBool,
    /// When the last snapshot was completely written to a client.
    snapshot_sent: Mutex<Option<Instant>>,
    /// Requests answered 304.
    not_modified: Mutex<u64>,
}

impl FeedServer {
    /// Serves `body` (a `KGT1` snapshot at `version`) to callers presenting `token`.
    pub fn start(body: Vec<u8>, version: u64, token: &str) -> io::Result<FeedServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            body,
            version,
            token: format!("Bearer {token}"),
            stop: AtomicBool::new(false),
            snapshot_sent: Mutex::new(None),
            not_modified: Mutex::new(0),
        });
        let accept = Arc::clone(&shared);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accept.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(stream) = stream {
                    let conn = Arc::clone(&accept);
                    thread::spawn(move || {
                        let _ = serve(stream, &conn);
                    });
                }
            }
        });
        Ok(FeedServer { addr, shared })
    }

    /// When the last snapshot finished going out, if one did.
    pub fn snapshot_sent(&self) -> Option<Instant> {
        *self
            .shared
            .snapshot_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many polls were answered 304.
    pub fn not_modified(&self) -> u64 {
        *self
            .shared
            .not_modified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

/// One request head: target and the headers the feed cares about.
struct Request {
    target: String,
    authorization: Option<String>,
    if_none_match: Option<String>,
}

fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut request = Request {
        target,
        authorization: None,
        if_none_match: None,
    };
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            return Ok(Some(request));
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            let value = Some(value.trim().to_string());
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => request.authorization = value,
                "if-none-match" => request.if_none_match = value,
                _ => {}
            }
        }
    }
}

/// Query parameter `name` of `target`.
fn param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some(request) = read_request(&mut reader)? {
        answer(&mut out, &request, shared)?;
    }
    Ok(())
}

fn write_head(
    out: &mut impl Write,
    status: &str,
    headers: &[(&str, &str)],
    len: usize,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {len}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn error(out: &mut impl Write, status: &str, kind: &str, message: &str) -> io::Result<()> {
    let body = format!(r#"{{"error":{{"type":"{kind}","message":"{message}"}}}}"#);
    write_head(
        out,
        status,
        &[("content-type", "application/json")],
        body.len(),
    )?;
    out.write_all(body.as_bytes())
}

fn answer(out: &mut impl Write, request: &Request, shared: &Shared) -> io::Result<()> {
    let path = request.target.split('?').next().unwrap_or("");
    if path != "/v1/key-table" {
        return error(out, "404 Not Found", "not_found", "Not found");
    }
    if request.authorization.as_deref() != Some(shared.token.as_str()) {
        return error(
            out,
            "401 Unauthorized",
            "unauthorized",
            "Invalid feed token",
        );
    }
    let from_etag = request
        .if_none_match
        .as_deref()
        .map(|v| v.trim_matches('"').to_string());
    let since = match param(&request.target, "since")
        .map(String::from)
        .or(from_etag)
    {
        None => 0,
        Some(s) => match s.parse::<u64>() {
            Ok(n) => n,
            Err(_) => return error(out, "400 Bad Request", "invalid_request", "since"),
        },
    };
    let wait = match param(&request.target, "wait").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(n)) if n <= 60 => n,
        Some(_) => return error(out, "400 Bad Request", "invalid_request", "wait"),
    };
    let version = shared.version.to_string();
    let etag = format!("\"{version}\"");
    let tags = [
        ("etag", etag.as_str()),
        ("x-keygate-version", version.as_str()),
    ];
    if since == shared.version {
        let until = Instant::now() + Duration::from_secs(wait);
        while Instant::now() < until {
            if shared.stop.load(Ordering::Relaxed) {
                return Err(io::Error::other("stopping"));
            }
            thread::sleep(Duration::from_millis(50));
        }
        *shared
            .not_modified
            .lock()
            .unwrap_or_else(|e| e.into_inner()) += 1;
        return write_head(out, "304 Not Modified", &tags, 0);
    }
    let mut headers = tags.to_vec();
    headers.push(("content-type", keygate::feed::CONTENT_TYPE));
    write_head(out, "200 OK", &headers, shared.body.len())?;
    out.write_all(&shared.body)?;
    out.flush()?;
    *shared
        .snapshot_sent
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;

    #[test]
    fn follows_the_protocol() {
        let server = FeedServer::start(b"KGT1body".to_vec(), 5, "t").unwrap();
        let auth = [("authorization", "Bearer t")];
        let r = http::once(server.addr, "GET", "/v1/key-table?since=0", &auth, None).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"KGT1body".as_slice()));
        assert!(r.headers.contains(&("etag".into(), "\"5\"".into())));
        let r = http::once(
            server.addr,
            "GET",
            "/v1/key-table?since=5&wait=0",
            &auth,
            None,
        )
        .unwrap();
        assert_eq!(r.status, 304);
        let r = http::once(server.addr, "GET", "/v1/key-table?since=9", &auth, None).unwrap();
        assert_eq!(r.status, 200);
        let r = http::once(server.addr, "GET", "/v1/key-table", &[], None).unwrap();
        assert_eq!(r.status, 401);
        let r = http::once(server.addr, "GET", "/v1/key-table?wait=x", &auth, None).unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(server.not_modified(), 1);
    }
}
