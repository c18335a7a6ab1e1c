//! Buffers: `proxy_get_buffer_bytes`, `proxy_get_buffer_status`, `proxy_set_buffer_bytes`.

use wasmtime::Linker;

use super::common::status_result;
use crate::host::abi::{BufferType, Status};
use crate::host::contexts::ContextModel;
use crate::host::memory as mem;
use crate::host::state::HostState;

/// Envoy's `Buffer::copyFrom` on a mutable buffer: start 0 drains `length` bytes and
/// prepends; a start at or past the end appends; anything else is BadArgument.
fn splice_buffer(buf: &mut Vec<u8>, start: usize, length: usize, data: &[u8]) -> Status {
    if start == 0 {
        let n = length.min(buf.len());
        buf.drain(..n);
        buf.splice(0..0, data.iter().copied());
        Status::Ok
    } else if start >= buf.len() {
        buf.extend_from_slice(data);
        Status::Ok
    } else {
        Status::BadArgument
    }
}

/// Bytes of a buffer as `getBuffer` would expose them; `None` is "no buffer" (NotFound).
///
/// Envoy answers NotFound only where `getBuffer` returns no object at all (plugin
/// configuration outside `proxy_on_configure`, an http_call body outside its callback).
/// Body and network-data buffers are always an object, possibly pointing at nothing: a
/// read then answers Ok with nothing and a write BadArgument (measured in Envoy 1.40 by
/// `tests/envoy_diff.rs`, row 5 and the ABI battery).
fn read_buffer<M: ContextModel>(s: &HostState<M>, ctx: u32, t: BufferType) -> Option<Vec<u8>> {
    match t {
        BufferType::VmConfiguration => Some(s.vm_config.clone()),
        BufferType::PluginConfiguration => s.in_configure.then(|| s.plugin_config.clone()),
        BufferType::HttpCallResponseBody => s.http_call_response.as_ref().map(|r| r.body.clone()),
        BufferType::HttpRequestBody
        | BufferType::HttpResponseBody
        | BufferType::DownstreamData
        | BufferType::UpstreamData => Some(
            s.contexts
                .buffer(ctx, t)
                .map(|b| b.to_vec())
                .unwrap_or_default(),
        ),
        BufferType::GrpcReceiveBuffer | BufferType::CallData => Some(Vec::new()),
    }
}

fn write_buffer<M: ContextModel>(
    s: &mut HostState<M>,
    ctx: u32,
    t: BufferType,
    start: usize,
    length: usize,
    data: &[u8],
) -> Status {
    let target = match t {
        // String-backed buffers are immutable in Envoy.
        BufferType::VmConfiguration
        | BufferType::PluginConfiguration
        | BufferType::HttpCallResponseBody => {
            return if read_buffer(s, ctx, t).is_some() {
                Status::BadArgument
            } else {
                Status::NotFound
            };
        }
        // Below: a buffer object that points at nothing is immutable (BufferBase::copyFrom).
        BufferType::HttpRequestBody
        | BufferType::HttpResponseBody
        | BufferType::DownstreamData
        | BufferType::UpstreamData => s.contexts.buffer_mut(ctx, t),
        BufferType::GrpcReceiveBuffer | BufferType::CallData => None,
    };
    match target {
        Some(buf) => splice_buffer(buf, start, length, data),
        None => Status::BadArgument,
    }
}

pub(super) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    hostcall!(
        l,
        "proxy_get_buffer_bytes",
        |c, t: i32, start: i32, length: i32, ptr_ptr: i32, size_ptr: i32| {
            let t = BufferType::from_raw(t).ok_or(Status::BadArgument)?;
            let ctx = c.data().acting_context();
            let buf = read_buffer(c.data(), ctx, t).ok_or(Status::NotFound)?;
            let start = start as u32 as usize;
            let length = (length as u32 as usize).min(buf.len().saturating_sub(start));
            // Nothing to copy: Ok without touching the out-pointers (the SDK sees None).
            if length == 0 {
                return Ok(());
            }
            mem::copy_out(&mut c, &buf[start..start + length], ptr_ptr, size_ptr)
        }
    );
    hostcall!(
        l,
        "proxy_get_buffer_status",
        |c, t: i32, len_ptr: i32, flags_ptr: i32| {
            let t = BufferType::from_raw(t).ok_or(Status::BadArgument)?;
            let ctx = c.data().acting_context();
            let buf = read_buffer(c.data(), ctx, t).ok_or(Status::NotFound)?;
            mem::write_u32(&mut c, len_ptr, buf.len() as u32)?;
            mem::write_u32(&mut c, flags_ptr, 0)
        }
    );
    hostcall!(
        l,
        "proxy_set_buffer_bytes",
        |c, t: i32, start: i32, length: i32, ptr: i32, size: i32| {
            let t = BufferType::from_raw(t).ok_or(Status::BadArgument)?;
            let ctx = c.data().acting_context();
            if read_buffer(c.data(), ctx, t).is_none() {
                return Err(Status::NotFound.into());
            }
            let data = mem::read(&c, ptr, size)?;
            status_result(write_buffer(
                c.data_mut(),
                ctx,
                t,
                start as u32 as usize,
                length as u32 as usize,
                &data,
            ))
        }
    );
    Ok(())
}
