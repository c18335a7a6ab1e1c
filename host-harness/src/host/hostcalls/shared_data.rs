//! Shared data and shared queues: `proxy_{get,set}_shared_data`,
//! `proxy_{register,resolve}_shared_queue`, `proxy_{enqueue,dequeue}_shared_queue`. The store
//! is process-wide in Envoy (`SharedStore`, possibly shared by several VMs).

use std::sync::MutexGuard;

use wasmtime::Linker;

use super::common::{status_result, text};
use crate::host::abi::Status;
use crate::host::contexts::ContextModel;
use crate::host::memory::{self as mem, HostcallResult};
use crate::host::state::{HostState, SharedQueue, SharedStore};

/// The shared store, locked; a poisoned lock is InternalFailure, never a host panic.
fn store<M: ContextModel>(s: &HostState<M>) -> HostcallResult<MutexGuard<'_, SharedStore>> {
    Ok(s.shared.lock().map_err(|_| Status::InternalFailure)?)
}

fn queue(store: &mut SharedStore, token: i32) -> HostcallResult<&mut SharedQueue> {
    Ok(store.queue_mut(token as u32).ok_or(Status::NotFound)?)
}

pub(super) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    hostcall!(
        l,
        "proxy_get_shared_data",
        |c, kp: i32, ks: i32, vpp: i32, vsp: i32, cas_ptr: i32| {
            let key = mem::read(&c, kp, ks)?;
            let found = store(c.data())?.get(&c.data().vm_id, &key);
            let (value, cas) = found.ok_or(Status::NotFound)?;
            mem::copy_out(&mut c, &value, vpp, vsp)?;
            mem::write_u32(&mut c, cas_ptr, cas)
        }
    );
    hostcall!(
        l,
        "proxy_set_shared_data",
        |c, kp: i32, ks: i32, vp: i32, vs: i32, cas: i32| {
            let key = mem::read(&c, kp, ks)?;
            let value = mem::read(&c, vp, vs)?;
            let s = c.data();
            status_result(store(s)?.set(&s.vm_id, &key, &value, cas as u32))
        }
    );
    hostcall!(
        l,
        "proxy_register_shared_queue",
        |c, np: i32, ns: i32, out: i32| {
            let name = mem::read(&c, np, ns)?;
            let s = c.data();
            let token = store(s)?.register_queue(&s.vm_id, &name, s.root_context_id);
            mem::write_u32(&mut c, out, token)
        }
    );
    hostcall!(
        l,
        "proxy_resolve_shared_queue",
        |c, vp: i32, vs: i32, np: i32, ns: i32, out: i32| {
            let vm_id = text(&mem::read(&c, vp, vs)?);
            let name = mem::read(&c, np, ns)?;
            let token = store(c.data())?
                .resolve_queue(&vm_id, &name)
                .ok_or(Status::NotFound)?;
            mem::write_u32(&mut c, out, token)
        }
    );
    hostcall!(
        l,
        "proxy_enqueue_shared_queue",
        |c, token: i32, dp: i32, ds: i32| {
            let data = mem::read(&c, dp, ds)?;
            let root = {
                let mut store = store(c.data())?;
                let q = queue(&mut store, token)?;
                q.items.push_back(data);
                q.root_context_id
            };
            // Envoy posts on_queue_ready to the owner's dispatcher: it runs later, not inline.
            c.data_mut().queue_ready.push_back((root, token as u32));
            Ok(())
        }
    );
    hostcall!(
        l,
        "proxy_dequeue_shared_queue",
        |c, token: i32, dpp: i32, dsp: i32| {
            let item = queue(&mut *store(c.data())?, token)?
                .items
                .pop_front()
                .ok_or(Status::Empty)?;
            mem::copy_out(&mut c, &item, dpp, dsp)
        }
    );
    Ok(())
}
