//! The Envoy stream model, checked against the behaviour measured in real Envoy 1.40
//! (the rows of `envoy_diff.rs`, listed in docs/HARNESS.md), with the probe guest.

mod common;

use common::probe;
use host_harness::{
    body_of, ConnectionScenario, Direction, Frame, Headers, NetFrame, PluginOptions, Scenario,
};

const GRPC_REQUEST: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/pkg.Svc/Call"),
    (":authority", "backend"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
];
const RESPONSE: &[(&str, &str)] = &[(":status", "200"), ("content-type", "application/grpc")];

fn log_has(s: &Scenario, line: &str) -> bool {
    s.logs().iter().any(|l| l.message == line)
}

/// The headers of a response that is only headers (ended there), like a trailers-only answer.
fn headers_only(frames: &[Frame]) -> &Headers {
    match frames {
        [Frame::Headers {
            headers,
            end_stream: true,
        }] => headers,
        other => panic!("not a headers-only response: {other:?}"),
    }
}

/// The stream ended with a local reply (`status`, `details`) whose page `page` went to the
/// client as headers and one body chunk, through the response path: the filter saw it.
fn assert_local_reply(s: &mut Scenario, status: u32, details: &str, page: &[u8]) {
    let reply = s.local_reply().expect("local reply");
    assert_eq!((reply.status, reply.details.as_str()), (status, details));
    let status = status.to_string();
    match &s.take_downstream()[..] {
        [Frame::Headers {
            headers,
            end_stream: false,
        }, Frame::Data {
            bytes,
            end_stream: true,
        }] => assert_eq!(
            (headers.get(":status"), bytes.as_slice()),
            (Some(status.as_str()), page)
        ),
        other => panic!("not headers and one ending body chunk: {other:?}"),
    }
    assert!(
        s.returns()
            .iter()
            .any(|(c, _)| *c == "proxy_on_response_headers"),
        "the filter saw the local reply"
    );
}

/// A gRPC call whose response headers have come, with the probe in `options`.
fn responding(options: PluginOptions) -> Scenario {
    let mut s = Scenario::new(options).expect("load probe");
    s.request_headers(GRPC_REQUEST, true)
        .response_headers(RESPONSE, false);
    s
}

/// [`responding`] in `mode`, where both headers passed and nothing else left yet.
fn started(mode: &str) -> Scenario {
    let mut s = responding(probe(mode));
    let only_headers = |frames: &[Frame], end: bool| matches!(frames, [Frame::Headers { end_stream, .. }] if *end_stream == end);
    let (up, down) = (s.take_upstream(), s.take_downstream());
    assert!(only_headers(&up, true), "{up:?}");
    assert!(only_headers(&down, false), "{down:?}");
    s
}

#[test]
fn paused_body_is_cumulative_and_tick_flushes_it() {
    let mut s = started("stream");
    s.response_body(b"aaa", false).response_body(b"bbbb", false);
    assert!(log_has(&s, "response_body size=3 eos=0"));
    // While paused with StopIterationAndBuffer the callback sees everything held so far.
    assert!(log_has(&s, "response_body size=7 eos=0"), "{:#?}", s.logs());
    assert!(s.take_downstream().is_empty());
    assert_eq!(s.held_bytes(Direction::Response), 7);
    s.advance_ms(5);
    assert_eq!(
        s.take_downstream(),
        vec![Frame::Data {
            bytes: b"aaabbbb".to_vec(),
            end_stream: false
        }]
    );
}

#[test]
fn trailers_while_data_is_still_held_deliver_the_frame() {
    let mut s = started("stream");
    s.response_body(b"msg", false)
        .response_trailers(&[("grpc-status", "0")]);
    assert!(log_has(&s, "trailers get_buffer=0 held=3"));
    assert!(log_has(&s, "trailers set_buffer=0"));
    assert!(
        s.take_downstream().is_empty(),
        "Pause from trailers holds everything"
    );
    s.advance_ms(5);
    assert_eq!(
        s.take_downstream(),
        vec![
            Frame::Data {
                bytes: b"msg[TRAILERS]".to_vec(),
                end_stream: false
            },
            Frame::Trailers(Headers::new()),
        ]
    );
    assert!(s.is_finished());
}

#[test]
fn trailers_after_a_flush_with_pause_deliver_the_frame_on_the_next_resume() {
    let mut s = started("stream");
    s.response_body(b"msg", false).advance_ms(5);
    assert_eq!(
        s.take_downstream(),
        vec![Frame::Data {
            bytes: b"msg".to_vec(),
            end_stream: false
        }]
    );
    s.advance_ms(300).response_trailers(&[("grpc-status", "0")]);
    // get_buffer: Ok with nothing (the SDK's Ok(None)); the append still succeeds.
    assert!(
        log_has(&s, "trailers get_buffer=0 held=-1"),
        "{:#?}",
        s.logs()
    );
    assert!(log_has(&s, "trailers set_buffer=0"));
    s.advance_ms(5);
    assert_eq!(
        s.take_downstream(),
        vec![
            Frame::Data {
                bytes: b"[TRAILERS]".to_vec(),
                end_stream: false
            },
            Frame::Trailers(Headers::new())
        ]
    );
}

#[test]
fn continue_from_trailers_after_a_flush_silently_loses_the_frame() {
    let mut s = started("stream-trailers-continue");
    s.response_body(b"msg", false).advance_ms(5);
    s.take_downstream();
    s.response_trailers(&[("grpc-status", "0")]);
    assert!(
        log_has(&s, "trailers set_buffer=0"),
        "the append itself answers Ok"
    );
    s.advance_ms(20);
    assert_eq!(s.take_downstream(), vec![Frame::Trailers(Headers::new())]);
}

#[test]
fn set_buffer_in_trailers_after_a_continued_last_body_is_bad_argument() {
    let mut s = started("body-continue");
    s.response_body(b"msg", false);
    assert_eq!(
        s.take_downstream(),
        vec![Frame::Data {
            bytes: b"msg".to_vec(),
            end_stream: false
        }]
    );
    s.response_trailers(&[("grpc-status", "0")]);
    // Envoy 1.40 (measured, tests/envoy_diff.rs): the read is Ok with nothing, the write
    // BadArgument — not NotFound as envoy-wasm-facts.md says.
    assert!(
        log_has(&s, "trailers get_buffer=0 held=-1"),
        "{:#?}",
        s.logs()
    );
    assert!(log_has(&s, "trailers set_buffer=2"));
    assert_eq!(s.take_downstream(), vec![Frame::Trailers(Headers::new())]);
}

#[test]
fn resuming_a_finished_context_is_bad_argument() {
    let mut s = started("stream");
    s.response_body(b"msg", false).reset();
    assert!(s.is_finished());
    let ctx = s.stream_id().0;
    s.advance_ms(5);
    assert!(
        log_has(&s, &format!("tick ctx={ctx} effective=2 continue=0")),
        "{:#?}",
        s.logs()
    );
}

#[test]
fn trailers_only_response_passes_with_end_stream_on_headers() {
    let mut s = started("body-continue");
    s.next_stream();
    s.request_headers(GRPC_REQUEST, true);
    s.response_headers(common::TRAILERS_ONLY_NOT_FOUND, true);
    assert_eq!(
        headers_only(&s.take_downstream()).get("grpc-status"),
        Some("5")
    );
    assert!(s.is_finished());
}

#[test]
fn stop_iteration_from_headers_becomes_stop_all() {
    let mut s = responding(probe("headers-stop"));
    s.response_body(b"ab", false).response_body(b"cd", true);
    // StopAllIteration: the body is held without calling the filter.
    assert!(!s
        .logs()
        .iter()
        .any(|l| l.message.starts_with("response_body")));
    assert!(s.take_downstream().is_empty());
    s.advance_ms(5);
    // On resume Envoy feeds the held body to the same filter in one call.
    assert!(log_has(&s, "response_body size=4 eos=1"), "{:#?}", s.logs());
    let down = s.take_downstream();
    assert!(matches!(
        &down[0],
        Frame::Headers {
            end_stream: false,
            ..
        }
    ));
    assert_eq!(
        down[1],
        Frame::Data {
            bytes: b"abcd".to_vec(),
            end_stream: true
        }
    );
}

/// A gRPC request (without `te`) whose body comes in two chunks, "one" and "two".
fn request_in_two_chunks(mode: &str) -> Scenario {
    let mut s = Scenario::new(probe(mode)).unwrap();
    s.request_headers(&GRPC_REQUEST[..4], false)
        .request_body(b"one", false)
        .request_body(b"two", true);
    s
}

#[test]
fn request_headers_can_be_changed_and_body_chunks_keep_their_boundaries() {
    let mut s = request_in_two_chunks("body-continue");
    let up = s.take_upstream();
    match &up[0] {
        Frame::Headers {
            headers,
            end_stream: false,
        } => assert_eq!(headers.get("x-probe"), Some("1")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        up[1],
        Frame::Data {
            bytes: b"one".to_vec(),
            end_stream: false
        }
    );
    assert_eq!(
        up[2],
        Frame::Data {
            bytes: b"two".to_vec(),
            end_stream: true
        }
    );
    assert!(log_has(&s, "add_request_header=0"));
}

#[test]
fn buffered_request_body_goes_up_in_one_piece() {
    let mut s = request_in_two_chunks("request-buffer");
    assert!(log_has(&s, "request_body size=6 eos=1"), "{:#?}", s.logs());
    assert_eq!(body_of(&s.take_upstream()), b"onetwo");
}

#[test]
fn local_reply_goes_through_the_response_path() {
    let mut s = Scenario::new(probe("local-reply")).unwrap();
    s.request_headers(
        &[(":method", "GET"), (":path", "/"), (":authority", "x")],
        true,
    );
    assert!(s.take_upstream().is_empty());
    assert_local_reply(&mut s, 403, "denied_by_probe", b"go away");
    assert!(s.is_finished());
}

#[test]
fn a_trap_kills_the_vm_and_every_later_request_fails() {
    let mut s = Scenario::new(probe("trap")).unwrap();
    s.request_headers(GRPC_REQUEST, true);
    assert!(s.plugin().failure().is_some());
    let expect_unavailable = |frames: Vec<Frame>| {
        let headers = headers_only(&frames);
        assert_eq!(
            (headers.get(":status"), headers.get("grpc-status")),
            (Some("200"), Some("14"))
        );
    };
    expect_unavailable(s.take_downstream());
    assert!(s.take_upstream().is_empty());
    let calls_before = s.callbacks().len();
    s.next_stream().request_headers(GRPC_REQUEST, true);
    expect_unavailable(s.take_downstream());
    assert_eq!(
        s.callbacks().len(),
        calls_before,
        "a failed VM is never called again"
    );
    // Not a gRPC request (gRPC-web is not gRPC to Envoy): plain 503.
    s.next_stream().request_headers(
        &[
            (":method", "POST"),
            (":path", "/"),
            ("content-type", "application/grpc-web"),
        ],
        true,
    );
    assert_eq!(
        headers_only(&s.take_downstream()).get(":status"),
        Some("503")
    );
    assert_eq!(s.local_reply().unwrap().details, "wasm_fail_stream");
}

#[test]
fn stream_end_runs_log_done_delete_once() {
    let mut s = started("body-continue");
    s.response_body(b"x", true);
    let ctx = s.stream_id().0;
    let names: Vec<_> = s.returns().into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        &names[names.len() - 3..],
        ["proxy_on_log", "proxy_on_done", "proxy_on_delete"]
    );
    assert!(log_has(&s, &format!("on_delete ctx={ctx}")));
}

/// What the connection passes on for `bytes` while its stream stays open.
fn open_data(bytes: &[u8]) -> Vec<NetFrame> {
    vec![NetFrame::Data {
        bytes: bytes.to_vec(),
        end_stream: false,
    }]
}

#[test]
fn network_filter_hold_continue_and_rewrite() {
    let mut c = ConnectionScenario::new(probe("net")).unwrap();
    c.downstream_data(b"abc", false);
    assert_eq!(c.take_upstream(), open_data(b"HELLO abc"));
    c.downstream_data(b"def", false);
    assert_eq!(c.take_upstream(), open_data(b"def"));
    c.upstream_data(b"xyz", false);
    assert_eq!(c.take_downstream(), open_data(b"XYZ"));
    assert!(c
        .logs()
        .iter()
        .any(|l| l.message == "replace_upstream=0 continue_upstream=12"));
    c.downstream_close();
    assert!(c.is_closed());
    assert!(c
        .logs()
        .iter()
        .any(|l| l.message.starts_with("downstream_close") && l.message.ends_with("peer=2")));
}

// ---- the buffer limit (Envoy's FilterManager watermark buffer) ---------------------------

const CHUNK: usize = 16 * 1024;
/// 64 chunks are exactly 1 MiB: the limit is only exceeded by the 65th.
const CHUNKS_AT_LIMIT: usize = 64;

fn response_chunks(s: &mut Scenario, n: usize) {
    for _ in 0..n {
        s.response_body(&[b'x'; CHUNK], false);
    }
}

fn last_body_size(s: &Scenario) -> usize {
    s.logs()
        .iter()
        .rev()
        .find_map(|l| l.message.strip_prefix("response_body size="))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn buffered_response_over_the_limit_resets_a_stream_whose_headers_went_out() {
    let mut s = started("buffer-all");
    response_chunks(&mut s, CHUNKS_AT_LIMIT);
    assert!(!s.is_finished(), "exactly at the limit is not over it");
    assert_eq!(s.held_bytes(Direction::Response), CHUNKS_AT_LIMIT * CHUNK);
    response_chunks(&mut s, 1);
    assert!(s.is_finished());
    assert_eq!(
        s.take_downstream(),
        vec![Frame::Reset],
        "headers already went out: a reset"
    );
    assert_eq!(
        s.local_reply().unwrap().details,
        "response_payload_too_large"
    );
    // The chunk that crossed the limit never reached the filter.
    assert_eq!(last_body_size(&s), CHUNKS_AT_LIMIT * CHUNK);
}

#[test]
fn without_a_limit_a_buffered_response_passes_whole() {
    let mut s = responding(probe("buffer-all").buffer_limit(0));
    s.take_downstream();
    response_chunks(&mut s, 80);
    s.response_body(b"end", true);
    assert_eq!(body_of(&s.take_downstream()).len(), 80 * CHUNK + 3);
}

#[test]
fn stop_all_buffer_from_headers_over_the_limit_is_a_direct_500() {
    let mut s = responding(probe("headers-buffer"));
    assert!(s.take_downstream().is_empty(), "headers held");
    response_chunks(&mut s, CHUNKS_AT_LIMIT + 1);
    // Headers were held: Envoy answers directly (gRPC: trailers-only, status 500 -> UNKNOWN).
    let down = s.take_downstream();
    let headers = headers_only(&down);
    assert_eq!(
        (
            headers.get(":status"),
            headers.get("grpc-status"),
            headers.get("grpc-message")
        ),
        (Some("200"), Some("2"), Some("Internal Server Error"))
    );
    assert!(s.is_finished());
}

#[test]
fn buffered_request_over_the_limit_is_a_413_through_the_response_path() {
    let mut s = Scenario::new(probe("request-buffer")).unwrap();
    s.request_headers(
        &[
            (":method", "POST"),
            (":path", "/up"),
            (":authority", "x"),
            ("content-type", "text/plain"),
        ],
        false,
    );
    for _ in 0..=CHUNKS_AT_LIMIT {
        s.request_body(&[b'q'; CHUNK], false);
    }
    let up = s.take_upstream();
    assert!(
        matches!(up.last(), Some(Frame::Reset)),
        "the upstream request is abandoned: {:?}",
        up.last()
    );
    assert_local_reply(
        &mut s,
        413,
        "request_payload_too_large",
        b"Payload Too Large",
    );
}

#[test]
fn watermark_over_the_limit_applies_back_pressure_instead() {
    let mut s = started("watermark-all");
    response_chunks(&mut s, CHUNKS_AT_LIMIT);
    assert!(!s.read_disabled(Direction::Response));
    response_chunks(&mut s, 1);
    assert!(
        s.read_disabled(Direction::Response),
        "over the limit: the upstream is read-disabled"
    );
    assert!(
        !s.is_finished() && s.local_reply().is_none(),
        "no local reply, no reset"
    );
    // More data (already in flight) is still accepted; the end lets the filter continue.
    response_chunks(&mut s, 5);
    s.response_body(b"end", true);
    assert_eq!(
        body_of(&s.take_downstream()).len(),
        (CHUNKS_AT_LIMIT + 6) * CHUNK + 3
    );
    assert!(s.is_finished());
}

#[test]
fn stop_all_watermark_from_headers_reads_again_after_the_resume_drains_it() {
    let mut s = responding(probe("headers-stop"));
    response_chunks(&mut s, CHUNKS_AT_LIMIT + 1);
    assert!(
        s.read_disabled(Direction::Response),
        "StopIteration from headers is StopAllIterationAndWatermark"
    );
    assert!(s.local_reply().is_none());
    s.advance_ms(5); // the probe resumes from its tick: everything held is sent
    assert!(
        !s.read_disabled(Direction::Response),
        "drained below the low watermark"
    );
    assert_eq!(
        body_of(&s.take_downstream()).len(),
        (CHUNKS_AT_LIMIT + 1) * CHUNK
    );
}
