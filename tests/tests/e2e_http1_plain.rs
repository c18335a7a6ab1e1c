//! Plain HTTP/1.1 gRPC clients (curl-style: `content-type: application/grpc` over HTTP/1.1, no
//! trailers) against `envoy/server.yaml` in real Envoy 1.40: Envoy's `grpc_http1_bridge` holds
//! the response until the backend's trailers and puts `grpc-status`/`grpc-message` in the
//! headers; our filter in role `http1_status` sets the HTTP status from NetScaler's table.
//! gRPC-web and HTTP/2 gRPC on the same listener are not touched.

use std::net::SocketAddr;
use std::time::Duration;

use grpc_bridge_tests::backend::pattern;
use grpc_bridge_tests::cases::{connect, unary_failing};
use grpc_bridge_tests::grpcweb::{self, msg_frame, parse_frames, WebCall};
use grpc_bridge_tests::pb::{Metadata, StreamRequest, StreamResponse, UnaryRequest, UnaryResponse};
use grpc_bridge_tests::topology::{ServerSide, Topology};
use grpc_bridge_tests::util::rt;
use grpc_bridge_tests::util::wait_until;
use prost::Message;
use tonic::Code;

struct Answer {
    status: u16,
    grpc_status: Option<String>,
    grpc_message: Option<String>,
    content_length: Option<String>,
    trailers: Option<http::HeaderMap>,
    body: Vec<u8>,
}

async fn plain_call(addr: SocketAddr, method: &str, body: Vec<u8>) -> Answer {
    let mut c = WebCall::start(
        addr,
        &format!("/bridge.test.BridgeTest/{method}"),
        "application/grpc",
        body,
    )
    .await
    .unwrap_or_else(|e| panic!("{method}: {e}"));
    let body = c
        .read_all(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"));
    Answer {
        status: c.status,
        grpc_status: c.header("grpc-status"),
        grpc_message: c.header("grpc-message"),
        content_length: c.header("content-length"),
        trailers: c.trailers.take(),
        body,
    }
}

/// The server role ended the call with gRPC status `grpc_status` in the headers (HTTP 200) and
/// a message containing `cause`, and sent no body.
fn expect_cut(a: Answer, grpc_status: &str, cause: &str) {
    assert_eq!(
        (a.status, a.grpc_status.as_deref()),
        (200, Some(grpc_status)),
        "{:?}",
        a.grpc_message
    );
    let m = grpcweb::percent_decode(&a.grpc_message.unwrap_or_default());
    assert!(m.contains(cause), "{m}");
    assert!(a.body.is_empty(), "{} body bytes", a.body.len());
}

/// Starts the server role alone (`vars` for its template) and runs `test` against its address;
/// returns the topology, for its stats.
fn on_server_role<F: std::future::Future<Output = ()>>(
    vars: &[(&str, &str)],
    test: impl FnOnce(SocketAddr) -> F,
) -> Topology {
    let mut b = Topology::builder()
        .server(ServerSide::Wasm)
        .hop(false)
        .agent(false);
    for (k, v) in vars {
        b = b.server_var(k, v);
    }
    let topo = b.start().unwrap_or_else(|e| panic!("{e}"));
    rt().block_on(test(topo.server_addr));
    topo
}

#[test]
fn plain_http1_grpc_gets_status_headers_and_mapped_http_status() {
    let topo = on_server_role(&[], |addr| async move {
        // OK: 200, grpc-status 0 in the headers, the whole body with a length.
        let req = UnaryRequest {
            payload: b"hello plain client".to_vec(),
            response_trailers: vec![Metadata {
                key: "x-trl".into(),
                value: b"tv".to_vec(),
            }],
            ..Default::default()
        };
        let a = plain_call(addr, "Unary", msg_frame(&req)).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.grpc_status.as_deref(), Some("0"));
        assert_eq!(
            a.content_length.as_deref(),
            Some(a.body.len().to_string().as_str())
        );
        assert!(
            a.trailers.is_none(),
            "no HTTP trailers for a plain client: {:?}",
            a.trailers
        );
        let frames = parse_frames(&a.body).unwrap();
        assert_eq!(frames.len(), 1, "{frames:?}");
        let resp = UnaryResponse::decode(&frames[0].data[..]).unwrap();
        assert_eq!(resp.payload, b"hello plain client");

        // Errors: the HTTP status from NetScaler's table, grpc-message in the headers. Unary
        // errors are Trailers-Only (Envoy's bridge alone would answer 200).
        for (code, http) in [(5, 404), (14, 503), (16, 401), (3, 400), (12, 501)] {
            let req = UnaryRequest {
                status_code: code,
                status_message: format!("failed with {code}"),
                ..Default::default()
            };
            let a = plain_call(addr, "Unary", msg_frame(&req)).await;
            assert_eq!(a.status, http, "grpc-status {code}");
            assert_eq!(a.grpc_status, Some(code.to_string()));
            assert_eq!(
                a.grpc_message.map(|m| grpcweb::percent_decode(&m)),
                Some(format!("failed with {code}"))
            );
            assert!(a.body.is_empty());
        }

        // A stream ending in an error after messages (status in trailers, which Envoy's bridge
        // alone would answer with 503): FAILED_PRECONDITION -> 400, with the messages.
        let req = StreamRequest {
            count: 3,
            payload_size: 4,
            final_status_code: 9,
            final_status_message: "stop here".into(),
            ..Default::default()
        };
        let a = plain_call(addr, "ServerStream", msg_frame(&req)).await;
        assert_eq!(a.status, 400);
        assert_eq!(a.grpc_status.as_deref(), Some("9"));
        assert_eq!(
            a.grpc_message
                .map(|m| grpcweb::percent_decode(&m))
                .as_deref(),
            Some("stop here")
        );
        let frames = parse_frames(&a.body).unwrap();
        let idx: Vec<i32> = frames
            .iter()
            .map(|f| StreamResponse::decode(&f.data[..]).unwrap().index)
            .collect();
        assert_eq!(idx, vec![0, 1, 2]);
        assert_eq!(
            StreamResponse::decode(&frames[0].data[..]).unwrap().payload,
            pattern(4)
        );

        // The same listener still serves gRPC-web (status in the body's trailer frame, HTTP 200)...
        let (call, frames) = grpcweb::call(addr, "ServerStream", false, msg_frame(&req))
            .await
            .unwrap();
        assert_eq!(call.status, 200);
        let trailer = frames
            .last()
            .filter(|f| f.is_trailer())
            .expect("trailer frame");
        let block = grpcweb::parse_trailer_block(&trailer.data);
        assert!(
            block.contains(&("grpc-status".to_string(), "9".to_string())),
            "{block:?}"
        );

        // ... and HTTP/2 gRPC (a mapped :status would turn NOT_FOUND into UNIMPLEMENTED).
        let mut c = connect(addr).await.unwrap();
        let e = unary_failing(&mut c, Code::NotFound, "nope").await.unwrap();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "nope"));
    });
    // Counters are batched in the VM and flushed at the root tick: wait for the flush itself.
    let calls = wait_until(Duration::from_secs(10), || {
        topo.server
            .stat("wasmcustom.grpc_bridge.http1_status.calls")
            .filter(|&n| n >= 7)
    });
    assert_eq!(
        calls,
        Some(7),
        "{}",
        topo.server.stats_matching("grpc_bridge")
    );
}

/// Our bounds on the hold (`http1_hold_bytes` 131072, `http1_hold_ms` 1000, NetScaler's
/// defaults): past either the server role ends the call with a gRPC error in the headers
/// (Envoy's gRPC local reply: HTTP 200), never a silent OK and never a truncated body.
#[test]
fn plain_http1_hold_is_bounded_in_size_and_time() {
    let topo = on_server_role(&[], |addr| async move {
        // Over 131072 bytes.
        let over_size = StreamRequest {
            count: 1,
            payload_size: 200_000,
            ..Default::default()
        };
        // Response headers, then no end within 1000 ms (the second message comes 1500 ms later).
        let over_time = StreamRequest {
            count: 2,
            interval_ms: 1500,
            payload_size: 4,
            ..Default::default()
        };
        for (req, grpc_status, cause) in [
            (over_size, "8", "http1_hold_bytes (131072)"),
            (over_time, "4", "http1_hold_ms (1000 ms)"),
        ] {
            let a = plain_call(addr, "ServerStream", msg_frame(&req)).await;
            expect_cut(a, grpc_status, cause);
        }

        // Under 131072 bytes: whole.
        let req = UnaryRequest {
            response_size: 100_000,
            ..Default::default()
        };
        let a = plain_call(addr, "Unary", msg_frame(&req)).await;
        assert_eq!((a.status, a.grpc_status.as_deref()), (200, Some("0")));
        let frames = parse_frames(&a.body).unwrap();
        assert_eq!(
            UnaryResponse::decode(&frames[0].data[..]).unwrap().payload,
            pattern(100_000)
        );

        // A backend that is slow before it answers is not cut: the time runs from the response
        // headers.
        let req = UnaryRequest {
            delay_ms: 1500,
            payload: b"late".to_vec(),
            ..Default::default()
        };
        let a = plain_call(addr, "Unary", msg_frame(&req)).await;
        assert_eq!((a.status, a.grpc_status.as_deref()), (200, Some("0")));
    });
    let stat = |n: &str| {
        topo.server
            .stat(&format!("wasmcustom.grpc_bridge.server.{n}"))
            .unwrap_or(0)
    };
    assert_eq!(
        (
            stat("errors.http1_hold_bytes"),
            stat("errors.http1_hold_ms")
        ),
        (1, 1),
        "{}",
        topo.server.stats_matching("grpc_bridge")
    );
}

/// With our size bound off (`HTTP1_HOLD_BYTES=0`) the hold is bounded by the listener's buffer
/// limit (`BUFFER_LIMIT_BYTES`): past it Envoy answers with its own error.
#[test]
fn plain_http1_response_over_the_buffer_limit_is_an_error() {
    let vars = [("BUFFER_LIMIT_BYTES", "2097152"), ("HTTP1_HOLD_BYTES", "0")];
    on_server_role(&vars, |addr| async move {
        // 4 x 1 MiB: over the 2 MiB limit.
        let req = StreamRequest {
            count: 4,
            payload_size: 1 << 20,
            ..Default::default()
        };
        let a = plain_call(addr, "ServerStream", msg_frame(&req)).await;
        // Envoy's own local reply, which does not pass the http1_status role: HTTP 200.
        assert_eq!(
            (a.status, a.grpc_status.as_deref()),
            (200, Some("2")),
            "{:?}",
            a.grpc_message
        );
        assert_eq!(a.grpc_message.as_deref(), Some("Internal Server Error"));
        assert!(a.body.is_empty(), "{} body bytes", a.body.len());
        // Below the limit the same call passes whole.
        let req = StreamRequest {
            count: 1,
            payload_size: 1 << 20,
            ..Default::default()
        };
        let a = plain_call(addr, "ServerStream", msg_frame(&req)).await;
        assert_eq!((a.status, a.grpc_status.as_deref()), (200, Some("0")));
        let frames = parse_frames(&a.body).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(
            StreamResponse::decode(&frames[0].data[..])
                .unwrap()
                .payload
                .len(),
            1 << 20
        );
    });
}
