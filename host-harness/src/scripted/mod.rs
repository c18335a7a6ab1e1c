//! Layer 3 of 3: the model driven from a script on the virtual clock, for tests
//! (`scenario.rs`: one stream or connection step by step) and for fuzzing (`fuzzing.rs`:
//! random inputs against invariants). Imports the host and model layers, never `live`.

pub mod fuzzing;
mod scenario;

pub use scenario::{body_of, ConnectionScenario, Scenario};

/// Request headers that must never reach the backend through the bridge: the bridge's own
/// (marker, secret, `x-grpc-web`) and the hop-by-hop ones. The scripted tests
/// (`tests/auth.rs`) and the Envoy tests (`grpc-bridge-tests`' `hostile.rs`) check the headers
/// the backend got against this one list.
pub const HEADERS_NEVER_UPSTREAM: &[&str] = &[
    "x-grpc-bridge",
    "x-grpc-bridge-auth",
    "x-grpc-web",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
];
