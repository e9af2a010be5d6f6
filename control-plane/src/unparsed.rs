//! A connection wrapper that turns hyper's own answers to requests it cannot
//! parse (400, 414, 431: sent before any handler runs, with an empty body)
//! into the JSON errors of SPEC §4, in the configured dialect.
//!
//! hyper writes such an answer as a bare head with `content-length: 0`, then
//! closes the connection. Every handler answers with a JSON body, so a 400,
//! 414 or 431 head without one is hyper's. The wrapper does not offer
//! vectored writes, so hyper hands each answer over in one buffer starting
//! with its status line. (An answer hyper queues behind an earlier answer
//! still unwritten, on a pipelined connection, is left as it is.)

use crate::errors::ApiError;
use keygate::errors::ErrorFormat;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner` with hyper's empty refusals rewritten as JSON.
pub struct JsonRefusals<T> {
    inner: T,
    /// The dialect of the JSON.
    format: ErrorFormat,
    /// Bytes of a rewritten answer not yet written to `inner`.
    pending: Vec<u8>,
}

impl<T> JsonRefusals<T> {
    pub fn new(inner: T, format: ErrorFormat) -> JsonRefusals<T> {
        JsonRefusals {
            inner,
            format,
            pending: Vec::new(),
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonRefusals<T> {
    /// Writes out what is pending.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..written.min(self.pending.len()));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonRefusals<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let Some((consumed, answer)) = rewrite(buf, this.format) else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        this.pending = answer;
        // What this call cannot write goes out on the flush that follows.
        if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(consumed))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// If `written` starts with hyper's empty refusal: its length, and the JSON
/// answer to send instead.
fn rewrite(written: &[u8], format: ErrorFormat) -> Option<(usize, Vec<u8>)> {
    let end = written.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(written.get(..end)?).ok()?;
    let status_line = head.lines().next()?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let error = ApiError::unparsed(status)?;
    if !head
        .to_ascii_lowercase()
        .contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let body = error.body(format);
    let answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Some((end, answer.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 09:00:00 GMT\r\n\r\n";

    #[test]
    fn hypers_empty_refusals_become_json() {
        let (consumed, answer) = rewrite(HYPER_431, ErrorFormat::Keygate).unwrap();
        assert_eq!(consumed, HYPER_431.len());
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["message"], "Request headers are too large");
    }

    #[test]
    fn in_the_configured_dialect() {
        let (_, answer) = rewrite(HYPER_431, ErrorFormat::Flat).unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(
            answer.ends_with(
                r#"{"error":"Request Header Fields Too Large","message":"Request headers are too large"}"#
            ),
            "{answer}"
        );
    }

    #[test]
    fn other_answers_pass_untouched() {
        let answers: [&[u8]; 4] = [
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-len",
            b"{\"data\":[]}",
        ];
        for answer in answers {
            assert!(
                rewrite(answer, ErrorFormat::Openai).is_none(),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    /// A rewritten answer that does not fit one write goes out on flush.
    #[tokio::test]
    async fn a_slow_peer_gets_the_whole_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(16);
        let mut server = JsonRefusals::new(server, ErrorFormat::Keygate);
        let mut client = client;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        server.write_all(HYPER_431).await.unwrap();
        server.shutdown().await.unwrap();
        drop(server);
        let got = String::from_utf8(reader.await.unwrap()).unwrap();
        assert!(
            got.ends_with("\"message\":\"Request headers are too large\"}}"),
            "{got}"
        );
    }
}
