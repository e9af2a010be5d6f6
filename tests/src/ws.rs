//! WebSocket helpers: connect through Envoy, send, wait for the close.

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket at `url` with extra request headers; on a refused
/// upgrade returns the HTTP status and body.
pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Socket, (u16, String)> {
    let mut request = url
        .into_client_request()
        .unwrap_or_else(|e| panic!("bad WebSocket URL {url}: {e}"));
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).unwrap_or_else(|e| panic!("bad header: {e}"));
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("bad header name: {e}"));
        request.headers_mut().insert(name, value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("WebSocket connect to {url} failed: {e}"),
    }
}

/// Sends `message` and returns the next data message received.
pub async fn round_trip(socket: &mut Socket, message: Message) -> Message {
    socket
        .send(message)
        .await
        .unwrap_or_else(|e| panic!("WebSocket send failed: {e}"));
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap_or_else(|_| panic!("no WebSocket echo within 10 s"));
        match next {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return m,
            Some(Ok(_)) => continue,
            other => panic!("WebSocket ended instead of echoing: {other:?}"),
        }
    }
}

/// Waits until the socket is closed (close frame, reset or end), sending a
/// text message every `every` if `send` (else only reading: an idle client).
/// Returns the time that took, or `None` if it stayed open for `limit`.
pub async fn time_until_closed(
    socket: &mut Socket,
    send: bool,
    every: Duration,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if send && socket.send(Message::text("ping?")).await.is_err() {
            return Some(start.elapsed());
        }
        match tokio::time::timeout(every, socket.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                return Some(start.elapsed())
            }
            Ok(Some(Ok(_))) | Err(_) => {}
        }
    }
    None
}
