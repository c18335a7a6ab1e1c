//! Outgoing calls: `proxy_http_call` (answered by the model's `respond_http_call` /
//! `fail_http_call`), `proxy_get_status`, and the gRPC callouts, which Envoy has and the
//! harness does not model (Unimplemented, never a fake Ok).

use wasmtime::Linker;

use super::common::text;
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
    unimplemented_hostcall!(
        l,
        "proxy_grpc_call",
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        i32
    );
    unimplemented_hostcall!(
        l,
        "proxy_grpc_stream",
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        i32
    );
    unimplemented_hostcall!(l, "proxy_grpc_send", i32, i32, i32, i32);
    unimplemented_hostcall!(l, "proxy_grpc_cancel", i32);
    unimplemented_hostcall!(l, "proxy_grpc_close", i32);
    Ok(())
}
