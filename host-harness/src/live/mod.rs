//! Layer 3 of 3: the filter on live sockets. The proxy (`proxy.rs`: HTTP roles behind a
//! listener, `tcp.rs`: network roles in front of a TCP proxy), its configuration, its VM
//! thread and upstream pools, HTTP/1.1 trailers on the wire, and the demo (the whole sample
//! topology without Envoy). Imports the host and model layers, never `scripted`.

mod config;
pub mod demo;
mod h1_trailers;
pub mod proxy;
mod tcp;
mod upstream;
mod vm_thread;
