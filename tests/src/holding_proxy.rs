//! An HTTP/1.1 reverse proxy that holds every exchange whole, as antivirus and DLP proxies do:
//! it reads the entire request body before it forwards the request, and the entire response
//! body before it sends the response (with a `content-length`; HTTP/1.1 trailers are dropped,
//! as nginx drops them). nginx's `proxy_buffering on` is not this: it passes response data on
//! as it arrives and only decouples a slow client from the upstream.
//!
//! Runs on its own thread and runtime, on 127.0.0.1:0; dropped, it stops. Counts requests as
//! their head arrives, as they are forwarded (body complete), and as their answer goes back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::util::ServerThread;

pub struct HoldingProxy {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    _server: ServerThread,
}

impl HoldingProxy {
    pub fn start(upstream: SocketAddr) -> Result<HoldingProxy, String> {
        let counts = Arc::new(Counts::default());
        let counter = counts.clone();
        let (addr, server) = ServerThread::tcp("holding-proxy", move |down| {
            let counter = counter.clone();
            async move {
                let service = hyper::service::service_fn(move |req| {
                    let counter = counter.clone();
                    async move { Ok::<_, Infallible>(exchange(req, upstream, &counter).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(down), service)
                    .await;
            }
        })?;
        Ok(HoldingProxy {
            addr,
            counts,
            _server: server,
        })
    }

    /// (request heads received, requests forwarded, responses sent) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = &self.counts;
        (
            c.heads.load(Ordering::Relaxed),
            c.forwarded.load(Ordering::Relaxed),
            c.answered.load(Ordering::Relaxed),
        )
    }
}

#[derive(Default)]
struct Counts {
    heads: AtomicU64,
    forwarded: AtomicU64,
    answered: AtomicU64,
}

fn bad_gateway(why: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(why)));
    *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
    r
}

async fn exchange(
    req: Request<Incoming>,
    upstream: SocketAddr,
    counter: &Counts,
) -> Response<Full<Bytes>> {
    counter.heads.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    // The whole request first.
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_gateway(format!("request body: {e}")),
    };
    let mut up = Request::from_parts(parts, Full::new(body.clone()));
    up.headers_mut().remove(hyper::header::TRANSFER_ENCODING);
    up.headers_mut()
        .insert(hyper::header::CONTENT_LENGTH, body.len().into());
    let stream = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => return bad_gateway(format!("connect {upstream}: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return bad_gateway(format!("handshake: {e}")),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    counter.forwarded.fetch_add(1, Ordering::Relaxed);
    let resp = match sender.send_request(up).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(format!("upstream: {e}")),
    };
    // Then the whole response.
    let (mut parts, body) = resp.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_gateway(format!("response body: {e}")),
    };
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    parts.headers.remove(hyper::header::TRAILER);
    parts
        .headers
        .insert(hyper::header::CONTENT_LENGTH, body.len().into());
    counter.answered.fetch_add(1, Ordering::Relaxed);
    Response::from_parts(parts, Full::new(body))
}
