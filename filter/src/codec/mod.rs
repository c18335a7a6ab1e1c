//! Pure wire-format codecs for the bridge: no proxy-wasm types, no I/O, no allocation beyond
//! what the caller's data requires, and no panics reachable from peer-controlled bytes.
//!
//! Everything the filter parses arrives from the network split at arbitrary points (HTTP/1
//! chunks, HTTP/2 DATA frames, WebSocket messages), so every decoder here is incremental and
//! gives the same answer however its input is cut. Limits are checked against *declared*
//! lengths, before any byte of an oversized frame is buffered, because the filter runs inside a
//! shared proxy where one hostile stream must not be able to grow memory without bound.
//!
//! - [`grpc_frame`]: the 5-byte length prefix shared by gRPC and gRPC-web bodies.
//! - [`grpc_web`]: gRPC-web content types and the `0x80` in-body trailer frame.
//! - [`text`]: streaming base64 for `application/grpc-web-text`.
//! - [`h2`]: just enough HTTP/2 framing for the tunnel server to speak first.
//! - [`h2_streams`]: which tunnelled calls are open, to end them with UNAVAILABLE if the tunnel breaks.
//! - [`status`]: gRPC status codes, HTTP status mappings, `grpc-message` percent-encoding.
//! - [`websocket`]: RFC 6455 frames ([`websocket::frame`]) and the HTTP/1.1 upgrade handshake
//!   ([`websocket::handshake`]).
//! - `header_buf`: a fixed-size frame header gathered across chunks (gRPC's and HTTP/2's).
//! - [`sha1`]: SHA-1 for `Sec-WebSocket-Accept` and constant-time secret comparison.
// The `tests` modules below each codec may unwrap, index and do plain arithmetic: a panic there
// is a failing test, not a crash a peer can reach. The non-test build of the library (the one
// every target, wasm32 included, ships and clippy checks) still denies all of these.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod grpc_frame;
pub mod grpc_web;
pub mod h2;
pub mod h2_streams;
mod header_buf;
pub mod sha1;
pub mod status;
pub mod text;
pub mod websocket;

/// RFC 9110 `tchar`: the characters allowed in a token (a header name, a media subtype).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}
