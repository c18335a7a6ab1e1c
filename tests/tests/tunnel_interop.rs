//! Interoperability of the tunnel's WebSocket framing with an implementation this project did
//! not write: the Python `websockets` library (PyPI), against the filter running in Envoy.
//! The Python side is `tests/py/ws_interop.py`; these tests assert on its JSON.
//!
//! - `websockets_client_against_tunnel_server`: a `websockets` client talks to our
//!   tunnel_server Envoy (-> tonic backend): handshake with our subprotocol, an HTTP/2 client
//!   preface + SETTINGS out, the backend's SETTINGS (frame type 4) back, ping -> pong, close
//!   1000 -> close reply 1000.
//! - `tunnel_client_against_websockets_server`: our tunnel_client Envoy connects to a
//!   `websockets` server: path, Host, subprotocol; masked data and ping frames accepted by the
//!   library; the first message starts with the HTTP/2 preface the raw TCP client sent; the
//!   server's ping is answered; its close 1000 is answered with 1000 and the client's TCP
//!   connection is closed.
//! - `tunnel_server_refusals_reach_a_websockets_client`: refused upgrades (wrong path, wrong
//!   subprotocol) get their HTTP status (404, 400) to the library client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use grpc_bridge_tests::envoy::Envoy;
use grpc_bridge_tests::py::{run_json, PyProcess};
use grpc_bridge_tests::topology::{Topology, Transport};
use grpc_bridge_tests::util::wait_until;
use serde_json::Value;

const SUBPROTOCOL: &str = "grpc-bridge.tunnel.v1";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Collects failed expectations so one run reports all of them.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn expect(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }
}

fn ms(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// The secret the test tunnel_server requires (tests/src/envoy.rs), as a `--header` argument.
fn auth_header() -> String {
    format!(
        "x-grpc-bridge-auth: {}",
        grpc_bridge_tests::envoy::TEST_SECRET
    )
}

/// tunnel_server Envoy in front of the tonic backend (no agent, no hop).
fn tunnel_server() -> Topology {
    Topology::builder()
        .transport(Transport::WebSocketTunnel)
        .hop(false)
        .agent(false)
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Server Envoy's listener and backend connections back to 0 active.
fn server_closed(topo: &Topology, within: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    let read = || {
        (
            topo.server
                .listener_stat("tunnel_server", "downstream_cx_active"),
            topo.server.stat("cluster.grpc_backend.upstream_cx_active"),
        )
    };
    wait_until(within, || (read() == (Some(0), Some(0))).then_some(()))
        .map(|_| t0.elapsed())
        .ok_or_else(|| format!("server Envoy still has connections open after {within:?}: listener/backend active {:?}", read()))
}

#[test]
fn websockets_client_against_tunnel_server() {
    let topo = tunnel_server();
    let url = format!("ws://{}/grpc-bridge/tunnel", topo.server_addr);
    let v = run_json(
        "ws_interop.py",
        &["client", "--url", &url, "--header", &auth_header()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Checks::default();
    c.expect(
        v["error"].is_null(),
        format!("library error: {}", v["error"]),
    );
    c.expect(
        v["response_status"] == 101,
        format!("handshake status {}", v["response_status"]),
    );
    c.expect(
        v["subprotocol"] == SUBPROTOCOL,
        format!("subprotocol {}", v["subprotocol"]),
    );
    c.expect(
        v["message_kinds"]
            .as_array()
            .is_some_and(|k| !k.is_empty() && k.iter().all(|k| k == "binary")),
        format!(
            "messages from the server: {} (want binary only)",
            v["message_kinds"]
        ),
    );
    c.expect(
        v["first_frame"]["type"] == "SETTINGS" && v["first_frame"]["flags"] == 0,
        format!(
            "first HTTP/2 frame {} (want the backend's SETTINGS, type 4, no ACK)",
            v["first_frame"]
        ),
    );
    c.expect(
        v["settings_ack_received"] == true,
        "the backend's ACK of the client's SETTINGS never came back",
    );
    // With the backend idle, a pong arrives only if the tunnel answers the ping itself: the
    // client waits for it with a 2 s deadline. Its delay is reported, not asserted.
    c.expect(
        ms(&v["pong_ms"]).is_some(),
        format!(
            "pong: {} ms (want a pong with the backend idle; after backend bytes: {} ms)",
            v["pong_ms"], v["pong_after_backend_bytes_ms"]
        ),
    );
    c.expect(
        v["close_received_code"] == 1000 && v["close_code"] == 1000,
        format!(
            "close: sent {}, close reply code {} (want 1000), library close_code {}",
            v["close_sent_code"], v["close_received_code"], v["close_code"]
        ),
    );
    // The close reply's arrival within the library's 3 s close_timeout is the event.
    c.expect(
        ms(&v["close_reply_ms"]).is_some(),
        format!(
            "close reply after {} ms (want a close frame back)",
            v["close_reply_ms"]
        ),
    );
    let closed = server_closed(&topo, Duration::from_secs(5));
    if let Err(e) = &closed {
        c.0.push(e.clone());
    }
    if !c.0.is_empty() {
        panic!(
            "websockets client -> tunnel_server:\n  {}\nJSON: {v}\npath: {}\n{}",
            c.0.join("\n  "),
            topo.path,
            topo.logs(40)
        );
    }
    println!(
        "websockets client -> tunnel_server ({}): 101 with {SUBPROTOCOL}; HTTP/2 frames back: {}; \
         pong after {} ms; close reply 1000 after {} ms; TCP closed after {} ms (library's \
         close_timeout 3 s: the server does not close TCP after the close handshake); server \
         connections closed {} ms later",
        topo.path,
        v["h2_frames"],
        v["pong_ms"],
        v["close_reply_ms"],
        v["tcp_closed_ms"],
        closed.unwrap().as_millis()
    );
}

#[test]
fn tunnel_client_against_websockets_server() {
    const HOST: &str = "tunnel.example.test:8443";
    let mut py = PyProcess::spawn("ws_interop.py", &["server", "--hold-ms", "700"])
        .unwrap_or_else(|e| panic!("{e}"));
    let port = py
        .wait_event("listening", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"))["port"]
        .as_u64()
        .expect("port");
    let agent = Envoy::start_local(
        "agent",
        "tunnel-client.yaml",
        &[
            ("UPSTREAM_HOST", "127.0.0.1".into()),
            ("UPSTREAM_PORT", port.to_string()),
            ("TUNNEL_HOST", HOST.into()),
            ("PING_INTERVAL_MS", "200".into()),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let addr = agent.listener_addr("tunnel_client").unwrap();
    // A raw TCP "gRPC client": the HTTP/2 preface and an empty SETTINGS, then it only reads.
    let mut sock = TcpStream::connect(addr).unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend_from_slice(EMPTY_SETTINGS);
    sock.write_all(&hello).unwrap();
    let reader = std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let mut got = Vec::new();
        let r = sock.read_to_end(&mut got);
        (
            r.map(|_| ()).map_err(|e| e.to_string()),
            got,
            Instant::now(),
        )
    });
    let v = py.wait_event("result", Duration::from_secs(20));
    let result_at = Instant::now();
    let mut c = Checks::default();
    let v = v.unwrap_or_else(|e| {
        c.0.push(e);
        Value::Null
    });
    c.expect(
        v["error"].is_null(),
        format!("server-side error: {}", v["error"]),
    );
    let req = &v["request"];
    c.expect(
        req["path"] == "/grpc-bridge/tunnel",
        format!("path {}", req["path"]),
    );
    c.expect(
        req["host"] == HOST,
        format!("Host {} (want {HOST})", req["host"]),
    );
    c.expect(
        req["protocols"].as_array().is_some_and(|p| {
            p.iter().any(|p| {
                p.as_str()
                    .is_some_and(|p| p.split(',').any(|x| x.trim() == SUBPROTOCOL))
            })
        }),
        format!("Sec-WebSocket-Protocol offered: {}", req["protocols"]),
    );
    c.expect(
        req["upgrade"]
            .as_str()
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
            && req["version"] == "13",
        format!(
            "Upgrade {}, Sec-WebSocket-Version {}",
            req["upgrade"], req["version"]
        ),
    );
    c.expect(
        v["subprotocol"] == SUBPROTOCOL,
        format!("negotiated subprotocol {}", v["subprotocol"]),
    );
    c.expect(
        v["first_message_kind"] == "binary" && v["first_message_starts_with_preface"] == true,
        format!(
            "first message: {} {} bytes, starts {} (want binary starting with the HTTP/2 preface)",
            v["first_message_kind"], v["first_message_len"], v["first_message_head"]
        ),
    );
    let pings = v["frames_received"]["PING"].as_u64().unwrap_or(0);
    c.expect(
        pings >= 1 && v["ping_payloads"][0] == "grpc-bridge keepalive",
        format!(
            "keepalive pings received in 700 ms of silence: {pings} {} (ping_interval_ms 200)",
            v["ping_payloads"]
        ),
    );
    // The server waits for the pong with a 3 s deadline; its arrival is the event, its delay
    // is not asserted (timings belong in benchmarks).
    c.expect(
        ms(&v["pong_ms"]).is_some(),
        format!(
            "pong to the server's ping: {} ms (want a pong within the server's 3 s deadline)",
            v["pong_ms"]
        ),
    );
    c.expect(
        v["close_received_code"] == 1000,
        format!("close reply code {} (want 1000)", v["close_received_code"]),
    );
    // The tunnel is closed: so is the gRPC client's connection.
    // read_to_end is Ok only at EOF; the socket's 20 s read timeout is the deadline.
    let (read, got, eof_at) = reader.join().unwrap();
    c.expect(
        read.is_ok(),
        format!(
            "raw client: {read:?} {:?} after the result (want EOF)",
            eof_at.saturating_duration_since(result_at)
        ),
    );
    c.expect(
        got.is_empty(),
        format!(
            "raw client received {} bytes from a server that sent no data",
            got.len()
        ),
    );
    let closed = wait_until(Duration::from_secs(5), || {
        let a = agent.listener_stat("tunnel_client", "downstream_cx_active");
        let u = agent.stat("cluster.tunnel_upstream.upstream_cx_active");
        (a == Some(0) && u == Some(0)).then_some(())
    });
    c.expect(
        closed.is_some(),
        "agent Envoy still has connections open 5 s after the close",
    );
    if !c.0.is_empty() {
        panic!(
            "tunnel_client -> websockets server:\n  {}\nJSON: {v}\n--- agent Envoy ---\n{}\n--- python ---\n{}",
            c.0.join("\n  "),
            agent.log_tail(40),
            py.process.log_tail(40)
        );
    }
    println!(
        "tunnel_client -> websockets server: upgrade {} Host {} protocols {}; first message {} bytes \
         (HTTP/2 preface first); {pings} keepalive pings in 700 ms; pong after {} ms; close 1000 \
         answered with {} after {} ms; raw client closed; frames received {}",
        req["path"],
        req["host"],
        req["protocols"],
        v["first_message_len"],
        v["pong_ms"],
        v["close_received_code"],
        v["close_ms"],
        v["frames_received"]
    );
}

#[test]
fn tunnel_server_refusals_reach_a_websockets_client() {
    let topo = tunnel_server();
    let port = topo.server_addr.port().to_string();
    let v = run_json(
        "ws_interop.py",
        &[
            "refusals",
            "--port",
            &port,
            "--delay-ms",
            "100",
            "--header",
            &auth_header(),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Checks::default();
    for (case, want) in [("wrong_path", 404), ("wrong_subprotocol", 400)] {
        let r = &v[case];
        c.expect(
            r["status"] == want && ms(&r["ms"]).is_some_and(|m| m < 2000.0),
            format!("{case}: want HTTP {want} within 2 s, got {r}"),
        );
    }
    if !c.0.is_empty() {
        panic!(
            "refused upgrades sent 100 ms after connecting (the backend has spoken by then):\n  {}\nJSON: {v}\n{}",
            c.0.join("\n  "),
            topo.logs(40)
        );
    }
    println!("refusals: {v}");
}
