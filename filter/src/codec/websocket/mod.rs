//! WebSocket (RFC 6455) for a tunnel that carries a whole HTTP/2 connection inside one
//! WebSocket connection: [`frame`] codes frames (the tunnel's hot path), [`handshake`] the
//! HTTP/1.1 upgrade that opens it. Both are re-exported here.

pub mod frame;
pub mod handshake;

pub use frame::*;
pub use handshake::*;
