//! Configured names and limits, each in real Envoy 1.40 with a non-default value, each asserting
//! the exact outcome (docs/CONFIG.md; the values go in through the templates' `EXTRA_CONFIG`):
//!
//! - `marker_header`: the agent marks with the configured name, the server role authenticates
//!   requests carrying that name (and strips it), and the default name is then just a header;
//! - `max_trailer_bytes`: a trailer block over the limit is INTERNAL, on the server role (it
//!   cannot encode the frame) and on the agent (it refuses the frame), while one within passes;
//! - `max_frame_bytes`: both tunnel sides at 1 KiB carry a 100 KiB call in 1 KiB frames; a
//!   tunnel server at 1 KiB refuses a client's 4 KiB frames (close 1009), and the call ends
//!   UNAVAILABLE with the server's reason;
//! - `max_held_bytes`: the server role releases held response bytes early past it (counted),
//!   and far less often with a 256 KiB hold for the same stream;
//! - `error_body_quote_bytes`: exactly that many bytes of a non-gRPC error page are quoted.
//!
//! `allowed_dns_sans` and `allowed_subjects` (with mTLS): `auth.rs`.

use std::sync::Arc;
use std::time::Duration;

use grpc_bridge_tests::cases::{connect, fmt_status, unique};
use grpc_bridge_tests::envoy::{Envoy, TEST_SECRET};
use grpc_bridge_tests::fake_upstream::FakeUpstream;
use grpc_bridge_tests::grpcweb::{
    msg_frame, parse_frames, parse_trailer_block, trailer_frame_status, WebCall,
};
use grpc_bridge_tests::pb::*;
use grpc_bridge_tests::topology::{ServerSide, Topology, TopologyBuilder, Transport};
use grpc_bridge_tests::util::{rt, wait_until};
use tonic::Code;

fn stat(e: &Envoy, name: &str) -> u64 {
    e.stat(&format!("wasmcustom.grpc_bridge.{name}"))
        .unwrap_or(0)
}

fn start(b: TopologyBuilder) -> Topology {
    b.start()
        .unwrap_or_else(|e| panic!("could not start the topology: {e}"))
}

/// A unary call through `addr` asking the backend for `trailers`; Ok(trailer metadata) or the
/// status.
fn unary_with_trailers(
    addr: std::net::SocketAddr,
    token: &str,
    trailers: Vec<Metadata>,
    payload: usize,
) -> Result<tonic::metadata::MetadataMap, tonic::Status> {
    rt().block_on(async {
        let mut c = connect(addr)
            .await
            .map_err(|e| tonic::Status::unknown(format!("connect: {e}")))?;
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            c.unary(UnaryRequest {
                payload: vec![7; payload],
                token: token.into(),
                echo_metadata: true,
                response_trailers: trailers,
                ..Default::default()
            }),
        )
        .await
        .map_err(|_| tonic::Status::unknown("no answer within 20 s (hang)"))?;
        r.map(|resp| resp.metadata().clone())
    })
}

/// gRPC-web POST straight to the server role with extra headers: (grpc-status, grpc-message).
fn raw_post(addr: std::net::SocketAddr, headers: &[(&str, &str)], token: &str) -> (String, String) {
    let body = msg_frame(&UnaryRequest {
        payload: b"raw".to_vec(),
        token: token.into(),
        echo_metadata: true,
        ..Default::default()
    });
    rt().block_on(async {
        let mut c = WebCall::start_with_headers(
            addr,
            "/bridge.test.BridgeTest/Unary",
            "application/grpc-web+proto",
            headers,
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("POST: {e}"));
        if let Some(s) = c.header("grpc-status") {
            return (s, c.header("grpc-message").unwrap_or_default());
        }
        let raw = c
            .read_all(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("body: {e}"));
        let frames = parse_frames(&raw).unwrap_or_else(|e| panic!("frames: {e}"));
        trailer_frame_status(&frames)
    })
}

#[test]
fn marker_header_is_the_configured_name() {
    let topo = start(
        Topology::builder()
            .server(ServerSide::Wasm)
            .both_var("EXTRA_CONFIG", r#","marker_header":"x-corp-bridge""#),
    );
    // Through agent and server: passes; the backend sees neither the marker nor the secret.
    let token = unique("marker-bridged");
    if let Err(s) = unary_with_trailers(topo.client_addr, &token, vec![], 3) {
        panic!("bridged call: {}\n{}", fmt_status(&s), topo.logs(30));
    }
    let seen: Vec<String> = topo
        .backend
        .call(&token)
        .expect("the backend saw the bridged call")
        .request_metadata
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for h in ["x-corp-bridge", "x-grpc-bridge", "x-grpc-bridge-auth"] {
        assert!(!seen.contains(&h.to_string()), "backend saw {h}: {seen:?}");
    }
    // The configured marker without the secret: refused, and the backend never sees it.
    let token = unique("marker-spoofed");
    let (code, msg) = raw_post(topo.server_addr, &[("x-corp-bridge", "agent")], &token);
    assert_eq!(
        (code.as_str(), msg.as_str()),
        (
            "16",
            "grpc-bridge: bridged request not authenticated: no credentials"
        )
    );
    assert!(
        topo.backend.call(&token).is_none(),
        "the refused call reached the backend"
    );
    // The default name is no marker here: a browser-style request carrying it is served (no
    // auth asked), and the header reaches the backend untouched.
    let token = unique("marker-default-name");
    let (code, msg) = raw_post(topo.server_addr, &[("x-grpc-bridge", "agent")], &token);
    assert_eq!((code.as_str(), msg.as_str()), ("0", ""));
    let seen = topo.backend.call(&token).expect("the backend saw the call");
    assert!(
        seen.request_metadata
            .iter()
            .any(|(k, v)| k == "x-grpc-bridge" && v == b"agent"),
        "{:?}",
        seen.request_metadata
    );
}

fn big_trailer(n: usize) -> Vec<Metadata> {
    vec![Metadata {
        key: "x-big".into(),
        value: vec![b'b'; n],
    }]
}

/// `max_trailer_bytes` 64 on the role whose template variables `role_var` sets: the block is
/// "grpc-status:0\r\n" (15 bytes) + "x-big:<value>\r\n", 43 bytes with a 20-byte value (within
/// 64), 123 with a 100-byte one (over). Trailers within pass whole; over it, the call ends
/// INTERNAL `want_message`.
fn expect_trailer_limit(
    role_var: fn(TopologyBuilder, &str, &str) -> TopologyBuilder,
    want_message: &str,
) {
    let builder = Topology::builder().server(ServerSide::Wasm);
    let topo = start(role_var(
        builder,
        "EXTRA_CONFIG",
        r#","max_trailer_bytes":64"#,
    ));
    let md = unary_with_trailers(topo.client_addr, &unique("trl-small"), big_trailer(20), 3)
        .unwrap_or_else(|s| panic!("small trailers: {}", fmt_status(&s)));
    assert_eq!(md.get("x-big").map(|v| v.as_bytes().len()), Some(20));
    let e = unary_with_trailers(topo.client_addr, &unique("trl-big"), big_trailer(100), 3)
        .expect_err("trailers over max_trailer_bytes must not pass");
    assert_eq!(
        (e.code(), e.message()),
        (Code::Internal, want_message),
        "{}",
        topo.logs(30)
    );
}

#[test]
fn trailer_limit_on_the_server_role() {
    expect_trailer_limit(TopologyBuilder::server_var, "grpc-bridge: backend trailers not representable: gRPC-web trailers of 123 bytes exceed the limit of 64");
}

#[test]
fn trailer_limit_on_the_agent() {
    expect_trailer_limit(TopologyBuilder::agent_var, "grpc-bridge: bad gRPC-web trailer frame: gRPC-web trailers of 123 bytes exceed the limit of 64");
}

#[test]
fn max_frame_bytes_on_both_tunnel_sides() {
    let topo = start(
        Topology::builder()
            .transport(Transport::WebSocketTunnel)
            .both_var("EXTRA_CONFIG", r#","max_frame_bytes":1024"#),
    );
    // 100 KiB each way in frames of at most 1 KiB: a frame over 1 KiB would be refused (1009).
    let token = unique("frames-1k");
    let payload = 100 << 10;
    let md = rt().block_on(async {
        let mut c = connect(topo.client_addr).await.unwrap();
        c.unary(UnaryRequest {
            payload: vec![1; payload],
            response_size: payload as i32,
            token: token.clone(),
            ..Default::default()
        })
        .await
    });
    let r = md.unwrap_or_else(|s| panic!("{}\n{}", fmt_status(&s), topo.logs(30)));
    assert_eq!(r.into_inner().payload.len(), payload);
    let agent = topo.agent.as_ref().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            (stat(agent, "tunnel_client.bytes_up") > payload as u64).then_some(())
        })
        .is_some(),
        "tunnel_client.bytes_up never passed {payload}"
    );
    assert_eq!(stat(&topo.server, "tunnel_server.errors.bad_frame"), 0);
}

#[test]
fn a_tunnel_server_refuses_frames_over_its_max_frame_bytes() {
    let topo = start(
        Topology::builder()
            .transport(Transport::WebSocketTunnel)
            .agent_var("EXTRA_CONFIG", r#","max_frame_bytes":4096"#)
            .server_var("EXTRA_CONFIG", r#","max_frame_bytes":1024"#),
    );
    // The client's connection preface and SETTINGS fit in one small frame; the 3 KiB message
    // goes in a 3 KiB frame, which the server refuses: close 1009, and the call ends with the
    // tunnel client's UNAVAILABLE quoting the server's reason.
    let e = unary_with_trailers(topo.client_addr, &unique("frame-big"), vec![], 3 << 10)
        .expect_err("a frame over the server's max_frame_bytes must not pass");
    // The frame's size is whatever the agent Envoy read from the client at once (headers and
    // message together, 3.2-3.3 KiB): the message names it.
    let prefix =
        "grpc-bridge: the tunnel to the server closed before the call ended: frame payload of ";
    let size = e
        .message()
        .strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(" bytes exceeds the limit of 1024"))
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        e.code() == Code::Unavailable && size.is_some_and(|n| n > 3 << 10 && n <= 4096),
        "want UNAVAILABLE {prefix}<3-4 KiB> bytes exceeds the limit of 1024, got {}\n{}",
        fmt_status(&e),
        topo.logs(30)
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            (stat(&topo.server, "tunnel_server.errors.bad_frame") == 1).then_some(())
        })
        .is_some(),
        "tunnel_server.errors.bad_frame: {}",
        stat(&topo.server, "tunnel_server.errors.bad_frame")
    );
}

/// A 1 MiB server stream (64 messages of 16 KiB) straight to the server role with the given
/// EXTRA_CONFIG; returns the server's `early_releases` once the call's status is counted.
fn early_releases(extra: &str) -> u64 {
    let topo = start(
        Topology::builder()
            .server(ServerSide::Wasm)
            .agent(false)
            .hop(false)
            .server_var("FLUSH_INTERVAL_MS", "1000")
            .server_var("EXTRA_CONFIG", extra),
    );
    let req = StreamRequest {
        count: 64,
        payload_size: 16 << 10,
        ..Default::default()
    };
    let frames = rt().block_on(async {
        let (_, frames) = grpc_bridge_tests::grpcweb::call(
            topo.server_addr,
            "ServerStream",
            false,
            msg_frame(&req),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", topo.logs(30)));
        frames
    });
    assert_eq!(frames.len(), 65, "64 messages and the trailer frame");
    let t = parse_trailer_block(&frames[64].data);
    assert!(t.contains(&("grpc-status".into(), "0".into())), "{t:?}");
    // The call's status and any early release are counted in the same metrics flush.
    wait_until(Duration::from_secs(10), || {
        (stat(&topo.server, "server.grpc_status.0") == 1).then_some(())
    })
    .expect("server.grpc_status.0 counted");
    stat(&topo.server, "server.early_releases")
}

#[test]
fn max_held_bytes_releases_held_data_early() {
    // 64 messages of 16 KiB + 5 bytes: at least 128 DATA frames (16 KiB at most each). With a
    // 1 KiB limit, the second frame of every hold releases it early, so there are about 64
    // early releases, fewer only by the 1 s ticks that fall between frames. With 256 KiB, each
    // early release needs 256 KiB held since the last: at most 4 in 1 MiB.
    let with_limit = early_releases(r#","max_held_bytes":1024"#);
    let with_large = early_releases(r#","max_held_bytes":262144"#);
    println!("early releases: max_held_bytes 1024: {with_limit}; 262144: {with_large}");
    assert!(with_large <= 4, "262144: {with_large} early releases");
    assert!(
        with_limit > 4,
        "max_held_bytes 1024: only {with_limit} early releases"
    );
}

#[test]
fn error_body_quote_bytes_limits_the_quote() {
    let page = "<html><body>proxy says no: 0123456789abcdefghijklmnopqrstuvwxyz</body></html>";
    let raw = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{page}",
        page.len()
    );
    let rt = rt();
    let fake = rt.block_on(FakeUpstream::start_with(Arc::new(move |s: &str| {
        (s == "page").then(|| raw.clone().into_bytes())
    })));
    let run = |quote: Option<u32>| -> tonic::Status {
        let mut vars = vec![
            ("UPSTREAM_HOST", fake.addr.ip().to_string()),
            ("UPSTREAM_PORT", fake.addr.port().to_string()),
            ("AUTH", format!(r#"{{"secret":"{TEST_SECRET}"}}"#)),
        ];
        if let Some(q) = quote {
            vars.push(("EXTRA_CONFIG", format!(r#","error_body_quote_bytes":{q}"#)));
        }
        let agent = Envoy::start_local("agent-quote", "agent.yaml", &vars).unwrap();
        let addr = agent.listener_addr("bridge_agent").unwrap();
        rt.block_on(async {
            let mut c = connect(addr).await.unwrap();
            let mut req = tonic::Request::new(UnaryRequest::default());
            req.metadata_mut()
                .insert("x-fake-scenario", "page".parse().unwrap());
            c.unary(req)
                .await
                .expect_err("a 502 page is no gRPC response")
        })
    };
    let prefix = "grpc-bridge: upstream answered HTTP 502 (text/html) instead of gRPC-web";
    let e = run(Some(16));
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::Unavailable,
            format!("{prefix}: <html><body>prox").as_str()
        )
    );
    let e = run(Some(0));
    assert_eq!((e.code(), e.message()), (Code::Unavailable, prefix));
    // The default (256) quotes the whole page.
    let e = run(None);
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::Unavailable,
            format!("{prefix}: <html><body>proxy says no: 0123456789abcdefghijklmnopqrstuvwxyz</body></html>").as_str()
        )
    );
}
