//! Plugin configuration: `Config::parse` on arbitrary bytes.
//!
//! Input: the whole input is the plugin's `configuration` bytes.
//!
//! Invariants: no panic; parsing is deterministic; an accepted configuration satisfies every
//! documented bound (so the filter can rely on them); a rejection names something (non-empty
//! message).
#![no_main]

use grpc_bridge::config::{Config, Role};
use libfuzzer_sys::fuzz_target;

fn is_token(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

fn clean(v: &str) -> bool {
    !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

fuzz_target!(|data: &[u8]| {
    let r = Config::parse(data);
    assert_eq!(r, Config::parse(data), "not deterministic");
    match r {
        Err(e) => assert!(!e.0.is_empty()),
        Ok(c) => {
            assert!((1..=1 << 30).contains(&c.max_message_bytes));
            assert!((64..=1 << 20).contains(&c.max_trailer_bytes));
            assert!((1..=1000).contains(&c.flush_interval_ms));
            assert!((1024..=64 << 20).contains(&c.max_held_bytes));
            assert!(c.http1_hold_bytes == 0 || (1024..=32 << 20).contains(&c.http1_hold_bytes));
            assert!(c.http1_hold_ms == 0 || (100..=3_600_000).contains(&c.http1_hold_ms));
            assert!(!c.marker_header.is_empty());
            assert!(c
                .marker_header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
            assert!(c.error_body_quote_bytes <= 4096);
            if c.role == Role::TunnelClient {
                assert!(c.tunnel_host.is_some());
            }
            if let Some(h) = &c.tunnel_host {
                assert!(!h.is_empty() && clean(h) && !h.contains(' '));
            }
            assert!(c.tunnel_path.starts_with('/') && clean(&c.tunnel_path));
            assert!(!c.tunnel_path.contains(' '));
            assert!(is_token(&c.tunnel_protocol));
            for (k, v) in &c.tunnel_headers {
                assert!(is_token(k) && clean(v));
            }
            assert!((1024..=64 << 20).contains(&c.max_frame_bytes));
            assert!(c.ping_interval_ms == 0 || c.ping_interval_ms >= 100);
            let _ = c.role.is_tunnel();
        }
    }
});
