//! grpc-bridge: a proxy-wasm filter that carries gRPC across HTTP/1.1-only networks.
//!
//! One module, two roles chosen by configuration: the **agent** (next to a gRPC client) turns
//! native gRPC into gRPC-web over HTTP/1.1 and back; the **server** (next to the gRPC backend)
//! turns gRPC-web back into native gRPC and carries the response trailers in the body.
//!
//! Layout: `codec` is pure wire formats (no host types; natively tested, fuzzed, benchmarked);
//! `host` is the raw ABI with statuses; `abi` is the entry points; `root` owns configuration
//! and the flush tick; `http::{agent, server}` are the roles.
//!
//! # Limitations
//! - The server role holds response data for up to `flush_interval_ms` so it can still append
//!   the trailer frame (Envoy offers no other way to add body bytes at trailers time).
//! - Bidirectional streaming over gRPC-web needs every hop to stream request bodies; proxies that
//!   buffer whole request bodies break it (the WebSocket transport exists for those).

pub mod abi;
pub mod auth;
pub mod codec;
pub mod config;
pub mod host;
pub mod http;
pub mod metrics;
pub mod root;
pub mod tunnel;
