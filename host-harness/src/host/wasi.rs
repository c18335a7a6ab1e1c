//! The WASI preview1 functions proxy-wasm-cpp-host gives a module, with its semantics:
//! stdout/stderr go to the log (info / error), no files, no arguments, the host clock,
//! and `proc_exit` ends the call. Anything else is a missing import, as in Envoy.

use wasmtime::{Caller, Linker};

use super::abi::LogLevel;
use super::contexts::ContextModel;
use super::memory::{self as mem, HostError};
use super::state::HostState;

const WASI: &str = "wasi_snapshot_preview1";
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;

fn errno(r: Result<(), HostError>) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(ESUCCESS),
        Err(HostError::Status(_)) => Ok(EFAULT),
        Err(HostError::Trap(e)) => Err(e),
    }
}

pub(crate) fn define<M: ContextModel>(linker: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, HostState<M>>,
         fd: i32,
         iovs: i32,
         iovs_len: i32,
         nwritten: i32|
         -> wasmtime::Result<i32> {
            let level = match fd {
                1 => LogLevel::Info,
                2 => LogLevel::Error,
                _ => return Ok(EBADF),
            };
            let r = (|| {
                let mut text = Vec::new();
                for i in 0..iovs_len.max(0) {
                    let iov = mem::read(&c, iovs.wrapping_add(i * 8), 8)?;
                    let buf = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                    let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                    if len != 0 {
                        text.extend(mem::read(&c, buf, len)?);
                    }
                }
                let written = text.len() as u32;
                if !text.is_empty() {
                    if text.last() == Some(&b'\n') {
                        text.pop();
                    }
                    let ctx = c.data().acting_context();
                    c.data_mut()
                        .log(level, ctx, String::from_utf8_lossy(&text).into_owned());
                }
                mem::write_u32(&mut c, nwritten, written)
            })();
            errno(r)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_read",
        |_: Caller<'_, HostState<M>>, _: i32, _: i32, _: i32, _: i32| ENOSYS,
    )?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |_: Caller<'_, HostState<M>>, _: i32, _: i64, _: i32, _: i32| ESUCCESS,
    )?;
    linker.func_wrap(WASI, "fd_close", |_: Caller<'_, HostState<M>>, _: i32| {
        ESUCCESS
    })?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut c: Caller<'_, HostState<M>>, fd: i32, out: i32| -> wasmtime::Result<i32> {
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            let mut stat = [0u8; 24];
            stat[8] = 64; // fs_rights_base = FD_WRITE, as cpp-host reports
            errno(mem::write(&mut c, out, &stat))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_set_flags",
        |_: Caller<'_, HostState<M>>, _: i32, _: i32| ENOSYS,
    )?;
    // No preopened directories: EBADF ends the libc preopen scan.
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |_: Caller<'_, HostState<M>>, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_: Caller<'_, HostState<M>>, _: i32, _: i32, _: i32| ENOSYS,
    )?;
    // No environment and no arguments: zero entries of zero bytes, nothing to copy.
    for (sizes, get) in [
        ("environ_sizes_get", "environ_get"),
        ("args_sizes_get", "args_get"),
    ] {
        linker.func_wrap(
            WASI,
            sizes,
            |mut c: Caller<'_, HostState<M>>, count: i32, size: i32| -> wasmtime::Result<i32> {
                errno(
                    mem::write_u32(&mut c, count, 0).and_then(|_| mem::write_u32(&mut c, size, 0)),
                )
            },
        )?;
        linker.func_wrap(WASI, get, |_: Caller<'_, HostState<M>>, _: i32, _: i32| {
            ESUCCESS
        })?;
    }
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, HostState<M>>,
         clock_id: i32,
         _precision: i64,
         out: i32|
         -> wasmtime::Result<i32> {
            // cpp-host serves only the realtime clock.
            if clock_id != 0 {
                return Ok(ENOTSUP);
            }
            let now = c.data().clock.now_ns();
            errno(mem::write(&mut c, out, &now.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, HostState<M>>, buf: i32, len: i32| -> wasmtime::Result<i32> {
            let bytes: Vec<u8> = (0..len.max(0))
                .map(|_| c.data_mut().next_random())
                .collect();
            errno(mem::write(&mut c, buf, &bytes))
        },
    )?;
    linker.func_wrap(WASI, "sched_yield", |_: Caller<'_, HostState<M>>| ESUCCESS)?;
    linker.func_wrap(
        WASI,
        "poll_oneoff",
        |_: Caller<'_, HostState<M>>, _: i32, _: i32, _: i32, _: i32| ENOSYS,
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, HostState<M>>, code: i32| -> wasmtime::Result<()> {
            // The guest expects no return; ending the call is the only safe answer.
            Err(wasmtime::Error::msg(format!("wasi proc_exit({code})")))
        },
    )?;
    Ok(())
}
