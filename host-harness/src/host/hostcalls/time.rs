//! The clock and the root context's timer: `proxy_get_current_time_nanoseconds`,
//! `proxy_set_tick_period_milliseconds` (the model fires the ticks, `model/root.rs`).

use wasmtime::Linker;

use crate::host::contexts::ContextModel;
use crate::host::memory as mem;
use crate::host::state::HostState;

pub(super) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    hostcall!(l, "proxy_get_current_time_nanoseconds", |c, out: i32| {
        let now = c.data().clock.now_ns();
        mem::write(&mut c, out, &now.to_le_bytes())
    });
    hostcall!(l, "proxy_set_tick_period_milliseconds", |c, period: i32| {
        // The timer belongs to the root context whatever context calls this.
        let s = c.data_mut();
        s.tick_period_ms = period as u32;
        s.next_tick_ns = if period as u32 == 0 {
            None
        } else {
            Some(s.clock.now_ns() + period as u32 as u64 * 1_000_000)
        };
        Ok(())
    });
    Ok(())
}
