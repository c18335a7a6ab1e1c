//! Plugin configuration: `Config::parse` on arbitrary bytes.
//!
//! Input: the whole input is the plugin's `configuration` bytes.
//!
//! Invariants: no panic; parsing is deterministic; an accepted configuration is of one role,
//! holds no field of another role, and satisfies every documented bound of that role's fields
//! (so the filter can rely on them), its `auth` included; a rejection names something
//! (non-empty message).
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

fn lowercase_header_name(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn check_tunnel(
    path: &str,
    protocol: &str,
    headers: &std::collections::BTreeMap<String, String>,
    max_frame_bytes: u32,
) {
    assert!(path.starts_with('/') && clean(path) && !path.contains(' '));
    assert!(is_token(protocol));
    for (k, v) in headers {
        assert!(is_token(k) && clean(v));
    }
    assert!((1024..=64 << 20).contains(&max_frame_bytes));
}

fuzz_target!(|data: &[u8]| {
    let r = Config::parse(data);
    assert_eq!(r, Config::parse(data), "not deterministic");
    match r {
        Err(e) => assert!(!e.0.is_empty()),
        Ok(c) => {
            // The accepted object's keys are `role` and fields of that role only.
            if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(data) {
                for k in m.keys() {
                    assert!(
                        k == "role" || c.role().fields().contains(&k.as_str()),
                        "{k} accepted for {:?}",
                        c.role()
                    );
                }
            }
            match &c {
                Config::Agent(a) => {
                    assert!((1..=1 << 30).contains(&a.max_message_bytes));
                    assert!((64..=1 << 20).contains(&a.max_trailer_bytes));
                    assert!(lowercase_header_name(&a.marker_header));
                    assert!(a.error_body_quote_bytes <= 4096);
                }
                Config::Server(s) => {
                    assert!((1..=1 << 30).contains(&s.max_message_bytes));
                    assert!((64..=1 << 20).contains(&s.max_trailer_bytes));
                    assert!((1..=1000).contains(&s.flush_interval_ms));
                    assert!((1024..=64 << 20).contains(&s.max_held_bytes));
                    assert!(
                        s.http1_hold_bytes == 0 || (1024..=32 << 20).contains(&s.http1_hold_bytes)
                    );
                    assert!(s.http1_hold_ms == 0 || (100..=3_600_000).contains(&s.http1_hold_ms));
                    assert!(lowercase_header_name(&s.marker_header));
                }
                Config::ServerGuard(g) => assert!(lowercase_header_name(&g.marker_header)),
                Config::Http1Status(_) => {}
                Config::TunnelClient(t) => {
                    let h = t.tunnel_host.as_deref().expect("tunnel_host is required");
                    assert!(!h.is_empty() && clean(h) && !h.contains(' '));
                    check_tunnel(
                        &t.tunnel_path,
                        &t.tunnel_protocol,
                        &t.tunnel_headers,
                        t.max_frame_bytes,
                    );
                    assert!(t.ping_interval_ms == 0 || t.ping_interval_ms >= 100);
                }
                Config::TunnelServer(t) => check_tunnel(
                    &t.tunnel_path,
                    &t.tunnel_protocol,
                    &t.tunnel_headers,
                    t.max_frame_bytes,
                ),
            }
            if let Some(a) = c.auth() {
                assert!(lowercase_header_name(&a.secret_header));
                let sends = matches!(c.role(), Role::Agent | Role::TunnelClient);
                assert_eq!(a.secret.is_some(), sends);
                if !sends {
                    assert!(!a.shared_secrets.is_empty() || a.require_client_certificate);
                }
            }
            let _ = c.role().is_tunnel();
        }
    }
});
