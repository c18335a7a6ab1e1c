//! What one proxy runs: the filter, its configuration, the two sides' protocols and Envoy's
//! buffer and trailer options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::host::state::LogEntry;

/// Wire protocol of one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2c,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "h1" | "http1" | "http/1.1" => Ok(Protocol::Http1),
            "h2c" | "h2" | "http2" => Ok(Protocol::H2c),
            other => Err(format!("unknown protocol {other:?} (use h1 or h2c)")),
        }
    }
}

/// Guest log lines collected by a proxy (tests compare them with Envoy's log).
pub type LogSink = Arc<Mutex<Vec<LogEntry>>>;

use crate::host::vm::{DEFAULT_BUFFER_LIMIT, DEFAULT_H2_STREAM_WINDOW};

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub wasm: PathBuf,
    pub plugin_config: Vec<u8>,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub downstream_protocol: Protocol,
    pub upstream_protocol: Protocol,
    /// Run the filter as a network filter in front of a TCP proxy. `None`: decided by the
    /// configuration's `role` (`tunnel_client` / `tunnel_server` are network roles).
    pub network: Option<bool>,
    /// Envoy's `per_connection_buffer_limit_bytes` (listener and cluster): a connection's
    /// read-buffer watermark, and the filter chain's buffer limit per stream for an
    /// HTTP/1.1 client.
    pub buffer_limit_bytes: u32,
    /// The HCM's HTTP/2 `initial_stream_window_size`: the window advertised to an h2c
    /// client and the filter chain's buffer limit per stream for it.
    pub http2_initial_stream_window_size: u32,
    /// Collect guest logs here instead of printing them to stderr.
    pub log_sink: Option<LogSink>,
    /// The HCM's `http_protocol_options.enable_trailers` for an HTTP/1.1 client: without it
    /// Envoy drops trailers both ways on that connection (default false, like Envoy).
    pub downstream_http1_trailers: bool,
    /// The cluster's `http_protocol_options.enable_trailers` for an HTTP/1.1 upstream.
    pub upstream_http1_trailers: bool,
}

impl ProxyConfig {
    /// h2c on both sides, the role decides HTTP vs network, Envoy's default buffer limit.
    pub fn new(
        wasm: impl Into<PathBuf>,
        plugin_config: impl Into<Vec<u8>>,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Self {
        ProxyConfig {
            wasm: wasm.into(),
            plugin_config: plugin_config.into(),
            listen,
            upstream,
            downstream_protocol: Protocol::H2c,
            upstream_protocol: Protocol::H2c,
            network: None,
            buffer_limit_bytes: DEFAULT_BUFFER_LIMIT,
            http2_initial_stream_window_size: DEFAULT_H2_STREAM_WINDOW,
            log_sink: None,
            downstream_http1_trailers: false,
            upstream_http1_trailers: false,
        }
    }

    pub fn protocols(mut self, downstream: Protocol, upstream: Protocol) -> Self {
        self.downstream_protocol = downstream;
        self.upstream_protocol = upstream;
        self
    }

    pub fn network(mut self, on: bool) -> Self {
        self.network = Some(on);
        self
    }

    pub fn log_sink(mut self, sink: LogSink) -> Self {
        self.log_sink = Some(sink);
        self
    }

    pub fn buffer_limit(mut self, bytes: u32) -> Self {
        self.buffer_limit_bytes = bytes;
        self
    }

    /// Envoy's `enable_trailers` on the listener (`downstream`) and the cluster (`upstream`)
    /// HTTP/1.1 protocol options.
    pub fn http1_trailers(mut self, downstream: bool, upstream: bool) -> Self {
        self.downstream_http1_trailers = downstream;
        self.upstream_http1_trailers = upstream;
        self
    }

    /// Whether trailers cross the client side.
    pub(super) fn downstream_trailers(&self) -> bool {
        self.downstream_protocol == Protocol::H2c || self.downstream_http1_trailers
    }

    /// Whether trailers cross the upstream side.
    pub(super) fn upstream_trailers(&self) -> bool {
        self.upstream_protocol == Protocol::H2c || self.upstream_http1_trailers
    }

    pub fn http2_initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.http2_initial_stream_window_size = bytes;
        self
    }

    /// The filter chain's buffer limit per stream, as Envoy derives it from the downstream
    /// codec.
    pub fn stream_buffer_limit(&self) -> u32 {
        match self.downstream_protocol {
            Protocol::Http1 => self.buffer_limit_bytes,
            Protocol::H2c => self.http2_initial_stream_window_size,
        }
    }

    /// Whether this proxy runs the filter as a network filter.
    pub fn is_network(&self) -> bool {
        self.network
            .unwrap_or_else(|| is_network_role(&self.plugin_config))
    }
}

/// True when the configuration's `role` is a network-filter role (`tunnel_*`). A small
/// scan, not a JSON parser: the filter itself validates its configuration.
pub fn is_network_role(config: &[u8]) -> bool {
    let text = String::from_utf8_lossy(config);
    let Some(at) = text.find("\"role\"") else {
        return false;
    };
    let rest = text[at + 6..].trim_start();
    let Some(rest) = rest.strip_prefix(':') else {
        return false;
    };
    let rest = rest.trim_start();
    rest.strip_prefix('"')
        .is_some_and(|v| v.starts_with("tunnel_"))
}
