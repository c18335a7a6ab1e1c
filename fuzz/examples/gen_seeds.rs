//! Writes the seed corpora under `fuzz/corpus/<target>/`, built with the codecs' own encoders.
//!
//!     cd fuzz && cargo run --example gen_seeds
//!
//! Each seed starts with the parameter bytes its target reads (see the target's doc comment),
//! then the stream. Re-running rewrites the same files (deterministic); fuzzer-found inputs are
//! not kept here (smoke.sh and campaigns write them to `corpus-new/`).

use std::fs;
use std::path::Path;

use grpc_bridge::codec::grpc_frame::encode_frame;
use grpc_bridge::codec::grpc_web::encode_trailer_frame;
use grpc_bridge::codec::h2::{ping_frame, EMPTY_SETTINGS, NUDGE_OPAQUE, PREFACE};
use grpc_bridge::codec::status::percent_encode;
use grpc_bridge::codec::text::encode_padded;
use grpc_bridge::codec::websocket::{
    accept_key, close_payload, encode_client_handshake, encode_frame as ws_frame,
    encode_handshake_rejection, encode_server_handshake, key_from_nonce, ClientHandshake, Opcode,
};

/// `limit_u32` parameter for a limit in 0..=16383.
fn lim(n: u16) -> [u8; 2] {
    (0x4000 | (n & 0x3FFF)).to_le_bytes()
}

/// Chunking plans (see fuzz_common::chunks): byte-by-byte, random up to 7, fixed 16, whole.
const BYTEWISE: u16 = 0x0000;
const UP_TO_7: u16 = 0x2C5 | 0x20; // random sizes up to 7 with empty chunks
const FIXED_16: u16 = 0x0019;
const WHOLE: u16 = 0x000F;

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

struct Corpus {
    dir: std::path::PathBuf,
    n: usize,
}

impl Corpus {
    fn new(root: &Path, target: &str) -> Corpus {
        let dir = root.join(target);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create corpus dir");
        Corpus { dir, n: 0 }
    }

    /// Writes a seed: its parts (the target's parameter bytes first, then the stream), one
    /// after the other.
    fn add(&mut self, name: &str, parts: &[&[u8]]) {
        let path = self.dir.join(format!("seed-{:02}-{name}", self.n));
        fs::write(path, parts.concat()).expect("write seed");
        self.n += 1;
    }
}

/// A `grpc_frame` seed: name, `[max_message, max_trailer]`, `[plan_a, plan_b]`, the body's parts.
type GrpcFrameSeed<'a> = (&'a str, [u16; 2], [u16; 2], &'a [&'a [u8]]);

fn trailers(pairs: &[(&str, &str)]) -> Vec<u8> {
    let v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut out = Vec::new();
    encode_trailer_frame(&v, usize::MAX, &mut out).expect("valid trailers");
    out
}

fn grpc(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_frame(flags, payload, &mut v);
    v
}

fn ws(fin: bool, op: Opcode, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    ws_frame(fin, op, mask, payload, &mut v);
    v
}

fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let ok = trailers(&[("grpc-status", "0"), ("grpc-message", "")]);
    let err = trailers(&[
        ("grpc-status", "13"),
        ("grpc-message", &percent_encode("boom: ü")),
        ("x-trace-bin", "AAEC"),
    ]);

    // grpc_frame: max_message, max_trailer, plan_a, plan_b, body.
    let mut c = Corpus::new(&root, "grpc_frame");
    let two = cat(&[&grpc(0, b"hello"), &grpc(1, b"z"), &ok]);
    let seeds: &[GrpcFrameSeed] = &[
        (
            "two-messages-trailers",
            [1000, 200],
            [BYTEWISE, UP_TO_7],
            &[&two],
        ),
        (
            "empty-messages",
            [10, 100],
            [FIXED_16, WHOLE],
            &[&grpc(0, b""), &grpc(0, b""), &grpc(0x80, b"")],
        ),
        ("trailers-only", [1000, 200], [UP_TO_7, BYTEWISE], &[&err]),
        (
            "message-too-large",
            [4, 200],
            [BYTEWISE, WHOLE],
            &[&grpc(0, b"abc"), &grpc(0, b"abcde")],
        ),
        (
            "trailers-too-large",
            [100, 8],
            [WHOLE, BYTEWISE],
            &[&grpc(0, b"abc"), &ok],
        ),
        (
            "reserved-flags",
            [100, 100],
            [BYTEWISE, UP_TO_7],
            &[&grpc(0, b"a"), &grpc(0x81, b"x")],
        ),
        (
            "truncated",
            [100, 100],
            [UP_TO_7, FIXED_16],
            &[&grpc(0, b"abcdef")[..8]],
        ),
        (
            "data-after-trailers",
            [100, 100],
            [BYTEWISE, WHOLE],
            &[&ok, &grpc(0, b"late")],
        ),
    ];
    for &(name, [max_message, max_trailer], [a, b], body) in seeds {
        let params = cat(&[
            &lim(max_message),
            &lim(max_trailer),
            &a.to_le_bytes(),
            &b.to_le_bytes(),
        ]);
        c.add(name, &[&params, &body.concat()]);
    }

    // trailer_frame: limit, plan_a, plan_b, bytes.
    let mut c = Corpus::new(&root, "trailer_frame");
    let params = |l: u16, a: u16, b: u16| cat(&[&lim(l), &a.to_le_bytes(), &b.to_le_bytes()]);
    c.add("frame-ok", &[&params(1024, BYTEWISE, UP_TO_7), &ok]);
    c.add("frame-error", &[&params(1024, UP_TO_7, BYTEWISE), &err]);
    c.add(
        "block",
        &[
            &params(1024, FIXED_16, WHOLE),
            b"grpc-status: 0\r\ngrpc-message:  all good \r\n\nx-a:b",
        ],
    );
    c.add(
        "block-hostile",
        &[
            &params(1024, BYTEWISE, WHOLE),
            b"Grpc-Status:0\r\n:status:200\r\nx:\x00\r\n",
        ],
    );
    c.add("frame-too-large", &[&params(8, WHOLE, BYTEWISE), &ok]);
    c.add(
        "pairs",
        &[
            &params(1024, UP_TO_7, UP_TO_7),
            b"grpc-status\xff0\xffGRPC-Message\xff  hi there \xffx-bin\xff\t",
        ],
    );

    // base64_text: plan_a, plan_b, text.
    let mut c = Corpus::new(&root, "base64_text");
    let params = |a: u16, b: u16| cat(&[&a.to_le_bytes(), &b.to_le_bytes()]);
    let b64 = |x: &[u8]| {
        let mut v = Vec::new();
        encode_padded(x, &mut v);
        v
    };
    c.add("frames", &[&params(BYTEWISE, UP_TO_7), &b64(&two)]);
    c.add(
        "padded-flushes",
        &[&params(UP_TO_7, BYTEWISE), &b64(&grpc(0, b"x")), &b64(&ok)],
    );
    c.add(
        "rfc4648",
        &[
            &params(FIXED_16, WHOLE),
            b"Zg==Zm8=Zm9vZm9vYg==Zm9vYmE=Zm9vYmFy",
        ],
    );
    c.add("bad-byte", &[&params(BYTEWISE, WHOLE), b"AAAA\r\nAAAA"]);
    c.add("bad-padding", &[&params(UP_TO_7, WHOLE), b"AA=AAAAA"]);
    let all: Vec<u8> = (0..=255).collect();
    c.add("all-bytes", &[&params(WHOLE, BYTEWISE), &b64(&all)]);

    // percent: the value.
    let mut c = Corpus::new(&root, "percent");
    c.add(
        "encoded",
        &[percent_encode("déjà vu: 100% ✓\r\n").as_bytes()],
    );
    c.add("plain", &[b"deadline exceeded"]);
    c.add("broken-escapes", &[b"%zz%4%%41%C3%28%e2%82"]);
    c.add("status", &[b"13"]);
    c.add("status-overflow", &[b"4294967296"]);

    // websocket_frames: flags, max_payload, plan_a, plan_b, mask, bytes.
    let mut c = Corpus::new(&root, "websocket_frames");
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let params = |side_server: bool, max: u16, a: u16, b: u16| {
        cat(&[
            &[u8::from(side_server)],
            &lim(max),
            &a.to_le_bytes(),
            &b.to_le_bytes(),
            &mask,
        ])
    };
    for (server, m) in [(false, None), (true, Some(mask))] {
        let side = if server { "server" } else { "client" };
        let stream = cat(&[
            &ws(true, Opcode::Binary, m, &two),
            &ws(false, Opcode::Text, m, "héllo ".as_bytes()),
            &ws(true, Opcode::Ping, m, b"are you there"),
            &ws(true, Opcode::Continuation, m, "wörld".as_bytes()),
            &ws(true, Opcode::Pong, m, b""),
            &ws(true, Opcode::Close, m, &close_payload(1000, "bye")),
        ]);
        c.add(
            &format!("{side}-session"),
            &[&params(server, 4096, BYTEWISE, UP_TO_7), &stream],
        );
        c.add(
            &format!("{side}-16bit-length"),
            &[
                &params(server, 16383, UP_TO_7, WHOLE),
                &ws(true, Opcode::Binary, m, &[7u8; 300]),
            ],
        );
        c.add(
            &format!("{side}-too-big"),
            &[
                &params(server, 16, WHOLE, BYTEWISE),
                &ws(true, Opcode::Binary, m, &[1u8; 40]),
            ],
        );
    }
    // Hostile frames: unmasked client frame, RSV bits, reserved opcode, fragmented ping,
    // 64-bit length with the top bit set, bad close code, bad UTF-8.
    c.add(
        "server-unmasked",
        &[
            &params(true, 1024, BYTEWISE, WHOLE),
            &ws(true, Opcode::Binary, None, b"x"),
        ],
    );
    for (name, frame) in [
        ("client-rsv", vec![0xC2, 0x01, 0x00]),
        ("client-opcode-3", vec![0x83, 0x00]),
        ("client-fragmented-ping", vec![0x09, 0x00]),
        (
            "client-64bit-top",
            vec![0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1],
        ),
        (
            "client-close-1005",
            ws(true, Opcode::Close, None, &[0x03, 0xED]),
        ),
    ] {
        c.add(name, &[&params(false, 1024, BYTEWISE, WHOLE), &frame]);
    }
    c.add(
        "client-bad-utf8",
        &[
            &params(false, 1024, UP_TO_7, WHOLE),
            &ws(true, Opcode::Text, None, b"ok\xC3\x28"),
        ],
    );
    // Recipes for the generator (kind, len, payload...): fragmented text with pings, close.
    c.add(
        "recipe",
        &[
            &params(true, 1024, UP_TO_7, BYTEWISE),
            &[0x1A, 9],
            "añb€c😀".as_bytes(),
            &[3, 1, 2, 0, 4, 7, 65, 5, 3, 66, 67, 68],
        ],
    );

    // websocket_handshake: max, flags, plan, bytes.
    let mut c = Corpus::new(&root, "websocket_handshake");
    let params = |max: u16, flags: u8, plan: u16| {
        cat(&[&(0x8000 | max).to_le_bytes(), &[flags], &plan.to_le_bytes()])
    };
    let key = key_from_nonce(*b"the sample nonce");
    let req = encode_client_handshake(&ClientHandshake {
        host: "server.example.com".into(),
        path: "/grpc-bridge/tunnel".into(),
        key: key.clone(),
        protocol: Some("grpc-bridge.tunnel.v1".into()),
        extra_headers: vec![("Authorization".into(), "Bearer abc".into())],
    });
    c.add(
        "client-request",
        &[
            &params(8192, 2, UP_TO_7),
            &req,
            &ws(true, Opcode::Binary, Some(mask), b"early"),
        ],
    );
    c.add("client-request-tiny-max", &[&params(40, 0, BYTEWISE), &req]);
    c.add(
        "server-101",
        &[
            &params(8192, 3, BYTEWISE),
            &encode_server_handshake(&accept_key(&key), Some("grpc-bridge.tunnel.v1")),
        ],
    );
    c.add(
        "server-101-sample",
        &[
            &params(8192, 1, UP_TO_7),
            &encode_server_handshake("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None),
        ],
    );
    c.add(
        "server-refusal",
        &[
            &params(8192, 0, FIXED_16),
            &encode_handshake_rejection(403, "forbidden"),
        ],
    );
    c.add(
        "pieces",
        &[
            &params(8192, 2, WHOLE),
            b"the sample nonce",
            b"host\xff/p\xffproto, other\xffX-Token\xff 42 ",
        ],
    );

    // h2_tunnel: flags, plan, nudges, stream.
    let mut c = Corpus::new(&root, "h2_tunnel");
    let params = |preface: bool, plan: u16, nudges: u32| {
        cat(&[
            &[u8::from(preface)],
            &plan.to_le_bytes(),
            &nudges.to_le_bytes(),
        ])
    };
    let settings_ack = h2_frame(4, 1, 0, b"");
    let mut ping_ack = ping_frame(NUDGE_OPAQUE);
    ping_ack[4] = 1;
    let mut other_ack = ping_frame(*b"12345678");
    other_ack[4] = 1;
    let backend = cat(&[
        &EMPTY_SETTINGS,
        &settings_ack,
        &ping_ack,
        &h2_frame(1, 4, 1, b"\x88"),
        &other_ack,
        &h2_frame(0, 0, 1, &grpc(0, b"hello")),
        &settings_ack,
        &ping_ack,
        &h2_frame(1, 5, 1, b"\x40\x0bgrpc-status\x010"),
    ]);
    c.add(
        "backend",
        &[&params(false, BYTEWISE, 0x5555_5555), &backend],
    );
    c.add("backend-no-nudges", &[&params(false, UP_TO_7, 0), &backend]);
    c.add(
        "client-after-preface",
        &[
            &params(true, UP_TO_7, 0x0000_0003),
            &EMPTY_SETTINGS,
            &h2_frame(8, 0, 0, &[0, 1, 0, 0]),
        ],
    );
    c.add(
        "preface-inline",
        &[&params(false, BYTEWISE, 0), PREFACE, &EMPTY_SETTINGS],
    );
    c.add(
        "not-http2",
        &[&params(false, FIXED_16, 0), b"GET / HTTP/1.1\r\n\r\n"],
    );

    // config: the JSON. One valid configuration per role, with every field it takes (so the
    // fuzzer starts from each role's struct), then refusals: a bad value, a field of another
    // role, not JSON.
    let mut c = Corpus::new(&root, "config");
    c.add("agent", &[br#"{"role":"agent","max_message_bytes":16777216,"max_trailer_bytes":16384,"marker_header":"x-grpc-bridge","error_body_quote_bytes":256,"auth":{"secret":"0123456789abcdef","secret_header":"x-grpc-bridge-auth"}}"#]);
    c.add("server", &[br#"{"role":"server","max_message_bytes":16777216,"max_trailer_bytes":16384,"flush_interval_ms":5,"max_held_bytes":262144,"http1_hold_bytes":131072,"http1_hold_ms":1000,"marker_header":"x-grpc-bridge","auth":{"shared_secrets":["0123456789abcdef"],"require_client_certificate":true,"allowed_uri_sans":["spiffe://a/b"],"require_for_unmarked":true}}"#]);
    c.add(
        "server-guard",
        &[br#"{"role":"server_guard","marker_header":"x-grpc-bridge","auth":"none"}"#],
    );
    c.add("http1-status", &[br#"{"role":"http1_status"}"#]);
    c.add("tunnel-client", &[br#"{"role":"tunnel_client","tunnel_host":"127.0.0.1:8081","tunnel_path":"/grpc-bridge/tunnel","tunnel_protocol":"grpc-bridge.tunnel.v1","tunnel_headers":{"authorization":"Bearer x"},"max_frame_bytes":1048576,"ping_interval_ms":20000,"auth":{"secret":"0123456789abcdef"}}"#]);
    c.add("tunnel-server", &[br#"{"role":"tunnel_server","tunnel_path":"/t","tunnel_protocol":"grpc-bridge.tunnel.v1","tunnel_headers":{"authorization":"Bearer x"},"max_frame_bytes":1048576,"auth":"none"}"#]);
    c.add(
        "bad-field",
        &[br#"{"role":"agent","max_message_bytes":"big","x":[1,2,{"y":null}]}"#],
    );
    c.add(
        "field-of-another-role",
        &[br#"{"role":"tunnel_server","auth":"none","ping_interval_ms":0}"#],
    );
    c.add("not-json", &[b"role: agent\n"]);

    // scan_sparse: max_message, plan, fault (bit 15 on; bits 12-13 kind; bits 0-11 which
    // peek), body.
    let mut c = Corpus::new(&root, "scan_sparse");
    let params = |mm: u16, plan: u16, fault: u16| {
        cat(&[&lim(mm), &plan.to_le_bytes(), &fault.to_le_bytes()])
    };
    c.add("two-messages-trailers", &[&params(1000, UP_TO_7, 0), &two]);
    c.add(
        "bytewise-empty-messages",
        &[&params(10, BYTEWISE, 0), &grpc(0, b""), &grpc(1, b""), &ok],
    );
    c.add(
        "too-large",
        &[
            &params(4, FIXED_16, 0),
            &grpc(0, b"abcd"),
            &grpc(0, b"abcde"),
        ],
    );
    c.add(
        "reserved-flags-then-empty-chunks",
        &[&params(100, UP_TO_7, 0), &grpc(0, b"x"), &[0x02, 0, 0]],
    );
    c.add(
        "truncated-payload",
        &[&params(100, WHOLE, 0), &grpc(0, b"hello")[..7]],
    );
    c.add(
        "peek-error-second-header",
        &[
            &params(100, BYTEWISE, 0x8000 | 1),
            &grpc(0, b"hi"),
            &grpc(0, b"yo"),
        ],
    );
    c.add(
        "peek-short",
        &[&params(100, WHOLE, 0x9000), &grpc(0, b"hi")],
    );
    c.add(
        "peek-long",
        &[
            &params(100, FIXED_16, 0xA000 | 2),
            &grpc(0, b"a"),
            &grpc(0, b"b"),
            &ok,
        ],
    );

    // auth: flags, secrets, three allow lists, presented secret, four properties, copy, pick,
    // tunnel headers wanted, then presented. A field is a length byte and its bytes.
    let mut c = Corpus::new(&root, "auth");
    let f = |b: &[u8]| cat(&[&[b.len() as u8], b]);
    let missing: &[u8] = &[0x3F];
    // The four raw properties (mtls, URI SAN, DNS SAN, subject), none present.
    let no_properties = [missing; 4].concat();
    let secret_a: &[u8] = b"0123456789abcdef";
    let secret_b: &[u8] = b"new-secret-0000000";
    // require nothing but a secret; two secrets, present the second.
    c.add(
        "secret-ok",
        &[
            &[0x10 | 0x04 | (2 << 5)],
            &f(secret_a),
            &f(secret_b),
            &[0, 0, 0],
            &f(secret_b),
            &no_properties,
            &[0, 0, 0],
        ],
    );
    c.add(
        "secret-wrong-last-byte",
        &[
            &[0x10 | (1 << 5)],
            &f(secret_a),
            &[0, 0, 0],
            &f(b"0123456789abcdeF"),
            &no_properties,
            &[0, 0, 0],
        ],
    );
    c.add(
        "mtls-uri-san-ok-and-tunnel-header",
        &[
            &[0x01 | 0x04],
            &[1],
            &f(b"spiffe://corp/agent"),
            &[0, 0],
            &f(b""),
            &f(&[1]),
            &f(b"spiffe://corp/agent"),
            missing,
            &f(b"CN=agent,O=corp"),
            &[0x10, 0, 1],
            &f(b"Authorization"),
            &f(b"Bearer x"),
        ],
    );
    c.add(
        "mtls-all-lists-copied-and-flipped",
        &[
            &[0x01 | 0x02 | 0x08 | 0x10 | (1 << 5)],
            &f(secret_a),
            &[2],
            &f(b"spiffe://corp/a"),
            &f(b"spiffe://corp/b"),
            &[1],
            &f(b"agent.corp.example"),
            &[1],
            &f(b"CN=agent,O=corp"),
            &f(b""),
            &f(&[1]),
            missing,
            missing,
            missing,
            &[0x0F | 0x40 | 0x80, 0x07],
            &[0],
        ],
    );
    c.add(
        "not-utf8-identity",
        &[
            &[0x01],
            &[0],
            &[1],
            &f("\u{FFFD}".as_bytes()),
            &[0],
            &f(b""),
            &f(&[1]),
            missing,
            &f(&[0xff]),
            missing,
            &[0, 0, 2],
            &f(b"x-a"),
            &f(b"1"),
            &f(b"X-B"),
            &f(b""),
            &f(b"x-a"),
            &f(b"2"),
        ],
    );

    // http1_hold: max_bytes, max_ms, content type, protocol, headers, then 3-byte operations
    // (kind: 0 body, 1 last body chunk, 2 trailers, 3 tick; u16 argument).
    let mut c = Corpus::new(&root, "http1_hold");
    let op = |kind: u8, arg: u16| cat(&[&[kind], &arg.to_le_bytes()]);
    let params = |mb: u16, ms: u8, ct: u8, proto: u8, h: u8| cat(&[&lim(mb), &[ms, ct, proto, h]]);
    c.add(
        "bytes-bound-crossed",
        &[
            &params(100, 0, 0, 0, 0),
            &op(0, 60 << 4),
            &op(0, 40 << 4),
            &op(0, 1 << 4),
            &op(2, 0),
        ],
    );
    c.add(
        "time-bound-by-ticks",
        &[
            &params(0, 5, 1, 1, 0),
            &op(3, 16),
            &op(3, 16 * 3),
            &op(3, 0x8000 | 16),
            &op(3, 16 * 2),
            &op(0, 1 << 4),
        ],
    );
    c.add(
        "ends-in-time",
        &[
            &params(1000, 50, 2, 0, 0),
            &op(0, 500 << 4),
            &op(1, 500),
            &op(3, 16 * 100),
        ],
    );
    c.add(
        "headers-end-the-call",
        &[&params(10, 10, 0, 0, 1), &op(0, 0xFFFF)],
    );
    c.add("http2-no-hold", &[&params(10, 10, 0, 2, 0), &op(0, 0xFFFF)]);
    c.add("grpc-web-no-hold", &[&params(10, 10, 3, 0, 0)]);
    c.add(
        "own-content-type-and-protocol",
        &[
            &params(10, 0, 0x30, 0x48, 0),
            b"application/grpc",
            b"HTTP/1.0",
            &op(1, 11),
        ],
    );

    println!("seed corpora written under {}", root.display());
}
