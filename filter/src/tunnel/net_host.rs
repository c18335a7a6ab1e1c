//! The I/O seam of the tunnel roles: what a network-filter role may ask of the host for the
//! connection it serves.
//!
//! A role is a state machine driven by the connection's callbacks (downstream bytes, upstream
//! bytes, the root's tick); everything it does to the connection goes through [`NetHost`].
//! [`WasmNetHost`] implements it with proxy-wasm hostcalls; the unit tests implement it with
//! [`fake::FakeNetHost`], which holds the two data buffers and records every call. Counters are
//! not part of the seam: [`crate::metrics::Metrics`] adds them up in the VM and only the root's
//! tick sends them, so the tests read them there (`Metrics::pending`), as the HTTP roles' do.

use crate::auth::PeerCertificate;
use crate::host::{self, BufferType, HostResult, LogLevel, StreamType};

/// One of the connection's two directions: its data buffer and its end of the connection.
/// `Downstream` is what the downstream peer sent (on its way upstream) and the connection to
/// that peer; `Upstream` the same for the upstream peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Downstream,
    Upstream,
}

impl Flow {
    fn buffer(self) -> BufferType {
        match self {
            Flow::Downstream => BufferType::DownstreamData,
            Flow::Upstream => BufferType::UpstreamData,
        }
    }

    fn stream(self) -> StreamType {
        match self {
            Flow::Downstream => StreamType::Downstream,
            Flow::Upstream => StreamType::Upstream,
        }
    }
}

/// What a tunnel role asks of the host for its connection. Every call that can fail says so
/// (the connection may be gone); the role decides what a failure means.
pub trait NetHost {
    /// The first `size` bytes of the flow's current data buffer (empty if it has none).
    fn read(&mut self, flow: Flow, size: usize) -> HostResult<Vec<u8>>;
    /// Replaces the first `size` bytes of the flow's data buffer with `data` (an empty `data`
    /// drains them).
    fn replace(&mut self, flow: Flow, size: usize, data: &[u8]) -> HostResult<()>;
    /// Appends `data` to the flow's data buffer (from outside that flow's data callback too, in
    /// Envoy 1.40, for a read side left paused: see `tunnel::client`).
    fn append(&mut self, flow: Flow, data: &[u8]) -> HostResult<()>;
    /// Lets the host pass the flow's buffer on (`continue_stream`).
    fn resume(&mut self, flow: Flow) -> HostResult<()>;
    /// Closes the flow's end of the connection.
    fn close(&mut self, flow: Flow) -> HostResult<()>;
    /// The host clock, ns (0 if the host has none).
    fn now_nanos(&mut self) -> u64;
    /// Fills `buf` with unpredictable bytes (WebSocket mask and handshake keys).
    fn random_bytes(&mut self, buf: &mut [u8]) -> HostResult<()>;
    /// What the downstream connection proved with TLS (read only when auth needs it).
    fn peer_certificate(&mut self) -> PeerCertificate;
    fn log(&mut self, level: LogLevel, message: &str);
}

/// [`NetHost`] over proxy-wasm hostcalls, for the connection whose callback is running.
pub struct WasmNetHost;

impl NetHost for WasmNetHost {
    fn read(&mut self, flow: Flow, size: usize) -> HostResult<Vec<u8>> {
        host::get_buffer(flow.buffer(), 0, size).map(Option::unwrap_or_default)
    }

    fn replace(&mut self, flow: Flow, size: usize, data: &[u8]) -> HostResult<()> {
        host::replace_buffer_prefix(flow.buffer(), size, data)
    }

    fn append(&mut self, flow: Flow, data: &[u8]) -> HostResult<()> {
        host::append_buffer(flow.buffer(), data)
    }

    fn resume(&mut self, flow: Flow) -> HostResult<()> {
        host::continue_stream(flow.stream())
    }

    fn close(&mut self, flow: Flow) -> HostResult<()> {
        host::close_stream(flow.stream())
    }

    fn now_nanos(&mut self) -> u64 {
        host::now_nanos()
    }

    fn random_bytes(&mut self, buf: &mut [u8]) -> HostResult<()> {
        host::random_bytes(buf)
    }

    fn peer_certificate(&mut self) -> PeerCertificate {
        PeerCertificate::from_host()
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        host::log(level, message);
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A host for unit tests: one connection's two data buffers, a clock, a deterministic
    //! entropy source, and a record of every call the role made.
    use super::*;
    use crate::host::Status;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Read(Flow, usize),
        Replace { flow: Flow, size: usize, len: usize },
        Append { flow: Flow, len: usize },
        Resume(Flow),
        Close(Flow),
        PeerCertificate,
        Log(LogLevel, String),
    }

    #[derive(Default)]
    pub struct FakeNetHost {
        /// The downstream data buffer as the role sees and edits it (after a callback: what
        /// goes upstream).
        pub downstream: Vec<u8>,
        /// The upstream data buffer (after a callback: what goes downstream).
        pub upstream: Vec<u8>,
        pub now_ns: u64,
        /// Next byte of the entropy source: a counter, so outputs are reproducible.
        pub next_random: u8,
        /// Makes `random_bytes` fail (a host without entropy).
        pub no_entropy: bool,
        pub peer: PeerCertificate,
        pub calls: Vec<Call>,
        /// Makes every buffer call fail with this status (a connection the host already ended).
        pub fail: Option<Status>,
    }

    impl FakeNetHost {
        fn buffer(&mut self, flow: Flow) -> &mut Vec<u8> {
            match flow {
                Flow::Downstream => &mut self.downstream,
                Flow::Upstream => &mut self.upstream,
            }
        }

        /// What the host forwards after a callback: each data buffer as the role left it, the
        /// downstream one on toward upstream, the upstream one toward downstream.
        pub fn forward(&mut self, toward_upstream: &mut Vec<u8>, toward_downstream: &mut Vec<u8>) {
            toward_upstream.append(&mut self.downstream);
            toward_downstream.append(&mut self.upstream);
        }

        /// The closes the role asked for, in order.
        pub fn closes(&self) -> Vec<Flow> {
            self.calls
                .iter()
                .filter_map(|c| match c {
                    Call::Close(f) => Some(*f),
                    _ => None,
                })
                .collect()
        }

        /// Whether some log line contains `text`.
        pub fn logged(&self, text: &str) -> bool {
            self.calls
                .iter()
                .any(|c| matches!(c, Call::Log(_, m) if m.contains(text)))
        }
    }

    impl NetHost for FakeNetHost {
        fn read(&mut self, flow: Flow, size: usize) -> HostResult<Vec<u8>> {
            self.calls.push(Call::Read(flow, size));
            if let Some(s) = self.fail {
                return Err(s);
            }
            Ok(self.buffer(flow).iter().take(size).copied().collect())
        }

        fn replace(&mut self, flow: Flow, size: usize, data: &[u8]) -> HostResult<()> {
            self.calls.push(Call::Replace {
                flow,
                size,
                len: data.len(),
            });
            if let Some(s) = self.fail {
                return Err(s);
            }
            let buf = self.buffer(flow);
            let n = size.min(buf.len());
            buf.splice(..n, data.iter().copied());
            Ok(())
        }

        fn append(&mut self, flow: Flow, data: &[u8]) -> HostResult<()> {
            self.calls.push(Call::Append {
                flow,
                len: data.len(),
            });
            if let Some(s) = self.fail {
                return Err(s);
            }
            self.buffer(flow).extend_from_slice(data);
            Ok(())
        }

        fn resume(&mut self, flow: Flow) -> HostResult<()> {
            self.calls.push(Call::Resume(flow));
            match self.fail {
                Some(s) => Err(s),
                None => Ok(()),
            }
        }

        fn close(&mut self, flow: Flow) -> HostResult<()> {
            self.calls.push(Call::Close(flow));
            Ok(())
        }

        fn now_nanos(&mut self) -> u64 {
            self.now_ns
        }

        fn random_bytes(&mut self, buf: &mut [u8]) -> HostResult<()> {
            if self.no_entropy {
                return Err(Status::InternalFailure);
            }
            for b in buf.iter_mut() {
                *b = self.next_random;
                self.next_random = self.next_random.wrapping_add(1);
            }
            Ok(())
        }

        fn peer_certificate(&mut self) -> PeerCertificate {
            self.calls.push(Call::PeerCertificate);
            self.peer.clone()
        }

        fn log(&mut self, level: LogLevel, message: &str) {
            self.calls.push(Call::Log(level, message.to_string()));
        }
    }
}
