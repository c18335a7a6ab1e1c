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

pub mod client;
pub mod server;

use crate::codec::websocket::{encode_frame, Opcode};
use crate::host;

/// Largest handshake head (request or response) we accept.
pub(crate) const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;
/// Largest queue of control frames (pongs, closes) waiting for a chance to be sent; a peer that
/// floods pings past it is cut off.
pub(crate) const MAX_CONTROL_QUEUE: usize = 64 * 1024;

/// Random bytes for mask keys and handshake keys, drawn from the host in blocks.
pub(crate) struct Entropy {
    pool: [u8; 256],
    at: usize,
}

impl Entropy {
    pub fn new() -> Self {
        Entropy {
            pool: [0; 256],
            at: 256,
        }
    }

    /// Four unpredictable bytes, or `None` if the host has no entropy (the caller then closes
    /// rather than send predictable masks).
    pub fn take4(&mut self) -> Option<[u8; 4]> {
        if self.at + 4 > self.pool.len() {
            host::random_bytes(&mut self.pool).ok()?;
            self.at = 0;
        }
        let b = self.pool.get(self.at..self.at + 4)?;
        let out = [b[0], b[1], b[2], b[3]];
        self.at += 4;
        Some(out)
    }

    pub fn take16(&mut self) -> Option<[u8; 16]> {
        let mut out = [0u8; 16];
        for chunk in out.chunks_mut(4) {
            chunk.copy_from_slice(&self.take4()?);
        }
        Some(out)
    }
}

/// Wraps `data` as binary frames of at most `max_frame` bytes, masked with fresh keys when
/// `entropy` is given (client side). Returns false if masking keys were unavailable.
pub(crate) fn wrap_binary(
    data: &[u8],
    max_frame: usize,
    entropy: Option<&mut Entropy>,
    out: &mut Vec<u8>,
) -> bool {
    let max_frame = max_frame.max(1);
    match entropy {
        None => {
            for chunk in data.chunks(max_frame) {
                encode_frame(true, Opcode::Binary, None, chunk, out);
            }
            true
        }
        Some(e) => {
            for chunk in data.chunks(max_frame) {
                let Some(mask) = e.take4() else { return false };
                encode_frame(true, Opcode::Binary, Some(mask), chunk, out);
            }
            true
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

    #[test]
    fn wrap_splits_at_the_frame_limit() {
        let data = vec![7u8; 2500];
        let mut out = Vec::new();
        assert!(wrap_binary(&data, 1000, None, &mut out));
        // three unmasked frames: 2+2(16-bit len) + 1000, twice, and 2+2+500
        assert_eq!(out.len(), 4 + 1000 + 4 + 1000 + 4 + 500);
        assert_eq!(out[0], 0x82);
    }
}
