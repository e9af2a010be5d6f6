//! WebSockets offering subprotocols (`Sec-WebSocket-Protocol`), as a
//! browser's `new WebSocket(url, [...])` does: the answer's chosen
//! subprotocol and what the demo upstream says it was offered.

use crate::ws::Socket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error;

/// An open socket and its 101 answer.
pub struct Offered {
    pub socket: Socket,
    /// The subprotocol the server chose.
    pub chosen: Option<String>,
    /// The subprotocols that reached the demo upstream
    /// (`x-echo-sec-websocket-protocol`).
    pub upstream_saw: Option<String>,
}

/// Opens a WebSocket at `url` offering `protocols` (one header, comma
/// separated); on a refused upgrade returns the HTTP status and body.
pub async fn connect_offering(url: &str, protocols: &[&str]) -> Result<Offered, (u16, String)> {
    let mut request = url
        .into_client_request()
        .unwrap_or_else(|e| panic!("bad WebSocket URL {url}: {e}"));
    let offer = HeaderValue::from_str(&protocols.join(", "))
        .unwrap_or_else(|e| panic!("bad subprotocols: {e}"));
    request
        .headers_mut()
        .insert("sec-websocket-protocol", offer);
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            Ok(Offered {
                chosen: header("sec-websocket-protocol"),
                upstream_saw: header("x-echo-sec-websocket-protocol"),
                socket,
            })
        }
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
