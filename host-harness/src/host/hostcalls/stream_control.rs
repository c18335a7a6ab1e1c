//! Stream control: `proxy_continue_stream` (and the 0.1 `proxy_continue_request` /
//! `proxy_continue_response`), `proxy_close_stream`, `proxy_send_local_response`,
//! `proxy_set_effective_context`, `proxy_done`. Envoy queues the stream actions until the VM
//! call returns (`Deferred`); the model runs them.

use wasmtime::Linker;

use super::common::text;
use crate::host::abi::{Status, StreamType};
use crate::host::contexts::ContextModel;
use crate::host::headers::Headers;
use crate::host::memory::{self as mem, HostError, HostcallResult};
use crate::host::state::{Deferred, HostState, LocalReply};

/// `Context::continueStream` in Envoy 1.40: queued until the VM call returns. Note the
/// quirk kept on purpose: continuing either HTTP direction forgets the *request* header,
/// body and trailer pointers of the acting context.
fn continue_stream<M: ContextModel>(s: &mut HostState<M>, t: i32) -> HostcallResult<()> {
    let stream = StreamType::from_raw(t).ok_or(Status::BadArgument)?;
    let ctx = s.acting_context();
    let applies = match stream {
        StreamType::HttpRequest | StreamType::HttpResponse => {
            s.contexts.forget_request_pointers(ctx)
        }
        StreamType::Downstream => s.contexts.is_connection(ctx),
        StreamType::Upstream => return Err(HostError::Status(Status::Unimplemented)),
    };
    if applies {
        s.deferred.push_back(Deferred::Continue {
            context_id: ctx,
            stream,
        });
    }
    Ok(())
}

pub(super) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    hostcall!(l, "proxy_continue_stream", |c, t: i32| {
        continue_stream(c.data_mut(), t)
    });
    hostcall!(l, "proxy_continue_request", |c| {
        continue_stream(c.data_mut(), 0)
    });
    hostcall!(l, "proxy_continue_response", |c| {
        continue_stream(c.data_mut(), 1)
    });
    hostcall!(l, "proxy_close_stream", |c, t: i32| {
        let stream = StreamType::from_raw(t).ok_or(Status::BadArgument)?;
        let s = c.data_mut();
        let ctx = s.acting_context();
        let applies = match stream {
            StreamType::HttpRequest | StreamType::HttpResponse => s.contexts.is_http_stream(ctx),
            StreamType::Downstream | StreamType::Upstream => s.contexts.is_connection(ctx),
        };
        if applies {
            s.deferred.push_back(Deferred::Close {
                context_id: ctx,
                stream,
            });
        }
        Ok(())
    });
    hostcall!(
        l,
        "proxy_send_local_response",
        |c, code: i32, dp: i32, ds: i32, bp: i32, bs: i32, hp: i32, hs: i32, grpc: i32| {
            let details = mem::read(&c, dp, ds)?;
            let body = mem::read(&c, bp, bs)?;
            let headers = Headers::from_wire(&mem::read(&c, hp, hs)?);
            let s = c.data_mut();
            let ctx = s.acting_context();
            if s.contexts.is_http_stream(ctx) {
                let reply = LocalReply {
                    status: code as u32,
                    body,
                    headers,
                    // -1 (the SDKs' "unset") and unknown codes mean no grpc-status override.
                    grpc_status: (0..=16).contains(&grpc).then_some(grpc as u32),
                    details: text(&details).replace([' ', '\t'], "_"),
                };
                s.deferred.push_back(Deferred::LocalReply {
                    context_id: ctx,
                    reply,
                });
            }
            s.next_iteration_stopped = true;
            Ok(())
        }
    );
    hostcall!(l, "proxy_set_effective_context", |c, id: i32| {
        let s = c.data_mut();
        if !s.context_exists(id as u32) {
            return Err(HostError::Status(Status::BadArgument));
        }
        s.effective_context = id as u32;
        Ok(())
    });
    hostcall!(l, "proxy_done", |c| {
        // Only a root context that Envoy is draining (on_done returned false) may call done;
        // the harness never drains, so this is NotFound as in cpp-host for a non-pending root.
        c.data_mut().done_called = true;
        Err(HostError::Status(Status::NotFound))
    });
    Ok(())
}
