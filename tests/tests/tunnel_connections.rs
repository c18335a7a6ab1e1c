//! WebSocket tunnel: connection accounting, closing and faults, checked with Envoy's stats.
//!
//! Path (unless a test says otherwise): client (tonic, h2c) -> agent Envoy (tunnel_client) ->
//! nginx (WebSocket proxy) -> server Envoy (tunnel_server) -> tonic backend.
//!
//! - `hundred_streams_share_one_websocket`: 100 server streams open at the same time on one
//!   channel; every Envoy counter shows exactly one connection on every leg.
//! - `client_closes_channel`, `backend_killed_mid_stream`, `hop_killed_mid_stream`: what the
//!   client and the backend observe, and that no connection is left open on either Envoy
//!   (`downstream_cx_active` of both tunnel listeners, `upstream_cx_active` of `tunnel_upstream`
//!   and `grpc_backend` all back to 0).

use std::time::{Duration, Instant};

use grpc_bridge_tests::cases::{connect, fmt_status, Client};
use grpc_bridge_tests::pb::*;
use grpc_bridge_tests::py::{unix_now, PyHoldStream, PyStreamEnd};
use grpc_bridge_tests::topology::{Topology, TopologyBuilder, Transport, TunnelConnections};
use grpc_bridge_tests::util::rt;
use tokio::time::timeout;
use tonic::Code;

/// How long every leg may take to close after the event.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

fn tunnel() -> TopologyBuilder {
    Topology::builder().transport(Transport::WebSocketTunnel)
}

fn fail(topo: &Topology, msg: String) -> ! {
    let conns = topo
        .tunnel_connections()
        .map(|c| c.to_string())
        .unwrap_or_else(|e| e);
    panic!(
        "{msg}\npath: {}\nconnections: {conns}\n{}",
        topo.path,
        topo.logs(40)
    );
}

/// Opens a Hold stream (one message, then held open by the backend) and waits for its message.
async fn open_hold(c: &mut Client, token: &str) -> Result<tonic::Streaming<HoldResponse>, String> {
    let mut s = c
        .hold(HoldRequest {
            token: token.into(),
            hold_ms: 30_000,
        })
        .await
        .map_err(|e| fmt_status(&e))?
        .into_inner();
    match timeout(Duration::from_secs(5), s.message()).await {
        Err(_) => Err("no first message within 5 s".into()),
        Ok(Err(e)) => Err(fmt_status(&e)),
        Ok(Ok(None)) => Err("stream ended before its first message".into()),
        Ok(Ok(Some(_))) => Ok(s),
    }
}

/// Waits until the held stream ends; returns the status (Ok for a clean end) and how long it
/// took, or Err if it is still open after `within`.
async fn hold_outcome(
    s: &mut tonic::Streaming<HoldResponse>,
    within: Duration,
) -> Result<(Result<(), tonic::Status>, Duration), String> {
    let t0 = Instant::now();
    loop {
        match timeout(within.saturating_sub(t0.elapsed()), s.message()).await {
            Err(_) => return Err(format!("the stream was still open after {within:?}")),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Ok((Ok(()), t0.elapsed())),
            Ok(Err(e)) => return Ok((Err(e), t0.elapsed())),
        }
    }
}

/// A stream held open by the backend on each of two tunnels: tonic's and grpcio's.
struct HeldStreams {
    client: Client,
    tonic: tonic::Streaming<HoldResponse>,
    grpcio: PyHoldStream,
}

fn open_held_streams(rt: &tokio::runtime::Runtime, topo: &Topology, token: &str) -> HeldStreams {
    let mut client = rt
        .block_on(connect(topo.client_addr))
        .unwrap_or_else(|e| fail(topo, e));
    let tonic = rt
        .block_on(open_hold(&mut client, token))
        .unwrap_or_else(|e| fail(topo, e));
    let grpcio = PyHoldStream::open(topo.client_addr, Duration::from_secs(20))
        .unwrap_or_else(|e| fail(topo, e));
    HeldStreams {
        client,
        tonic,
        grpcio,
    }
}

/// How the held streams ended after a fault.
struct FaultOutcome {
    tonic: tonic::Status,
    tonic_after: Duration,
    grpcio: PyStreamEnd,
    grpcio_after_ms: i64,
}

impl std::fmt::Display for FaultOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tonic got {} after {} ms; grpcio got {} {:?} after {} ms",
            fmt_status(&self.tonic),
            self.tonic_after.as_millis(),
            self.grpcio.code,
            self.grpcio.details,
            self.grpcio_after_ms
        )
    }
}

impl HeldStreams {
    /// After `fault` (it happened at `t0`, `fault_at` in unix seconds): both streams must end,
    /// within [`FAULT_HANG_GUARD`], with UNAVAILABLE `message` (not grpcio's own deadline).
    fn expect_unavailable(
        &mut self,
        rt: &tokio::runtime::Runtime,
        topo: &Topology,
        fault: &str,
        (t0, fault_at): (Instant, f64),
        message: &str,
    ) -> FaultOutcome {
        let outcome = rt.block_on(hold_outcome(&mut self.tonic, FAULT_HANG_GUARD));
        let tonic_after = t0.elapsed();
        let (status, _) = outcome
            .unwrap_or_else(|e| fail(topo, format!("tonic: no status (hang) after {fault}: {e}")));
        let Err(tonic) = status else {
            fail(topo, format!("tonic: the stream ended OK after {fault}"))
        };
        if (tonic.code(), tonic.message()) != (Code::Unavailable, message) {
            fail(
                topo,
                format!(
                    "tonic: want UNAVAILABLE {message:?}, got {}",
                    fmt_status(&tonic)
                ),
            );
        }
        let grpcio = self
            .grpcio
            .wait_end(FAULT_HANG_GUARD)
            .unwrap_or_else(|e| fail(topo, format!("grpcio: no status (hang) after {fault}: {e}")));
        if (grpcio.code.as_str(), grpcio.details.as_str()) != ("UNAVAILABLE", message) {
            fail(
                topo,
                format!("grpcio: want UNAVAILABLE {message:?}, got {grpcio:?}"),
            );
        }
        let grpcio_after_ms = ((grpcio.at - fault_at) * 1000.0).round() as i64;
        FaultOutcome {
            tonic,
            tonic_after,
            grpcio,
            grpcio_after_ms,
        }
    }
}

#[test]
fn hundred_streams_share_one_websocket() {
    const N: usize = 100;
    let topo = tunnel().start().unwrap_or_else(|e| panic!("{e}"));
    let rt = rt();
    let before = topo.tunnel_connections().unwrap();
    let result: Result<(String, TunnelConnections), String> = rt.block_on(async {
        let c = connect(topo.client_addr).await?;
        let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<usize>(N);
        let mut tasks = vec![];
        let prefix = grpc_bridge_tests::cases::unique("hundred");
        for i in 0..N {
            let mut c = c.clone();
            let first_tx = first_tx.clone();
            let gate = format!("{prefix}-{i}");
            tasks.push(tokio::spawn(async move {
                let mut s = c
                    .server_stream(StreamRequest {
                        count: 3,
                        payload_size: 100 + i as i32,
                        gate_token: gate,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("stream {i}: {}", fmt_status(&e)))?
                    .into_inner();
                let mut n = 0;
                while let Some(m) = s
                    .message()
                    .await
                    .map_err(|e| format!("stream {i} after {n} messages: {}", fmt_status(&e)))?
                {
                    if m.index != n || m.payload.len() != 100 + i {
                        return Err(format!(
                            "stream {i}: message {n} has index {} and {} bytes",
                            m.index,
                            m.payload.len()
                        ));
                    }
                    if n == 0 {
                        let _ = first_tx.send(i).await;
                    }
                    n += 1;
                }
                if n != 3 {
                    return Err(format!("stream {i}: {n} messages, want 3"));
                }
                Ok(())
            }));
        }
        drop(first_tx);
        // Every stream has its first message while the backend holds all of them at their
        // gates: 100 streams are open at the same time.
        let t0 = Instant::now();
        let mut open = 0;
        while open < N {
            match timeout(Duration::from_secs(15), first_rx.recv()).await {
                Ok(Some(_)) => open += 1,
                Ok(None) => break,
                Err(_) => break,
            }
        }
        if open < N {
            for t in tasks {
                if let Ok(Err(e)) = t.await {
                    return Err(format!("only {open} of {N} streams open at once; {e}"));
                }
            }
            return Err(format!("only {open} of {N} streams open at once"));
        }
        let all_open_ms = t0.elapsed().as_millis();
        let during = topo.tunnel_connections()?;
        let mut gates = c.clone();
        for i in 0..N {
            let r = gates
                .release_gate(GateRequest {
                    token: format!("{prefix}-{i}"),
                })
                .await
                .map_err(|e| format!("release gate {i}: {}", fmt_status(&e)))?
                .into_inner();
            if !r.had_waiter {
                return Err(format!("stream {i} was not waiting at its gate"));
            }
        }
        for (i, t) in tasks.into_iter().enumerate() {
            timeout(Duration::from_secs(15), t)
                .await
                .map_err(|_| format!("stream {i} did not finish"))?
                .map_err(|e| format!("task {i}: {e}"))??;
        }
        Ok((
            format!(
                "{N} streams open at once after {all_open_ms} ms, all finished with 3 messages"
            ),
            during,
        ))
    });
    let (detail, during) = result.unwrap_or_else(|e| fail(&topo, e));
    let after = topo.tunnel_connections().unwrap();
    let agent = topo.agent.as_ref().unwrap();
    let tcp_total = agent.stat("tcp.tunnel_client.downstream_cx_total");
    let server_tcp_total = topo.server.stat("tcp.tunnel_server.downstream_cx_total");
    let one = (1, 1);
    // While the 100 streams were open: exactly one connection, open, on every leg. Afterwards
    // (the channel is gone): still only one was ever made.
    let ok = before.client_listener.1 == 0
        && during.client_listener == one
        && during.client_upstream == one
        && during.server_listener == one
        && during.server_upstream == one
        && after.client_listener.1 == 1
        && after.client_upstream.1 == 1
        && after.server_listener.1 == 1
        && after.server_upstream.1 == 1
        && tcp_total == Some(1)
        && server_tcp_total == Some(1);
    if !ok {
        fail(
            &topo,
            format!(
                "want one connection on every leg; before: {before}; with {N} streams open: {during}; \
                 after: {after}; tcp.tunnel_client.downstream_cx_total {tcp_total:?}, \
                 tcp.tunnel_server.downstream_cx_total {server_tcp_total:?}"
            ),
        );
    }
    println!(
        "{detail}\nwith {N} streams open: {during}\nafter: {after}\n\
         tcp.tunnel_client.downstream_cx_total = 1, tcp.tunnel_server.downstream_cx_total = 1\npath: {}",
        topo.path
    );
}

#[test]
fn client_closes_channel() {
    let topo = tunnel().start().unwrap_or_else(|e| panic!("{e}"));
    let rt = rt();
    let token = grpc_bridge_tests::cases::unique("client-close");
    let r: Result<(), String> = rt.block_on(async {
        let mut c = connect(topo.client_addr).await?;
        let s = open_hold(&mut c, &token).await?;
        // Close the whole channel (the only clone), with a call still open on it.
        drop(s);
        drop(c);
        Ok(())
    });
    let t0 = Instant::now();
    r.unwrap_or_else(|e| fail(&topo, e));
    // The call open at that moment ends on the backend (cancelled), and every leg closes.
    let seen = grpc_bridge_tests::util::wait_until(Duration::from_secs(5), || {
        topo.backend
            .call(&token)
            .filter(|c| c.cancelled || c.finished)
    });
    let cancelled_ms = t0.elapsed().as_millis();
    match seen {
        Some(c) if c.cancelled && !c.finished => {}
        other => fail(
            &topo,
            format!("backend did not see the open call cancelled: {other:?}"),
        ),
    }
    let (conns, took) = topo
        .wait_tunnel_closed(CLOSE_WITHIN)
        .unwrap_or_else(|e| fail(&topo, format!("after the client closed its channel: {e}")));
    let totals_ok = conns.client_listener.1 == 1 && conns.server_listener.1 == 1;
    if !totals_ok {
        fail(&topo, format!("more than one tunnel: {conns}"));
    }
    println!(
        "backend saw the call cancelled within {cancelled_ms} ms; every leg closed after {} ms: {conns}",
        took.as_millis()
    );
}

/// Only guards against a hang: how long a stream cut by a fault may take to end. Neither
/// client has a timer that could end it first (tonic: no deadline or keepalive; grpcio: its
/// deadline, checked by code, is 15 s after the start) and the backend holds the stream 30 s,
/// so it can only end because the fault reached the client through the tunnel.
const FAULT_HANG_GUARD: Duration = Duration::from_secs(10);

/// How the tunnel client ends a call still open when the tunnel closes (codec::h2_streams),
/// with the tunnel server's Close reason when the backend went away.
const BACKEND_CLOSED: &str =
    "grpc-bridge: the tunnel to the server closed before the call ended: backend closed";
const TUNNEL_CLOSED: &str = "grpc-bridge: the tunnel to the server closed before the call ended";

#[test]
fn backend_killed_mid_stream() {
    let rt = rt();
    let mut topo = tunnel()
        .backend_process(env!("CARGO_BIN_EXE_test-backend"))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let token = grpc_bridge_tests::cases::unique("backend-kill");
    // Two tunnels, each with a stream held open by the backend: tonic and grpcio.
    let mut held = open_held_streams(&rt, &topo, &token);
    let open = topo.tunnel_connections().unwrap();
    if open.server_upstream.0 != 2 {
        fail(&topo, format!("want 2 backend connections open: {open}"));
    }
    let fault = (Instant::now(), unix_now());
    topo.backend.kill();
    let end = held.expect_unavailable(&rt, &topo, "the backend was killed", fault, BACKEND_CLOSED);
    drop(held.client);
    let (conns, took) = topo
        .wait_tunnel_closed(CLOSE_WITHIN)
        .unwrap_or_else(|e| fail(&topo, format!("after the backend was killed: {e}")));
    println!(
        "backend SIGKILLed: {end}; every leg closed after {} ms: {conns}",
        took.as_millis()
    );
}

#[test]
fn hop_killed_mid_stream() {
    let topo = tunnel().start().unwrap_or_else(|e| panic!("{e}"));
    let rt = rt();
    let token = grpc_bridge_tests::cases::unique("hop-kill");
    let mut held = open_held_streams(&rt, &topo, &token);
    let nginx = topo.nginx.as_ref().unwrap();
    let fault = (Instant::now(), unix_now());
    nginx.process.signal(libc::SIGKILL);
    // The tunnel client's UNAVAILABLE for both (no Close reason: the hop just went away).
    let end = held.expect_unavailable(&rt, &topo, "the hop was killed", fault, TUNNEL_CLOSED);
    // The backend's side of the call ends too (the server Envoy closed its connection).
    let seen = grpc_bridge_tests::util::wait_until(Duration::from_secs(5), || {
        topo.backend
            .call(&token)
            .filter(|c| c.cancelled || c.finished)
    });
    if !matches!(&seen, Some(c) if c.cancelled) {
        fail(
            &topo,
            format!("backend did not see the call cancelled: {seen:?}"),
        );
    }
    drop(held.client);
    let (conns, took) = topo
        .wait_tunnel_closed(CLOSE_WITHIN)
        .unwrap_or_else(|e| fail(&topo, format!("after the hop was killed: {e}")));
    println!(
        "nginx SIGKILLed: {end}; backend saw the call cancelled; every leg closed after {} ms: \
         {conns}",
        took.as_millis()
    );
}
