//! The end-to-end cases, driven by a tonic client (h2c) against a client-facing address:
//! the agent Envoy in the full topology, or the backend / a plain Envoy for infrastructure checks.
//!
//! Every case returns `Ok(detail)` or `Err(what was observed)`. `run_suite` runs them one after
//! the other (each on a fresh channel, each with a time limit) and collects the outcomes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::backend::{parse_grpc_timeout, pattern, MAX_MESSAGE};
use crate::pb::bridge_test_client::BridgeTestClient;
use crate::pb::*;

pub type Client = BridgeTestClient<Channel>;

/// Time limit of one case (the slowest passing case takes about 1.5 s).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(15);

/// Case names, in the order `run_suite` runs them. Every one asserts outcomes, never timings:
/// that a path streams is shown by `server_stream_gated` (message 0 arrives while the backend
/// is blocked on a gate), not by arrival times.
pub const ALL_CASES: &[&str] = &[
    "unary",
    "server_stream_gated",
    "client_stream",
    "bidi_ping_pong",
    "bidi_large",
    "concurrent_streams",
    "error_message_unicode",
    "stream_error_after_messages",
    "stream_error_without_messages",
    "trailers_only_error",
    "metadata_unary",
    "metadata_stream_headers_vs_trailers",
    "large_trailer_metadata",
    "large_4mib_unary",
    "large_4mib_server_stream",
    "large_4mib_client_stream",
    "empty_messages",
    "deadline",
    "cancel_stream",
    "cancel_unary",
    "concurrent_unary",
    "fresh_connections",
];

/// The message used by the error cases: non-ASCII, `%`, things that look like escapes.
pub const TRICKY_MESSAGE: &str = "bad input: 100% ünïcødé ✓ 😀 %41 %zz 50%% done, tab\tend";

/// A client on a new HTTP/2 (h2c) channel to `addr`: 5 s to connect, TCP_NODELAY.
pub async fn connect(addr: SocketAddr) -> Result<Client, String> {
    connect_endpoint(
        endpoint(addr)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true),
    )
    .await
}

/// Tonic's endpoint for h2c to `addr`, for a test that sets its own channel options.
pub fn endpoint(addr: SocketAddr) -> Result<Endpoint, String> {
    Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())
}

/// A client on a new channel to `endpoint`, with the backend's message size limits.
pub async fn connect_endpoint(endpoint: Endpoint) -> Result<Client, String> {
    let ch = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect {}: {e:?}", endpoint.uri()))?;
    Ok(BridgeTestClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

#[derive(Debug)]
pub struct Outcome {
    pub case: String,
    pub result: Result<String, String>,
    pub elapsed: Duration,
}

/// Run the cases named in `E2E_CASES` (comma separated), or all of them, against `addr`.
pub async fn run_suite(addr: SocketAddr) -> Vec<Outcome> {
    let selected: Vec<String> = match std::env::var("E2E_CASES") {
        Ok(s) if !s.trim().is_empty() => s.split(',').map(|c| c.trim().to_string()).collect(),
        _ => ALL_CASES.iter().map(|s| s.to_string()).collect(),
    };
    let mut out = Vec::new();
    for case in selected {
        let t0 = Instant::now();
        let result = match timeout(CASE_TIMEOUT, run_case(&case, addr)).await {
            Ok(r) => r,
            Err(_) => Err(format!("case timed out after {} s", CASE_TIMEOUT.as_secs())),
        };
        out.push(Outcome {
            case,
            result,
            elapsed: t0.elapsed(),
        });
    }
    out
}

/// One line per case; returns (report, number of failures).
pub fn report(outcomes: &[Outcome]) -> (String, usize) {
    let mut s = String::new();
    let mut failed = 0;
    for o in outcomes {
        match &o.result {
            Ok(d) => {
                s += &format!(
                    "  ok    {:<38} {:>6} ms  {}\n",
                    o.case,
                    o.elapsed.as_millis(),
                    d
                )
            }
            Err(e) => {
                failed += 1;
                s += &format!(
                    "  FAIL  {:<38} {:>6} ms  {}\n",
                    o.case,
                    o.elapsed.as_millis(),
                    e
                )
            }
        }
    }
    s += &format!("{} passed, {} failed\n", outcomes.len() - failed, failed);
    (s, failed)
}

pub async fn run_case(case: &str, addr: SocketAddr) -> Result<String, String> {
    let c = connect(addr).await?;
    match case {
        "unary" => unary(c).await,
        "server_stream_gated" => server_stream_gated(c).await,
        "server_stream_timing" => server_stream_timing(c).await,
        "bidi_large" => bidi_large(c).await,
        "concurrent_streams" => concurrent_streams(c).await,
        "large_trailer_metadata" => large_trailer_metadata(c).await,
        "client_stream" => client_stream(c).await,
        "bidi_ping_pong" => bidi_ping_pong(c).await,
        "error_message_unicode" => error_message_unicode(c).await,
        "stream_error_after_messages" => stream_error_after_messages(c).await,
        "stream_error_without_messages" => stream_error_without_messages(c).await,
        "trailers_only_error" => trailers_only_error(c).await,
        "metadata_unary" => metadata_unary(c).await,
        "metadata_stream_headers_vs_trailers" => metadata_stream_headers_vs_trailers(c).await,
        "large_4mib_unary" => large_4mib_unary(c).await,
        "large_4mib_server_stream" => large_4mib_server_stream(c).await,
        "large_4mib_client_stream" => large_4mib_client_stream(c).await,
        "empty_messages" => empty_messages(c).await,
        "deadline" => deadline(c, addr).await,
        "cancel_stream" => cancel_stream(c).await,
        "cancel_unary" => cancel_unary(c).await,
        "concurrent_unary" => concurrent_unary(c).await,
        "fresh_connections" => fresh_connections(addr).await,
        other => Err(format!("unknown case {other}")),
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

pub fn fmt_status(s: &Status) -> String {
    let md: Vec<String> = s
        .metadata()
        .clone()
        .into_headers()
        .iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    format!(
        "status {:?} message {:?} metadata [{}]",
        s.code(),
        s.message(),
        md.join(", ")
    )
}

fn st(s: Status) -> String {
    fmt_status(&s)
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn md(key: &str, value: &[u8]) -> Metadata {
    Metadata {
        key: key.into(),
        value: value.to_vec(),
    }
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// Value of `key` in `m` (binary keys decoded).
pub fn md_get(m: &MetadataMap, key: &str) -> Option<Vec<u8>> {
    if key.ends_with("-bin") {
        m.get_bin(key)
            .and_then(|v| v.to_bytes().ok())
            .map(|b| b.to_vec())
    } else {
        m.get(key).map(|v| v.as_bytes().to_vec())
    }
}

fn expect_md(m: &MetadataMap, key: &str, want: &[u8], where_: &str) -> Result<(), String> {
    match md_get(m, key) {
        Some(v) if v == want => Ok(()),
        Some(v) => Err(format!("{where_}: {key} = {v:?}, want {want:?}")),
        None => Err(format!(
            "{where_}: {key} missing; have {:?}",
            m.keys().collect::<Vec<_>>()
        )),
    }
}

fn size_check(got: &[u8], want_len: usize, what: &str) -> Result<(), String> {
    ensure(got.len() == want_len, || {
        format!("{what}: {} bytes, want {want_len}", got.len())
    })?;
    if got != pattern(want_len).as_slice() {
        let at = got
            .iter()
            .zip(pattern(want_len))
            .position(|(a, b)| *a != b)
            .unwrap_or(0);
        return Err(format!(
            "{what}: content differs from the pattern at byte {at}"
        ));
    }
    Ok(())
}

async fn call_info(c: &mut Client, token: &str) -> Result<CallInfo, String> {
    c.get_call_info(CallInfoRequest {
        token: token.into(),
    })
    .await
    .map(|r| r.into_inner())
    .map_err(st)
}

/// Poll GetCallInfo until `pred` holds or `within` passes; returns the last info.
async fn wait_call_info(
    c: &mut Client,
    token: &str,
    within: Duration,
    pred: impl Fn(&CallInfo) -> bool,
) -> Result<(CallInfo, bool), String> {
    let deadline = Instant::now() + within;
    loop {
        let info = call_info(c, token).await?;
        if pred(&info) {
            return Ok((info, true));
        }
        if Instant::now() >= deadline {
            return Ok((info, false));
        }
        // Poll interval of a wait on the backend's record, with a deadline.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A unary call the backend fails with `code` and `message`: the status the client got (Err if
/// the call succeeded).
pub async fn unary_failing(c: &mut Client, code: Code, message: &str) -> Result<Status, String> {
    let req = UnaryRequest {
        status_code: code as i32,
        status_message: message.into(),
        ..Default::default()
    };
    match c.unary(req).await {
        Ok(_) => Err(format!("the call succeeded, want {code:?}")),
        Err(e) => Ok(e),
    }
}

/// A unary call on (a clone of) `c` that must echo `payload` within `within`. Err: (the call's
/// code, its description); DEADLINE_EXCEEDED when no answer came in time, UNKNOWN for a wrong
/// payload.
pub async fn echo_within(
    c: &Client,
    payload: &[u8],
    within: Duration,
) -> Result<(), (Code, String)> {
    let req = UnaryRequest {
        payload: payload.to_vec(),
        ..Default::default()
    };
    match timeout(within, c.clone().unary(req)).await {
        Err(_) => Err((
            Code::DeadlineExceeded,
            format!("no answer within {} s", within.as_secs()),
        )),
        Ok(Err(s)) => Err((s.code(), fmt_status(&s))),
        Ok(Ok(r)) if r.get_ref().payload == payload => Ok(()),
        Ok(Ok(r)) => Err((Code::Unknown, format!("payload {:?}", r.get_ref().payload))),
    }
}

/// Starts a bidi call whose first request is already queued (some paths open the upstream
/// request only once there is body data); returns the sender for the next requests and the
/// response stream.
async fn open_bidi(
    c: &mut Client,
    first: BidiRequest,
) -> Result<(mpsc::Sender<BidiRequest>, tonic::Streaming<BidiResponse>), Status> {
    let (tx, rx) = mpsc::channel::<BidiRequest>(1);
    tx.send(first)
        .await
        .map_err(|_| Status::internal("bidi request channel closed before the call"))?;
    let s = c.bidi(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, s))
}

/// The next message of `s` within `within`; Err, naming `what`, on a status, an early end or
/// the time running out.
async fn next_message<T>(
    s: &mut tonic::Streaming<T>,
    within: Duration,
    what: &str,
) -> Result<T, String> {
    timeout(within, s.message())
        .await
        .map_err(|_| format!("{what}: nothing within {within:?}"))?
        .map_err(|e| format!("{what}: {}", st(e)))?
        .ok_or_else(|| format!("{what}: the stream ended first"))
}

/// After the client half-closed: `s` ends cleanly (no more messages, status OK) within 5 s.
async fn expect_clean_end<T>(s: &mut tonic::Streaming<T>, what: &str) -> Result<(), String> {
    ensure(
        timeout(Duration::from_secs(5), s.message())
            .await
            .map(|r| matches!(r, Ok(None)))
            .unwrap_or(false),
        || format!("{what}: no clean end after half-close"),
    )
}

/// Waits up to `within` for the backend to record the end of call `token`: it must have seen
/// the call cancelled, not finished.
async fn expect_cancelled(c: &mut Client, token: &str, within: Duration) -> Result<(), String> {
    let (info, ok) = wait_call_info(c, token, within, |i| i.cancelled || i.finished).await?;
    ensure(ok && info.cancelled && !info.finished, || {
        format!("backend did not observe the cancellation within {within:?}: {info:?}")
    })
}

/// `e` has exactly this code and message.
fn expect_status(e: &Status, code: Code, message: &str) -> Result<(), String> {
    ensure(e.code() == code && e.message() == message, || {
        format!("got {}, want {code:?} {message:?}", fmt_status(e))
    })
}

// ---------------------------------------------------------------------------------------------
// cases

async fn unary(mut c: Client) -> Result<String, String> {
    let t0 = Instant::now();
    let r = c
        .unary(UnaryRequest {
            payload: b"hello bridge".to_vec(),
            ..Default::default()
        })
        .await
        .map_err(st)?
        .into_inner();
    ensure(r.payload == b"hello bridge", || {
        format!("payload {:?}", String::from_utf8_lossy(&r.payload))
    })?;
    ensure(r.request_payload_size == 12, || {
        format!("backend saw {} request bytes", r.request_payload_size)
    })?;
    Ok(format!("echo ok in {} ms", t0.elapsed().as_millis()))
}

/// A server stream of `count` messages of `payload_size` bytes whose backend, after sending
/// message 0, waits at a gate of its own (a fresh token) before the rest: (gate, request).
pub fn gated_stream(count: i32, payload_size: i32) -> (String, StreamRequest) {
    let gate = unique("gate");
    let req = StreamRequest {
        count,
        payload_size,
        gate_token: gate.clone(),
        ..Default::default()
    };
    (gate, req)
}

async fn server_stream_gated(mut c: Client) -> Result<String, String> {
    let (gate, req) = gated_stream(3, 10);
    let mut s = c.server_stream(req).await.map_err(st)?.into_inner();
    // The backend sent message 0 and now waits for the gate: message 0 must arrive before we
    // release it, i.e. while the backend still holds the stream open.
    let first = timeout(Duration::from_secs(5), s.message()).await;
    let released = c
        .release_gate(GateRequest {
            token: gate.clone(),
        })
        .await
        .map_err(st)?
        .into_inner();
    let first = match first {
        Err(_) => {
            return Err(
                "message 0 did not arrive within 5 s while the backend held the stream open \
                        (the path buffers the response stream)"
                    .into(),
            )
        }
        Ok(Err(e)) => return Err(format!("error before message 0: {}", st(e))),
        Ok(Ok(None)) => return Err("stream ended before message 0".into()),
        Ok(Ok(Some(m))) => m,
    };
    ensure(first.index == 0, || {
        format!("first message index {}", first.index)
    })?;
    ensure(released.had_waiter, || {
        "backend had not registered the gate".into()
    })?;
    let mut n = 1;
    while let Some(m) = s
        .message()
        .await
        .map_err(|e| format!("after {n} messages: {}", st(e)))?
    {
        ensure(m.index == n, || {
            format!("message {n} has index {}", m.index)
        })?;
        size_check(&m.payload, 10, "payload")?;
        n += 1;
    }
    ensure(n == 3, || format!("{n} messages, want 3"))?;
    Ok("message 0 arrived while the backend was blocked; 3 messages, clean end".into())
}

/// 5 messages 150 ms apart, in order; the arrival times are reported, not asserted (the demo
/// prints them). Not in `ALL_CASES`: `server_stream_gated` is the test that a path streams.
async fn server_stream_timing(mut c: Client) -> Result<String, String> {
    let req = StreamRequest {
        count: 5,
        interval_ms: 150,
        payload_size: 100,
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut s = c.server_stream(req).await.map_err(st)?.into_inner();
    let mut times = vec![];
    while let Some(m) = s.message().await.map_err(st)? {
        ensure(m.index == times.len() as i32, || {
            format!("index {} at position {}", m.index, times.len())
        })?;
        times.push(t0.elapsed());
    }
    ensure(times.len() == 5, || {
        format!("{} messages, want 5", times.len())
    })?;
    let ms: Vec<u128> = times.iter().map(|t| t.as_millis()).collect();
    Ok(format!("arrivals {ms:?} ms"))
}

async fn bidi_large(mut c: Client) -> Result<String, String> {
    const MIB: usize = 1 << 20;
    let (tx, mut s) = open_bidi(
        &mut c,
        BidiRequest {
            seq: 0,
            payload: pattern(MIB),
            response_size: 0,
        },
    )
    .await
    .map_err(st)?;
    for i in 0..3 {
        if i > 0 {
            tx.send(BidiRequest {
                seq: i,
                payload: pattern(MIB),
                response_size: 2 * MIB as i32,
            })
            .await
            .map_err(|_| "request stream closed".to_string())?;
        }
        let m = next_message(&mut s, Duration::from_secs(10), &format!("pong {i}")).await?;
        ensure(m.seq == i, || format!("pong seq {} for ping {i}", m.seq))?;
        size_check(
            &m.payload,
            if i == 0 { MIB } else { 2 * MIB },
            &format!("pong {i}"),
        )?;
    }
    drop(tx);
    expect_clean_end(&mut s, "bidi").await?;
    Ok("1 MiB pings, 1-2 MiB pongs, 3 rounds".into())
}

/// 8 bidi streams at once on one channel, each doing ping-pong: streams must not mix.
async fn concurrent_streams(c: Client) -> Result<String, String> {
    let mut tasks = vec![];
    for k in 0..8i32 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let size = |i: i32| (k * 100 + i) as usize;
            let first = BidiRequest {
                seq: k * 1000,
                payload: pattern(size(0)),
                response_size: 0,
            };
            let (tx, mut s) = open_bidi(&mut c, first).await.map_err(st)?;
            for i in 0..4 {
                if i > 0 {
                    tx.send(BidiRequest {
                        seq: k * 1000 + i,
                        payload: pattern(size(i)),
                        response_size: 0,
                    })
                    .await
                    .map_err(|_| "closed".to_string())?;
                }
                let m = next_message(
                    &mut s,
                    Duration::from_secs(10),
                    &format!("stream {k} pong {i}"),
                )
                .await?;
                ensure(m.seq == k * 1000 + i, || {
                    format!("stream {k}: got seq {} for ping {i}", m.seq)
                })?;
                size_check(&m.payload, size(i), &format!("stream {k} pong {i}"))?;
            }
            drop(tx);
            expect_clean_end(&mut s, &format!("stream {k}")).await
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok("8 concurrent bidi streams x 4 round trips".into())
}

/// Trailer metadata of a few KiB (ASCII and binary).
async fn large_trailer_metadata(mut c: Client) -> Result<String, String> {
    let ascii: Vec<u8> = (0..3000).map(|i| b'a' + (i % 26) as u8).collect();
    let bin = pattern(1500);
    let req = UnaryRequest {
        payload: b"x".to_vec(),
        response_trailers: vec![md("x-big", &ascii), md("x-big-bin", &bin)],
        ..Default::default()
    };
    let resp = c.unary(req).await.map_err(st)?;
    expect_md(resp.metadata(), "x-big", &ascii, "trailers")?;
    expect_md(resp.metadata(), "x-big-bin", &bin, "trailers")?;
    Ok("3000-byte ASCII and 1500-byte binary trailer values".into())
}

async fn client_stream(mut c: Client) -> Result<String, String> {
    let sizes = [0usize, 1, 100, 70_000, 3];
    let msgs: Vec<ClientStreamRequest> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| ClientStreamRequest {
            value: i as i64 + 1,
            payload: pattern(*n),
        })
        .collect();
    let r = c
        .client_stream(tokio_stream::iter(msgs))
        .await
        .map_err(st)?
        .into_inner();
    ensure(r.count == 5 && r.sum == 15, || {
        format!("count {} sum {}", r.count, r.sum)
    })?;
    let got: Vec<usize> = r.sizes.iter().map(|s| *s as usize).collect();
    ensure(got == sizes, || format!("sizes {got:?}, want {sizes:?}"))?;
    Ok("5 messages counted and sized".into())
}

async fn bidi_ping_pong(mut c: Client) -> Result<String, String> {
    // The first request goes in before the call starts: some paths only open the upstream
    // request once there is body data.
    let (tx, mut s) = open_bidi(
        &mut c,
        BidiRequest {
            seq: 0,
            payload: vec![],
            response_size: 0,
        },
    )
    .await
    .map_err(st)?;
    let mut rtts = vec![];
    for i in 0..6 {
        let t = Instant::now();
        if i > 0 {
            // Only after the previous response arrived.
            tx.send(BidiRequest {
                seq: i,
                payload: pattern(i as usize * 1000),
                response_size: 0,
            })
            .await
            .map_err(|_| format!("request stream closed before ping {i}"))?;
        }
        let m = match timeout(Duration::from_secs(5), s.message()).await {
            Err(_) => {
                return Err(format!(
                    "no pong {i} within 5 s (requests not streamed, or responses held)"
                ))
            }
            Ok(Err(e)) => return Err(format!("pong {i}: {}", st(e))),
            Ok(Ok(None)) => return Err(format!("stream ended before pong {i}")),
            Ok(Ok(Some(m))) => m,
        };
        ensure(m.seq == i, || format!("pong seq {} for ping {i}", m.seq))?;
        size_check(&m.payload, i as usize * 1000, &format!("pong {i}"))?;
        rtts.push(t.elapsed().as_millis());
    }
    drop(tx); // half-close
    match timeout(Duration::from_secs(5), s.message()).await {
        Err(_) => return Err("stream did not end within 5 s after the client half-closed".into()),
        Ok(Err(e)) => return Err(format!("after half-close: {}", st(e))),
        Ok(Ok(Some(m))) => {
            return Err(format!(
                "unexpected message after half-close: seq {}",
                m.seq
            ))
        }
        Ok(Ok(None)) => {}
    }
    Ok(format!(
        "6 round trips, ms {rtts:?}; clean end after half-close"
    ))
}

async fn error_message_unicode(mut c: Client) -> Result<String, String> {
    let req = UnaryRequest {
        status_code: Code::InvalidArgument as i32,
        status_message: TRICKY_MESSAGE.into(),
        ..Default::default()
    };
    match c.unary(req).await {
        Ok(_) => Err("call succeeded, want INVALID_ARGUMENT".into()),
        Err(e) => {
            expect_status(&e, Code::InvalidArgument, TRICKY_MESSAGE)?;
            Ok("code and exact message round-tripped".into())
        }
    }
}

async fn stream_error_after_messages(mut c: Client) -> Result<String, String> {
    let req = StreamRequest {
        count: 2,
        payload_size: 5,
        final_status_code: Code::FailedPrecondition as i32,
        final_status_message: TRICKY_MESSAGE.into(),
        response_trailers: vec![
            md("x-err-detail", b"detail value"),
            md("x-err-bin", &[0, 1, 0xff, 0x80, b'\r', b'\n']),
        ],
        ..Default::default()
    };
    let mut s = c.server_stream(req).await.map_err(st)?.into_inner();
    let mut n = 0;
    loop {
        match s.message().await {
            Ok(Some(m)) => {
                ensure(m.index == n, || format!("index {} at {n}", m.index))?;
                n += 1;
            }
            Ok(None) => {
                return Err(format!(
                    "stream ended OK after {n} messages, want FAILED_PRECONDITION"
                ))
            }
            Err(e) => {
                ensure(n == 2, || {
                    format!("error after {n} messages, want 2: {}", fmt_status(&e))
                })?;
                expect_status(&e, Code::FailedPrecondition, TRICKY_MESSAGE)?;
                expect_md(
                    e.metadata(),
                    "x-err-detail",
                    b"detail value",
                    "error trailers",
                )?;
                expect_md(
                    e.metadata(),
                    "x-err-bin",
                    &[0, 1, 0xff, 0x80, b'\r', b'\n'],
                    "error trailers",
                )?;
                return Ok("2 messages then exact status, message and trailer metadata".into());
            }
        }
    }
}

async fn stream_error_without_messages(mut c: Client) -> Result<String, String> {
    let req = StreamRequest {
        count: 0,
        final_status_code: Code::Unavailable as i32,
        final_status_message: "no messages for you".into(),
        ..Default::default()
    };
    let r = c.server_stream(req).await;
    let e = match r {
        Err(e) => e,
        Ok(resp) => {
            let mut s = resp.into_inner();
            match s.message().await {
                Ok(Some(_)) => return Err("got a message, want none".into()),
                Ok(None) => return Err("stream ended OK, want UNAVAILABLE".into()),
                Err(e) => e,
            }
        }
    };
    if e.code() == Code::Internal && e.message().contains("without a gRPC-web trailer frame") {
        // Documented limitation: the server role can only carry this status in HTTP/1.1
        // trailers, which nginx drops; the agent then says so instead of reporting OK.
        return Ok(
            "INTERNAL from the agent: the hop dropped the HTTP trailers (documented)".into(),
        );
    }
    expect_status(&e, Code::Unavailable, "no messages for you")?;
    Ok("UNAVAILABLE with message, no messages".into())
}

async fn trailers_only_error(mut c: Client) -> Result<String, String> {
    let req = UnaryRequest {
        status_code: Code::NotFound as i32,
        status_message: "nothing here".into(),
        response_trailers: vec![
            md("x-to", b"trailers-only"),
            md("x-to-bin", &[0xde, 0xad, 0x00, 0xbe, 0xef]),
        ],
        ..Default::default()
    };
    let t0 = Instant::now();
    match c.unary(req).await {
        Ok(_) => Err("call succeeded, want NOT_FOUND".into()),
        Err(e) => {
            expect_status(&e, Code::NotFound, "nothing here")?;
            expect_md(e.metadata(), "x-to", b"trailers-only", "status metadata")?;
            expect_md(
                e.metadata(),
                "x-to-bin",
                &[0xde, 0xad, 0x00, 0xbe, 0xef],
                "status metadata",
            )?;
            Ok(format!(
                "NOT_FOUND with metadata in {} ms",
                t0.elapsed().as_millis()
            ))
        }
    }
}

const BIN_HDR: &[u8] = &[0xff, 0x00, 0x80, 0x7f, 0x01];
const BIN_TRL: &[u8] = &[b'\r', b'\n', 0x00, b':', 0xc3, 0x28];
const BIN_REQ: &[u8] = &[0, 1, 2, 0xfe, 0xff, b'%'];

async fn metadata_unary(mut c: Client) -> Result<String, String> {
    let mut req = Request::new(UnaryRequest {
        payload: b"m".to_vec(),
        echo_metadata: true,
        response_headers: vec![md("x-hdr", b"header value"), md("x-hdr-bin", BIN_HDR)],
        response_trailers: vec![md("x-trl", b"trailer value"), md("x-trl-bin", BIN_TRL)],
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-req-ascii", MetadataValue::from_static("request value"));
    req.metadata_mut()
        .insert_bin("x-req-bin", MetadataValue::from_bytes(BIN_REQ));
    let resp = c.unary(req).await.map_err(st)?;
    // tonic merges trailers into a unary response's metadata.
    let m = resp.metadata().clone();
    expect_md(&m, "x-hdr", b"header value", "response metadata")?;
    expect_md(&m, "x-hdr-bin", BIN_HDR, "response metadata")?;
    expect_md(&m, "x-trl", b"trailer value", "response metadata")?;
    expect_md(&m, "x-trl-bin", BIN_TRL, "response metadata")?;
    let r = resp.into_inner();
    let seen = |k: &str| {
        r.request_metadata
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    ensure(
        seen("x-req-ascii").as_deref() == Some(b"request value".as_slice()),
        || format!("backend saw x-req-ascii = {:?}", seen("x-req-ascii")),
    )?;
    ensure(seen("x-req-bin").as_deref() == Some(BIN_REQ), || {
        format!("backend saw x-req-bin = {:?}", seen("x-req-bin"))
    })?;
    Ok("request metadata reached the backend; response header and trailer metadata (incl. -bin) came back".into())
}

async fn metadata_stream_headers_vs_trailers(mut c: Client) -> Result<String, String> {
    let req = StreamRequest {
        count: 1,
        payload_size: 3,
        response_headers: vec![md("x-hdr", b"header value"), md("x-hdr-bin", BIN_HDR)],
        response_trailers: vec![md("x-trl", b"trailer value"), md("x-trl-bin", BIN_TRL)],
        ..Default::default()
    };
    let resp = c.server_stream(req).await.map_err(st)?;
    let h = resp.metadata().clone();
    expect_md(&h, "x-hdr", b"header value", "response headers")?;
    expect_md(&h, "x-hdr-bin", BIN_HDR, "response headers")?;
    ensure(h.get("x-trl").is_none(), || {
        "x-trl showed up in the response headers".into()
    })?;
    let mut s = resp.into_inner();
    let mut n = 0;
    while s.message().await.map_err(st)?.is_some() {
        n += 1;
    }
    ensure(n == 1, || format!("{n} messages"))?;
    let t = s.trailers().await.map_err(st)?.ok_or("no trailers")?;
    expect_md(&t, "x-trl", b"trailer value", "trailers")?;
    expect_md(&t, "x-trl-bin", BIN_TRL, "trailers")?;
    ensure(t.get("x-hdr").is_none(), || {
        "x-hdr showed up in the trailers".into()
    })?;
    Ok("header metadata in headers, trailer metadata in trailers".into())
}

const MIB4: usize = 4 << 20;

async fn large_4mib_unary(mut c: Client) -> Result<String, String> {
    let t0 = Instant::now();
    let r = c
        .unary(UnaryRequest {
            payload: pattern(MIB4),
            ..Default::default()
        })
        .await
        .map_err(st)?
        .into_inner();
    ensure(r.request_payload_size as usize == MIB4, || {
        format!("backend saw {} bytes", r.request_payload_size)
    })?;
    size_check(&r.payload, MIB4, "echoed payload")?;
    Ok(format!(
        "4 MiB up and 4 MiB back in {} ms",
        t0.elapsed().as_millis()
    ))
}

async fn large_4mib_server_stream(mut c: Client) -> Result<String, String> {
    let t0 = Instant::now();
    let req = StreamRequest {
        count: 2,
        payload_size: MIB4 as i32,
        ..Default::default()
    };
    let mut s = c.server_stream(req).await.map_err(st)?.into_inner();
    let mut n = 0;
    while let Some(m) = s
        .message()
        .await
        .map_err(|e| format!("after {n} messages: {}", st(e)))?
    {
        size_check(&m.payload, MIB4, &format!("message {n}"))?;
        n += 1;
    }
    ensure(n == 2, || format!("{n} messages"))?;
    Ok(format!("2 x 4 MiB down in {} ms", t0.elapsed().as_millis()))
}

async fn large_4mib_client_stream(mut c: Client) -> Result<String, String> {
    let t0 = Instant::now();
    let msgs = vec![
        ClientStreamRequest {
            value: 1,
            payload: pattern(MIB4),
        },
        ClientStreamRequest {
            value: 2,
            payload: pattern(10),
        },
        ClientStreamRequest {
            value: 3,
            payload: pattern(MIB4),
        },
    ];
    let r = c
        .client_stream(tokio_stream::iter(msgs))
        .await
        .map_err(st)?
        .into_inner();
    ensure(
        r.sizes == vec![MIB4 as i32, 10, MIB4 as i32] && r.sum == 6,
        || format!("sizes {:?} sum {}", r.sizes, r.sum),
    )?;
    Ok(format!(
        "4 MiB + 10 B + 4 MiB up in {} ms",
        t0.elapsed().as_millis()
    ))
}

async fn empty_messages(mut c: Client) -> Result<String, String> {
    // Unary: an empty request (0-byte message) gets an empty response.
    let r = c
        .unary(UnaryRequest::default())
        .await
        .map_err(|e| format!("unary: {}", st(e)))?
        .into_inner();
    ensure(r == UnaryResponse::default(), || {
        format!("unary response not empty: {r:?}")
    })?;
    // Server stream: message 0 is empty (index 0, no payload).
    let mut s = c
        .server_stream(StreamRequest {
            count: 3,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream: {}", st(e)))?
        .into_inner();
    let mut n = 0;
    while let Some(m) = s
        .message()
        .await
        .map_err(|e| format!("stream: {}", st(e)))?
    {
        ensure(m.index == n && m.payload.is_empty(), || {
            format!("stream message {n}: {m:?}")
        })?;
        n += 1;
    }
    ensure(n == 3, || format!("stream: {n} messages"))?;
    // Bidi: an empty ping gets an empty pong.
    let (tx, mut b) = open_bidi(&mut c, BidiRequest::default())
        .await
        .map_err(|e| format!("bidi: {}", st(e)))?;
    let m = next_message(&mut b, Duration::from_secs(5), "bidi pong").await?;
    ensure(m == BidiResponse::default(), || format!("bidi pong {m:?}"))?;
    drop(tx);
    expect_clean_end(&mut b, "bidi").await?;
    // Client stream with empty messages only.
    let r = c
        .client_stream(tokio_stream::iter(vec![ClientStreamRequest::default(); 3]))
        .await
        .map_err(|e| format!("client stream: {}", st(e)))?
        .into_inner();
    ensure(r.count == 3 && r.sizes == vec![0, 0, 0], || {
        format!("client stream: {r:?}")
    })?;
    Ok("unary, server stream, bidi and client stream with 0-byte messages".into())
}

/// A client without tonic's client-side deadline timer. tonic's `Channel` enforces the
/// `grpc-timeout` it sends and then reports its own CANCELLED "Timeout expired", which would hide
/// the status the path sends back; over a bare HTTP/2 connection the call ends only with the
/// status that arrives.
pub type UntimedClient = BridgeTestClient<
    tower::util::BoxCloneService<
        http::Request<tonic::body::Body>,
        http::Response<hyper::body::Incoming>,
        hyper::Error,
    >,
>;

pub async fn connect_without_client_timer(addr: SocketAddr) -> Result<UntimedClient, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
    tokio::spawn(conn);
    let svc = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let mut send = send.clone();
        async move { send.send_request(req).await }
    });
    let origin: http::Uri = format!("http://{addr}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    Ok(
        BridgeTestClient::with_origin(tower::util::BoxCloneService::new(svc), origin)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
}

/// A 300 ms deadline on a call the backend would answer after 5 s: the deadline travels as
/// `grpc-timeout` through every hop, the backend gives up at it, and its DEADLINE_EXCEEDED is the
/// status that reaches the client (no client-side timer: `connect_without_client_timer`).
async fn deadline(mut c: Client, addr: SocketAddr) -> Result<String, String> {
    let token = unique("deadline");
    let mut req = Request::new(SleepRequest {
        sleep_ms: 5000,
        token: token.clone(),
    });
    req.set_timeout(Duration::from_millis(300));
    let mut untimed = connect_without_client_timer(addr).await?;
    let e = match untimed.sleep(req).await {
        Ok(_) => return Err("call succeeded, want DEADLINE_EXCEEDED".into()),
        Err(e) => e,
    };
    // The backend's own DEADLINE_EXCEEDED (it saw the propagated deadline).
    expect_status(&e, Code::DeadlineExceeded, "deadline exceeded (backend)")?;
    let (info, ok) = wait_call_info(&mut c, &token, Duration::from_secs(3), |i| {
        i.deadline_exceeded
    })
    .await?;
    ensure(ok && !info.finished, || {
        format!("the backend did not record its deadline: {info:?}")
    })?;
    let got = parse_grpc_timeout(&info.grpc_timeout);
    ensure(
        matches!(got, Some(d) if d > Duration::ZERO && d <= Duration::from_millis(300)),
        || format!("backend saw grpc-timeout {:?}", info.grpc_timeout),
    )?;
    Ok(format!(
        "DEADLINE_EXCEEDED from the backend; it saw grpc-timeout {}",
        info.grpc_timeout
    ))
}

async fn cancel_stream(mut c: Client) -> Result<String, String> {
    let token = unique("cancel-stream");
    let mut s = c
        .hold(HoldRequest {
            token: token.clone(),
            hold_ms: 20_000,
        })
        .await
        .map_err(st)?
        .into_inner();
    match timeout(Duration::from_secs(5), s.message()).await {
        Err(_) => return Err("no first message within 5 s".into()),
        Ok(Err(e)) => return Err(st(e)),
        Ok(Ok(None)) => return Err("stream ended early".into()),
        Ok(Ok(Some(_))) => {}
    }
    let t0 = Instant::now();
    drop(s); // cancel: RST_STREAM(CANCEL) toward the agent
    expect_cancelled(&mut c, &token, Duration::from_secs(5)).await?;
    Ok(format!(
        "backend saw the cancellation {} ms after the client dropped the stream",
        t0.elapsed().as_millis()
    ))
}

async fn cancel_unary(mut c: Client) -> Result<String, String> {
    let token = unique("cancel-unary");
    // No deadline: only the client's cancellation can end the backend's 5 s sleep early.
    let mut c2 = c.clone();
    let call = c2.sleep(SleepRequest {
        sleep_ms: 5000,
        token: token.clone(),
    });
    let r = timeout(Duration::from_millis(400), call).await;
    ensure(r.is_err(), || {
        format!("call completed within 400 ms: {r:?}")
    })?;
    let t0 = Instant::now();
    let (info, _) = wait_call_info(&mut c, &token, Duration::from_secs(2), |i| i.known).await?;
    ensure(info.known, || "the call never reached the backend".into())?;
    expect_cancelled(&mut c, &token, Duration::from_secs(4)).await?;
    Ok(format!(
        "backend saw the cancellation {} ms after the client gave up",
        t0.elapsed().as_millis()
    ))
}

async fn concurrent_unary(c: Client) -> Result<String, String> {
    let mut tasks = vec![];
    for i in 0..20usize {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .unary(UnaryRequest {
                    payload: pattern(i * 997),
                    delay_ms: (i % 5) as i32 * 20,
                    ..Default::default()
                })
                .await
                .map_err(st)?
                .into_inner();
            size_check(&r.payload, i * 997, &format!("call {i}"))
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        t.await.map_err(|e| format!("task {i}: {e}"))??;
    }
    Ok("20 concurrent calls on one channel".into())
}

/// 20 new connections one after the other, one unary call each (every new client connection
/// is a new upstream connection or tunnel).
async fn fresh_connections(addr: SocketAddr) -> Result<String, String> {
    let mut failures = vec![];
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t0 = Instant::now();
        let r = timeout(Duration::from_secs(3), async {
            let mut c = connect(addr).await?;
            c.unary(UnaryRequest {
                payload: vec![i as u8; 10],
                ..Default::default()
            })
            .await
            .map_err(st)
            .map(|_| ())
        })
        .await;
        worst = worst.max(t0.elapsed());
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("#{i}: {e}")),
            Err(_) => failures.push(format!("#{i}: no answer within 3 s")),
        }
    }
    ensure(failures.is_empty(), || {
        format!("{} of 20 failed: {}", failures.len(), failures.join("; "))
    })?;
    Ok(format!("20 of 20, slowest {} ms", worst.as_millis()))
}
