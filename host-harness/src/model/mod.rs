//! Layer 2 of 3: the stream and connection model that drives a loaded filter the way Envoy
//! 1.40 does — the HTTP filter manager (`stream.rs`), the network filter in front of
//! `tcp_proxy` (`connection.rs`), root-context events and after-call actions (`root.rs`) —
//! and the state they move (`stream_state.rs`, `connection_state.rs`, gathered for the
//! hostcalls in `contexts.rs`). Imports only the host layer.

mod connection;
mod connection_state;
mod contexts;
mod root;
mod stream;
mod stream_state;

pub use connection_state::{ConnectionId, NetFrame};
pub use contexts::Plugin;
pub use stream_state::{Direction, Frame, StreamId};
