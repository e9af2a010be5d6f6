//! A tiny key-table feed server that follows docs/feed-protocol.md.
//!
//! It serves one fixed table, in snapshot pages like the control plane:
//! `since` absent, `0` or another version gets a page (200) of at most
//! [`PAGE_KEYS`] keys in ascending hash order, those after `after`
//! (kind 3 while more follow, kind 1 for the last); `since` equal to its
//! version is held for `wait` seconds, then answered 304 (the table never
//! changes here). Good for throughput, memory and load-time numbers, which
//! measure the filter; revocation is measured against the real control plane
//! instead.

use keygate::feed::{encode_snapshot_page, FeedEntry, KeySet, RawOp, Reader};
use keygate::ids::{KeyId, OrgId};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Keys in a snapshot page: the control plane's default (`--feed-page-keys`).
pub const PAGE_KEYS: usize = keygate::feed::DEFAULT_PAGE_KEYS as usize;

/// A running feed server; stops when dropped.
pub struct FeedServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

/// A key of the table, its strings as indices into [`Table::strings`]
/// (a 1M-key table stays about as small as its snapshot body).
struct Key {
    hash: [u8; 32],
    key_id: u64,
    org_id: u64,
    expires_at: u64,
    scopes: u32,
    tier: u32,
    environment: keygate::key::Environment,
}

/// The table served, keys in ascending hash order.
struct Table {
    key_set: KeySet,
    strings: Vec<String>,
    keys: Vec<Key>,
}

impl Table {
    /// The keys of a `KGT3` snapshot body.
    fn decode(body: &[u8]) -> io::Result<Table> {
        let invalid = |e: keygate::feed::FeedError| io::Error::new(io::ErrorKind::InvalidData, e);
        let (header, mut reader) = Reader::header(body).map_err(invalid)?;
        if !header.snapshot {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a snapshot"));
        }
        let strings: Vec<String> = reader
            .dictionary()
            .map_err(invalid)?
            .into_iter()
            .map(String::from)
            .collect();
        let n = reader.op_count().map_err(invalid)?;
        let mut keys = Vec::with_capacity((n as usize).min(reader.remaining() / 66));
        for _ in 0..n {
            match reader.op().map_err(invalid)? {
                RawOp::Upsert(e) => keys.push(Key {
                    hash: e.hash,
                    key_id: e.key_id,
                    org_id: e.org_id,
                    expires_at: e.expires_at,
                    scopes: e.scopes,
                    tier: e.tier,
                    environment: e.environment,
                }),
                RawOp::Remove(_) => {
                    return Err(invalid(keygate::feed::FeedError::RemoveInSnapshot))
                }
            }
        }
        reader.finish().map_err(invalid)?;
        keys.sort_unstable_by_key(|k| k.hash);
        Ok(Table {
            key_set: header.key_set,
            strings,
            keys,
        })
    }

    /// The page of at most `page_keys` keys after `after` (from the first
    /// without), and whether keys follow it.
    fn page(&self, after: Option<&[u8; 32]>, page_keys: usize) -> (Vec<FeedEntry>, bool) {
        let start = after.map_or(0, |a| self.keys.partition_point(|k| k.hash <= *a));
        let end = start.saturating_add(page_keys.max(1)).min(self.keys.len());
        let text = |i: u32| self.strings.get(i as usize).cloned().unwrap_or_default();
        let entries = self
            .keys
            .get(start..end)
            .unwrap_or(&[])
            .iter()
            .map(|k| FeedEntry {
                hash: k.hash,
                key_id: KeyId(k.key_id),
                org_id: OrgId(k.org_id),
                expires_at: k.expires_at,
                scopes: text(k.scopes),
                tier: text(k.tier),
                environment: k.environment,
                ..FeedEntry::default()
            })
            .collect();
        (entries, end < self.keys.len())
    }
}

struct Shared {
    table: Table,
    version: u64,
    page_keys: usize,
    token: String,
    stop: AtomicBool,
    /// When the last page of a snapshot was completely written to a client.
    snapshot_sent: Mutex<Option<Instant>>,
    /// Requests answered 304.
    not_modified: Mutex<u64>,
}

impl FeedServer {
    /// Serves the keys of `body` (a `KGT3` snapshot at `version`), in pages
    /// of [`PAGE_KEYS`], to callers presenting `token`.
    pub fn start(body: Vec<u8>, version: u64, token: &str) -> io::Result<FeedServer> {
        FeedServer::start_paged(&body, version, token, PAGE_KEYS)
    }

    /// Like [`FeedServer::start`], with pages of at most `page_keys` keys.
    pub fn start_paged(
        body: &[u8],
        version: u64,
        token: &str,
        page_keys: usize,
    ) -> io::Result<FeedServer> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        FeedServer::start_at(loopback, body, version, token, page_keys)
    }

    /// Like [`FeedServer::start_paged`], listening on `addr`.
    pub fn start_at(
        addr: SocketAddr,
        body: &[u8],
        version: u64,
        token: &str,
        page_keys: usize,
    ) -> io::Result<FeedServer> {
        let table = Table::decode(body)?;
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            table,
            version,
            page_keys: page_keys.max(1),
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

    /// When the last page of a snapshot finished going out, if one did.
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

/// A key hash from 64 hex digits.
fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
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
    // `after` pages a snapshot: with since=0 only.
    let after = match param(&request.target, "after").map(parse_hash) {
        None => None,
        Some(Some(hash)) if since == 0 => Some(hash),
        Some(_) => return error(out, "400 Bad Request", "invalid_request", "after"),
    };
    // A client of another key set gets a snapshot whatever its `since`.
    let same_set = param(&request.target, "key_set")
        .is_none_or(|k| KeySet::from_hex(k) == Some(shared.table.key_set));
    let version = shared.version.to_string();
    let etag = format!("\"{version}\"");
    let key_set = shared.table.key_set.to_hex();
    let tags = [
        ("etag", etag.as_str()),
        ("x-keygate-version", version.as_str()),
        ("x-keygate-key-set", key_set.as_str()),
    ];
    if same_set && since != 0 && since == shared.version {
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
    let (entries, more) = shared.table.page(after.as_ref(), shared.page_keys);
    let body = encode_snapshot_page(shared.table.key_set, shared.version, &entries, more);
    let mut headers = tags.to_vec();
    headers.push(("content-type", keygate::feed::CONTENT_TYPE));
    if !more {
        // Recorded as the last page goes out (before the client can have it).
        *shared
            .snapshot_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
    write_head(out, "200 OK", &headers, body.len())?;
    out.write_all(&body)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{http, keys};
    use keygate::feed::check_snapshot_page;

    #[test]
    fn follows_the_protocol() {
        let server = FeedServer::start(keys::snapshot(5, 3, &[]), 5, "t").unwrap();
        let auth = [("authorization", "Bearer t")];
        let r = http::once(server.addr, "GET", "/v1/key-table?since=0", &auth, None).unwrap();
        assert_eq!(r.status, 200);
        let page = check_snapshot_page(&r.body, None).unwrap();
        assert_eq!((page.version, page.more, page.keys), (5, false, 3));
        assert!(r.headers.contains(&("etag".into(), "\"5\"".into())));
        assert!(server.snapshot_sent().is_some());
        let r = http::once(
            server.addr,
            "GET",
            "/v1/key-table?since=5&wait=0",
            &auth,
            None,
        )
        .unwrap();
        assert_eq!(r.status, 304);
        assert!(r
            .headers
            .contains(&("x-keygate-key-set".into(), page.key_set.to_hex())));
        let other = format!("/v1/key-table?since=5&wait=0&key_set={}", "ee".repeat(16));
        let r = http::once(server.addr, "GET", &other, &auth, None).unwrap();
        assert_eq!(r.status, 200, "another key set gets a snapshot");
        let r = http::once(server.addr, "GET", "/v1/key-table?since=9", &auth, None).unwrap();
        assert_eq!(r.status, 200);
        let r = http::once(server.addr, "GET", "/v1/key-table", &[], None).unwrap();
        assert_eq!(r.status, 401);
        for query in ["wait=x", "after=zz", "since=5&after=00"] {
            let path = format!("/v1/key-table?{query}");
            let r = http::once(server.addr, "GET", &path, &auth, None).unwrap();
            assert_eq!(r.status, 400, "{query}");
        }
        let hex = "00".repeat(32);
        let path = format!("/v1/key-table?since=5&after={hex}");
        let r = http::once(server.addr, "GET", &path, &auth, None).unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(server.not_modified(), 1);
    }

    #[test]
    fn pages_are_chained_in_hash_order() {
        let real = keys::real_keys(1).unwrap();
        let body = keys::snapshot(7, 5, &real);
        let server = FeedServer::start_paged(&body, 7, "t", 2).unwrap();
        let auth = [("authorization", "Bearer t")];
        let (mut after, mut kinds, mut total) = (None::<[u8; 32]>, Vec::new(), 0);
        loop {
            let path = match &after {
                None => "/v1/key-table".to_string(),
                Some(h) => format!(
                    "/v1/key-table?since=0&after={}",
                    h.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ),
            };
            let r = http::once(server.addr, "GET", &path, &auth, None).unwrap();
            assert_eq!(r.status, 200);
            let page = check_snapshot_page(&r.body, after.as_ref()).unwrap();
            assert_eq!(page.version, 7);
            kinds.push(r.body[4]);
            total += page.keys;
            if !page.more {
                break;
            }
            assert!(server.snapshot_sent().is_none(), "not before the last page");
            after = page.last_hash;
        }
        assert_eq!(kinds, [3, 3, 1]);
        assert_eq!(total, 5);
        assert!(server.snapshot_sent().is_some());
    }
}
