//! What one unary call costs the filter in VM crossings: hostcalls (guest -> host) and guest
//! entries (callbacks and the host's `proxy_on_memory_allocate` for returned values). In Envoy
//! 1.40 each crossing costs about a microsecond and the guest's own work much less
//! (docs/BENCHMARKS.md, "Where the agent's CPU goes"), so these counts are the filter's price per
//! call. The budgets are the counts of the current design: a change that adds crossings to the
//! unary path fails here and has to say why.

mod common;

use common::{call_native_backend, grpc_frame};
use host_harness::{body_of, Crossings, Frame, PluginOptions, Scenario};

fn role(config: &str) -> Scenario {
    Scenario::new(PluginOptions::from_file(common::grpc_bridge_wasm()).plugin_config(config))
        .unwrap_or_else(|e| panic!("loading grpc_bridge.wasm: {e}"))
}

fn since(a: Crossings, b: Crossings) -> Crossings {
    Crossings {
        hostcalls: b.hostcalls - a.hostcalls,
        guest_entries: b.guest_entries - a.guest_entries,
    }
}

/// Runs one warm-up call (metric ids get defined, the log level is read) and then `call` once,
/// returning the crossings of the second call only.
fn measure(s: &mut Scenario, call: impl Fn(&mut Scenario)) -> Crossings {
    call(s);
    s.next_stream();
    let before = s.plugin().crossings();
    call(s);
    since(before, s.plugin().crossings())
}

fn agent_unary(s: &mut Scenario) {
    s.request_headers(
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/pkg.Svc/Call"),
            (":authority", "server"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "grpc-rust"),
        ],
        false,
    )
    .request_body(&grpc_frame(0, b"hi"), true);
    let mut web_body = grpc_frame(0, b"yo");
    web_body.extend(grpc_frame(0x80, b"grpc-status:0\r\ngrpc-message:\r\n"));
    s.response_headers(
        &[
            (":status", "200"),
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-bridge", "server"),
        ],
        false,
    )
    .response_body(&web_body, true);
    let down = s.take_downstream();
    assert_eq!(body_of(&down), grpc_frame(0, b"yo"), "{down:?}");
    match down.last() {
        Some(Frame::Trailers(t)) => assert_eq!(t.get("grpc-status"), Some("0"), "{t:?}"),
        other => panic!("expected trailers last, got {other:?}"),
    }
    assert!(s.is_finished());
}

fn server_unary(s: &mut Scenario) {
    let down = call_native_backend(
        s,
        "application/grpc-web+proto",
        &[("x-grpc-web", "1"), ("x-grpc-bridge", "agent")],
    );
    let body = body_of(&down);
    assert!(body.starts_with(&grpc_frame(0, b"yo")), "{down:?}");
    assert_eq!(
        body.get(7),
        Some(&0x80),
        "trailer frame after the message: {down:?}"
    );
}

fn report(what: &str, c: Crossings) {
    eprintln!(
        "call_cost: {what}: {} hostcalls, {} guest entries",
        c.hostcalls, c.guest_entries
    );
}

#[test]
fn agent_unary_call_stays_within_its_crossing_budget() {
    let mut s = role(r#"{"role":"agent"}"#);
    let c = measure(&mut s, agent_unary);
    report("agent unary", c);
    // Request headers: read + write the map (2); response headers: read + write (2); the body
    // chunk: read it, cut the trailer frame (2); the trailers: write the map (1). Guest entries:
    // the 8 stream callbacks Envoy makes anyway (create, request headers and body, response
    // headers and body, log, done, delete) plus one allocation per map or chunk read (3).
    // Before this design: 24 hostcalls and 12 entries.
    assert_eq!(
        c,
        Crossings {
            hostcalls: 7,
            guest_entries: 11
        }
    );
}

#[test]
fn server_unary_call_stays_within_its_crossing_budget() {
    let mut s = role(r#"{"role":"server","auth":"none"}"#);
    let c = measure(&mut s, server_unary);
    report("server unary", c);
    // The pure-wasm server role: header-by-header edits, the hold of the body until the
    // trailers. Envoy's grpc_web filter plus the `server_guard` role is the cheap server
    // (envoy/server-hybrid.yaml). Before the metrics batching: 30 hostcalls.
    assert!(c.hostcalls <= 22 && c.guest_entries <= 15, "{c:?}");
}

/// A native gRPC call passing the `server_guard` role (the bench's `idle` path: the real
/// module in a role that has nothing to do on these calls).
fn native_unary(s: &mut Scenario) {
    let down = call_native_backend(s, "application/grpc", &[("te", "trailers")]);
    assert_eq!(body_of(&down), grpc_frame(0, b"yo"), "{down:?}");
}

#[test]
fn guard_passes_a_native_call_with_one_hostcall() {
    let mut s = role(r#"{"role":"server_guard","auth":"none"}"#);
    let c = measure(&mut s, native_unary);
    report("server_guard, native call", c);
    // One read of the request headers (nothing to remove, so no write) and its allocation;
    // every other callback returns at once.
    assert_eq!(
        c,
        Crossings {
            hostcalls: 1,
            guest_entries: 10
        }
    );
}
