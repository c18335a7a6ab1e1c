//! Proxy mode for network-filter roles: the real filter as `tunnel_client` and
//! `tunnel_server` (each a network filter in front of a TCP proxy), carrying a client's whole
//! h2c connection to an h2 echo backend; and the probe guest's network mode on live sockets.

mod common;

use common::{
    assert_has_lines, grpc_ok_trailers, grpc_response, net_session, probe_proxy, serve_http,
    serve_tcp, sink_lines, tcp_echo, wait_for, wait_for_line, ReceiverStream,
};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use host_harness::proxy::{self, is_network_role, Protocol, ProxyConfig};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// h2 backend: echoes every request data frame as soon as it arrives (full duplex), then
/// `grpc-status: 0` trailers when the request ends. Counts connections that ended.
async fn echo_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let ended = Arc::new(AtomicUsize::new(0));
    let ended2 = ended.clone();
    let addr = serve_tcp(move |tcp| {
        let ended = ended2.clone();
        async move {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
                tokio::spawn(async move {
                    let mut body = req.into_body();
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Ok(data) = frame.into_data() {
                            if tx.send(Ok(Frame::data(data))).await.is_err() {
                                return;
                            }
                        }
                    }
                    let t = grpc_ok_trailers();
                    let _ = tx.send(Ok(Frame::trailers(t))).await;
                });
                let resp = grpc_response(StreamBody::new(ReceiverStream(rx)));
                Ok::<_, Infallible>(resp)
            });
            serve_http(tcp, Protocol::H2c, true, svc).await;
            ended.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    (addr, ended)
}

/// The `grpc-status` trailer of a collected response.
fn grpc_status(collected: &http_body_util::Collected<Bytes>) -> Option<&[u8]> {
    collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.as_bytes())
}

async fn tunnel_pair(backend: SocketAddr) -> (proxy::RunningProxy, proxy::RunningProxy) {
    let wasm = common::grpc_bridge_wasm();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = proxy::start(ProxyConfig::new(
        &wasm,
        br#"{"role":"tunnel_server","auth":"none"}"#.to_vec(),
        any,
        backend,
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        server.network,
        "a tunnel_server role runs as a network filter"
    );
    let client_cfg = format!(
        r#"{{"role":"tunnel_client","tunnel_host":"{}"}}"#,
        server.local_addr
    );
    let client = proxy::start(ProxyConfig::new(
        &wasm,
        client_cfg.into_bytes(),
        any,
        server.local_addr,
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(client.network);
    (client, server)
}

async fn h2_client(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::combinators::BoxBody<Bytes, Infallible>>
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

fn post(
    addr: SocketAddr,
    body: http_body_util::combinators::BoxBody<Bytes, Infallible>,
) -> Request<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/pkg.Echo/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap()
}

async fn next(body: &mut Incoming, expect: Bytes) {
    let mut got = Vec::new();
    while got.len() < expect.len() {
        let frame = tokio::time::timeout(LIMIT, body.frame())
            .await
            .expect("echo in time")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(got, expect.to_vec());
}

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn tunnel_client_and_server_carry_unary_and_streaming_calls() {
    let (backend, ended) = echo_backend().await;
    let (client_proxy, _server_proxy) = tunnel_pair(backend).await;
    let mut send = h2_client(client_proxy.local_addr).await;

    // Unary: one message up, the echo and trailers back.
    let resp = tokio::time::timeout(
        LIMIT,
        send.send_request(post(
            backend,
            Full::new(Bytes::from_static(b"\0\0\0\0\x03abc")).boxed(),
        )),
    )
    .await
    .expect("unary response in time")
    .unwrap();
    assert_eq!(resp.status(), 200);
    let collected = tokio::time::timeout(LIMIT, resp.into_body().collect())
        .await
        .expect("unary body in time")
        .unwrap();
    assert_eq!(grpc_status(&collected), Some(&b"0"[..]));
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"\0\0\0\0\x03abc"));

    // Streaming on the same tunnelled connection: each message's echo must come back before
    // the next one is sent, so both directions stream through both filters.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let resp = tokio::time::timeout(
        LIMIT,
        send.send_request(post(backend, StreamBody::new(ReceiverStream(rx)).boxed())),
    );
    let first = Bytes::from_static(b"ping-0");
    tx.send(Ok(Frame::data(first.clone()))).await.unwrap();
    let resp = resp.await.expect("stream response in time").unwrap();
    let mut body = resp.into_body();
    next(&mut body, first).await;
    for i in 1..5 {
        let msg = Bytes::from(format!("ping-{i}"));
        tx.send(Ok(Frame::data(msg.clone()))).await.unwrap();
        next(&mut body, msg).await;
    }
    drop(tx); // end of the request stream -> the backend sends its trailers
    let rest = tokio::time::timeout(LIMIT, body.collect())
        .await
        .expect("trailers in time")
        .unwrap();
    assert_eq!(
        rest.trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );

    // Closing the client connection closes the tunnel through to the backend.
    drop(send);
    wait_for(
        "the backend connection closing after the client left",
        || match ended.load(Ordering::SeqCst) {
            0 => Err("still open".into()),
            _ => Ok(()),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_calls_share_one_tunnel_concurrently() {
    let (backend, _) = echo_backend().await;
    let (client_proxy, _server_proxy) = tunnel_pair(backend).await;
    let send = h2_client(client_proxy.local_addr).await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let mut send = send.clone();
        calls.push(tokio::spawn(async move {
            let payload = Bytes::from(vec![i as u8; 1000 * (i + 1)]);
            let resp = send
                .send_request(post(backend, Full::new(payload.clone()).boxed()))
                .await
                .unwrap();
            let collected = resp.into_body().collect().await.unwrap();
            assert_eq!(grpc_status(&collected), Some(&b"0"[..]));
            assert_eq!(collected.to_bytes(), payload);
        }));
    }
    for c in calls {
        tokio::time::timeout(LIMIT, c)
            .await
            .expect("call in time")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_server_alone_refuses_a_plain_h2c_client() {
    // Without the WebSocket upgrade in front, the server side must not pass the client's
    // bytes to the backend: the h2c call fails instead of reaching it.
    let (backend, _) = echo_backend().await;
    let (_client_proxy, server_proxy) = tunnel_pair(backend).await;
    let tcp = tokio::net::TcpStream::connect(server_proxy.local_addr)
        .await
        .unwrap();
    let handshake = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    );
    let outcome = tokio::time::timeout(Duration::from_secs(3), async {
        let (mut send, conn) = handshake.await.ok()?;
        tokio::spawn(conn);
        let resp = send
            .send_request(
                Request::post(format!("http://{backend}/x"))
                    .body(Full::new(Bytes::from_static(b"hi")))
                    .unwrap(),
            )
            .await
            .ok()?;
        resp.into_body().collect().await.ok().map(|c| c.to_bytes())
    })
    .await;
    assert!(
        !matches!(outcome, Ok(Some(ref b)) if b == "hi"),
        "the backend answered a call that bypassed the tunnel: {outcome:?}"
    );
}

/// The probe's network mode on sockets: the first bytes get `HELLO ` in front (prepend +
/// continue_stream(Downstream) + Pause), upstream bytes come back upper-cased, and a client
/// FIN runs the close callbacks.
#[tokio::test(flavor = "multi_thread")]
async fn probe_network_mode_on_sockets() {
    let logs = proxy::LogSink::default();
    let upstream = tcp_echo().await;
    let p = proxy::start(
        probe_proxy("net", upstream)
            .network(true)
            .log_sink(logs.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        net_session(p.local_addr).await,
        [b"HELLO ABC".to_vec(), b"DEF".to_vec(), Vec::new()]
    );
    let lines = wait_for_line("proxy log", "on_delete", || sink_lines(&logs)).await;
    assert_has_lines(
        &lines,
        &[
            "prepend=0 continue_downstream=0",
            "replace_upstream=0 continue_upstream=12",
        ],
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("downstream_data size=0 eos=1")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("upstream_close")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("downstream_close")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_upstream_closes_the_client_connection() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let logs = proxy::LogSink::default();
    let p = proxy::start(
        probe_proxy("net", closed_port)
            .network(true)
            .log_sink(logs.clone()),
    )
    .await
    .unwrap();
    let mut c = tokio::net::TcpStream::connect(p.local_addr).await.unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(LIMIT, c.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(r.is_ok_and(|n| n == 0) || rest.is_empty());
    // The close callback may run after the client saw the close: wait for its log line.
    let lines = wait_for_line("proxy log", "downstream_close", || sink_lines(&logs)).await;
    // tcp_proxy closes the client side: the filter sees a local close (peer type 1).
    let closes: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("downstream_close"))
        .collect();
    assert!(
        !closes.is_empty() && closes.iter().all(|l| l.ends_with("peer=1")),
        "{lines:#?}"
    );
}

#[test]
fn network_roles_are_detected_from_the_configuration() {
    assert!(is_network_role(
        br#"{"role":"tunnel_client","tunnel_host":"x"}"#
    ));
    assert!(is_network_role(br#"{ "role" : "tunnel_server" }"#));
    assert!(!is_network_role(br#"{"role":"agent"}"#));
    assert!(!is_network_role(br#"{"role":"server","tunnel_path":"/x"}"#));
    assert!(!is_network_role(b"net"));
}
