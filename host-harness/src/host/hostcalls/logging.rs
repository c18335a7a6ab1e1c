//! Logging: `proxy_log`, `proxy_get_log_level`.

use wasmtime::Linker;

use super::common::text;
use crate::host::abi::{LogLevel, Status};
use crate::host::contexts::ContextModel;
use crate::host::memory as mem;
use crate::host::state::HostState;

pub(super) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    hostcall!(l, "proxy_log", |c, level: i32, ptr: i32, size: i32| {
        let level = LogLevel::from_raw(level).ok_or(Status::BadArgument)?;
        let msg = mem::read(&c, ptr, size)?;
        let ctx = c.data().acting_context();
        c.data_mut().log(level, ctx, text(&msg));
        Ok(())
    });
    hostcall!(l, "proxy_get_log_level", |c, out: i32| {
        // Envoy answers its own logger level; `envoy -l info` (the default) is 2.
        mem::write_u32(&mut c, out, 2)
    });
    Ok(())
}
