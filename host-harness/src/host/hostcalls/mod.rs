//! The `env` imports: proxy-wasm ABI 0.2.1 with Envoy 1.40's statuses and quirks, one file
//! per hostcall family.
//!
//! Each hostcall reads its arguments from guest memory (a bad pointer answers
//! InvalidMemoryAccess), acts on the *acting* context (the effective context when one was
//! set), and answers the status Envoy answers. Unsupported calls answer Unimplemented or the
//! status Envoy gives for an unknown name, never a silent Ok.

use wasmtime::{Caller, Linker};

use super::abi::Status;
use super::contexts::ContextModel;
use super::memory::{HostError, HostcallResult};
use super::state::{HostState, HostcallStatus};

/// Defines one `env` import. The body is a `HostcallResult<()>` block over the caller `$c`
/// and the named arguments; [`finish`] turns it into the status the guest sees.
macro_rules! hostcall {
    ($l:expr, $name:expr, |$c:ident $(, $arg:tt : $ty:ty)*| $body:block) => {
        $l.func_wrap(
            $crate::host::hostcalls::ENV,
            $name,
            move |mut $c: wasmtime::Caller<'_, $crate::host::state::HostState<M>>, $($arg: $ty),*| {
                let r = (|| -> $crate::host::memory::HostcallResult<()> { $body })();
                $crate::host::hostcalls::finish(&mut $c, $name, r)
            },
        )?
    };
}

/// Defines an `env` import Envoy has but the harness does not model: Unimplemented, never a
/// fake Ok.
macro_rules! unimplemented_hostcall {
    ($l:expr, $name:expr, $($ty:ty),*) => {
        hostcall!($l, $name, |c $(, _ : $ty)*| {
            Err($crate::host::memory::HostError::Status($crate::host::abi::Status::Unimplemented))
        })
    };
}

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

const ENV: &str = "env";

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

/// Turns an internal result into the i32 the guest sees, recording non-Ok statuses.
fn finish<M: ContextModel>(
    c: &mut Caller<'_, HostState<M>>,
    hostcall: &'static str,
    r: HostcallResult<()>,
) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(Status::Ok.code()),
        Err(HostError::Status(status)) => {
            let context_id = c.data().acting_context();
            let s = c.data_mut();
            if s.record_calls {
                s.hostcall_statuses.push(HostcallStatus {
                    hostcall,
                    context_id,
                    status,
                });
            }
            Ok(status.code())
        }
        Err(HostError::Trap(e)) => Err(e),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A status other than Ok as the hostcall's error.
fn status_result(status: Status) -> HostcallResult<()> {
    match status {
        Status::Ok => Ok(()),
        s => Err(HostError::Status(s)),
    }
}
