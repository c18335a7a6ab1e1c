//! Test infrastructure for grpc-bridge: real Envoy, nginx, tonic and grpcio peers.
//!
//! - [`util`]: free ports, waiting, a child-process guard, a tiny admin HTTP client.
//! - [`template`]: `${NAME:-default}` rendering shared with `envoy/run`.
//! - [`envoy`], [`nginx`], [`squid`]: launchers for the configs in `envoy/`.
//! - [`backend`]: the in-process tonic test backend.
//! - [`topology`]: backend -> server Envoy -> nginx HTTP/1.1 hop -> agent Envoy.
//! - [`certs`], [`squid_bump`], [`tls_proxy`]: TLS through a (TLS-intercepting) forward proxy.
//! - [`cases`]: the end-to-end cases, run by a tonic client against any client-facing address.
//! - [`relay`]: a switchable TCP relay (a middlebox appearing in a path).
//! - [`fallback`]: the bridged paths, calls and stats of the transport-fallback tests.
//! - [`grpcweb`], [`fake_upstream`], [`cut_hop`], [`seq`], [`py`], [`browser`]: wire-level
//!   clients and servers, sequenced streams, grpcio and browser drivers.
//! - [`test_table!`]: a table of `#[test]` fns that differ only in what they run.

pub mod pb {
    tonic::include_proto!("bridge.test");
}

pub mod backend;
pub mod browser;
pub mod cases;
pub mod certs;
pub mod cut_hop;
pub mod envoy;
pub mod fake_upstream;
pub mod fallback;
pub mod grpcweb;
pub mod holding_proxy;
pub mod nginx;
pub mod py;
pub mod relay;
pub mod seq;
pub mod squid;
pub mod squid_bump;
pub mod template;
pub mod tls_proxy;
pub mod topology;
pub mod util;

/// One `#[test]` fn per row `name => expression,`, doc comments and attributes before a row going
/// on its fn: for tests that differ only in the arguments they give one runner, so that each case
/// is one row of a table instead of a fn of its own. Each row stays a plain test named `name`
/// (`cargo test NAME` runs it, a failure names it).
#[macro_export]
macro_rules! test_table {
    ($($(#[$attr:meta])* $name:ident => $run:expr),+ $(,)?) => {
        $(
            $(#[$attr])*
            #[test]
            fn $name() {
                $run;
            }
        )+
    };
}
