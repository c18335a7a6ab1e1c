//! Properties: `proxy_get_property`, `proxy_set_property`.

use wasmtime::Linker;

use crate::host::abi::Status;
use crate::host::contexts::ContextModel;
use crate::host::memory as mem;
use crate::host::state::HostState;

fn get_property<M: ContextModel>(s: &HostState<M>, ctx: u32, path: &[u8]) -> Option<Vec<u8>> {
    // The Rust SDK ends every segment with a NUL ("connection\0mtls\0"); Envoy accepts both.
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    let parts: Vec<&[u8]> = path.split(|b| *b == 0).collect();
    match parts.first().copied()? {
        b"plugin_name" => return Some(s.plugin_name.clone().into_bytes()),
        b"plugin_root_id" => return Some(s.root_id.clone().into_bytes()),
        b"plugin_vm_id" => return Some(s.vm_id.clone().into_bytes()),
        _ => {}
    }
    if let Some(v) = s.properties.get(path) {
        return Some(v.clone());
    }
    s.contexts.property(ctx, path, &parts)
}

pub(super) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    hostcall!(
        l,
        "proxy_get_property",
        |c, pp: i32, ps: i32, vpp: i32, vsp: i32| {
            let path = mem::read(&c, pp, ps)?;
            let ctx = c.data().acting_context();
            let value = get_property(c.data(), ctx, &path).ok_or(Status::NotFound)?;
            mem::copy_out(&mut c, &value, vpp, vsp)
        }
    );
    hostcall!(
        l,
        "proxy_set_property",
        |c, kp: i32, ks: i32, vp: i32, vs: i32| {
            let key = mem::read(&c, kp, ks)?;
            let value = mem::read(&c, vp, vs)?;
            let ctx = c.data().acting_context();
            // Envoy stores it in the stream's filter state; a root context has none.
            if !c.data_mut().contexts.set_filter_state(ctx, key, value) {
                return Err(Status::NotFound.into());
            }
            Ok(())
        }
    );
    Ok(())
}
