//! grpc-bridge: a proxy-wasm filter that carries gRPC across HTTP/1.1-only networks.
pub mod codec;
