//! Proxy mode for network-filter roles: `envoy.filters.network.wasm` in front of
//! `tcp_proxy`, on live sockets.
//!
//! As in Envoy:
//! - the filter's context is created when the client connects (`proxy_on_new_connection`)
//!   and `tcp_proxy` connects upstream at once; the client's bytes are read only once the
//!   upstream connection is up (tcp_proxy read-disables the downstream until then), but the
//!   upstream may speak first (its bytes go through `proxy_on_upstream_data` right away);
//! - half-close is carried both ways: a client FIN is `end_of_stream` on downstream data and
//!   becomes a FIN upstream, an upstream FIN is `end_of_stream` on upstream data (the filter
//!   then also gets `proxy_on_upstream_connection_close`, as Envoy reports it there);
//! - the downstream connection closes when both of its halves are done (remote close if the
//!   client's FIN came last, local otherwise), when the filter closes it, when the client
//!   resets it (remote), or when the upstream fails or resets (tcp_proxy closes the client
//!   side: local); then `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`;
//! - backpressure: a side is not read while the bytes released toward the other side and not
//!   yet written, plus what a paused filter holds in the connection's buffer, exceed the
//!   buffer limit (Envoy's connection read-buffer and write-buffer watermarks); each read
//!   waits until the filter has processed the previous one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::config::ProxyConfig;
use super::vm_thread::{Command, ConnSink, Flow, VmHandle};
use crate::host::abi::CloseType;
use crate::model::{ConnectionId, NetFrame};

/// tcp_proxy's cluster connect timeout in the sample configs.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Downstream,
    Upstream,
}

/// The downstream connection's two halves; it closes when both are done.
#[derive(Default)]
struct Halves {
    read_done: bool,
    write_done: bool,
    reported: bool,
}

/// Marks one half done; returns true if this completed the connection (report it once).
fn finish_half(halves: &Mutex<Halves>, read: bool) -> bool {
    let mut h = halves.lock().unwrap_or_else(|e| e.into_inner());
    if read {
        h.read_done = true;
    } else {
        h.write_done = true;
    }
    if h.read_done && h.write_done && !h.reported {
        h.reported = true;
        return true;
    }
    false
}

fn report_close(halves: &Mutex<Halves>) -> bool {
    let mut h = halves.lock().unwrap_or_else(|e| e.into_inner());
    !std::mem::replace(&mut h.reported, true)
}

/// A read or write on one side's socket failed: the client reset its connection (a remote
/// close, reported once), or the upstream did (tcp_proxy then closes the client side).
fn socket_failed(side: Side, halves: &Mutex<Halves>, vm: &VmHandle, id: ConnectionId) {
    match side {
        Side::Downstream => {
            if report_close(halves) {
                vm.send(Command::ConnDownstreamClosed(id, CloseType::Remote));
            }
        }
        Side::Upstream => vm.send(Command::ConnUpstreamReset(id)),
    }
}

/// One client connection, from accept to close.
pub(crate) async fn serve(client: TcpStream, vm: VmHandle, cfg: Arc<ProxyConfig>) {
    let (sink, (up_rx, down_rx)) = ConnSink::new(cfg.buffer_limit_bytes);
    let (up_flow, down_flow) = sink.flows();
    let (opened_tx, opened_rx) = oneshot::channel();
    vm.send(Command::ConnOpen {
        sink,
        opened: opened_tx,
    });
    let Ok((id, closed)) = opened_rx.await else {
        return;
    };
    let halves = Arc::new(Mutex::new(Halves::default()));
    let (client_read, client_write) = client.into_split();
    let (stop_client_tx, stop_client_rx) = watch::channel(false);
    // A connection the filter (or a failed VM) closed before tcp_proxy started gets no
    // upstream; one whose upstream cannot be reached is reset (tcp_proxy closes the client).
    let upstream = if closed {
        None
    } else {
        let connected = connect_upstream(&cfg).await;
        if connected.is_none() {
            vm.send(Command::ConnUpstreamReset(id));
        }
        connected
    };
    if let Some(upstream) = upstream {
        let (upstream_read, upstream_write) = upstream.into_split();
        let (stop_upstream_tx, stop_upstream_rx) = watch::channel(false);
        tokio::spawn(read_side(
            client_read,
            vm.clone(),
            id,
            up_flow.clone(),
            stop_client_rx,
            Side::Downstream,
            halves.clone(),
        ));
        tokio::spawn(read_side(
            upstream_read,
            vm.clone(),
            id,
            down_flow.clone(),
            stop_upstream_rx,
            Side::Upstream,
            halves.clone(),
        ));
        tokio::spawn(write_side(
            upstream_write,
            up_rx,
            up_flow,
            stop_upstream_tx,
            Side::Upstream,
            vm.clone(),
            id,
            halves.clone(),
        ));
    }
    write_side(
        client_write,
        down_rx,
        down_flow,
        stop_client_tx,
        Side::Downstream,
        vm,
        id,
        halves,
    )
    .await;
}

/// tcp_proxy's upstream connection, or `None` (logged) when it fails or times out.
async fn connect_upstream(cfg: &ProxyConfig) -> Option<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(cfg.upstream)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some(s)
        }
        Ok(Err(e)) => {
            eprintln!("host-harness: upstream {}: {e}", cfg.upstream);
            None
        }
        Err(_) => {
            eprintln!("host-harness: upstream {}: connect timed out", cfg.upstream);
            None
        }
    }
}

/// Reads one socket into the filter; `room` is the backlog toward the other side.
async fn read_side(
    mut rd: OwnedReadHalf,
    vm: VmHandle,
    id: ConnectionId,
    room: Arc<Flow>,
    mut stop: watch::Receiver<bool>,
    side: Side,
    halves: Arc<Mutex<Halves>>,
) {
    let data = |b: bytes::Bytes, end: bool| match side {
        Side::Downstream => Command::ConnDownstreamData(id, b, end),
        Side::Upstream => Command::ConnUpstreamData(id, b, end),
    };
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = room.wait_for_room() => {}
        }
        if *stop.borrow() {
            return;
        }
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            _ = stop.changed() => return,
            r = rd.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => {
                // Mark the read half finished before forwarding the EOF: the forwarded EOF can
                // bring the upstream's EOF back to the writer (on another thread) before this
                // task runs again, and the writer must then see this half as done (Envoy closes
                // such a connection as LocalClose, after writing its EOF).
                let both = side == Side::Downstream && finish_half(&halves, true);
                vm.send(data(bytes::Bytes::new(), true).acked(&room));
                if both {
                    vm.send(Command::ConnDownstreamClosed(id, CloseType::Remote));
                }
                return;
            }
            Ok(_) => {
                vm.send(data(buf.split().freeze(), false).acked(&room));
            }
            Err(_) => {
                socket_failed(side, &halves, &vm, id);
                return;
            }
        }
    }
}

/// Writes what the filter released toward one socket. Ends (and stops that socket's reader,
/// which drops the socket) on a close frame or when the connection is gone from the VM.
#[allow(clippy::too_many_arguments)]
async fn write_side(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<NetFrame>,
    flow: Arc<Flow>,
    stop_reader: watch::Sender<bool>,
    side: Side,
    vm: VmHandle,
    id: ConnectionId,
    halves: Arc<Mutex<Halves>>,
) {
    let mut failed = false;
    while let Some(frame) = rx.recv().await {
        match frame {
            NetFrame::Data { bytes, end_stream } => {
                let n = bytes.len();
                if !failed && !bytes.is_empty() && wr.write_all(&bytes).await.is_err() {
                    failed = true;
                    socket_failed(side, &halves, &vm, id);
                }
                flow.taken(n);
                if end_stream && !failed {
                    let _ = wr.shutdown().await;
                    if side == Side::Downstream && finish_half(&halves, false) {
                        vm.send(Command::ConnDownstreamClosed(id, CloseType::Local));
                    }
                }
            }
            NetFrame::Close => {
                let _ = wr.shutdown().await;
                break;
            }
        }
    }
    let _ = stop_reader.send(true);
}
