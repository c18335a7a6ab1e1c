//! Through a proxy that holds every exchange whole (`holding_proxy.rs`: the whole request
//! before forwarding it, the whole response before sending it, as antivirus and DLP proxies
//! do), gRPC-web behaves per call type as follows, each asserted on events, not times:
//!
//! - unary: works (one exchange);
//! - server streaming: works, but arrives all at once: when the client gets message 0, the
//!   backend has already finished the whole stream (through nginx, the control, message 0
//!   arrives while the backend still waits on a gate that only that arrival releases);
//! - bidi: nothing reaches the server side until the client half-closes (the proxy holds the
//!   open request body), so a ping-pong client waits forever; once the client half-closes,
//!   the call completes, every response at once.
//!
//! docs/OPERATIONS.md ("Proxies that buffer whole exchanges") draws the consequences.

use std::time::Duration;

use grpc_bridge_tests::cases::{connect, fmt_status, unique};
use grpc_bridge_tests::envoy::Envoy;
use grpc_bridge_tests::holding_proxy::HoldingProxy;
use grpc_bridge_tests::pb::*;
use grpc_bridge_tests::topology::{ServerSide, Topology};
use grpc_bridge_tests::util::{rt, wait_until};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct Path {
    topo: Topology,
    proxy: Option<HoldingProxy>,
    _agent: Envoy,
    client: std::net::SocketAddr,
}

/// agent Envoy -> (holding proxy | nginx) -> server Envoy (wasm) -> backend.
fn path(holding: bool) -> Path {
    let topo = Topology::builder()
        .server(ServerSide::Wasm)
        .agent(false)
        .hop(!holding)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let (proxy, next) = if holding {
        let p = HoldingProxy::start(topo.server_addr).unwrap();
        let a = p.addr;
        (Some(p), a)
    } else {
        (None, topo.client_addr)
    };
    let agent = Envoy::start_local(
        "agent",
        "agent.yaml",
        &[
            ("UPSTREAM_HOST", next.ip().to_string()),
            ("UPSTREAM_PORT", next.port().to_string()),
        ],
    )
    .unwrap();
    let client = agent.listener_addr("bridge_agent").unwrap();
    Path {
        topo,
        proxy,
        _agent: agent,
        client,
    }
}

#[test]
fn unary_passes_a_holding_proxy() {
    let p = path(true);
    let r = rt().block_on(async {
        let mut c = connect(p.client).await.unwrap();
        c.unary(UnaryRequest {
            payload: b"held".to_vec(),
            ..Default::default()
        })
        .await
    });
    let r = r.unwrap_or_else(|s| panic!("{}\n{}", fmt_status(&s), p.topo.logs(30)));
    assert_eq!(r.into_inner().payload, b"held");
    assert_eq!(p.proxy.as_ref().unwrap().counts(), (1, 1, 1));
}

/// A 3-message server stream whose backend sends message 0, then waits on a gate. Returns
/// whether the backend had finished the stream when message 0 reached the client. `holding`:
/// the gate is released up front (else the call could never complete); nginx: only once
/// message 0 arrived.
fn server_stream_message_0_after_backend_finished(holding: bool) -> bool {
    let p = path(holding);
    let token = unique("held-stream");
    let gate = unique("held-gate");
    if holding {
        // A permit for the gate: the backend passes it as soon as it gets there.
        p.topo.backend.state.release_gate(&gate);
    }
    rt().block_on(async {
        let mut c = connect(p.client).await.unwrap();
        let mut s = c
            .server_stream(StreamRequest {
                count: 3,
                payload_size: 100,
                gate_token: gate.clone(),
                token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{}", fmt_status(&e)))
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(20), s.message())
            .await
            .expect("message 0 within 20 s")
            .unwrap_or_else(|e| panic!("{}", fmt_status(&e)))
            .expect("message 0");
        assert_eq!(first.index, 0);
        let finished = p.topo.backend.call(&token).is_some_and(|r| r.finished);
        if !holding {
            p.topo.backend.state.release_gate(&gate);
        }
        for i in 1..3 {
            let m = s.message().await.unwrap().expect("message");
            assert_eq!(m.index, i);
        }
        assert!(s.message().await.unwrap().is_none(), "clean end");
        finished
    })
}

#[test]
fn server_streaming_through_a_holding_proxy_arrives_all_at_once() {
    assert!(
        server_stream_message_0_after_backend_finished(true),
        "through the holding proxy, message 0 arrived before the backend finished"
    );
    // The control: through nginx, message 0 arrives while the backend waits on the gate.
    assert!(
        !server_stream_message_0_after_backend_finished(false),
        "through nginx, message 0 arrived only after the backend finished"
    );
}

#[test]
fn bidi_through_a_holding_proxy_waits_for_the_half_close() {
    let p = path(true);
    let proxy = p.proxy.as_ref().unwrap();
    rt().block_on(async {
        let mut c = connect(p.client).await.unwrap();
        let (tx, rx) = mpsc::channel::<BidiRequest>(4);
        // Ping `seq`: 10 bytes of `seq + 1`, asking for a 10-byte pong.
        let ping = |seq: i32| BidiRequest {
            seq,
            payload: vec![seq as u8 + 1; 10],
            response_size: 10,
        };
        tx.send(ping(0)).await.unwrap();
        let call = tokio::spawn(async move { c.bidi(ReceiverStream::new(rx)).await });
        // The request head is at the proxy; its body stays open, so nothing goes further.
        let at_proxy = wait_until(Duration::from_secs(10), || {
            (proxy.counts().0 == 1).then_some(())
        });
        assert!(at_proxy.is_some(), "the request never reached the proxy");
        assert_eq!(
            proxy.counts(),
            (1, 0, 0),
            "the holding proxy forwarded an open request body"
        );
        tx.send(ping(1)).await.unwrap();
        assert_eq!(proxy.counts().1, 0, "still held after a second message");
        // Half-close: the body is complete, the proxy forwards it, every response comes back.
        drop(tx);
        let mut s = call
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{}", fmt_status(&e)))
            .into_inner();
        for i in 0..2 {
            let m = s.message().await.unwrap().expect("response");
            assert_eq!(m.seq, i);
        }
        assert!(s.message().await.unwrap().is_none(), "clean end");
    });
    assert_eq!(proxy.counts(), (1, 1, 1));
}
