//! The `env` imports: proxy-wasm ABI 0.2.1 with Envoy 1.40's statuses and quirks, one file
//! per hostcall family.
//!
//! Each hostcall reads its arguments from guest memory (a bad pointer answers
//! InvalidMemoryAccess), acts on the *acting* context (the effective context when one was
//! set), and answers the status Envoy answers. Unsupported calls answer Unimplemented or the
//! status Envoy gives for an unknown name, never a silent Ok.

use wasmtime::Linker;

use super::contexts::ContextModel;
use super::state::HostState;

#[macro_use]
mod common;

mod buffers;
mod foreign_functions;
mod header_maps;
mod http_calls;
mod logging;
mod metrics;
mod properties;
mod shared_data;
mod stream_control;
mod time;

pub(crate) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    logging::define(l)?;
    time::define(l)?;
    buffers::define(l)?;
    header_maps::define(l)?;
    properties::define(l)?;
    stream_control::define(l)?;
    foreign_functions::define(l)?;
    metrics::define(l)?;
    shared_data::define(l)?;
    http_calls::define(l)?;
    Ok(())
}
