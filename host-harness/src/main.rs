//! `host-harness`: run the filter without Envoy.
//!
//!   host-harness proxy --wasm F --config C --listen ADDR --upstream ADDR
//!                      [--downstream h1|h2c] [--upstream-protocol h1|h2c] [--network]
//!                      [--per-connection-buffer-limit-bytes N] [--http2-initial-stream-window-size N]
//!                      [--downstream-http1-trailers] [--upstream-http1-trailers]
//!   host-harness demo [--wasm F]
//!
//! `--config` is a file path, or the JSON itself when no such file exists. A `tunnel_*`
//! role (or `--network`) runs the filter as a network filter in front of a TCP proxy.

use std::process::ExitCode;

use host_harness::proxy::{self, Protocol, ProxyConfig};

const USAGE: &str = "usage:
  host-harness proxy --wasm FILE --config FILE|JSON --listen ADDR --upstream ADDR
                     [--downstream h1|h2c] [--upstream-protocol h1|h2c] [--network]
                     [--per-connection-buffer-limit-bytes N] [--http2-initial-stream-window-size N]
                     [--downstream-http1-trailers] [--upstream-http1-trailers]
      HTTP roles (agent, server): an HTTP proxy; tunnel roles (or --network): a TCP proxy.
  host-harness demo [--wasm FILE]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("proxy") => run_proxy(&args[1..]),
        Some("demo") => host_harness::demo::main(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn run_proxy(args: &[String]) -> ExitCode {
    let parsed = (|| -> Result<ProxyConfig, String> {
        let need = |n: &str| flag(args, n).ok_or_else(|| format!("missing {n}\n{USAGE}"));
        let config = need("--config")?;
        let plugin_config = match std::fs::read(&config) {
            Ok(bytes) => bytes,
            Err(_) if config.trim_start().starts_with('{') => config.into_bytes(),
            Err(e) => return Err(format!("cannot read config file {config}: {e}")),
        };
        let addr = |n: &str| -> Result<std::net::SocketAddr, String> {
            let v = need(n)?;
            v.parse()
                .map_err(|_| format!("{n}: {v:?} is not an address like 127.0.0.1:8080"))
        };
        let proto = |n: &str| -> Result<Protocol, String> {
            flag(args, n)
                .map(|v| v.parse())
                .unwrap_or(Ok(Protocol::H2c))
                .map_err(|e| format!("{n}: {e}"))
        };
        let mut cfg = ProxyConfig::new(
            need("--wasm")?,
            plugin_config,
            addr("--listen")?,
            addr("--upstream")?,
        )
        .protocols(proto("--downstream")?, proto("--upstream-protocol")?);
        if args.iter().any(|a| a == "--network") {
            cfg = cfg.network(true);
        }
        // Envoy's `enable_trailers` for HTTP/1.1 on the listener / the cluster.
        let has = |f: &str| args.iter().any(|a| a == f);
        cfg = cfg.http1_trailers(
            has("--downstream-http1-trailers"),
            has("--upstream-http1-trailers"),
        );
        if let Some(v) = flag(args, "--per-connection-buffer-limit-bytes") {
            let n = v.parse().map_err(|_| {
                format!("--per-connection-buffer-limit-bytes: {v:?} is not a byte count")
            })?;
            cfg = cfg.buffer_limit(n);
        }
        if let Some(v) = flag(args, "--http2-initial-stream-window-size") {
            let n = v.parse().map_err(|_| {
                format!("--http2-initial-stream-window-size: {v:?} is not a byte count")
            })?;
            cfg = cfg.http2_initial_stream_window_size(n);
        }
        Ok(cfg)
    })();
    let cfg = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("host-harness: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("host-harness: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match proxy::start(cfg.clone()).await {
            Ok(running) if running.network => {
                eprintln!(
                    "host-harness: network filter + TCP proxy on {} -> {}",
                    running.local_addr, cfg.upstream
                );
                let _ = tokio::signal::ctrl_c().await;
                ExitCode::SUCCESS
            }
            Ok(running) => {
                eprintln!(
                    "host-harness: proxy on {} ({:?}) -> {} ({:?})",
                    running.local_addr,
                    cfg.downstream_protocol,
                    cfg.upstream,
                    cfg.upstream_protocol
                );
                let _ = tokio::signal::ctrl_c().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("host-harness: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
