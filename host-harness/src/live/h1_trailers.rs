//! HTTP/1.1 response trailers the way Envoy writes them.
//!
//! Envoy's HTTP/1.1 codec (`encodeTrailersBase`) writes trailers after the last chunk
//! whenever `enable_trailers` is on, whatever the request's `TE` and without a `Trailer`
//! header. hyper's server writes only trailers that the response pre-declared in a `Trailer`
//! header, and only if the request said `TE: trailers`. So on an HTTP/1.1 listener with
//! trailers enabled the proxy does it itself: [`SlotTrailers`] ends the response body at its
//! trailers and leaves them in the connection's [`Slot`]; [`TrailerWriter`] then writes them
//! into the terminating chunk (`0\r\n` ... `\r\n`) hyper writes next. hyper writes one
//! response at a time on a connection, so one slot per connection suffices.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Trailers of the response being finished on one connection.
pub(crate) type Slot = Arc<Mutex<Option<http::HeaderMap>>>;

/// A response body whose trailers go to the connection's slot instead of to hyper.
pub(crate) struct SlotTrailers<B> {
    inner: B,
    slot: Slot,
    done: bool,
}

impl<B> SlotTrailers<B> {
    pub(crate) fn new(inner: B, slot: Slot) -> Self {
        SlotTrailers {
            inner,
            slot,
            done: false,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for SlotTrailers<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                if let Ok(t) = frame.into_trailers() {
                    if !t.is_empty() {
                        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                    }
                }
                self.done = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Never an exact size: a Content-Length response could not carry trailers.
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower());
        hint
    }
}

/// Writes the slot's trailers into the terminating chunk of the response hyper is ending.
pub(crate) struct TrailerWriter<T> {
    inner: T,
    slot: Slot,
    /// Bytes accepted from hyper and not yet written.
    pending: Vec<u8>,
    at: usize,
}

impl<T> TrailerWriter<T> {
    pub(crate) fn new(inner: T, slot: Slot) -> Self {
        TrailerWriter {
            inner,
            slot,
            pending: Vec::new(),
            at: 0,
        }
    }
}

const LAST_CHUNK_END: &[u8] = b"0\r\n\r\n";

fn encode_trailers(trailers: &http::HeaderMap, out: &mut Vec<u8>) {
    for (k, v) in trailers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

impl<T: AsyncWrite + Unpin> TrailerWriter<T> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.at < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.at..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
        }
        self.pending.clear();
        self.at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrailerWriter<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_drain(cx))?;
        // Once the body handed over its trailers, hyper's next write ends that response
        // with the last chunk: put the trailer fields before its final CRLF.
        let trailers = if buf.ends_with(LAST_CHUNK_END) {
            self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
        } else {
            None
        };
        let Some(trailers) = trailers else {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        };
        let mut out = Vec::with_capacity(buf.len() + 256);
        out.extend_from_slice(&buf[..buf.len() - 2]);
        encode_trailers(&trailers, &mut out);
        out.extend_from_slice(b"\r\n");
        self.pending = out;
        self.at = 0;
        // Accepted whole; what the socket does not take now goes out on the next call/flush.
        match self.poll_drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then hands over one flat buffer per write, ending with the last
    // chunk when a response ends.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrailerWriter<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Frames(std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>);

    impl futures_core::Stream for Frames {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.next())
        }
    }

    /// A hyper HTTP/1.1 server behind the adapter; returns the raw response bytes.
    async fn serve(frames: Vec<Frame<Bytes>>) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let slot = Slot::default();
        let io = TokioIo::new(TrailerWriter::new(server, slot.clone()));
        let frames = std::sync::Mutex::new(Some(frames));
        let svc = hyper::service::service_fn(move |_req| {
            let frames: Vec<_> = frames
                .lock()
                .unwrap()
                .take()
                .unwrap_or_default()
                .into_iter()
                .map(Ok)
                .collect();
            let body = SlotTrailers::new(StreamBody::new(Frames(frames.into_iter())), slot.clone());
            async move { Ok::<_, std::convert::Infallible>(http::Response::new(body.boxed_unsync())) }
        });
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));
        client
            .write_all(
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn trailers_go_into_the_last_chunk_without_te_or_a_trailer_header() {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", "9".parse().unwrap());
        t.insert("grpc-message", "no%20way".parse().unwrap());
        let out = serve(vec![
            Frame::data(Bytes::from_static(b"0\r\n\r\n")),
            Frame::trailers(t),
        ])
        .await;
        assert!(!out.to_ascii_lowercase().contains("\r\ntrailer:"), "{out}");
        // The data chunk that happens to end like a last chunk is left alone.
        assert!(
            out.ends_with(
                "5\r\n0\r\n\r\n\r\n0\r\ngrpc-status: 9\r\ngrpc-message: no%20way\r\n\r\n"
            ),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn trailers_only_body_and_no_trailers_at_all() {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let out = serve(vec![Frame::trailers(t)]).await;
        assert!(
            out.ends_with("\r\n\r\n0\r\ngrpc-status: 0\r\n\r\n"),
            "{out:?}"
        );
        let out = serve(vec![Frame::data(Bytes::from_static(b"abc"))]).await;
        assert!(out.ends_with("3\r\nabc\r\n0\r\n\r\n"), "{out:?}");
    }
}
