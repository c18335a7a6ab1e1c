//! `proxy_call_foreign_function`: Envoy's named extensions. Only `clear_route_cache` is
//! modelled; the others Envoy has answer Unimplemented (and say so in the log), unknown
//! names NotFound as in Envoy.

use wasmtime::Linker;

use super::common::text;
use crate::host::abi::{LogLevel, Status};
use crate::host::contexts::ContextModel;
use crate::host::memory::{self as mem, HostError};
use crate::host::state::HostState;

pub(super) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    hostcall!(
        l,
        "proxy_call_foreign_function",
        |c, np: i32, ns: i32, ap: i32, asz: i32, rp: i32, rs: i32| {
            let name = text(&mem::read(&c, np, ns)?);
            let _args = mem::read(&c, ap, asz)?;
            match name.as_str() {
                "clear_route_cache" => {
                    c.data_mut().route_cache_clears += 1;
                    for out in [rp, rs] {
                        if out != 0 {
                            mem::write_u32(&mut c, out, 0)?;
                        }
                    }
                    Ok(())
                }
                "compress"
                | "uncompress"
                | "declare_property"
                | "set_envoy_filter_state"
                | "expr_create"
                | "expr_evaluate"
                | "expr_delete"
                | "get_log_level" => {
                    let ctx = c.data().acting_context();
                    c.data_mut().log(
                        LogLevel::Warn,
                        ctx,
                        format!("host-harness: foreign function {name} is not modelled"),
                    );
                    Err(HostError::Status(Status::Unimplemented))
                }
                _ => Err(HostError::Status(Status::NotFound)),
            }
        }
    );
    Ok(())
}
