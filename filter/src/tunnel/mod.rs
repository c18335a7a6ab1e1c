//! WebSocket tunnel: the whole HTTP/2 connection of a gRPC client rides in one WebSocket
//! connection, so calls stay multiplexed and full duplex through anything that passes upgrades.
//!
//! Loaded as an Envoy *network* filter in front of `tcp_proxy` (an HTTP filter cannot do
//! WebSocket in Envoy 1.40: see docs/ARCHITECTURE.md). `client` runs in the agent Envoy and
//! speaks the client side of RFC 6455 (masked frames); `server` runs in the server Envoy.
//!
//! What a network filter can write, and when (Envoy 1.40, measured): toward the upstream inside
//! `on_downstream_data`, or from anywhere by appending to the downstream buffer and calling
//! `continue_stream(Downstream)`; toward the downstream only inside `on_upstream_data`
//! (`continue_stream(Upstream)` is Unimplemented). That asymmetry decides where pings, pongs,
//! closes and the `101` can be sent.
//!
//! Each role is a state machine over [`net_host::NetHost`] (one call per event; the
//! `NetworkStream` impls pass [`net_host::WasmNetHost`], the unit tests a fake that records
//! every call). The WebSocket framing both share is one [`session::WsSession`]; the roles read
//! [`TunnelSettings`], built from the configuration in one place.

pub(crate) mod client;
pub(crate) mod net_host;
pub(crate) mod server;
pub(crate) mod session;

use std::collections::BTreeMap;

use crate::config::{AuthConfig, Config};

/// Largest handshake head (request or response) we accept.
pub(crate) const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;
/// Largest queue of control frames (pongs, closes) waiting for a chance to be sent; a peer that
/// floods pings past it is cut off.
pub(crate) const MAX_CONTROL_QUEUE: usize = 64 * 1024;

/// What the tunnel roles read of the configuration, built in one place
/// ([`TunnelSettings::from_config`]) so that the roles do not depend on the shape of `Config`.
#[derive(Debug, Clone, Default)]
pub struct TunnelSettings {
    /// Largest WebSocket frame payload accepted (close 1009 past it) and sent.
    pub max_frame_bytes: u32,
    /// Client: `Host` of the upgrade request.
    pub tunnel_host: Option<String>,
    /// Path of the upgrade request (client sends it, server requires it).
    pub tunnel_path: String,
    /// Subprotocol offered (client) and required (server).
    pub tunnel_protocol: String,
    /// Client: extra headers on the upgrade request. Server: headers it must carry, exactly.
    pub tunnel_headers: BTreeMap<String, String>,
    /// Client: ping interval on an idle tunnel; 0 disables.
    pub ping_interval_ms: u32,
    /// Client: the secret it presents. Server: how the upgrade is authenticated.
    pub auth: Option<AuthConfig>,
}

impl TunnelSettings {
    /// The tunnel settings of a tunnel role's configuration; the default (unused) for the
    /// HTTP roles, which never create a tunnel stream.
    pub fn from_config(cfg: &Config) -> Self {
        match cfg {
            Config::TunnelClient(c) => TunnelSettings {
                max_frame_bytes: c.max_frame_bytes,
                tunnel_host: c.tunnel_host.clone(),
                tunnel_path: c.tunnel_path.clone(),
                tunnel_protocol: c.tunnel_protocol.clone(),
                tunnel_headers: c.tunnel_headers.clone(),
                ping_interval_ms: c.ping_interval_ms,
                auth: c.auth.clone(),
            },
            Config::TunnelServer(c) => TunnelSettings {
                max_frame_bytes: c.max_frame_bytes,
                tunnel_host: None,
                tunnel_path: c.tunnel_path.clone(),
                tunnel_protocol: c.tunnel_protocol.clone(),
                tunnel_headers: c.tunnel_headers.clone(),
                ping_interval_ms: 0,
                auth: c.auth.clone(),
            },
            _ => TunnelSettings::default(),
        }
    }
}

/// Compares secrets in time that depends on neither their contents nor their lengths: both
/// sides are hashed (SHA-1, fixed-size digests) and the digests compared with no early exit,
/// as `auth::secret_matches` does. A length check first would tell an attacker the length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (crate::codec::sha1::sha1(a), crate::codec::sha1::sha1(b));
    let mut diff = 0u8;
    for (x, y) in da.iter().zip(db.iter()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// The tunnel server's `tunnel_headers` check: every configured header must be present with
/// exactly the configured value (compared with [`constant_time_eq`]; a missing header counts as
/// empty). `header` looks a header up by its lowercase name.
pub fn tunnel_headers_match<'h>(
    required: &std::collections::BTreeMap<String, String>,
    mut header: impl FnMut(&str) -> Option<&'h str>,
) -> bool {
    required.iter().all(|(name, want)| {
        let got = header(&name.to_ascii_lowercase()).unwrap_or("");
        constant_time_eq(got.as_bytes(), want.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"", b"x"));
        // Equal prefixes of any length are no shortcut: every length pair is compared whole.
        let long = vec![b'a'; 300];
        for n in 0..300 {
            assert!(!constant_time_eq(&long[..n], &long), "{n}");
        }
    }

    #[test]
    fn tunnel_headers_must_all_match_exactly() {
        let mut want = std::collections::BTreeMap::new();
        assert!(tunnel_headers_match(&want, |_| None));
        want.insert("X-Tunnel-Key".to_string(), "k1".to_string());
        want.insert("x-other".to_string(), "".to_string());
        let headers = [("x-tunnel-key", "k1")];
        let find = |n: &str| headers.iter().find(|(h, _)| *h == n).map(|(_, v)| *v);
        // A missing header counts as empty, so an empty configured value is met by its absence.
        assert!(tunnel_headers_match(&want, find));
        let wrong = [("x-tunnel-key", "k2")];
        assert!(!tunnel_headers_match(&want, |n: &str| wrong
            .iter()
            .find(|(h, _)| *h == n)
            .map(|(_, v)| *v)));
        assert!(!tunnel_headers_match(&want, |_| None));
    }
}
