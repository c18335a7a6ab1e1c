//! A real browser: the `grpc-web` npm package (tests/browser/, bundled with esbuild) in headless
//! Chromium calls the server role (`envoy/server.yaml`) from another origin, unary and server
//! streaming, binary and text, with metadata, trailers and error statuses; Envoy's CORS filter,
//! configured through the template's CORS_* variables, answers the preflights. Preflights for
//! allowed and refused origins are also checked byte by byte.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use grpc_bridge_tests::browser::{bundle, chromium, StaticServer};
use grpc_bridge_tests::topology::{ServerSide, Topology};
use serde_json::Value;

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == ':' || c == '/' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

fn server_for(origin: &str) -> Topology {
    server_exposing(origin, "grpc-status,grpc-message,x-hdr")
}

fn server_exposing(origin: &str, expose: &str) -> Topology {
    Topology::builder()
        .server(ServerSide::Wasm)
        .hop(false)
        .agent(false)
        .server_var("CORS_ALLOW_ORIGIN_REGEX", &regex_escape(origin))
        .server_var(
            "CORS_ALLOW_HEADERS",
            "content-type,x-grpc-web,x-user-agent,grpc-timeout,x-client-md",
        )
        .server_var("CORS_EXPOSE_HEADERS", expose)
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A raw request; returns the response head, lowercased header names.
fn raw_head(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = vec![];
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "connection closed before the response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn preflight(addr: SocketAddr, origin: &str, headers: &str) -> (u16, Vec<(String, String)>) {
    raw_head(
        addr,
        &format!(
            "OPTIONS /bridge.test.BridgeTest/Unary HTTP/1.1\r\nhost: {addr}\r\norigin: {origin}\r\n\
             access-control-request-method: POST\r\naccess-control-request-headers: {headers}\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n"
        ),
    )
}

#[test]
fn cors_preflight_allowed_and_refused_origins() {
    let allowed = "http://127.0.0.1:4321";
    let topo = server_for(allowed);
    let (status, h) = preflight(
        topo.server_addr,
        allowed,
        "content-type,x-grpc-web,x-user-agent,x-client-md",
    );
    assert_eq!(status, 200, "{h:?}");
    assert_eq!(
        get(&h, "access-control-allow-origin"),
        Some(allowed),
        "{h:?}"
    );
    let allow_headers = get(&h, "access-control-allow-headers").unwrap_or_default();
    for name in ["x-grpc-web", "x-user-agent", "x-client-md", "content-type"] {
        assert!(
            allow_headers.contains(name),
            "{name} not in {allow_headers:?}"
        );
    }
    assert!(
        get(&h, "access-control-allow-methods")
            .unwrap_or_default()
            .contains("POST"),
        "{h:?}"
    );

    for refused in ["http://127.0.0.1:4322", "http://evil.example", "null"] {
        let (_, h) = preflight(topo.server_addr, refused, "content-type,x-grpc-web");
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            None,
            "{refused}: {h:?}"
        );
    }

    // The default configuration (no CORS_ALLOW_ORIGIN_REGEX) allows no origin at all.
    let topo = Topology::builder()
        .server(ServerSide::Wasm)
        .hop(false)
        .agent(false)
        .start()
        .unwrap();
    let (_, h) = preflight(topo.server_addr, allowed, "content-type,x-grpc-web");
    assert_eq!(get(&h, "access-control-allow-origin"), None, "{h:?}");
}

/// Bundles the client, serves it from its own origin, builds the server Envoy for that origin
/// with `server`, and returns what the page reported (run for `formats`).
fn run_page(server: impl FnOnce(&str) -> Topology, formats: &str) -> Value {
    let dist = tempfile::tempdir().unwrap();
    bundle(dist.path()).unwrap_or_else(|e| panic!("{e}"));
    let page = StaticServer::start(dist.path().to_path_buf()).unwrap();
    let topo = server(&page.origin());
    let url = format!(
        "{}/index.html?server=http://{}&formats={formats}",
        page.origin(),
        topo.server_addr
    );
    let mut browser = chromium(&url).unwrap_or_else(|e| panic!("{e}"));
    let result = page.wait_result(Duration::from_secs(60));
    let _ = browser.check_running();
    let result = result.unwrap_or_else(|| {
        panic!(
            "no result from the page within 60 s; chromium log:\n{}",
            browser.log_tail(40)
        )
    });
    browser.stop();
    let v: Value = serde_json::from_str(&result).unwrap_or_else(|e| panic!("{e}: {result}"));
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
    v
}

/// A Trailers-Only error's status is an HTTP header: without `access-control-expose-headers`
/// for it, the browser cannot read it.
#[test]
fn error_status_needs_cors_expose_headers() {
    let v = run_page(|origin| server_exposing(origin, "x-hdr"), "binary");
    let e = &v["results"]["binary"]["unary_error"];
    // grpc-web (1.5) then reports UNKNOWN "Incomplete response" instead of NOT_FOUND.
    assert_eq!(e["error"]["code"], 2, "{e}");
    assert_eq!(e["error"]["message"], "Incomplete response", "{e}");
    // The same server still delivers what needs no exposed header: a stream's trailer frame.
    let s = &v["results"]["binary"]["stream_error"];
    assert_eq!(s["error"]["code"], 9, "{s}");
}

#[test]
fn grpc_web_npm_client_in_headless_chromium() {
    let v = run_page(server_for, "binary,text");
    let result = v.to_string();
    assert_eq!(v["ok"], Value::Bool(true), "{result}");
    for format in ["binary", "text"] {
        let r = &v["results"][format];
        let ctx = format!("{format}: {r}");

        // Unary: the response, a response header (exposed by CORS), a trailer from the body's
        // trailer frame, request metadata that needed the preflight.
        let u = &r["unary"];
        assert!(u["error"].is_null(), "{ctx}");
        assert_eq!(
            u["messages"][0]["payload"],
            format!("hello from chromium ({format})"),
            "{ctx}"
        );
        assert_eq!(
            u["messages"][0]["requestMetadata"]["x-client-md"], "cm",
            "{ctx}"
        );
        assert_eq!(u["headers"]["x-hdr"], "hv", "{ctx}");
        assert_eq!(u["status"]["code"], 0, "{ctx}");
        assert_eq!(u["status"]["metadata"]["x-trl"], "tv", "{ctx}");

        // Trailers-Only error: grpc-status/grpc-message are response headers (exposed by CORS).
        let e = &r["unary_error"];
        assert_eq!(e["error"]["code"], 5, "{ctx}");
        assert_eq!(e["error"]["message"], "no such thing", "{ctx}");

        // Server streaming: every message, then the status and trailers from the trailer frame.
        let s = &r["stream"];
        assert!(s["error"].is_null(), "{ctx}");
        let idx: Vec<i64> = s["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["index"].as_i64().unwrap())
            .collect();
        assert_eq!(idx, vec![0, 1, 2], "{ctx}");
        assert!(
            s["messages"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["payloadSize"] == 8),
            "{ctx}"
        );
        assert_eq!(s["status"]["code"], 0, "{ctx}");
        assert_eq!(s["status"]["metadata"]["x-trl"], "st", "{ctx}");

        // A stream that fails after two messages.
        let se = &r["stream_error"];
        assert_eq!(se["messages"].as_array().map(|m| m.len()), Some(2), "{ctx}");
        assert_eq!(se["error"]["code"], 9, "{ctx}");
        assert_eq!(se["error"]["message"], "stop here", "{ctx}");
    }
}
