//! Layer 1 of 3: the proxy-wasm host. ABI numbers, header maps and their wire format, guest
//! memory, the VM (wasmtime instance, exports, traps), the host state, and the hostcalls
//! (`env`, by family, and WASI). It knows streams and connections only through
//! [`contexts::ContextModel`], which the model layer implements; it imports nothing above it.

pub(crate) mod abi;
pub(crate) mod contexts;
pub(crate) mod headers;
mod hostcalls;
pub(crate) mod memory;
pub(crate) mod state;
pub(crate) mod vm;
mod wasi;
