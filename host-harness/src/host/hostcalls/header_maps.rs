//! Header and trailer maps: `proxy_{get,set}_header_map_pairs`,
//! `proxy_{get,add,replace,remove}_header_map_value`, `proxy_get_header_map_size`.

use wasmtime::Linker;

use super::common::text;
use crate::host::abi::{MapType, Status};
use crate::host::contexts::ContextModel;
use crate::host::headers::Headers;
use crate::host::memory::{self as mem, HostError, HostcallResult};
use crate::host::state::HostState;

/// `getConstMap`: what reads see (the access-log phase sees the final maps).
fn const_map<M: ContextModel>(s: &HostState<M>, ctx: u32, t: MapType) -> Option<Headers> {
    match t {
        MapType::HttpCallResponseHeaders => {
            s.http_call_response.as_ref().map(|r| r.headers.clone())
        }
        MapType::HttpCallResponseTrailers => {
            s.http_call_response.as_ref().map(|r| r.trailers.clone())
        }
        MapType::GrpcReceiveInitialMetadata | MapType::GrpcReceiveTrailingMetadata => None,
        _ => s.contexts.map(ctx, t, s.in_log_phase).cloned(),
    }
}

/// `getMap` of the acting context: what writes see. Asking for trailers during the last body
/// callback creates them (Envoy's `addDecodedTrailers` / `addEncodedTrailers`).
fn acting_map_mut<M: ContextModel>(
    s: &mut HostState<M>,
    t: MapType,
) -> HostcallResult<&mut Headers> {
    let ctx = s.acting_context();
    s.contexts
        .map_mut(ctx, t)
        .ok_or(HostError::Status(Status::BadArgument))
}

fn map_type(t: i32) -> HostcallResult<MapType> {
    MapType::from_raw(t).ok_or(HostError::Status(Status::BadArgument))
}

pub(super) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    hostcall!(
        l,
        "proxy_get_header_map_pairs",
        |c, t: i32, ptr_ptr: i32, size_ptr: i32| {
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
        }
    );
    hostcall!(
        l,
        "proxy_set_header_map_pairs",
        |c, t: i32, ptr: i32, size: i32| {
            let t = map_type(t)?;
            let data = mem::read(&c, ptr, size)?;
            *acting_map_mut(c.data_mut(), t)? = Headers::from_wire(&data);
            Ok(())
        }
    );
    hostcall!(
        l,
        "proxy_get_header_map_value",
        |c, t: i32, kp: i32, ks: i32, vpp: i32, vsp: i32| {
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
        }
    );
    type Set = fn(&mut Headers, &str, &str);
    for (name, set) in [
        ("proxy_add_header_map_value", Headers::add as Set),
        ("proxy_replace_header_map_value", Headers::replace as Set),
    ] {
        hostcall!(l, name, |c, t: i32, kp: i32, ks: i32, vp: i32, vs: i32| {
            let (t, key, value) = (map_type(t)?, mem::read(&c, kp, ks)?, mem::read(&c, vp, vs)?);
            set(acting_map_mut(c.data_mut(), t)?, &text(&key), &text(&value));
            Ok(())
        });
    }
    hostcall!(
        l,
        "proxy_remove_header_map_value",
        |c, t: i32, kp: i32, ks: i32| {
            let t = map_type(t)?;
            let key = text(&mem::read(&c, kp, ks)?);
            acting_map_mut(c.data_mut(), t)?.remove(&key);
            Ok(())
        }
    );
    hostcall!(l, "proxy_get_header_map_size", |c, t: i32, out: i32| {
        let t = map_type(t)?;
        let size = acting_map_mut(c.data_mut(), t)?.byte_size();
        mem::write_u32(&mut c, out, size as u32)
    });
    Ok(())
}
