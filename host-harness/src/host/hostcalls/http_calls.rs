//! Outgoing calls: `proxy_http_call` (answered by the model's `respond_http_call` /
//! `fail_http_call`), `proxy_get_status`, and the gRPC callouts, which Envoy has and the
//! harness does not model.

use wasmtime::{Caller, FuncType, Linker, Val, ValType};

use super::common::{finish, text, ENV};
use crate::host::abi::Status;
use crate::host::contexts::ContextModel;
use crate::host::headers::Headers;
use crate::host::memory::{self as mem, HostError};
use crate::host::state::{HostState, HttpCallRequest};

pub(super) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    hostcall!(
        l,
        "proxy_http_call",
        |c,
         up: i32,
         us: i32,
         hp: i32,
         hs: i32,
         bp: i32,
         bs: i32,
         tp: i32,
         ts: i32,
         timeout: i32,
         token_ptr: i32| {
            let upstream = text(&mem::read(&c, up, us)?);
            let headers = Headers::from_wire(&mem::read(&c, hp, hs)?);
            let body = mem::read(&c, bp, bs)?;
            let trailers = Headers::from_wire(&mem::read(&c, tp, ts)?);
            // cpp-host writes the token first to validate the pointer.
            mem::write_u32(&mut c, token_ptr, 0)?;
            if timeout < 0 || !c.data().clusters.contains(&upstream) {
                return Err(HostError::Status(Status::BadArgument));
            }
            if [":path", ":method", ":authority"]
                .iter()
                .any(|h| headers.get(h).is_none())
            {
                return Err(HostError::Status(Status::BadArgument));
            }
            let s = c.data_mut();
            let token = s.next_http_call_token;
            s.next_http_call_token += 1;
            s.http_calls.insert(
                token,
                HttpCallRequest {
                    token,
                    upstream,
                    headers,
                    body,
                    trailers,
                    timeout_ms: timeout as u32,
                },
            );
            mem::write_u32(&mut c, token_ptr, token)
        }
    );
    hostcall!(
        l,
        "proxy_get_status",
        |c, code_ptr: i32, mpp: i32, msp: i32| {
            mem::write_u32(&mut c, code_ptr, 0)?;
            mem::copy_out(&mut c, b"", mpp, msp)
        }
    );
    // gRPC callouts exist in Envoy but are not modelled: Unimplemented, never a fake Ok.
    for (name, params) in [
        ("proxy_grpc_call", 12),
        ("proxy_grpc_stream", 9),
        ("proxy_grpc_send", 4),
        ("proxy_grpc_cancel", 1),
        ("proxy_grpc_close", 1),
    ] {
        let ty = FuncType::new(l.engine(), vec![ValType::I32; params], [ValType::I32]);
        l.func_new(
            ENV,
            name,
            ty,
            move |mut c: Caller<'_, HostState<M>>, _, results| {
                let status = finish(&mut c, name, Err(HostError::Status(Status::Unimplemented)))?;
                if let Some(out) = results.first_mut() {
                    *out = Val::I32(status);
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}
