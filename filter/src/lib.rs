//! grpc-bridge: a proxy-wasm filter that carries gRPC across HTTP/1.1-only networks.
//!
//! One module, two roles chosen by configuration: the **agent** (next to a gRPC client) turns
//! native gRPC into gRPC-web over HTTP/1.1 and back; the **server** (next to the gRPC backend)
//! turns gRPC-web back into native gRPC and carries the response trailers in the body.
//!
//! Layout, imports one way (entry points -> root -> roles -> codec, host, config):
//! `abi` is the proxy-wasm entry points and the context registry; `root` owns configuration and
//! creates stream contexts; `context` is the callback traits the roles implement;
//! `http::{agent, server, guard, http1_status}` are the HTTP-filter roles (`http::flush` is the
//! server's flush tick, `http::stream_host` their host seam); `tunnel::{client, server}` the
//! network-filter roles (`tunnel::session` their shared WebSocket session, `tunnel::net_host`
//! their host seam); `auth`, `metrics`; `host` is the raw ABI with statuses; `codec` is
//! pure wire formats (no host types; natively tested, fuzzed, benchmarked).
//!
//! Public API: what the host harness, the fuzz targets, the benches and the tests use, no more:
//! `codec`, `config`, `auth`, `http::http1_status` (the plain HTTP/1.1 hold) and `tunnel`'s
//! header checks. The entry points (`abi`), the root, the roles and their host seams are
//! crate-private; their unit tests live beside them.
//!
//! # Limitations
//! - The server role holds response data for up to `flush_interval_ms` so it can still append
//!   the trailer frame (Envoy offers no other way to add body bytes at trailers time).
//! - Bidirectional streaming over gRPC-web needs every hop to stream request bodies; proxies that
//!   buffer whole request bodies break it (the WebSocket transport exists for those).

mod abi;
pub mod auth;
pub mod codec;
pub mod config;
mod context;
mod host;
pub mod http;
mod metrics;
mod root;
pub mod tunnel;
