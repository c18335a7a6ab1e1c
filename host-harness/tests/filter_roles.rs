//! The real filter (`grpc_bridge.wasm`) in both HTTP roles, scripted with the scenario API.
//! Fails with "build the filter first with `make build`" when the module is missing.

mod common;

use host_harness::{body_of, Frame, Headers, PluginOptions, Scenario};

fn role(config: &str) -> Scenario {
    load(PluginOptions::from_file(common::grpc_bridge_wasm()).plugin_config(config))
}

/// The filter in role `config` on a connection whose `request.protocol` is `protocol`.
fn role_over(config: &str, protocol: &str) -> Scenario {
    load(
        PluginOptions::from_file(common::grpc_bridge_wasm())
            .plugin_config(config)
            .property("request.protocol", protocol),
    )
}

fn load(options: PluginOptions) -> Scenario {
    Scenario::new(options).unwrap_or_else(|e| panic!("loading grpc_bridge.wasm: {e}"))
}

/// Request headers of a call to `/pkg.Svc/Call` with `content_type`, then `extra`.
fn call<'a>(content_type: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        (":method", "POST"),
        (":path", "/pkg.Svc/Call"),
        ("content-type", content_type),
    ];
    h.extend_from_slice(extra);
    h
}

/// Sends `headers` and one request message ("hi") that ends the request; returns what went
/// upstream.
fn unary_request(s: &mut Scenario, headers: &[(&str, &str)]) -> Vec<Frame> {
    s.request_headers(headers, false)
        .request_body(&grpc_frame(b"hi"), true);
    s.take_upstream()
}

/// Response headers: 200 with `content_type`.
fn ok_with(content_type: &str) -> [(&str, &str); 2] {
    [(":status", "200"), ("content-type", content_type)]
}

/// The content type in the headers of the first frame.
fn content_type(frames: &[Frame]) -> Option<&str> {
    first_headers(frames).get("content-type")
}

fn is_grpc_web(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.starts_with("application/grpc-web"))
}

/// The headers of the first frame, which must be headers.
fn first_headers(frames: &[Frame]) -> &Headers {
    match frames.first() {
        Some(Frame::Headers { headers, .. }) => headers,
        _ => panic!("no headers first: {frames:?}"),
    }
}

/// A gRPC message frame: flag 0, big-endian length, payload.
fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn server_role_turns_grpc_trailers_into_a_grpc_web_trailer_frame() {
    let mut s = role(r#"{"role":"server","auth":"none"}"#);
    let request = call(
        "application/grpc-web+proto",
        &[(":authority", "backend"), ("x-grpc-bridge", "agent")],
    );
    let up = unary_request(&mut s, &request);
    assert_eq!(content_type(&up), Some("application/grpc+proto"), "{up:?}");
    assert_eq!(body_of(&up), grpc_frame(b"hi"));

    s.response_headers(&ok_with("application/grpc+proto"), false)
        .response_body(&grpc_frame(b"yo"), false)
        .response_trailers(&[("grpc-status", "0"), ("grpc-message", "")]);
    s.advance_ms(50);
    let down = s.take_downstream();
    assert!(
        matches!(
            down.first(),
            Some(Frame::Headers {
                end_stream: false,
                ..
            })
        ),
        "{down:?}"
    );
    assert!(is_grpc_web(content_type(&down)), "{down:?}");
    let body = body_of(&down);
    assert!(body.starts_with(&grpc_frame(b"yo")), "{body:?}");
    let trailer = &body[grpc_frame(b"yo").len()..];
    assert_eq!(trailer[0], 0x80, "trailer frame flag: {body:?}");
    assert!(
        String::from_utf8_lossy(&trailer[5..]).contains("grpc-status:0"),
        "{body:?}"
    );
    assert!(s.is_finished());
    assert!(s.plugin().failure().is_none());
}

#[test]
fn agent_role_turns_grpc_into_grpc_web_and_the_trailer_frame_back_into_trailers() {
    let mut s = role(r#"{"role":"agent"}"#);
    let request = call(
        "application/grpc",
        &[(":authority", "server"), ("te", "trailers")],
    );
    let up = unary_request(&mut s, &request);
    assert!(is_grpc_web(content_type(&up)), "{up:?}");

    let mut web_body = grpc_frame(b"yo");
    let block = b"grpc-status:0\r\n";
    web_body.push(0x80);
    web_body.extend_from_slice(&(block.len() as u32).to_be_bytes());
    web_body.extend_from_slice(block);
    s.response_headers(&ok_with("application/grpc-web+proto"), false)
        .response_body(&web_body, true);
    s.advance_ms(50);
    let down = s.take_downstream();
    assert_eq!(body_of(&down), grpc_frame(b"yo"), "{down:?}");
    match down.last() {
        Some(Frame::Trailers(t)) => assert_eq!(t.get("grpc-status"), Some("0")),
        other => panic!("expected trailers last, got {other:?} in {down:?}"),
    }
}

#[test]
fn bad_configuration_is_refused_with_the_filter_message() {
    let err = Scenario::new(
        PluginOptions::from_file(common::grpc_bridge_wasm()).plugin_config(r#"{"role":"nope"}"#),
    )
    .err()
    .expect("must be refused");
    assert!(err.to_string().contains("role"), "{err}");
}

/// Found by the whole-filter fuzz driver: a backend answer that ends at its headers with a gRPC
/// content type but no `grpc-status` must not reach the client as an empty 200.
#[test]
fn server_role_gives_a_status_to_headers_only_answers_without_one() {
    for ct in ["application/grpc", "application/grpc-web+proto"] {
        let mut s = role(r#"{"role":"server","auth":"none"}"#);
        unary_request(&mut s, &call("application/grpc-web+proto", &[]));
        s.response_headers(&ok_with(ct), true);
        let down = s.take_downstream();
        let Frame::Headers {
            headers,
            end_stream: true,
        } = &down[0]
        else {
            panic!("{down:?}")
        };
        assert_eq!(headers.get("grpc-status"), Some("13"), "{ct}: {headers:?}");
        assert!(
            headers
                .get("grpc-message")
                .is_some_and(|m| m.contains("without grpc-status")),
            "{headers:?}"
        );
    }
    // A trailers-only answer that has its status keeps it.
    let mut s = role(r#"{"role":"server","auth":"none"}"#);
    s.request_headers(&call("application/grpc-web+proto", &[]), true);
    s.response_headers(common::TRAILERS_ONLY_NOT_FOUND, true);
    assert_eq!(
        first_headers(&s.take_downstream()).get("grpc-status"),
        Some("5")
    );
}

/// Role `http1_status` (in front of Envoy's grpc_http1_bridge in envoy/server.yaml): a plain
/// HTTP/1.1 gRPC client's response gets its HTTP status from `grpc-status` (NetScaler's table);
/// HTTP/2 gRPC and responses without a status are untouched.
#[test]
fn http1_status_role_maps_grpc_status_to_http_status_for_http1_clients() {
    let (grpc, grpc_proto, web) = (
        "application/grpc",
        "application/grpc+proto",
        "application/grpc-web+proto",
    );
    // (request.protocol, request content type, answer's :status and grpc-status (None: no
    // grpc-status), the :status the client gets)
    type Case<'a> = (&'a str, &'a str, (&'a str, Option<&'a str>), &'a str);
    let cases: &[Case] = &[
        // Envoy's bridge answers 200 for a Trailers-Only error and 503 for other errors.
        ("HTTP/1.1", grpc, ("200", Some("0")), "200"),
        ("HTTP/1.1", grpc, ("200", Some("5")), "404"),
        ("HTTP/1.1", grpc_proto, ("503", Some("14")), "503"),
        ("HTTP/1.0", grpc, ("503", Some("16")), "401"),
        ("HTTP/1.1", grpc, ("503", Some("1")), "499"),
        ("HTTP/1.1", grpc, ("200", Some("99")), "500"),
        // Untouched: HTTP/2, gRPC-web, a status chosen by someone else, no grpc-status.
        ("HTTP/2", grpc, ("200", Some("5")), "200"),
        ("HTTP/1.1", web, ("200", Some("5")), "200"),
        ("HTTP/1.1", grpc, ("429", Some("8")), "429"),
        ("HTTP/1.1", grpc, ("200", None), "200"),
    ];
    for &(protocol, content_type, (http, code), want) in cases {
        let mut s = role_over(r#"{"role":"http1_status"}"#, protocol);
        unary_request(&mut s, &call(content_type, &[]));
        let mut answer = vec![(":status", http), ("content-type", "application/grpc")];
        answer.extend(code.map(|c| ("grpc-status", c)));
        s.response_headers(&answer, true);
        assert_eq!(
            first_headers(&s.take_downstream()).get(":status"),
            Some(want),
            "{protocol} {content_type} answered {http} grpc-status {code:?}"
        );
    }
}

/// Server role, plain HTTP/1.1 gRPC client (its response held by Envoy's grpc_http1_bridge
/// after this filter): past `http1_hold_bytes` or `http1_hold_ms` after the response headers the
/// call ends with a local reply naming the bound (virtual clock for the time bound).
#[test]
fn server_role_bounds_the_hold_of_plain_http1_grpc_clients() {
    let plain = |config: &str, protocol: &str| {
        let mut s = role_over(config, protocol);
        unary_request(&mut s, &call("application/grpc", &[]));
        s.response_headers(&ok_with("application/grpc"), false);
        s
    };
    let reply_status = |s: &Scenario| {
        let r = s.local_reply().expect("local reply");
        // The request is gRPC to Envoy (`application/grpc`), so Envoy writes grpc-status from
        // the code the filter passes (see `send_grpc_error`).
        (
            r.headers
                .get("grpc-status")
                .map(str::to_string)
                .or(r.grpc_status.map(|c| c.to_string())),
            r.headers
                .get("grpc-message")
                .map(str::to_string)
                .unwrap_or_default(),
        )
    };

    // Size: 131072 bytes pass, one more ends the call.
    let mut s = plain(r#"{"role":"server","auth":"none"}"#, "HTTP/1.1");
    s.response_body(&vec![0u8; 131_072], false);
    assert!(s.local_reply().is_none());
    s.response_body(b"x", false);
    let (code, msg) = reply_status(&s);
    assert_eq!(code.as_deref(), Some("8"));
    assert!(msg.contains("http1_hold_bytes"), "{msg}");

    // Time: 999 ms after the response headers nothing happens; at 1000 ms the call ends.
    let mut s = plain(r#"{"role":"server","auth":"none"}"#, "HTTP/1.1");
    s.response_body(&grpc_frame(b"first"), false)
        .advance_ms(990);
    assert!(s.local_reply().is_none());
    s.advance_ms(20);
    let (code, msg) = reply_status(&s);
    assert_eq!(code.as_deref(), Some("4"));
    assert!(msg.contains("http1_hold_ms"), "{msg}");

    // A call that ends in time, HTTP/2, and bounds switched off: no reply of ours.
    let mut s = plain(r#"{"role":"server","auth":"none"}"#, "HTTP/1.1");
    s.response_body(&grpc_frame(b"yo"), false)
        .response_trailers(&[("grpc-status", "0")])
        .advance_ms(5000);
    assert!(s.local_reply().is_none());
    let mut s = plain(r#"{"role":"server","auth":"none"}"#, "HTTP/2");
    s.response_body(&vec![0u8; 200_000], false).advance_ms(5000);
    assert!(s.local_reply().is_none());
    let mut s = plain(
        r#"{"role":"server","auth":"none","http1_hold_bytes":0,"http1_hold_ms":0}"#,
        "HTTP/1.1",
    );
    s.response_body(&vec![0u8; 200_000], false).advance_ms(5000);
    assert!(s.local_reply().is_none());
}

/// Found by the whole-filter fuzz target: a backend stream that ends with an empty DATA frame
/// (END_STREAM, no trailers) after a flush must still end with the made-up INTERNAL trailer
/// frame, in both encodings.
#[test]
fn server_role_ends_a_trailerless_stream_with_internal_after_a_flush() {
    for (ct, text) in [
        ("application/grpc-web+proto", false),
        ("application/grpc-web-text+proto", true),
    ] {
        let mut s = role(r#"{"role":"server","auth":"none"}"#);
        s.request_headers(&call(ct, &[]), true);
        s.response_headers(&ok_with("application/grpc"), false)
            .response_body(&grpc_frame(b"first"), false)
            .advance_ms(50)
            .response_body(b"", true);
        s.advance_ms(50);
        let down = s.take_downstream();
        let body = body_of(&down);
        let body = if text {
            host_harness::fuzzing::lenient_base64(&body)
        } else {
            body
        };
        let mut expected = grpc_frame(b"first");
        expected.push(0x80);
        assert!(body.starts_with(&expected), "{ct}: {body:?}");
        let trailer = String::from_utf8_lossy(&body[expected.len() + 4..]).to_string();
        assert!(trailer.contains("grpc-status:13"), "{ct}: {trailer:?}");
    }
}
