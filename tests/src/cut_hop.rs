//! A scripted hop between the agent side and the server side that loses a call's status, for the
//! fault tests (`tests/faults.rs`): "trailers stripped by the hop".
//!
//! - [`CutMode::StripGrpcWebTrailers`] (gRPC-web over HTTP/1.1): requests pass byte for byte;
//!   each response passes with its head and its gRPC-web message frames, but without the `0x80`
//!   trailer frame and without HTTP/1.1 chunked trailers, and then ends *cleanly* (`0\r\n\r\n`,
//!   the connection stays usable): a body that looks complete to every HTTP hop.
//! - [`CutMode::CutTunnelBeforeTrailers`] (WebSocket tunnel): a hop cannot remove an HTTP/2
//!   HEADERS frame from the tunnelled connection without breaking HPACK for everything after
//!   it, so the equivalent fault is a hop that passes the tunnel until the first trailers frame
//!   (HEADERS with END_STREAM from the server) and then closes both connections instead of
//!   forwarding it.
//!
//! Runs on its own thread and runtime (like the backend), on 127.0.0.1:0; dropped, it stops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::ServerThread;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    StripGrpcWebTrailers,
    CutTunnelBeforeTrailers,
}

pub struct CutHop {
    pub addr: SocketAddr,
    /// Trailer frames (gRPC-web) or trailers HEADERS frames (tunnel) removed so far.
    pub cut: Arc<AtomicU64>,
    _server: ServerThread,
}

impl CutHop {
    pub fn start(mode: CutMode, upstream: SocketAddr) -> Result<CutHop, String> {
        let cut = Arc::new(AtomicU64::new(0));
        let counter = cut.clone();
        let (addr, server) = ServerThread::tcp("cut-hop", move |down| {
            let counter = counter.clone();
            async move {
                let _ = relay(mode, down, upstream, counter).await;
            }
        })?;
        Ok(CutHop {
            addr,
            cut,
            _server: server,
        })
    }

    pub fn cut_count(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }
}

async fn relay(
    mode: CutMode,
    down: TcpStream,
    upstream: SocketAddr,
    cut: Arc<AtomicU64>,
) -> std::io::Result<()> {
    down.set_nodelay(true)?;
    let up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (mut down_r, mut down_w) = down.into_split();
    let (mut up_r, mut up_w) = up.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
        let _ = up_w.shutdown().await;
    };
    let responses = async {
        let mut inp = In {
            r: &mut up_r,
            buf: vec![],
        };
        let r = match mode {
            CutMode::StripGrpcWebTrailers => strip_grpc_web(&mut inp, &mut down_w, &cut).await,
            CutMode::CutTunnelBeforeTrailers => cut_tunnel(&mut inp, &mut down_w, &cut).await,
        };
        let _ = down_w.shutdown().await;
        r
    };
    // The first direction to finish ends the connection (both halves are dropped).
    tokio::select! {
        _ = requests => Ok(()),
        r = responses => r,
    }
}

/// Buffered reader over the upstream half.
struct In<'a, R> {
    r: &'a mut R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> In<'_, R> {
    /// Read more; false at EOF.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut b = [0u8; 16384];
        let n = self.r.read(&mut b).await?;
        self.buf.extend_from_slice(&b[..n]);
        Ok(n > 0)
    }

    async fn line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = self.buf[..p].to_vec();
                self.buf.drain(..p + 2);
                return Ok(Some(l));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// An HTTP head: its lines up to the empty line, each with its CRLF, the empty line's
    /// included; None at EOF before its end.
    async fn head(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut head = Vec::new();
        loop {
            let Some(l) = self.line().await? else {
                return Ok(None);
            };
            head.extend_from_slice(&l);
            head.extend_from_slice(b"\r\n");
            if l.is_empty() {
                return Ok(Some(head));
            }
        }
    }

    async fn exact(&mut self, n: usize) -> std::io::Result<Option<Vec<u8>>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Ok(None);
            }
        }
        Ok(Some(self.buf.drain(..n).collect()))
    }
}

async fn strip_grpc_web<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    inp: &mut In<'_, R>,
    w: &mut W,
    cut: &AtomicU64,
) -> std::io::Result<()> {
    loop {
        // Response head.
        let Some(head) = inp.head().await? else {
            return Ok(());
        };
        let mut chunked = false;
        let mut length = None;
        for l in String::from_utf8_lossy(&head).to_ascii_lowercase().lines() {
            if l.starts_with("transfer-encoding:") && l.contains("chunked") {
                chunked = true;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        w.write_all(&head).await?;
        if !chunked {
            if let Some(body) = inp.exact(length.unwrap_or(0)).await? {
                w.write_all(&body).await?;
            }
            w.flush().await?;
            continue;
        }
        // Chunked body: pass message frames, drop trailer frames, end cleanly.
        let mut frames: Vec<u8> = Vec::new();
        loop {
            let Some(size_line) = inp.line().await? else {
                return Ok(());
            };
            let size_str = String::from_utf8_lossy(&size_line);
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|e| std::io::Error::other(format!("chunk size: {e}")))?;
            if size == 0 {
                // Skip HTTP/1.1 trailers up to the empty line.
                while let Some(t) = inp.line().await? {
                    if t.is_empty() {
                        break;
                    }
                }
                w.write_all(b"0\r\n\r\n").await?;
                w.flush().await?;
                break;
            }
            let Some(data) = inp.exact(size + 2).await? else {
                return Ok(());
            };
            frames.extend_from_slice(&data[..size]);
            let mut out = Vec::new();
            while frames.len() >= 5 {
                let len = u32::from_be_bytes([frames[1], frames[2], frames[3], frames[4]]) as usize;
                if frames.len() < 5 + len {
                    break;
                }
                let f: Vec<u8> = frames.drain(..5 + len).collect();
                if f[0] & 0x80 == 0 {
                    out.extend_from_slice(&f);
                } else {
                    cut.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !out.is_empty() {
                w.write_all(format!("{:x}\r\n", out.len()).as_bytes())
                    .await?;
                w.write_all(&out).await?;
                w.write_all(b"\r\n").await?;
                w.flush().await?;
            }
        }
    }
}

async fn cut_tunnel<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    inp: &mut In<'_, R>,
    w: &mut W,
    cut: &AtomicU64,
) -> std::io::Result<()> {
    // The 101 head passes as it is.
    let Some(head) = inp.head().await? else {
        return Ok(());
    };
    w.write_all(&head).await?;
    w.flush().await?;
    // Server-to-client WebSocket frames are unmasked: their payloads, concatenated, are the
    // backend's HTTP/2 byte stream.
    let mut h2: Vec<u8> = Vec::new();
    loop {
        let Some(hdr) = inp.exact(2).await? else {
            return Ok(());
        };
        let opcode = hdr[0] & 0x0f;
        let mut len = u64::from(hdr[1] & 0x7f);
        let mut raw = hdr.clone();
        if len == 126 {
            let Some(b) = inp.exact(2).await? else {
                return Ok(());
            };
            len = u64::from(u16::from_be_bytes([b[0], b[1]]));
            raw.extend_from_slice(&b);
        } else if len == 127 {
            let Some(b) = inp.exact(8).await? else {
                return Ok(());
            };
            len = u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8]));
            raw.extend_from_slice(&b);
        }
        let Some(payload) = inp.exact(len as usize).await? else {
            return Ok(());
        };
        if opcode >= 8 {
            // Control frame: passes as it is.
            raw.extend_from_slice(&payload);
            w.write_all(&raw).await?;
            w.flush().await?;
            continue;
        }
        h2.extend_from_slice(&payload);
        let mut out = Vec::new();
        let mut cutting = false;
        while h2.len() >= 9 {
            let flen = (usize::from(h2[0]) << 16) | (usize::from(h2[1]) << 8) | usize::from(h2[2]);
            if h2.len() < 9 + flen {
                break;
            }
            let (ftype, flags) = (h2[3], h2[4]);
            let stream = u32::from_be_bytes([h2[5], h2[6], h2[7], h2[8]]) & 0x7fff_ffff;
            if ftype == 1 && flags & 0x1 != 0 && stream != 0 {
                cutting = true;
                break;
            }
            out.extend(h2.drain(..9 + flen));
        }
        if !out.is_empty() {
            w.write_all(&ws_binary(&out)).await?;
            w.flush().await?;
        }
        if cutting {
            cut.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    }
}

/// One unmasked binary WebSocket frame.
fn ws_binary(data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x82];
    if data.len() < 126 {
        f.push(data.len() as u8);
    } else if data.len() <= 0xffff {
        f.push(126);
        f.extend_from_slice(&(data.len() as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(data.len() as u64).to_be_bytes());
    }
    f.extend_from_slice(data);
    f
}
