//! Demo upstream for keygate.
//!
//! Answers every HTTP request with a JSON echo of what reached it (method,
//! path, raw query, parsed query parameters and headers), so a user can see
//! exactly what the filter added or stripped. A WebSocket upgrade under
//! `/stream/` echoes every text and binary message back; it speaks the
//! first subprotocol offered, and its 101 answer shows every offered one
//! that reached it in `x-echo-sec-websocket-protocol`. `/v1/chat/completions`
//! answers a fixed chat completion and reports its cost the way keygate
//! reads it: `x-keygate-cost: 1500` (micro-units), or the raw value of the
//! `cost` query parameter when there is one (to try odd values). Listens on
//! `--listen ADDR` (default `127.0.0.1:8081`).

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::process::ExitCode;

const DEFAULT_LISTEN: &str = "127.0.0.1:8081";

#[tokio::main]
async fn main() -> ExitCode {
    let listen = match parse_listen(std::env::args().skip(1)) {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("keygate-demo-upstream: {message}");
            eprintln!("usage: keygate-demo-upstream [--listen 127.0.0.1:8081]");
            return ExitCode::from(2);
        }
    };
    match serve(listen).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate-demo-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads `--listen ADDR` (or `--listen=ADDR`) from the command line.
fn parse_listen(mut args: impl Iterator<Item = String>) -> Result<SocketAddr, String> {
    let mut listen = DEFAULT_LISTEN.to_string();
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix("--listen=") {
            listen = value.to_string();
        } else if arg == "--listen" {
            listen = args.next().ok_or("--listen needs an address")?;
        } else {
            return Err(format!("unknown argument {arg:?}"));
        }
    }
    listen
        .parse()
        .map_err(|e| format!("bad --listen {listen:?}: {e}"))
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let app = Router::new().fallback(handle);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("keygate-demo-upstream listening on http://{listen}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

/// Upgrades WebSockets under `/stream/`, echoes everything else as JSON.
async fn handle(request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if is_stream_path(parts.uri.path()) {
        if let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            return upgrade_echo(upgrade, &parts.headers);
        }
    }
    // The body is read so keep-alive connections stay usable; it is not echoed.
    let _: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    if parts.uri.path() == CHAT_PATH {
        return chat_completion(&parts.uri);
    }
    Json(echo(&parts.method, &parts.uri, &parts.headers)).into_response()
}

/// The path of the demo route that reports a cost.
const CHAT_PATH: &str = "/v1/chat/completions";
/// The cost it reports unless asked otherwise, in micro-units.
const CHAT_COST_MICROS: &str = "1500";

/// A fixed chat completion with its cost in `x-keygate-cost` (the `cost`
/// query parameter's raw value instead, when present).
fn chat_completion(uri: &Uri) -> Response {
    let cost = query_params(uri.query().unwrap_or(""))
        .remove("cost")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| CHAT_COST_MICROS.to_string());
    let mut response = Json(json!({
        "object": "chat.completion",
        "model": "demo",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the demo upstream."}, "finish_reason": "stop"}],
    }))
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&cost) {
        response.headers_mut().insert("x-keygate-cost", value);
    }
    response
}

/// Accepts the upgrade with the first offered subprotocol, showing the
/// offered ones in the answer.
fn upgrade_echo(upgrade: WebSocketUpgrade, headers: &HeaderMap) -> Response {
    let offered = header_map(headers)
        .remove("sec-websocket-protocol")
        .and_then(|v| v.as_str().map(str::to_string));
    let first = offered
        .as_deref()
        .and_then(|o| o.split(',').map(str::trim).find(|p| !p.is_empty()))
        .map(str::to_string);
    let mut response = upgrade.protocols(first).on_upgrade(echo_socket);
    if let Some(value) = offered.and_then(|o| HeaderValue::from_str(&o).ok()) {
        response
            .headers_mut()
            .insert("x-echo-sec-websocket-protocol", value);
    }
    response
}

fn is_stream_path(path: &str) -> bool {
    path == "/stream" || path.starts_with("/stream/")
}

/// The JSON echo of one request.
fn echo(method: &Method, uri: &Uri, headers: &HeaderMap) -> Value {
    let query = uri.query().unwrap_or("");
    json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": query,
        "query_params": query_params(query),
        "headers": header_map(headers),
    })
}

fn query_params(query: &str) -> Map<String, Value> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

/// Header names (lowercase) to values; repeated headers are joined with ", ".
fn header_map(headers: &HeaderMap) -> Map<String, Value> {
    let mut map = Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        map.insert(name.as_str().to_string(), Value::String(joined));
    }
    map
}

/// Sends every text and binary message back until the client closes.
async fn echo_socket(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_defaults_and_parses() {
        let default = parse_listen(std::iter::empty()).unwrap();
        assert_eq!(default.to_string(), DEFAULT_LISTEN);
        let args = ["--listen", "127.0.0.1:9"].map(String::from);
        assert_eq!(parse_listen(args.into_iter()).unwrap().port(), 9);
        assert!(parse_listen(["--bogus".to_string()].into_iter()).is_err());
    }

    #[test]
    fn echo_has_query_raw_and_parsed() {
        let uri: Uri = "/a/b?x=1&y=%20z".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        let value = echo(&Method::GET, &uri, &headers);
        assert_eq!(value["path"], "/a/b");
        assert_eq!(value["query"], "x=1&y=%20z");
        assert_eq!(value["query_params"]["y"], " z");
        assert_eq!(value["headers"]["x-a"], "1, 2");
    }

    #[test]
    fn chat_completions_report_a_cost() {
        let fixed = chat_completion(&"/v1/chat/completions".parse().unwrap());
        assert_eq!(fixed.headers()["x-keygate-cost"], "1500");
        let asked = chat_completion(&"/v1/chat/completions?cost=-7".parse().unwrap());
        assert_eq!(asked.headers()["x-keygate-cost"], "-7");
    }

    #[test]
    fn stream_paths() {
        assert!(is_stream_path("/stream/chat"));
        assert!(!is_stream_path("/streams"));
    }
}
