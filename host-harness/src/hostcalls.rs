//! The `env` imports: proxy-wasm ABI 0.2.1 with Envoy 1.40's statuses and quirks.
//!
//! Each hostcall reads its arguments from guest memory (a bad pointer answers
//! InvalidMemoryAccess), acts on the *acting* context (the effective context when one was
//! set), and answers the status Envoy answers. Unsupported calls answer Unimplemented or the
//! status Envoy gives for an unknown name, never a silent Ok.

use wasmtime::{Caller, Linker};

use crate::abi::{BufferType, LogLevel, MapType, MetricKind, Status, StreamType, METRIC_TYPE_MASK};
use crate::headers::{decode_pairs, Headers};
use crate::state::{Deferred, HostState, HostcallStatus, HttpCallRequest};
use crate::stream::LocalReply;
use crate::vm::{mem, HostError, HostcallResult};

const ENV: &str = "env";

/// Turns an internal result into the i32 the guest sees, recording non-Ok statuses.
fn finish(
    c: &mut Caller<'_, HostState>,
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

// ---- buffers -------------------------------------------------------------------------

/// Envoy's `Buffer::copyFrom` on a mutable buffer: start 0 drains `length` bytes and
/// prepends; a start at or past the end appends; anything else is BadArgument.
pub(crate) fn splice_buffer(buf: &mut Vec<u8>, start: usize, length: usize, data: &[u8]) -> Status {
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
fn read_buffer(s: &HostState, ctx: u32, t: BufferType) -> Option<Vec<u8>> {
    match t {
        BufferType::VmConfiguration => Some(s.vm_config.clone()),
        BufferType::PluginConfiguration => s.in_configure.then(|| s.plugin_config.clone()),
        BufferType::HttpCallResponseBody => s.http_call_response.as_ref().map(|r| r.body.clone()),
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => Some(
            s.http_streams
                .get(&ctx)
                .and_then(|st| st.body(t))
                .map(|b| b.to_vec())
                .unwrap_or_default(),
        ),
        BufferType::DownstreamData | BufferType::UpstreamData => Some(
            s.connections
                .get(&ctx)
                .and_then(|c| c.data(t))
                .map(|b| b.to_vec())
                .unwrap_or_default(),
        ),
        BufferType::GrpcReceiveBuffer | BufferType::CallData => Some(Vec::new()),
    }
}

fn write_buffer(
    s: &mut HostState,
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
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
            s.http_streams.get_mut(&ctx).and_then(|st| st.body_mut(t))
        }
        BufferType::DownstreamData | BufferType::UpstreamData => {
            s.connections.get_mut(&ctx).and_then(|c| c.data_mut(t))
        }
        BufferType::GrpcReceiveBuffer | BufferType::CallData => None,
    };
    match target {
        Some(buf) => splice_buffer(buf, start, length, data),
        None => Status::BadArgument,
    }
}

// ---- header maps ---------------------------------------------------------------------

/// `getConstMap`: what reads see (the access-log phase sees the final maps).
fn const_map(s: &HostState, ctx: u32, t: MapType) -> Option<Headers> {
    match t {
        MapType::HttpCallResponseHeaders => {
            s.http_call_response.as_ref().map(|r| r.headers.clone())
        }
        MapType::HttpCallResponseTrailers => {
            s.http_call_response.as_ref().map(|r| r.trailers.clone())
        }
        MapType::GrpcReceiveInitialMetadata | MapType::GrpcReceiveTrailingMetadata => None,
        _ => s
            .http_streams
            .get(&ctx)
            .and_then(|st| st.map(t, s.in_log_phase))
            .cloned(),
    }
}

/// `getMap`: what writes see. Asking for trailers during the last body callback creates
/// them (Envoy's `addDecodedTrailers` / `addEncodedTrailers`).
fn mut_map(s: &mut HostState, ctx: u32, t: MapType) -> Option<&mut Headers> {
    s.http_streams.get_mut(&ctx).and_then(|st| st.map_mut(t))
}

fn map_type(t: i32) -> HostcallResult<MapType> {
    MapType::from_raw(t).ok_or(HostError::Status(Status::BadArgument))
}

// ---- properties ----------------------------------------------------------------------

fn get_property(s: &HostState, ctx: u32, path: &[u8]) -> Option<Vec<u8>> {
    // The Rust SDK ends every segment with a NUL ("connection\0mtls\0"); Envoy accepts both.
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    let parts: Vec<&[u8]> = path.split(|b| *b == 0).collect();
    let joined = |n: usize| parts[n..].join(&0u8);
    match parts.first().copied()? {
        b"plugin_name" => return Some(s.plugin_name.clone().into_bytes()),
        b"plugin_root_id" => return Some(s.root_id.clone().into_bytes()),
        b"plugin_vm_id" => return Some(s.vm_id.clone().into_bytes()),
        _ => {}
    }
    if let Some(v) = s.properties.get(path) {
        return Some(v.clone());
    }
    if let Some(st) = s.http_streams.get(&ctx) {
        if let Some(v) = st.property(&parts) {
            return Some(v);
        }
        if let Some(v) = st.filter_state.get(path) {
            return Some(v.clone());
        }
        let _ = joined;
    }
    if let Some(conn) = s.connections.get(&ctx) {
        if parts.len() == 1 && parts[0] == b"connection_id" {
            return Some((conn.id as u64).to_le_bytes().to_vec());
        }
    }
    None
}

// ---- the imports ---------------------------------------------------------------------

pub(crate) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        ENV,
        "proxy_log",
        |mut c: Caller<'_, HostState>, level: i32, ptr: i32, size: i32| {
            let r = (|| {
                let level = LogLevel::from_raw(level).ok_or(Status::BadArgument)?;
                let msg = mem::read(&c, ptr, size)?;
                let ctx = c.data().acting_context();
                c.data_mut().log(level, ctx, text(&msg));
                Ok(())
            })();
            finish(&mut c, "proxy_log", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_log_level",
        |mut c: Caller<'_, HostState>, out: i32| {
            // Envoy answers its own logger level; `envoy -l info` (the default) is 2.
            let r = mem::write_u32(&mut c, out, 2);
            finish(&mut c, "proxy_get_log_level", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, HostState>, out: i32| {
            let now = c.data().clock.now_ns();
            let r = mem::write_u64(&mut c, out, now);
            finish(&mut c, "proxy_get_current_time_nanoseconds", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_, HostState>, period: i32| {
            // The timer belongs to the root context whatever context calls this.
            let s = c.data_mut();
            s.tick_period_ms = period as u32;
            s.next_tick_ns = if period as u32 == 0 {
                None
            } else {
                Some(s.clock.now_ns() + period as u32 as u64 * 1_000_000)
            };
            finish(&mut c, "proxy_set_tick_period_milliseconds", Ok(()))
        },
    )?;

    // Buffers.
    l.func_wrap(
        ENV,
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, HostState>,
         t: i32,
         start: i32,
         length: i32,
         ptr_ptr: i32,
         size_ptr: i32| {
            let r = (|| {
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
            })();
            finish(&mut c, "proxy_get_buffer_bytes", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_buffer_status",
        |mut c: Caller<'_, HostState>, t: i32, len_ptr: i32, flags_ptr: i32| {
            let r = (|| {
                let t = BufferType::from_raw(t).ok_or(Status::BadArgument)?;
                let ctx = c.data().acting_context();
                let buf = read_buffer(c.data(), ctx, t).ok_or(Status::NotFound)?;
                mem::write_u32(&mut c, len_ptr, buf.len() as u32)?;
                mem::write_u32(&mut c, flags_ptr, 0)
            })();
            finish(&mut c, "proxy_get_buffer_status", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_, HostState>, t: i32, start: i32, length: i32, ptr: i32, size: i32| {
            let r = (|| {
                let t = BufferType::from_raw(t).ok_or(Status::BadArgument)?;
                let ctx = c.data().acting_context();
                if read_buffer(c.data(), ctx, t).is_none() {
                    return Err(HostError::Status(Status::NotFound));
                }
                let data = mem::read(&c, ptr, size)?;
                match write_buffer(
                    c.data_mut(),
                    ctx,
                    t,
                    start as u32 as usize,
                    length as u32 as usize,
                    &data,
                ) {
                    Status::Ok => Ok(()),
                    s => Err(HostError::Status(s)),
                }
            })();
            finish(&mut c, "proxy_set_buffer_bytes", r)
        },
    )?;

    // Header maps.
    l.func_wrap(
        ENV,
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, HostState>, t: i32, ptr_ptr: i32, size_ptr: i32| {
            let r = (|| {
                let t = map_type(t)?;
                let ctx = c.data().acting_context();
                // A missing map reads as empty pairs (cpp-host `getPairs` of nothing).
                let map = const_map(c.data(), ctx, t).unwrap_or_default();
                let wire = if map.is_empty() {
                    Vec::new()
                } else {
                    map.to_wire()
                };
                mem::copy_out(&mut c, &wire, ptr_ptr, size_ptr)
            })();
            finish(&mut c, "proxy_get_header_map_pairs", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_, HostState>, t: i32, ptr: i32, size: i32| {
            let r = (|| {
                let t = map_type(t)?;
                let data = mem::read(&c, ptr, size)?;
                let ctx = c.data().acting_context();
                let map = mut_map(c.data_mut(), ctx, t).ok_or(Status::BadArgument)?;
                *map = Headers::from_wire(&data);
                Ok(())
            })();
            finish(&mut c, "proxy_set_header_map_pairs", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_header_map_value",
        |mut c: Caller<'_, HostState>, t: i32, kp: i32, ks: i32, vpp: i32, vsp: i32| {
            let r = (|| {
                let t = map_type(t)?;
                let key = text(&mem::read(&c, kp, ks)?);
                let ctx = c.data().acting_context();
                let Some(map) = const_map(c.data(), ctx, t) else {
                    // In the access-log phase a missing map is NotFound, otherwise BadArgument.
                    return Err(HostError::Status(if c.data().in_log_phase {
                        Status::NotFound
                    } else {
                        Status::BadArgument
                    }));
                };
                let value = map.get(&key).ok_or(Status::NotFound)?.to_string();
                mem::copy_out(&mut c, value.as_bytes(), vpp, vsp)
            })();
            finish(&mut c, "proxy_get_header_map_value", r)
        },
    )?;
    for (name, op) in [
        ("proxy_add_header_map_value", 0u8),
        ("proxy_replace_header_map_value", 1u8),
    ] {
        l.func_wrap(
            ENV,
            name,
            move |mut c: Caller<'_, HostState>, t: i32, kp: i32, ks: i32, vp: i32, vs: i32| {
                let r = (|| {
                    let t = map_type(t)?;
                    let key = text(&mem::read(&c, kp, ks)?);
                    let value = text(&mem::read(&c, vp, vs)?);
                    let ctx = c.data().acting_context();
                    let map = mut_map(c.data_mut(), ctx, t).ok_or(Status::BadArgument)?;
                    if op == 0 {
                        map.add(&key, &value)
                    } else {
                        map.replace(&key, &value)
                    }
                    Ok(())
                })();
                finish(&mut c, name, r)
            },
        )?;
    }
    l.func_wrap(
        ENV,
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, HostState>, t: i32, kp: i32, ks: i32| {
            let r = (|| {
                let t = map_type(t)?;
                let key = text(&mem::read(&c, kp, ks)?);
                let ctx = c.data().acting_context();
                let map = mut_map(c.data_mut(), ctx, t).ok_or(Status::BadArgument)?;
                map.remove(&key);
                Ok(())
            })();
            finish(&mut c, "proxy_remove_header_map_value", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_header_map_size",
        |mut c: Caller<'_, HostState>, t: i32, out: i32| {
            let r = (|| {
                let t = map_type(t)?;
                let ctx = c.data().acting_context();
                let size = mut_map(c.data_mut(), ctx, t)
                    .ok_or(Status::BadArgument)?
                    .byte_size();
                mem::write_u32(&mut c, out, size as u32)
            })();
            finish(&mut c, "proxy_get_header_map_size", r)
        },
    )?;

    // Properties.
    l.func_wrap(
        ENV,
        "proxy_get_property",
        |mut c: Caller<'_, HostState>, pp: i32, ps: i32, vpp: i32, vsp: i32| {
            let r = (|| {
                let path = mem::read(&c, pp, ps)?;
                let ctx = c.data().acting_context();
                let value = get_property(c.data(), ctx, &path).ok_or(Status::NotFound)?;
                mem::copy_out(&mut c, &value, vpp, vsp)
            })();
            finish(&mut c, "proxy_get_property", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_property",
        |mut c: Caller<'_, HostState>, kp: i32, ks: i32, vp: i32, vs: i32| {
            let r = (|| {
                let key = mem::read(&c, kp, ks)?;
                let value = mem::read(&c, vp, vs)?;
                let ctx = c.data().acting_context();
                // Envoy stores it in the stream's filter state; a root context has none.
                let st = c
                    .data_mut()
                    .http_streams
                    .get_mut(&ctx)
                    .ok_or(Status::NotFound)?;
                st.filter_state.insert(key, value);
                Ok(())
            })();
            finish(&mut c, "proxy_set_property", r)
        },
    )?;

    // Stream control.
    l.func_wrap(
        ENV,
        "proxy_continue_stream",
        |mut c: Caller<'_, HostState>, t: i32| {
            let r = continue_stream(c.data_mut(), t);
            finish(&mut c, "proxy_continue_stream", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_continue_request",
        |mut c: Caller<'_, HostState>| {
            let r = continue_stream(c.data_mut(), 0);
            finish(&mut c, "proxy_continue_request", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_continue_response",
        |mut c: Caller<'_, HostState>| {
            let r = continue_stream(c.data_mut(), 1);
            finish(&mut c, "proxy_continue_response", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_close_stream",
        |mut c: Caller<'_, HostState>, t: i32| {
            let r = (|| {
                let stream = StreamType::from_raw(t).ok_or(Status::BadArgument)?;
                let s = c.data_mut();
                let ctx = s.acting_context();
                let applies = match stream {
                    StreamType::HttpRequest | StreamType::HttpResponse => {
                        s.http_streams.contains_key(&ctx)
                    }
                    StreamType::Downstream | StreamType::Upstream => {
                        s.connections.contains_key(&ctx)
                    }
                };
                if applies {
                    s.deferred.push_back(Deferred::Close {
                        context_id: ctx,
                        stream,
                    });
                }
                Ok(())
            })();
            finish(&mut c, "proxy_close_stream", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_send_local_response",
        |mut c: Caller<'_, HostState>,
         code: i32,
         dp: i32,
         ds: i32,
         bp: i32,
         bs: i32,
         hp: i32,
         hs: i32,
         grpc: i32| {
            let r = (|| {
                let details = mem::read(&c, dp, ds)?;
                let body = mem::read(&c, bp, bs)?;
                let headers = Headers::from_wire(&mem::read(&c, hp, hs)?);
                let s = c.data_mut();
                let ctx = s.acting_context();
                if s.http_streams.contains_key(&ctx) {
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
            })();
            finish(&mut c, "proxy_send_local_response", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_effective_context",
        |mut c: Caller<'_, HostState>, id: i32| {
            let r = (|| {
                let s = c.data_mut();
                if !s.context_exists(id as u32) {
                    return Err(HostError::Status(Status::BadArgument));
                }
                s.effective_context = id as u32;
                Ok(())
            })();
            finish(&mut c, "proxy_set_effective_context", r)
        },
    )?;
    l.func_wrap(ENV, "proxy_done", |mut c: Caller<'_, HostState>| {
        // Only a root context that Envoy is draining (on_done returned false) may call done;
        // the harness never drains, so this is NotFound as in cpp-host for a non-pending root.
        let r = Err(HostError::Status(Status::NotFound));
        c.data_mut().done_called = true;
        finish(&mut c, "proxy_done", r)
    })?;
    l.func_wrap(
        ENV,
        "proxy_call_foreign_function",
        |mut c: Caller<'_, HostState>, np: i32, ns: i32, ap: i32, asz: i32, rp: i32, rs: i32| {
            let r = (|| {
                let name = text(&mem::read(&c, np, ns)?);
                let _args = mem::read(&c, ap, asz)?;
                match name.as_str() {
                    "clear_route_cache" => {
                        c.data_mut().route_cache_clears += 1;
                        if rp != 0 {
                            mem::write_u32(&mut c, rp, 0)?;
                        }
                        if rs != 0 {
                            mem::write_u32(&mut c, rs, 0)?;
                        }
                        Ok(())
                    }
                    // Envoy has these; the harness does not model them. Say so loudly.
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
            })();
            finish(&mut c, "proxy_call_foreign_function", r)
        },
    )?;

    // Metrics.
    l.func_wrap(
        ENV,
        "proxy_define_metric",
        |mut c: Caller<'_, HostState>, t: i32, np: i32, ns: i32, out: i32| {
            let r = (|| {
                let kind = match t {
                    0 => MetricKind::Counter,
                    1 => MetricKind::Gauge,
                    2 => MetricKind::Histogram,
                    _ => return Err(HostError::Status(Status::BadArgument)),
                };
                let name = text(&mem::read(&c, np, ns)?);
                let id = c.data_mut().metrics.define(kind, &name);
                mem::write_u32(&mut c, out, id)
            })();
            finish(&mut c, "proxy_define_metric", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_increment_metric",
        |mut c: Caller<'_, HostState>, id: i32, offset: i64| {
            let r = (|| {
                let kind = id as u32 & METRIC_TYPE_MASK;
                let m = c
                    .data_mut()
                    .metrics
                    .get_mut(id as u32)
                    .ok_or(if kind <= 1 {
                        Status::NotFound
                    } else {
                        Status::BadArgument
                    })?;
                match m.kind {
                    MetricKind::Counter if offset > 0 => m.value += offset,
                    MetricKind::Counter => return Err(HostError::Status(Status::BadArgument)),
                    MetricKind::Gauge => m.value += offset,
                    MetricKind::Histogram => return Err(HostError::Status(Status::BadArgument)),
                }
                Ok(())
            })();
            finish(&mut c, "proxy_increment_metric", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_record_metric",
        |mut c: Caller<'_, HostState>, id: i32, value: i64| {
            let r = (|| {
                let m = c
                    .data_mut()
                    .metrics
                    .get_mut(id as u32)
                    .ok_or(Status::NotFound)?;
                match m.kind {
                    MetricKind::Counter => m.value += value,
                    MetricKind::Gauge => m.value = value,
                    MetricKind::Histogram => m.samples.push(value as u64),
                }
                Ok(())
            })();
            finish(&mut c, "proxy_record_metric", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_metric",
        |mut c: Caller<'_, HostState>, id: i32, out: i32| {
            let r = (|| {
                let kind = id as u32 & METRIC_TYPE_MASK;
                let m = c
                    .data_mut()
                    .metrics
                    .get_mut(id as u32)
                    .ok_or(if kind <= 1 {
                        Status::NotFound
                    } else {
                        Status::BadArgument
                    })?;
                if m.kind == MetricKind::Histogram {
                    return Err(HostError::Status(Status::BadArgument));
                }
                let v = m.value as u64;
                mem::write_u64(&mut c, out, v)
            })();
            finish(&mut c, "proxy_get_metric", r)
        },
    )?;

    // Shared data and queues.
    l.func_wrap(
        ENV,
        "proxy_get_shared_data",
        |mut c: Caller<'_, HostState>, kp: i32, ks: i32, vpp: i32, vsp: i32, cas_ptr: i32| {
            let r = (|| {
                let key = mem::read(&c, kp, ks)?;
                let found = {
                    let s = c.data();
                    let store = s.shared.lock().map_err(|_| Status::InternalFailure)?;
                    store.get(&s.vm_id, &key)
                };
                let (value, cas) = found.ok_or(Status::NotFound)?;
                mem::copy_out(&mut c, &value, vpp, vsp)?;
                mem::write_u32(&mut c, cas_ptr, cas)
            })();
            finish(&mut c, "proxy_get_shared_data", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_shared_data",
        |mut c: Caller<'_, HostState>, kp: i32, ks: i32, vp: i32, vs: i32, cas: i32| {
            let r = (|| {
                let key = mem::read(&c, kp, ks)?;
                let value = mem::read(&c, vp, vs)?;
                let s = c.data();
                let mut store = s.shared.lock().map_err(|_| Status::InternalFailure)?;
                match store.set(&s.vm_id, &key, &value, cas as u32) {
                    Status::Ok => Ok(()),
                    st => Err(HostError::Status(st)),
                }
            })();
            finish(&mut c, "proxy_set_shared_data", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_register_shared_queue",
        |mut c: Caller<'_, HostState>, np: i32, ns: i32, out: i32| {
            let r = (|| {
                let name = mem::read(&c, np, ns)?;
                let token = {
                    let s = c.data();
                    let root = s.root_context_id;
                    let mut store = s.shared.lock().map_err(|_| Status::InternalFailure)?;
                    store.register_queue(&s.vm_id, &name, root)
                };
                mem::write_u32(&mut c, out, token)
            })();
            finish(&mut c, "proxy_register_shared_queue", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_resolve_shared_queue",
        |mut c: Caller<'_, HostState>, vp: i32, vs: i32, np: i32, ns: i32, out: i32| {
            let r = (|| {
                let vm_id = text(&mem::read(&c, vp, vs)?);
                let name = mem::read(&c, np, ns)?;
                let token = {
                    let store = c
                        .data()
                        .shared
                        .lock()
                        .map_err(|_| Status::InternalFailure)?;
                    store.resolve_queue(&vm_id, &name)
                }
                .ok_or(Status::NotFound)?;
                mem::write_u32(&mut c, out, token)
            })();
            finish(&mut c, "proxy_resolve_shared_queue", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_enqueue_shared_queue",
        |mut c: Caller<'_, HostState>, token: i32, dp: i32, ds: i32| {
            let r = (|| {
                let data = mem::read(&c, dp, ds)?;
                let root = {
                    let mut store = c
                        .data()
                        .shared
                        .lock()
                        .map_err(|_| Status::InternalFailure)?;
                    let q = store.queue_mut(token as u32).ok_or(Status::NotFound)?;
                    q.items.push_back(data);
                    q.root_context_id
                };
                // Envoy posts on_queue_ready to the owner's dispatcher: it runs later, not inline.
                c.data_mut().queue_ready.push_back((root, token as u32));
                Ok(())
            })();
            finish(&mut c, "proxy_enqueue_shared_queue", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_dequeue_shared_queue",
        |mut c: Caller<'_, HostState>, token: i32, dpp: i32, dsp: i32| {
            let r = (|| {
                let item = {
                    let mut store = c
                        .data()
                        .shared
                        .lock()
                        .map_err(|_| Status::InternalFailure)?;
                    let q = store.queue_mut(token as u32).ok_or(Status::NotFound)?;
                    q.items.pop_front()
                }
                .ok_or(Status::Empty)?;
                mem::copy_out(&mut c, &item, dpp, dsp)
            })();
            finish(&mut c, "proxy_dequeue_shared_queue", r)
        },
    )?;

    // Outgoing calls.
    l.func_wrap(
        ENV,
        "proxy_http_call",
        |mut c: Caller<'_, HostState>,
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
            let r = (|| {
                let upstream = text(&mem::read(&c, up, us)?);
                let headers = Headers::from_wire(&mem::read(&c, hp, hs)?);
                let body = mem::read(&c, bp, bs)?;
                let trailers = Headers::from_wire(&mem::read(&c, tp, ts)?);
                // cpp-host writes the token first to validate the pointer.
                mem::write_u32(&mut c, token_ptr, 0)?;
                if timeout < 0 || !c.data().clusters.contains(&upstream) {
                    return Err(HostError::Status(Status::BadArgument));
                }
                if headers.get(":path").is_none()
                    || headers.get(":method").is_none()
                    || headers.get(":authority").is_none()
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
            })();
            finish(&mut c, "proxy_http_call", r)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_status",
        |mut c: Caller<'_, HostState>, code_ptr: i32, mpp: i32, msp: i32| {
            let r = (|| {
                mem::write_u32(&mut c, code_ptr, 0)?;
                mem::copy_out(&mut c, b"", mpp, msp)
            })();
            finish(&mut c, "proxy_get_status", r)
        },
    )?;
    // gRPC callouts exist in Envoy but are not modelled: Unimplemented, never a fake Ok.
    l.func_wrap(
        ENV,
        "proxy_grpc_call",
        |mut c: Caller<'_, HostState>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32| {
            finish(
                &mut c,
                "proxy_grpc_call",
                Err(HostError::Status(Status::Unimplemented)),
            )
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_grpc_stream",
        |mut c: Caller<'_, HostState>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32| {
            finish(
                &mut c,
                "proxy_grpc_stream",
                Err(HostError::Status(Status::Unimplemented)),
            )
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_grpc_send",
        |mut c: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32| {
            finish(
                &mut c,
                "proxy_grpc_send",
                Err(HostError::Status(Status::Unimplemented)),
            )
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_grpc_cancel",
        |mut c: Caller<'_, HostState>, _: i32| {
            finish(
                &mut c,
                "proxy_grpc_cancel",
                Err(HostError::Status(Status::Unimplemented)),
            )
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_grpc_close",
        |mut c: Caller<'_, HostState>, _: i32| {
            finish(
                &mut c,
                "proxy_grpc_close",
                Err(HostError::Status(Status::Unimplemented)),
            )
        },
    )?;
    let _ = decode_pairs;
    Ok(())
}

/// `Context::continueStream` in Envoy 1.40: queued until the VM call returns. Note the
/// quirk kept on purpose: continuing either HTTP direction forgets the *request* header,
/// body and trailer pointers of the acting context.
fn continue_stream(s: &mut HostState, t: i32) -> HostcallResult<()> {
    let stream = StreamType::from_raw(t).ok_or(Status::BadArgument)?;
    let ctx = s.acting_context();
    match stream {
        StreamType::HttpRequest | StreamType::HttpResponse => {
            if let Some(st) = s.http_streams.get_mut(&ctx) {
                st.forget_request_pointers();
                s.deferred.push_back(Deferred::Continue {
                    context_id: ctx,
                    stream,
                });
            }
            Ok(())
        }
        StreamType::Downstream => {
            if s.connections.contains_key(&ctx) {
                s.deferred.push_back(Deferred::Continue {
                    context_id: ctx,
                    stream,
                });
            }
            Ok(())
        }
        StreamType::Upstream => Err(HostError::Status(Status::Unimplemented)),
    }
}
