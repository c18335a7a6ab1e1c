//! WebSocket upgrade handshake: `parse_client_handshake` and `parse_server_handshake` on
//! arbitrary bytes, fed as a growing buffer the way the tunnel feeds them; and the encoders'
//! output parsed back.
//!
//! Input: `max: u16` (head size limit; small values are common so TooLarge is reached),
//! `flags: u8` (bit 0: expected accept is the RFC 6455 sample's, else derived from the input;
//! bit 1: a subprotocol is requested), `plan: u16`, then the bytes.
//!
//! Invariants: no panic; `Ok(Some(consumed))` has `consumed <= len`, `consumed <= max`, and the
//! head ends with CRLFCRLF at `consumed`; an accepted request is a GET with a valid 24-char
//! key and lowercase header names; the answer for a growing buffer is `Ok(None)` until it is
//! decided and never changes afterwards (so however the bytes arrive, the same answer); an
//! encoded client request and server answer are accepted by the parsers.
#![no_main]

use fuzz_common::{chunk_offsets, chunks, Input};
use grpc_bridge::codec::websocket::{
    accept_key, encode_client_handshake, encode_handshake_rejection, encode_server_handshake,
    key_from_nonce, parse_client_handshake, parse_server_handshake, ClientHandshake,
    HandshakeError,
};
use libfuzzer_sys::fuzz_target;

const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const PROTOCOL: &str = "grpc-bridge.tunnel.v1";

fn check_head(buf: &[u8], consumed: usize, max: usize) {
    assert!(
        consumed <= buf.len(),
        "consumed {consumed} > len {}",
        buf.len()
    );
    assert!(consumed <= max, "consumed {consumed} > max {max}");
    assert!(consumed >= 4 && &buf[consumed - 4..consumed] == b"\r\n\r\n");
}

/// Prefix lengths at which to re-parse: the chunk ends of `plan`, at most 24 of them spread
/// over the input (parsing is quadratic in the number of prefixes).
fn prefixes(bytes: &[u8], plan: u16) -> Vec<usize> {
    let cut = chunks(bytes, plan);
    let mut ends: Vec<usize> = chunk_offsets(&cut)
        .iter()
        .zip(&cut)
        .map(|(o, c)| o + c.len())
        .collect();
    if ends.len() > 24 {
        let step = ends.len().div_ceil(24);
        ends = ends.into_iter().step_by(step).collect();
    }
    ends.push(bytes.len());
    ends
}

/// The answers for growing prefixes must be Ok(None) until decided, then constant.
fn stable<T: PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    ends: &[usize],
    parse: impl Fn(&[u8]) -> Result<Option<T>, HandshakeError>,
) -> Result<Option<T>, HandshakeError> {
    let mut decided: Option<Result<Option<T>, HandshakeError>> = None;
    for &end in ends {
        let r = parse(&bytes[..end]);
        match &decided {
            Some(d) => assert_eq!(&r, d, "answer changed at prefix {end}"),
            None => {
                if r != Ok(None) {
                    decided = Some(r);
                }
            }
        }
    }
    decided.unwrap_or(Ok(None))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let raw_max = input.u16();
    let max = if raw_max & 0x8000 != 0 {
        usize::from(raw_max & 0x7FFF)
    } else {
        usize::from(raw_max & 0x3FF)
    };
    let flags = input.u8();
    let plan = input.u16();
    let bytes = input.rest();
    let ends = prefixes(bytes, plan);

    // Server side: the client's request.
    let r = stable(bytes, &ends, |b| parse_client_handshake(b, max));
    if let Ok(Some((req, consumed))) = &r {
        check_head(bytes, *consumed, max);
        assert_eq!(req.method, "GET");
        assert_eq!(req.key.len(), 24);
        assert!(req
            .headers
            .iter()
            .all(|(n, _)| !n.is_empty() && !n.bytes().any(|b| b.is_ascii_uppercase())));
        assert!(req
            .protocols
            .iter()
            .all(|p| !p.is_empty() && !p.contains(',')));
        let _ = accept_key(&req.key);
    }

    // Client side: the server's answer.
    let accept = if flags & 1 != 0 {
        SAMPLE_ACCEPT.to_owned()
    } else {
        accept_key(&String::from_utf8_lossy(&bytes[..bytes.len().min(24)]))
    };
    let protocol = (flags & 2 != 0).then_some(PROTOCOL);
    let r = stable(bytes, &ends, |b| {
        parse_server_handshake(b, max, &accept, protocol)
    });
    if let Ok(Some(consumed)) = r {
        check_head(bytes, consumed, max);
    }

    // The encoders' output parses back.
    let mut inp = Input::new(bytes);
    let nonce: [u8; 16] = std::array::from_fn(|_| inp.u8());
    let fields: Vec<String> = inp
        .rest()
        .split(|&b| b == 0xFF)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let field = |i: usize| fields.get(i).cloned().unwrap_or_default();
    let key = key_from_nonce(nonce);
    let offered = (flags & 2 != 0).then(|| field(2));
    let hs = ClientHandshake {
        host: field(0),
        path: field(1),
        key: key.clone(),
        protocol: offered.clone(),
        extra_headers: fields
            .get(3..)
            .unwrap_or(&[])
            .chunks(2)
            .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
            .collect(),
    };
    let req_bytes = encode_client_handshake(&hs);
    match parse_client_handshake(&req_bytes, usize::MAX) {
        Ok(Some((req, consumed))) => {
            assert_eq!(consumed, req_bytes.len());
            assert_eq!(req.key, key);
            if let Some(p) = &offered {
                let clean: String = p
                    .chars()
                    .filter(|c| !c.is_ascii_control() || *c == '\t')
                    .collect();
                let want: Vec<&str> = clean
                    .split(',')
                    .map(|s| s.trim_matches([' ', '\t']))
                    .filter(|s| !s.is_empty())
                    .collect();
                assert_eq!(req.protocols, want);
            } else {
                assert!(req.protocols.is_empty());
            }
        }
        other => panic!(
            "encoded request refused: {other:?}\n{}",
            String::from_utf8_lossy(&req_bytes)
        ),
    }
    let answer_proto = field(2);
    let clean_proto = !answer_proto.chars().any(|c| c.is_ascii_control())
        && answer_proto.trim_matches([' ', '\t']) == answer_proto;
    let proto = (flags & 2 != 0 && clean_proto).then_some(answer_proto.as_str());
    let accept = accept_key(&key);
    let answer = encode_server_handshake(&accept, proto);
    assert_eq!(
        parse_server_handshake(&answer, usize::MAX, &accept, proto),
        Ok(Some(answer.len())),
        "encoded answer refused: {}",
        String::from_utf8_lossy(&answer)
    );
    // A rejection is reported as such, from its status line alone.
    let status = u16::from_le_bytes([nonce[0], nonce[1]]);
    let refusal = encode_handshake_rejection(status, &field(0));
    let want = if (400..=599).contains(&status) {
        status
    } else {
        400
    };
    let line_end = refusal
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("status line")
        + 2;
    for n in [refusal.len(), line_end] {
        assert_eq!(
            parse_server_handshake(&refusal[..n], usize::MAX, &accept, None),
            Err(HandshakeError::Rejected { status: want })
        );
    }
});
