//! Upstream connections of the HTTP proxy mode, reused like Envoy's connection pools: h2c
//! multiplexes every request over one connection (a new one only when it closed); HTTP/1.1
//! keeps a small pool of idle keep-alive connections, one request at a time on each.
//!
//! A request that could not even be written on a pooled connection (it closed meanwhile) is
//! retried once on a fresh one; anything else is a failure the router reports.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::config::Protocol;

/// The body of a request sent upstream and of a response sent downstream.
pub(crate) type BoxBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;

/// Idle HTTP/1.1 connections kept per upstream.
const H1_IDLE_MAX: usize = 16;

/// Why an upstream request failed, as Envoy's reset reason words it, plus the error.
pub(crate) type UpstreamError = (&'static str, std::io::Error);

pub(crate) struct Upstream {
    addr: SocketAddr,
    protocol: Protocol,
    h2: tokio::sync::Mutex<Option<http2::SendRequest<BoxBody>>>,
    idle: Mutex<Vec<http1::SendRequest<BoxBody>>>,
    opened: AtomicUsize,
}

fn reset(e: hyper::Error) -> UpstreamError {
    ("remote reset", std::io::Error::other(e))
}

impl Upstream {
    pub(crate) fn new(addr: SocketAddr, protocol: Protocol) -> Arc<Upstream> {
        Arc::new(Upstream {
            addr,
            protocol,
            h2: tokio::sync::Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            opened: AtomicUsize::new(0),
        })
    }

    /// Connections opened so far.
    pub(crate) fn connections_opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    /// Idle HTTP/1.1 connections waiting in the pool.
    pub(crate) fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, UpstreamError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| ("connection failure", e))?;
        let _ = tcp.set_nodelay(true);
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(TokioIo::new(tcp))
    }

    pub(crate) async fn send(
        self: &Arc<Self>,
        req: Request<BoxBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match self.protocol {
            Protocol::H2c => self.send_h2(req).await,
            Protocol::Http1 => self.send_h1(req).await,
        }
    }

    /// The shared h2 connection (a new one if there is none, it closed, or `fresh`).
    /// Holding the lock while connecting makes concurrent first requests share it.
    async fn h2_sender(
        &self,
        fresh: bool,
    ) -> Result<(http2::SendRequest<BoxBody>, bool), UpstreamError> {
        let mut slot = self.h2.lock().await;
        if !fresh {
            if let Some(s) = slot.as_ref().filter(|s| !s.is_closed()) {
                return Ok((s.clone(), false));
            }
        }
        let io = self.connect().await?;
        let (send, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(reset)?;
        tokio::spawn(conn);
        *slot = Some(send.clone());
        Ok((send, true))
    }

    async fn send_h2(
        &self,
        mut req: Request<BoxBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut fresh = false;
        loop {
            let (mut sender, new) = self.h2_sender(fresh).await?;
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(r) if !new => {
                        req = r;
                        fresh = true;
                    }
                    _ => return Err(reset(e.into_error())),
                },
            }
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<BoxBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if s.is_ready() && !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// Puts the connection back once its exchange is over (response read, request sent);
    /// a connection that cannot be reused (closed, body abandoned) is dropped.
    fn release_when_ready(self: &Arc<Self>, mut sender: http1::SendRequest<BoxBody>) {
        let this = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = this.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < H1_IDLE_MAX {
                    idle.push(sender);
                }
            }
        });
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<BoxBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut pooled_allowed = true;
        loop {
            let (mut sender, pooled) = match pooled_allowed.then(|| self.take_idle()).flatten() {
                Some(s) => (s, true),
                None => {
                    let io = self.connect().await?;
                    let (send, conn) = http1::handshake(io).await.map_err(reset)?;
                    tokio::spawn(conn);
                    (send, false)
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.release_when_ready(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if pooled => {
                        req = r;
                        pooled_allowed = false;
                    }
                    _ => return Err(reset(e.into_error())),
                },
            }
        }
    }
}
