//! Hostile inputs: one table of cases, two runners (real Envoy 1.40 and the host harness).
//!
//! Each case sends one hostile input to one role and asserts its exact defined answer (HTTP
//! status, `grpc-status`, a `grpc-message` substring, a WebSocket close code); right after it,
//! a good request to the same listener must succeed. Envoy runs with `--concurrency 1`, so
//! "the same listener" is "the same worker and the same wasm VM": a panic in the filter would
//! fail every later good request.
//!
//! Targets (each a listener of its own):
//! - `Server`: the server role (HTTP/1.1 listener, tonic backend behind it), with
//!   `auth.shared_secrets` = [`SECRET`]; raw HTTP/1.1 requests over TCP.
//! - `Agent`: the agent role (h2c listener) in front of a scripted HTTP/1.1 upstream
//!   (`fake_upstream`) that answers each call with the case's raw response bytes.
//! - `Tunnel`: the tunnel_server role (network filter + TCP proxy to the tonic backend), with
//!   the same secret; raw WebSocket bytes over TCP.
//! - `TunnelClient`: the tunnel_client role in front of a scripted WebSocket server that
//!   answers the upgrade with the case's bytes; for the good request it splices the connection
//!   to the `Tunnel` listener.
//!
//! docs/RELIABILITY.md ("Hostile inputs") lists the cases and what they prove.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use grpc_bridge_tests::backend::Backend;
use grpc_bridge_tests::envoy::{built_wasm_path, Envoy};
use grpc_bridge_tests::fake_upstream::FakeUpstream;
use grpc_bridge_tests::grpcweb::{
    frame, msg_frame, parse_frames, parse_trailer_block, percent_decode,
};
use grpc_bridge_tests::pb::*;
use grpc_bridge_tests::util::rt;
use host_harness::HEADERS_NEVER_UPSTREAM;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The shared secret both sides are configured with.
const SECRET: &str = "hostile-test-secret-0123456789";
const MAX_MESSAGE: u32 = 65536;
const SERVER_AUTH: &str =
    r#"{"shared_secrets":["hostile-test-secret-0123456789","rotated-secret-abcdefghijklmn"]}"#;
const AGENT_AUTH: &str = r#"{"secret":"hostile-test-secret-0123456789"}"#;
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Server,
    Agent,
    Tunnel,
    /// The tunnel_client role (network filter) in front of a scripted WebSocket server
    /// (`FakeWs`): the case's bytes are the server's answer to the upgrade (`{ACCEPT}` is
    /// replaced by the right `Sec-WebSocket-Accept`). The client sends an HTTP/2 preface and
    /// SETTINGS; the defined answer is the tunnel client closing the client's connection
    /// without passing it any of the server's bytes (a gRPC client then fails the call).
    TunnelClient,
}

/// The defined answer.
#[derive(Clone, Debug)]
enum Expect {
    /// HTTP 200 with this gRPC status (headers or trailer frame) and a `grpc-message` containing
    /// the substring.
    Grpc(u32, &'static str),
    /// This HTTP status with this gRPC status and message substring (a plain HTTP/1.1 gRPC client
    /// behind `http1_status`, which maps the status: NetScaler's table).
    HttpGrpc(u16, u32, &'static str),
    /// Success, and the backend saw none of the bridge-internal or hop-by-hop headers.
    CleanOk,
    /// A plain HTTP status (a refused request or upgrade).
    Http(u16),
    /// The WebSocket upgrade is accepted, then the server closes with this code.
    WsClose(u16),
    /// The tunnel client closes the client's connection without passing it a byte.
    Closed,
}

struct Case {
    name: &'static str,
    target: Target,
    /// Server/Tunnel: raw bytes written to the listener. Agent: raw HTTP/1.1 response the
    /// scripted upstream sends.
    bytes: Vec<u8>,
    expect: Expect,
    /// Only meaningful in one runner (the other's HTTP stack refuses it before any filter).
    only: Option<Runner>,
    /// The request carries this backend call token (`tokened`): after the case, the backend must
    /// have recorded it if the case expects success, and must never have seen it otherwise (a
    /// refused call reaches no backend).
    backend_token: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    Envoy,
    Harness,
}

// ---- request builders --------------------------------------------------------------------

fn unary_body(payload: &[u8]) -> Vec<u8> {
    msg_frame(&UnaryRequest {
        payload: payload.to_vec(),
        ..Default::default()
    })
}

/// A unary request the backend records under `hostile:<name>` (echoing its metadata).
fn tokened(name: &str) -> Vec<u8> {
    msg_frame(&UnaryRequest {
        payload: b"x".to_vec(),
        echo_metadata: true,
        token: format!("hostile:{name}"),
        ..Default::default()
    })
}

fn echo_body() -> Vec<u8> {
    msg_frame(&UnaryRequest {
        payload: b"echo".to_vec(),
        echo_metadata: true,
        ..Default::default()
    })
}

/// A raw HTTP/1.1 gRPC-web POST with a content-length body.
fn post(ct: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut h = format!(
        "POST /bridge.test.BridgeTest/Unary HTTP/1.1\r\nhost: bridge.test\r\ncontent-type: {ct}\r\nx-grpc-web: 1\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    let mut out = h.into_bytes();
    out.extend_from_slice(body);
    out
}

fn web(body: &[u8]) -> Vec<u8> {
    post("application/grpc-web+proto", &[], body)
}

fn text(b64: &[u8]) -> Vec<u8> {
    post("application/grpc-web-text+proto", &[], b64)
}

fn marked(extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut h = vec![("x-grpc-bridge", "agent")];
    h.extend_from_slice(extra);
    post("application/grpc-web+proto", &h, body)
}

// ---- agent-side responses ------------------------------------------------------------------

fn ok_msg() -> Vec<u8> {
    frame(0, &[0x0a, 4, b'f', b'a', b'k', b'e'])
}

fn web_response(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn with_trailers(block: &[u8]) -> Vec<u8> {
    let mut b = ok_msg();
    b.extend(frame(0x80, block));
    web_response(&b)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

// ---- WebSocket ---------------------------------------------------------------------------

fn ws_head(lines: &[&str]) -> Vec<u8> {
    let mut s = String::from("GET /grpc-bridge/tunnel HTTP/1.1\r\nhost: bridge.test\r\n");
    for l in lines {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn good_ws_lines() -> Vec<String> {
    vec![
        "upgrade: websocket".into(),
        "connection: Upgrade".into(),
        format!("sec-websocket-key: {WS_KEY}"),
        "sec-websocket-version: 13".into(),
        "sec-websocket-protocol: grpc-bridge.tunnel.v1".into(),
        format!("x-grpc-bridge-auth: {SECRET}"),
    ]
}

fn ws_without(drop: &str) -> Vec<u8> {
    let l: Vec<String> = good_ws_lines()
        .into_iter()
        .filter(|l| !l.starts_with(drop))
        .collect();
    ws_head(&l.iter().map(String::as_str).collect::<Vec<_>>())
}

fn ws_with(replace: &str, line: &str) -> Vec<u8> {
    let l: Vec<String> = good_ws_lines()
        .into_iter()
        .map(|l| {
            if l.starts_with(replace) {
                line.to_string()
            } else {
                l
            }
        })
        .collect();
    ws_head(&l.iter().map(String::as_str).collect::<Vec<_>>())
}

fn good_ws() -> Vec<u8> {
    ws_without("\u{0}")
}

/// A WebSocket frame header byte 0 (`fin`, `rsv`, `opcode`), masked with `mask` when given.
fn ws_frame(b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

const K: Option<[u8; 4]> = Some([1, 2, 3, 4]);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The good handshake, then the client's HTTP/2 preface in a frame, then `hostile`.
fn after_upgrade(hostile: Vec<u8>) -> Vec<u8> {
    cat(&[good_ws(), ws_frame(0x82, K, PREFACE), hostile])
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Placeholder for the right `Sec-WebSocket-Accept` in a scripted server answer.
const ACCEPT_LINE: &str = "Sec-WebSocket-Accept: {ACCEPT}\r\n";

/// A `101` with `accept_line`, the right subprotocol, then `after` (frames).
fn ws_101(accept_line: &str, after: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{accept_line}Sec-WebSocket-Protocol: grpc-bridge.tunnel.v1\r\n\r\n"
    )
    .into_bytes();
    v.extend_from_slice(after);
    v
}

fn ws_101_proto(accept_line: &str, proto: &str) -> Vec<u8> {
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{accept_line}Sec-WebSocket-Protocol: {proto}\r\n\r\n")
        .into_bytes()
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    match hay.windows(from.len()).position(|w| w == from) {
        Some(p) => [&hay[..p], to, &hay[p + from.len()..]].concat(),
        None => hay.to_vec(),
    }
}

/// A scripted WebSocket server behind the tunnel client: per connection, either the current
/// script (hostile answer) or, with no script, a splice to the tunnel server listener.
struct FakeWs {
    addr: SocketAddr,
    script: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeWs {
    async fn start(splice_to: Arc<std::sync::Mutex<Option<SocketAddr>>>) -> FakeWs {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let script: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
        let sc = script.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let script = sc.lock().unwrap().clone();
                let target = *splice_to.lock().unwrap();
                tokio::spawn(async move {
                    let _ = FakeWs::serve(s, script, target).await;
                });
            }
        });
        FakeWs { addr, script, task }
    }

    async fn serve(
        mut s: TcpStream,
        script: Option<Vec<u8>>,
        target: Option<SocketAddr>,
    ) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while head_end(&head).is_none() {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        match script {
            Some(answer) => {
                let text = String::from_utf8_lossy(&head[..head_end(&head).unwrap()]).into_owned();
                let key = header(&text, "sec-websocket-key").unwrap_or("").to_string();
                let accept = grpc_bridge::codec::websocket::accept_key(&key);
                s.write_all(&replace_bytes(&answer, b"{ACCEPT}", accept.as_bytes()))
                    .await?;
                // Keep the connection until the tunnel client gives up on it (or 5 s).
                let _ = timeout(Duration::from_secs(5), async {
                    while s.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
                })
                .await;
                Ok(())
            }
            None => {
                let Some(t) = target else { return Ok(()) };
                let mut up = TcpStream::connect(t).await?;
                up.write_all(&head).await?;
                tokio::io::copy_bidirectional(&mut s, &mut up)
                    .await
                    .map(|_| ())
            }
        }
    }
}

// ---- the table -----------------------------------------------------------------------------

fn cases() -> Vec<Case> {
    use Expect::*;
    use Target::*;
    let c = |name, target, bytes: Vec<u8>, expect| Case {
        name,
        target,
        bytes,
        expect,
        only: None,
        backend_token: None,
    };
    // An authentication case: a marked request with `extra` headers and a tokened body.
    let auth = |name: &'static str, extra: &[(&str, &str)], expect| Case {
        backend_token: Some(format!("hostile:{name}")),
        ..c(name, Server, marked(extra, &tokened(name)), expect)
    };
    // The agent's marker on a native gRPC request (HTTP/1.1, tokened), in one runner only: the
    // answer depends on what stands in front of the server role.
    let marker_on_native = |name: &'static str, runner, expect| Case {
        only: Some(runner),
        backend_token: Some(format!("hostile:{name}")),
        ..c(
            name,
            Server,
            post(
                "application/grpc",
                &[("x-grpc-bridge", "agent"), ("te", "trailers")],
                &tokened(name),
            ),
            expect,
        )
    };
    let mut big_len = vec![0u8];
    big_len.extend_from_slice(&(MAX_MESSAGE + 1).to_be_bytes());
    let b64 = |b: &[u8]| {
        base64::engine::general_purpose::STANDARD
            .encode(b)
            .into_bytes()
    };
    let huge = "v".repeat(100 * 1024);
    let huge_trailer = format!("grpc-status:0\r\nx-big:{}\r\n", "t".repeat(20 * 1024));
    let mut top_bit = vec![0x82, 0x80 | 127];
    top_bit.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
    top_bit.extend_from_slice(&[1, 2, 3, 4]);
    let mut over_frame = vec![0x82, 0x80 | 127];
    over_frame.extend_from_slice(&(2u64 << 20).to_be_bytes());
    over_frame.extend_from_slice(&[1, 2, 3, 4]);
    vec![
        // -- server role: gRPC-web requests ------------------------------------------------
        c("frame_length_beyond_data", Server, web(&[0, 0, 0, 0, 100, 1, 2, 3]), Grpc(3, "ended inside a message")),
        c("frame_length_beyond_limit", Server, web(&cat(&[big_len.clone(), vec![0; 16]])), Grpc(8, "")),
        c("frame_header_cut_short", Server, web(&[0, 0, 0]), Grpc(3, "ended inside a message")),
        c("compressed_flag_without_encoding", Server, web(&frame(1, b"\x0a\x01x")), Grpc(13, "")),
        c("text_bad_base64", Server, text(b"AAAA!!!!"), Grpc(3, "bad grpc-web-text")),
        c("text_cut_inside_a_quantum", Server, text(b"AAAAB"), Grpc(3, "bad grpc-web-text")),
        c("text_data_after_padding", Server, text(b"AA==AAAA"), Grpc(3, "")),
        c("text_frame_beyond_limit", Server, text(&b64(&cat(&[big_len.clone(), vec![0; 16]]))), Grpc(8, "")),
        // Envoy's HTTP/1.1 codec refuses the head (max_request_headers_kb, 60 KiB) before any
        // filter; the harness does not model that limit: the tonic backend resets the stream and
        // the harness answers 503 (not a gRPC request to Envoy: it arrived as gRPC-web).
        Case {
            only: Some(Runner::Envoy),
            ..c("huge_metadata", Server, post("application/grpc-web+proto", &[("x-huge", &huge)], &unary_body(b"x")), Http(431))
        },
        Case {
            only: Some(Runner::Harness),
            ..c(
                "huge_metadata_harness",
                Server,
                post("application/grpc-web+proto", &[("x-huge", &huge)], &unary_body(b"x")),
                Http(503),
            )
        },
        // -- server role: authentication -----------------------------------------------------
        auth("spoofed_marker_no_secret", &[], Grpc(16, "no credentials")),
        auth(
            "marker_wrong_secret",
            &[("x-grpc-bridge-auth", "hostile-test-secret-0123456788")],
            Grpc(16, "invalid credentials"),
        ),
        auth("marker_secret_prefix", &[("x-grpc-bridge-auth", "hostile-test-secret")], Grpc(16, "invalid credentials")),
        auth("marker_secret_in_other_header", &[("authorization", SECRET)], Grpc(16, "no credentials")),
        auth("marker_empty_secret", &[("x-grpc-bridge-auth", "")], Grpc(16, "no credentials")),
        // Native gRPC over HTTP/1.1 is a plain HTTP/1.1 gRPC client: in Envoy, server.yaml's
        // http1_status filter maps UNAUTHENTICATED to 401; the harness runs the server role alone.
        marker_on_native("marker_on_native_grpc", Runner::Envoy, HttpGrpc(401, 16, "no credentials")),
        marker_on_native("marker_on_native_grpc_harness", Runner::Harness, Grpc(16, "no credentials")),
        auth(
            "marker_good_secret_headers_stripped",
            &[("x-grpc-bridge-auth", SECRET), ("keep-alive", "timeout=5"), ("proxy-connection", "keep-alive"), ("te", "gzip")],
            CleanOk,
        ),
        auth("marker_rotated_secret_accepted", &[("x-grpc-bridge-auth", "rotated-secret-abcdefghijklmn")], CleanOk),
        c(
            "browser_with_stray_secret_header",
            Server,
            post("application/grpc-web+proto", &[("x-grpc-bridge-auth", "guess-guess-guess-guess")], &echo_body()),
            CleanOk,
        ),
        // -- agent role: what comes back from the HTTP/1.1 path -----------------------------
        c("response_without_trailer_frame", Agent, web_response(&ok_msg()), Grpc(13, "without a gRPC-web trailer frame")),
        c("response_frame_beyond_data", Agent, web_response(&[0, 0, 0, 0, 100, 1, 2]), Grpc(13, "truncated")),
        c("response_frame_beyond_limit", Agent, web_response(&cat(&[big_len, vec![0; 16]])), Grpc(8, "")),
        c(
            "response_compressed_without_encoding",
            Agent,
            web_response(&cat(&[frame(1, b"\x0a\x01x"), frame(0x80, b"grpc-status:0\r\n")])),
            Grpc(13, ""),
        ),
        c(
            "trailer_frame_truncated",
            Agent,
            web_response(&cat(&[ok_msg(), vec![0x80, 0, 0, 0, 100], b"grpc-status:0\r\n".to_vec()])),
            Grpc(13, "trailer frame"),
        ),
        c(
            "trailer_frame_not_final",
            Agent,
            web_response(&cat(&[frame(0x80, b"grpc-status:0\r\n"), ok_msg()])),
            Grpc(13, "trailer frame"),
        ),
        c(
            "trailer_frame_duplicate",
            Agent,
            web_response(&cat(&[ok_msg(), frame(0x80, b"grpc-status:0\r\n"), frame(0x80, b"grpc-status:0\r\n")])),
            Grpc(13, "trailer frame"),
        ),
        c("trailer_frame_oversized", Agent, with_trailers(huge_trailer.as_bytes()), Grpc(13, "trailer frame")),
        c("trailer_cr_in_value", Agent, with_trailers(b"grpc-status:0\r\nx-a:b\rc\r\n"), Grpc(13, "trailer frame")),
        c("trailer_lf_in_value", Agent, with_trailers(b"grpc-status:0\r\nx-a:b\nc\r\n"), Grpc(13, "trailer frame")),
        c("trailer_nul_in_name", Agent, with_trailers(b"grpc-status:0\r\nx-\0a:b\r\n"), Grpc(13, "trailer frame")),
        c("trailer_pseudo_header", Agent, with_trailers(b"grpc-status:0\r\n:status:200\r\n"), Grpc(13, "trailer frame")),
        c("trailer_uppercase_names", Agent, with_trailers(b"Grpc-Status:5\r\nX-Upper:v\r\n"), Grpc(5, "")),
        c("trailer_line_without_colon", Agent, with_trailers(b"grpc-status:0\r\nnocolon\r\n"), Grpc(13, "trailer frame")),
        c("grpc_status_non_numeric", Agent, with_trailers(b"grpc-status:abc\r\n"), Grpc(13, "invalid grpc-status")),
        // A numeric code the client does not know passes: gRPC clients map it to UNKNOWN.
        c("grpc_status_unknown_code", Agent, with_trailers(b"grpc-status:17\r\n"), Grpc(2, "")),
        c(
            "grpc_status_huge_number",
            Agent,
            with_trailers(b"grpc-status:99999999999999999999\r\n"),
            Grpc(13, "invalid grpc-status"),
        ),
        c("grpc_status_negative", Agent, with_trailers(b"grpc-status:-1\r\n"), Grpc(13, "invalid grpc-status")),
        c("grpc_status_missing", Agent, with_trailers(b"x-other:1\r\n"), Grpc(13, "no grpc-status")),
        c(
            "trailers_only_bad_status",
            Agent,
            b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ngrpc-status: ok\r\ncontent-length: 0\r\n\r\n"
                .to_vec(),
            Grpc(13, "without grpc-status"),
        ),
        // Envoy's HTTP/1.1 upstream codec refuses the 100 KiB head: 503, UNAVAILABLE. The
        // harness does not model that limit: the head reaches the tonic client, which refuses it.
        Case {
            only: Some(Runner::Envoy),
            ..c(
                "huge_response_metadata",
                Agent,
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\nx-huge: {huge}\r\ncontent-length: 0\r\n\r\n")
                    .into_bytes(),
                Grpc(14, ""),
            )
        },
        Case {
            only: Some(Runner::Harness),
            ..c(
                "huge_response_metadata_harness",
                Agent,
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\nx-huge: {huge}\r\ncontent-length: 0\r\n\r\n")
                    .into_bytes(),
                Grpc(8, ""),
            )
        },
        c(
            "html_error_page",
            Agent,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 13\r\n\r\n<html>x</html>"[..].to_vec(),
            Grpc(2, "<html>"),
        ),
        // -- tunnel server: the upgrade --------------------------------------------------------
        c("ws_no_key", Tunnel, ws_without("sec-websocket-key"), Http(400)),
        c("ws_no_version", Tunnel, ws_without("sec-websocket-version"), Http(400)),
        c("ws_wrong_version", Tunnel, ws_with("sec-websocket-version", "sec-websocket-version: 8"), Http(400)),
        c("ws_no_secret", Tunnel, ws_without("x-grpc-bridge-auth"), Http(401)),
        c("ws_wrong_secret", Tunnel, ws_with("x-grpc-bridge-auth", "x-grpc-bridge-auth: wrong-secret-000000000"), Http(403)),
        c("ws_wrong_path", Tunnel, {
            let mut b = good_ws();
            b.splice(4..23, b"/elsewhere/tunnel!!".iter().copied());
            b
        }, Http(404)),
        c("ws_wrong_protocol", Tunnel, ws_with("sec-websocket-protocol", "sec-websocket-protocol: chat"), Http(400)),
        c("ws_data_before_handshake", Tunnel, cat(&[ws_frame(0x82, K, PREFACE), good_ws()]), Http(400)),
        c("ws_huge_handshake", Tunnel, {
            let mut l = good_ws_lines();
            l.push(format!("x-huge: {huge}"));
            ws_head(&l.iter().map(String::as_str).collect::<Vec<_>>())
        }, Http(431)),
        // -- tunnel server: frames after a good upgrade -----------------------------------------
        c("ws_unmasked_client_frame", Tunnel, after_upgrade(ws_frame(0x82, None, b"abc")), WsClose(1002)),
        c("ws_reserved_bit", Tunnel, after_upgrade(ws_frame(0xc2, K, b"abc")), WsClose(1002)),
        c("ws_unknown_opcode", Tunnel, after_upgrade(ws_frame(0x83, K, b"abc")), WsClose(1002)),
        c("ws_unknown_control_opcode", Tunnel, after_upgrade(ws_frame(0x8b, K, b"")), WsClose(1002)),
        c("ws_fragmented_ping", Tunnel, after_upgrade(ws_frame(0x09, K, b"p")), WsClose(1002)),
        c("ws_oversized_ping", Tunnel, after_upgrade(ws_frame(0x89, K, &[7; 126])), WsClose(1002)),
        c("ws_64bit_length_top_bit", Tunnel, after_upgrade(top_bit), WsClose(1002)),
        c("ws_frame_beyond_limit", Tunnel, after_upgrade(over_frame), WsClose(1009)),
        c("ws_continuation_without_start", Tunnel, after_upgrade(ws_frame(0x80, K, b"abc")), WsClose(1002)),
        c("ws_close_code_999", Tunnel, after_upgrade(ws_frame(0x88, K, &close_payload(999, b""))), WsClose(1002)),
        c("ws_close_code_1005", Tunnel, after_upgrade(ws_frame(0x88, K, &close_payload(1005, b""))), WsClose(1002)),
        c("ws_close_one_byte", Tunnel, after_upgrade(ws_frame(0x88, K, &[3])), WsClose(1002)),
        c("ws_close_bad_utf8", Tunnel, after_upgrade(ws_frame(0x88, K, &close_payload(1000, b"\xc3\x28"))), WsClose(1007)),
        c("ws_not_http2_inside", Tunnel, cat(&[good_ws(), ws_frame(0x82, K, b"GET / HTTP/1.1\r\n\r\n")]), WsClose(1002)),
        // -- tunnel client: a hostile WebSocket server ------------------------------------
        c("wsc_wrong_accept", TunnelClient, ws_101("Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n", &[]), Closed),
        c("wsc_no_accept", TunnelClient, ws_101("", &[]), Closed),
        c("wsc_200_instead_of_101", TunnelClient, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi".to_vec(), Closed),
        c("wsc_407_from_a_proxy", TunnelClient, b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n".to_vec(), Closed),
        c("wsc_frames_before_101", TunnelClient, cat(&[ws_frame(0x82, None, b"early"), ws_101(ACCEPT_LINE, &[])]), Closed),
        c("wsc_wrong_subprotocol", TunnelClient, ws_101_proto(ACCEPT_LINE, "chat"), Closed),
        c("wsc_masked_server_frame", TunnelClient, ws_101(ACCEPT_LINE, &ws_frame(0x82, K, b"abc")), Closed),
        c("wsc_reserved_bit", TunnelClient, ws_101(ACCEPT_LINE, &ws_frame(0xc2, None, b"abc")), Closed),
        c("wsc_oversized_ping", TunnelClient, ws_101(ACCEPT_LINE, &ws_frame(0x89, None, &[1; 126])), Closed),
        c("wsc_close_bad_code", TunnelClient, ws_101(ACCEPT_LINE, &ws_frame(0x88, None, &close_payload(999, b""))), Closed),
        c("wsc_64bit_length_top_bit", TunnelClient, ws_101(ACCEPT_LINE, &{
            let mut f = vec![0x82, 127];
            f.extend_from_slice(&(1u64 << 63).to_be_bytes());
            f
        }), Closed),
    ]
}

// ---- running one case -----------------------------------------------------------------------

struct Stack {
    server: SocketAddr,
    agent: SocketAddr,
    tunnel: SocketAddr,
    tunnel_client: SocketAddr,
    ws: Arc<FakeWs>,
    _fake: Arc<FakeUpstream>,
    /// The backend's call records (`Case::backend_token`).
    backend: Arc<grpc_bridge_tests::backend::State>,
}

/// Where reading an answer ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadUntil {
    /// A whole HTTP/1.1 response (its body complete), the peer closing, or 5 s without a byte
    /// (a kept-alive connection with nothing more to say).
    HttpResponse,
    /// The peer closing the connection: Err if it is still open after 5 s without a byte.
    Close,
}

/// Writes `bytes` to a new connection to `addr` and reads the answer.
async fn exchange_until(
    addr: SocketAddr,
    bytes: &[u8],
    until: ReadUntil,
) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    // The peer may answer and close before it read everything (a refused upgrade).
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Err(_) if until == ReadUntil::Close => {
                return Err(format!(
                    "connection still open after 5 s; got {:?}",
                    String::from_utf8_lossy(&out)
                ))
            }
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return Ok(out),
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if until == ReadUntil::HttpResponse && http_complete(&out) {
                    return Ok(out);
                }
            }
        }
    }
}

/// Reads a whole HTTP/1.1 response (see [`ReadUntil::HttpResponse`]).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, String> {
    exchange_until(addr, bytes, ReadUntil::HttpResponse).await
}

fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// A chunked body (HTTP/1.1 trailers after the last chunk are skipped); `None` if incomplete.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let n = usize::from_str_radix(
            std::str::from_utf8(&b[..eol])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        b = &b[eol + 2..];
        if n == 0 {
            // Trailers, then an empty line.
            return (b.starts_with(b"\r\n") || b.windows(4).any(|w| w == b"\r\n\r\n"))
                .then_some(out);
        }
        out.extend_from_slice(b.get(..n)?);
        b = b.get(n + 2..)?;
    }
}

fn http_complete(b: &[u8]) -> bool {
    let Some(end) = head_end(b) else { return false };
    let head = String::from_utf8_lossy(&b[..end]);
    let body = &b[end..];
    if let Some(n) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        return body.len() >= n;
    }
    if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return dechunk(body).is_some();
    }
    false
}

/// (HTTP status, head, the bytes after the head) of an HTTP/1.1 response.
fn split_response(resp: &[u8]) -> Result<(u16, String, &[u8]), String> {
    let end = head_end(resp).ok_or_else(|| {
        format!(
            "no complete response head: {:?}",
            String::from_utf8_lossy(resp)
        )
    })?;
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    Ok((status, head, &resp[end..]))
}

/// (HTTP status, grpc-status, grpc-message, body frames) of a gRPC-web response.
fn grpc_of(resp: &[u8]) -> Result<(u16, Option<u32>, String, Vec<u8>), String> {
    let (status, head, rest) = split_response(resp)?;
    let chunked = header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let body = if chunked {
        dechunk(rest).ok_or("bad chunked body")?
    } else {
        rest.to_vec()
    };
    let mut code = header(&head, "grpc-status").and_then(|v| v.parse().ok());
    let mut msg = header(&head, "grpc-message")
        .map(percent_decode)
        .unwrap_or_default();
    let frames = parse_frames(&body).unwrap_or_default();
    if let Some(t) = frames.iter().find(|f| f.is_trailer()) {
        let kv = parse_trailer_block(&t.data);
        code = kv
            .iter()
            .find(|(k, _)| k == "grpc-status")
            .and_then(|(_, v)| v.parse().ok());
        msg = kv
            .iter()
            .find(|(k, _)| k == "grpc-message")
            .map(|(_, v)| percent_decode(v))
            .unwrap_or_default();
    }
    let first = frames
        .iter()
        .find(|f| !f.is_trailer())
        .map(|f| f.data.clone())
        .unwrap_or_default();
    Ok((status, code, msg, first))
}

/// A header the backend must never see: the harness's list, and `transfer-encoding` (the
/// HTTP/1.1 hop's framing must not leak into the backend's HTTP/2 request).
fn forbidden(name: &str) -> bool {
    HEADERS_NEVER_UPSTREAM.contains(&name) || name == "transfer-encoding"
}

fn check_grpc(got: (u16, Option<u32>, String, Vec<u8>), expect: &Expect) -> Result<String, String> {
    let (status, code, msg, first) = got;
    match expect {
        Expect::Grpc(want, sub) => {
            if status != 200 || code != Some(*want) || !msg.contains(sub) {
                return Err(format!("got HTTP {status} grpc-status {code:?} {msg:?}; want {want} containing {sub:?}"));
            }
            Ok(format!("grpc-status {want} {msg:?}"))
        }
        Expect::HttpGrpc(http, want, sub) => {
            if status != *http || code != Some(*want) || !msg.contains(sub) {
                return Err(format!(
                    "got HTTP {status} grpc-status {code:?} {msg:?}; want HTTP {http}, {want} containing {sub:?}"
                ));
            }
            Ok(format!("HTTP {http} grpc-status {want} {msg:?}"))
        }
        Expect::CleanOk => {
            if status != 200 || code != Some(0) {
                return Err(format!(
                    "got HTTP {status} grpc-status {code:?} {msg:?}; want OK"
                ));
            }
            let r = UnaryResponse::decode(first.as_slice()).map_err(|e| format!("decode: {e}"))?;
            let seen: Vec<String> = r
                .request_metadata
                .iter()
                .map(|m| m.key.to_ascii_lowercase())
                .collect();
            let bad: Vec<&String> = seen
                .iter()
                .filter(|k| forbidden(k) || (k.as_str() == "te"))
                .collect();
            // te: trailers is what gRPC needs; anything else is a leak.
            let te_ok = r
                .request_metadata
                .iter()
                .filter(|m| m.key == "te")
                .all(|m| m.value == b"trailers");
            if bad.iter().any(|k| k.as_str() != "te") || !te_ok {
                return Err(format!("the backend saw {bad:?} (all: {seen:?})"));
            }
            Ok(format!("OK; backend saw only {seen:?}"))
        }
        Expect::Http(want) => {
            if status != *want {
                return Err(format!(
                    "got HTTP {status} (grpc-status {code:?} {msg:?}); want {want}"
                ));
            }
            Ok(format!("HTTP {want}"))
        }
        Expect::WsClose(_) | Expect::Closed => Err("not an HTTP case".into()),
    }
}

async fn run_server(addr: SocketAddr, bytes: &[u8], expect: &Expect) -> Result<String, String> {
    let resp = exchange(addr, bytes).await?;
    let head = String::from_utf8_lossy(&resp[..head_end(&resp).unwrap_or(resp.len())]).into_owned();
    check_grpc(grpc_of(&resp)?, expect).map_err(|e| format!("{e}\n    response head: {head:?}"))
}

async fn run_agent(stack: &Stack, name: &str, expect: &Expect) -> Result<String, String> {
    run_grpc_call(stack.agent, Some(name), expect).await
}

/// A tonic unary call (scenario `hostile:<name>` for the scripted upstream); connection
/// failures count as UNAVAILABLE, as a gRPC client reports them.
async fn run_grpc_call(
    addr: SocketAddr,
    scenario: Option<&str>,
    expect: &Expect,
) -> Result<String, String> {
    let mut req = tonic::Request::new(UnaryRequest {
        payload: b"x".to_vec(),
        ..Default::default()
    });
    if let Some(name) = scenario {
        req.metadata_mut().insert(
            "x-fake-scenario",
            format!("hostile:{name}").parse().unwrap(),
        );
    }
    let got = match grpc_bridge_tests::cases::connect(addr).await {
        Ok(mut client) => timeout(Duration::from_secs(10), client.unary(req))
            .await
            .map_err(|_| "no answer in 10 s".to_string())?,
        Err(e) => Err(tonic::Status::unavailable(e)),
    };
    let (code, msg) = match got {
        Ok(_) => (0u32, String::new()),
        Err(s) => (s.code() as u32, s.message().to_string()),
    };
    match expect {
        Expect::Grpc(want, sub) if code == *want && msg.contains(sub) => {
            Ok(format!("{:?} {msg:?}", tonic::Code::from(code as i32)))
        }
        _ => Err(format!(
            "got {:?} {msg:?}; want {expect:?}",
            tonic::Code::from(code as i32)
        )),
    }
}

/// An HTTP/2 client's first bytes to the tunnel client; the connection must close with nothing
/// delivered.
async fn run_tunnel_client(addr: SocketAddr, expect: &Expect) -> Result<String, String> {
    let mut first = PREFACE.to_vec();
    first.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    let got = exchange_until(addr, &first, ReadUntil::Close).await?;
    match expect {
        Expect::Closed if got.is_empty() => Ok("client connection closed, nothing passed".into()),
        _ => Err(format!(
            "got {:?} before the close; want {expect:?}",
            String::from_utf8_lossy(&got)
        )),
    }
}

/// Reads from a tunnel connection until it closes; returns (HTTP status, close code if any).
async fn run_tunnel(addr: SocketAddr, bytes: &[u8], expect: &Expect) -> Result<String, String> {
    let resp = exchange_until(addr, bytes, ReadUntil::Close).await?;
    let (status, head, frames) = split_response(&resp)?;
    match expect {
        Expect::Http(want) if status == *want => Ok(format!("HTTP {want}")),
        Expect::WsClose(want) => {
            if status != 101 {
                return Err(format!("upgrade answered {status}, want 101"));
            }
            let close = server_frames(frames)?.into_iter().find(|(op, _)| *op == 8);
            let code = close
                .as_ref()
                .and_then(|(_, p)| p.get(..2))
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            if code != Some(*want) {
                return Err(format!("close code {code:?}, want {want}"));
            }
            let reason = close
                .map(|(_, p)| String::from_utf8_lossy(&p[2..]).into_owned())
                .unwrap_or_default();
            Ok(format!("101, then close {want} {reason:?}"))
        }
        _ => Err(format!("got HTTP {status}; want {expect:?}: {head:?}")),
    }
}

/// Unmasked server frames: (opcode, payload).
fn server_frames(mut b: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let op = b[0] & 0x0f;
        if b[1] & 0x80 != 0 {
            return Err("masked server frame".into());
        }
        let (len, off) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n if n < 126 => (n as usize, 2),
            _ => break,
        };
        let Some(p) = b.get(off..off + len) else {
            break;
        };
        out.push((op, p.to_vec()));
        b = &b[off + len..];
    }
    Ok(out)
}

/// A tonic unary call to `addr` that must answer `want` within 10 s.
async fn good_unary(addr: SocketAddr, payload: &[u8], want: &[u8]) -> Result<(), String> {
    let mut client = grpc_bridge_tests::cases::connect(addr).await?;
    let r = timeout(
        Duration::from_secs(10),
        client.unary(UnaryRequest {
            payload: payload.to_vec(),
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| "no answer in 10 s".to_string())?
    .map_err(|s| format!("good call failed: {s:?}"))?;
    (r.get_ref().payload == want)
        .then_some(())
        .ok_or_else(|| format!("good call got {:?}", r.get_ref()))
}

/// The good request after each case: it must succeed on the same listener.
async fn good_request(stack: &Stack, target: Target) -> Result<(), String> {
    match target {
        Target::Server => {
            let r = grpc_of(&exchange(stack.server, &web(&unary_body(b"good"))).await?)?;
            check_grpc(r, &Expect::Grpc(0, "")).map(|_| ())
        }
        Target::Agent => good_unary(stack.agent, b"x", b"fake").await,
        // Through the tunnel client, the splicing FakeWs and the tunnel server to the backend.
        Target::TunnelClient => good_unary(stack.tunnel_client, b"tc", b"tc").await,
        Target::Tunnel => {
            // A good upgrade: 101, then the backend's HTTP/2 SETTINGS in a binary frame.
            let mut s = TcpStream::connect(stack.tunnel)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(&good_ws()).await.map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
                    .await
                    .map_err(|_| {
                        format!(
                            "no 101 and SETTINGS within 5 s: {:?}",
                            String::from_utf8_lossy(&got)
                        )
                    })?
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err(format!("closed: {:?}", String::from_utf8_lossy(&got)));
                }
                got.extend_from_slice(&buf[..n]);
                if let Some(end) = head_end(&got) {
                    if !got.starts_with(b"HTTP/1.1 101") {
                        return Err(format!(
                            "good upgrade answered {:?}",
                            String::from_utf8_lossy(&got[..end])
                        ));
                    }
                    let frames = server_frames(&got[end..])?;
                    // HTTP/2 frame type 4 = SETTINGS at byte 3 of the frame header.
                    if frames
                        .iter()
                        .any(|(op, p)| *op == 2 && p.get(3) == Some(&4))
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn run_all(stack: &Stack, runner: Runner) -> (usize, Vec<String>, String) {
    let mut failures = Vec::new();
    let mut report = String::new();
    let mut ran = 0;
    for case in cases() {
        if case.only.is_some_and(|o| o != runner) {
            continue;
        }
        ran += 1;
        let r = match case.target {
            Target::Server => run_server(stack.server, &case.bytes, &case.expect).await,
            Target::Agent => run_agent(stack, case.name, &case.expect).await,
            Target::Tunnel => run_tunnel(stack.tunnel, &case.bytes, &case.expect).await,
            Target::TunnelClient => {
                *stack.ws.script.lock().unwrap() = Some(case.bytes.clone());
                let r = run_tunnel_client(stack.tunnel_client, &case.expect).await;
                *stack.ws.script.lock().unwrap() = None;
                r
            }
        };
        let r = match (r, &case.backend_token) {
            (Ok(what), Some(token)) => {
                let seen = stack.backend.call(token).is_some();
                match (&case.expect, seen) {
                    (Expect::CleanOk, true) => Ok(format!("{what}; the backend recorded the call")),
                    (Expect::CleanOk, false) => {
                        Err(format!("{what}; but the backend never recorded {token}"))
                    }
                    (_, false) => Ok(format!("{what}; the backend never saw the call")),
                    (_, true) => Err(format!("{what}; but the refused call reached the backend")),
                }
            }
            (r, _) => r,
        };
        let after = good_request(stack, case.target).await;
        let line = match (&r, &after) {
            (Ok(what), Ok(())) => format!(
                "ok   {:?} {}: {what}; next good request ok",
                case.target, case.name
            ),
            (Err(e), _) => format!("FAIL {:?} {}: {e}", case.target, case.name),
            (Ok(what), Err(e)) => format!(
                "FAIL {:?} {}: {what}; but the next good request failed: {e}",
                case.target, case.name
            ),
        };
        if r.is_err() || after.is_err() {
            failures.push(line.clone());
        }
        report.push_str(&line);
        report.push('\n');
    }
    (ran, failures, report)
}

/// Runs every case against `stack` in `runner` and prints the report; asserts that none failed
/// (the failure message ends with `logs()`) and that at least 40 ran.
fn check_all(
    rt: &tokio::runtime::Runtime,
    stack: &Stack,
    runner: Runner,
    logs: impl FnOnce() -> String,
) {
    let (ran, failures, report) = rt.block_on(run_all(stack, runner));
    println!("{report}");
    let runner_name = match runner {
        Runner::Envoy => "Envoy",
        Runner::Harness => "the harness",
    };
    assert!(
        failures.is_empty(),
        "{} of {ran} hostile cases failed in {runner_name}:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        logs()
    );
    assert!(ran >= 40, "only {ran} cases");
}

/// The scripted upstream answers `hostile:<case>` with that case's raw bytes.
fn start_fake(rt: &tokio::runtime::Runtime) -> Arc<FakeUpstream> {
    let table: std::collections::HashMap<String, Vec<u8>> = cases()
        .into_iter()
        .filter(|c| c.target == Target::Agent)
        .map(|c| (format!("hostile:{}", c.name), c.bytes))
        .collect();
    Arc::new(
        rt.block_on(FakeUpstream::start_with(Arc::new(move |scenario: &str| {
            table.get(scenario).cloned()
        }))),
    )
}

#[test]
fn hostile_inputs_in_envoy() {
    // Envoy loads wasm_path() itself; fail early, naming the fix, if it is not built.
    built_wasm_path();
    let rt = rt();
    let backend = Backend::spawn();
    let fake = start_fake(&rt);
    let start = |name: &str, template: &str, vars: &[(&str, String)]| {
        Envoy::start_local(&format!("hostile-{name}"), template, vars)
            .unwrap_or_else(|e| panic!("{name} Envoy: {e}"))
    };
    let max_message = ("MAX_MESSAGE_BYTES", MAX_MESSAGE.to_string());
    let to_backend = ("BACKEND_PORT", backend.addr.port().to_string());
    let (server_auth, agent_auth) = (("AUTH", SERVER_AUTH.into()), ("AUTH", AGENT_AUTH.into()));
    let server = start(
        "server",
        "server.yaml",
        &[to_backend.clone(), max_message.clone(), server_auth.clone()],
    );
    let agent = start(
        "agent",
        "agent.yaml",
        &[
            ("UPSTREAM_PORT", fake.addr.port().to_string()),
            max_message,
            agent_auth.clone(),
        ],
    );
    let tunnel = start("tunnel", "tunnel-server.yaml", &[to_backend, server_auth]);
    let tunnel_addr = tunnel
        .listener_addr("tunnel_server")
        .expect("tunnel listener");
    let ws = Arc::new(
        rt.block_on(FakeWs::start(Arc::new(std::sync::Mutex::new(Some(
            tunnel_addr,
        ))))),
    );
    let tunnel_client = start(
        "tunnel-client",
        "tunnel-client.yaml",
        &[
            ("UPSTREAM_PORT", ws.addr.port().to_string()),
            ("TUNNEL_HOST", "bridge.test".into()),
            agent_auth,
        ],
    );
    let stack = Stack {
        server: server
            .listener_addr("bridge_server")
            .expect("server listener"),
        agent: agent.listener_addr("bridge_agent").expect("agent listener"),
        tunnel: tunnel_addr,
        tunnel_client: tunnel_client
            .listener_addr("tunnel_client")
            .expect("tunnel client listener"),
        ws,
        _fake: fake,
        backend: backend.state.clone(),
    };
    check_all(&rt, &stack, Runner::Envoy, || {
        format!(
            "server log:\n{}\nagent log:\n{}\ntunnel log:\n{}",
            server.log_tail(40),
            agent.log_tail(40),
            tunnel.log_tail(40)
        )
    });
    // Secrets never reach a log (the filter logs refusals and local replies at info).
    for (name, e) in [
        ("server", &server),
        ("agent", &agent),
        ("tunnel server", &tunnel),
        ("tunnel client", &tunnel_client),
    ] {
        let log = e.process.log();
        assert!(
            !log.contains(SECRET) && !log.contains("rotated-secret"),
            "the {name} Envoy logged a secret"
        );
        assert!(
            log.contains("grpc-bridge"),
            "the {name} Envoy log has no filter lines: is the check meaningful?"
        );
    }
    drop(tunnel_client);
    // Nothing reached the backend from a refused agent claim: see the CleanOk cases for the
    // headers; the filter never panicked (the good requests after each case prove it).
}

#[test]
fn hostile_inputs_in_the_harness() {
    use host_harness::proxy::{self, Protocol, ProxyConfig};
    let wasm = built_wasm_path();
    let rt = rt();
    let backend = Backend::spawn();
    let fake = start_fake(&rt);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // The same configuration as the Envoy runner's templates render.
    let role = |role: &str, more: &str, auth: &str| -> Vec<u8> {
        format!(r#"{{"role":"{role}"{more},"auth":{auth}}}"#).into_bytes()
    };
    let limit = format!(r#","max_message_bytes":{MAX_MESSAGE}"#);
    let cfg = |json: Vec<u8>, up: SocketAddr| ProxyConfig::new(&wasm, json, any, up);
    // The HTTP roles: HTTP/1.1 with trailers enabled on one side (the server role's clients,
    // the agent's upstream), h2c on the other, as in the Envoy templates.
    let http_role = |json: Vec<u8>, up: SocketAddr, http1_downstream: bool| {
        let (h1, h2) = (Protocol::Http1, Protocol::H2c);
        let (down, upstream) = if http1_downstream { (h1, h2) } else { (h2, h1) };
        cfg(json, up)
            .protocols(down, upstream)
            .http1_trailers(http1_downstream, !http1_downstream)
    };
    let (server, agent, tunnel, tunnel_client, ws) = rt.block_on(async {
        let start = |cfg: ProxyConfig, what: &'static str| async move {
            proxy::start(cfg)
                .await
                .unwrap_or_else(|e| panic!("{what} proxy: {e:?}"))
        };
        let server_cfg = http_role(role("server", &limit, SERVER_AUTH), backend.addr, true);
        let server = start(server_cfg, "server").await;
        let agent = start(
            http_role(role("agent", &limit, AGENT_AUTH), fake.addr, false),
            "agent",
        )
        .await;
        let tunnel = start(
            cfg(role("tunnel_server", "", SERVER_AUTH), backend.addr),
            "tunnel",
        )
        .await;
        let ws =
            Arc::new(FakeWs::start(Arc::new(std::sync::Mutex::new(Some(tunnel.local_addr)))).await);
        let tunnel_client = start(
            cfg(
                role(
                    "tunnel_client",
                    r#","tunnel_host":"bridge.test""#,
                    AGENT_AUTH,
                ),
                ws.addr,
            ),
            "tunnel client",
        )
        .await;
        (server, agent, tunnel, tunnel_client, ws)
    });
    let (server, agent, tunnel, tunnel_client, ws) = (server, agent, tunnel, tunnel_client, ws);
    let stack = Stack {
        server: server.local_addr,
        agent: agent.local_addr,
        tunnel: tunnel.local_addr,
        tunnel_client: tunnel_client.local_addr,
        ws,
        _fake: fake,
        backend: backend.state.clone(),
    };
    check_all(&rt, &stack, Runner::Harness, String::new);
    drop((server, agent, tunnel, tunnel_client));
}
