//! What every hostcall shares: how a result becomes the status the guest sees, and the
//! macros that define one import.

use wasmtime::Caller;

use crate::host::abi::Status;
use crate::host::contexts::ContextModel;
use crate::host::memory::{HostError, HostcallResult};
use crate::host::state::{HostState, HostcallStatus};

pub(super) const ENV: &str = "env";

/// Defines one `env` import. The body is a `HostcallResult<()>` block over the caller `$c`
/// and the named arguments; [`finish`] turns it into the status the guest sees.
macro_rules! hostcall {
    ($l:expr, $name:expr, |$c:ident $(, $arg:tt : $ty:ty)*| $body:block) => {
        $l.func_wrap(
            $crate::host::hostcalls::common::ENV,
            $name,
            move |mut $c: wasmtime::Caller<'_, $crate::host::state::HostState<M>>, $($arg: $ty),*| {
                // A closure, so that `?` in the body ends the hostcall with its status.
                #[allow(clippy::redundant_closure_call)]
                let r = (|| -> $crate::host::memory::HostcallResult<()> { $body })();
                $crate::host::hostcalls::common::finish(&mut $c, $name, r)
            },
        )?
    };
}

/// Turns an internal result into the i32 the guest sees, recording non-Ok statuses.
pub(super) fn finish<M: ContextModel>(
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

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A status other than Ok as the hostcall's error.
pub(super) fn status_result(status: Status) -> HostcallResult<()> {
    match status {
        Status::Ok => Ok(()),
        s => Err(HostError::Status(s)),
    }
}
