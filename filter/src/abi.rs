//! proxy-wasm ABI 0.2.1 entry points and the context registry.
//!
//! We own the dispatch instead of using the SDK's so that (a) no host surprise can panic
//! (an unknown context id gets a neutral answer), and (b) body callbacks can return every
//! status Envoy understands, including `StopIterationAndWatermark`.
//!
//! Contexts are kept in `Rc<RefCell<_>>` and borrowed with `try_borrow_mut`: if a host ever
//! re-entered the VM for a context that is mid-callback we answer neutrally instead of panicking.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::context::{HttpStream, NetworkStream};
use crate::host::{self, LogLevel};
use crate::root::{ChildContext, Root};

type Shared<T> = Rc<RefCell<T>>;

#[derive(Default)]
struct Registry {
    roots: BTreeMap<u32, Shared<Root>>,
    http: BTreeMap<u32, Shared<dyn HttpStream>>,
    net: BTreeMap<u32, Shared<dyn NetworkStream>>,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// The context `id` in the registry's `table`; `None` if unknown (or the registry is busy).
fn lookup<T: ?Sized>(
    id: u32,
    table: impl FnOnce(&Registry) -> &BTreeMap<u32, Shared<T>>,
) -> Option<Shared<T>> {
    REGISTRY.with(|r| {
        r.try_borrow()
            .ok()
            .and_then(|r| table(&r).get(&id).cloned())
    })
}

fn root(id: u32) -> Option<Shared<Root>> {
    lookup(id, |r| &r.roots)
}

/// Runs `f` on the context, or answers `neutral` if there is none or it is mid-callback.
fn with_context<T: ?Sized, R>(
    ctx: Option<Shared<T>>,
    neutral: R,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    match ctx.as_ref().map(|c| c.try_borrow_mut()) {
        Some(Ok(mut c)) => f(&mut c),
        _ => neutral,
    }
}

fn with_http<R>(id: u32, neutral: R, f: impl FnOnce(&mut (dyn HttpStream + 'static)) -> R) -> R {
    with_context(lookup(id, |r| &r.http), neutral, f)
}

fn with_net<R>(id: u32, neutral: R, f: impl FnOnce(&mut (dyn NetworkStream + 'static)) -> R) -> R {
    with_context(lookup(id, |r| &r.net), neutral, f)
}

/// Releases held response data of the given streams (called from a root's tick).
pub(crate) fn flush_streams(ids: &[u32]) {
    for &id in ids {
        with_http(id, (), |s| s.on_flushed());
    }
}

/// Gives each live tunnel connection its tick (keepalive), as its effective context.
fn tick_connections(ids: &[u32]) {
    for &id in ids {
        if host::set_effective_context(id).is_ok() {
            with_net(id, (), |s| s.on_tick());
        }
    }
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(size);
    let ptr = v.as_mut_ptr();
    std::mem::forget(v);
    ptr
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    if parent_id == 0 {
        let r = Rc::new(RefCell::new(Root::new(context_id)));
        REGISTRY.with(|reg| {
            if let Ok(mut reg) = reg.try_borrow_mut() {
                reg.roots.insert(context_id, r);
            }
        });
        return;
    }
    let Some(parent) = root(parent_id) else {
        host::log(
            LogLevel::Error,
            "grpc-bridge: context created under an unknown root",
        );
        return;
    };
    let child = match parent.try_borrow_mut() {
        Ok(mut p) => p.new_child(context_id),
        Err(_) => return,
    };
    REGISTRY.with(|reg| {
        if let Ok(mut reg) = reg.try_borrow_mut() {
            match child {
                ChildContext::Http(h) => {
                    reg.http.insert(context_id, h);
                }
                ChildContext::Network(n) => {
                    reg.net.insert(context_id, n);
                }
            }
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_id: u32, _vm_config_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_id: u32, config_size: usize) -> u32 {
    let Some(r) = root(root_id) else { return 0 };
    let ok = match r.try_borrow_mut() {
        Ok(mut r) => r.on_configure(config_size),
        Err(_) => false,
    };
    ok as u32
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root_id: u32) {
    let Some(r) = root(root_id) else { return };
    // Take the list first so the root is not borrowed while streams run.
    let (due, conns) = match r.try_borrow_mut() {
        Ok(mut r) => (r.take_due_streams(), r.live_connections()),
        Err(_) => return,
    };
    flush_streams(&due);
    tick_connections(&conns);
    if let Ok(mut guard) = r.try_borrow_mut() {
        guard.after_tick();
    };
}

/// Declares exports that hand a stream callback to the stream's context (`with_http` or
/// `with_net`) and return its answer; an unknown or busy context gets the answer's default,
/// `Continue`.
macro_rules! stream_callbacks {
    ($(
        $export:ident($($arg:ident: $ty:ty),*) => $with:ident.$method:ident($($call:expr),*);
    )*) => {$(
        #[no_mangle]
        pub extern "C" fn $export(id: u32, $($arg: $ty),*) -> u32 {
            $with(id, Default::default(), |s| s.$method($($call),*)) as u32
        }
    )*};
}

stream_callbacks! {
    proxy_on_request_headers(num: usize, eos: u32) => with_http.on_request_headers(num, eos != 0);
    proxy_on_request_body(size: usize, eos: u32) => with_http.on_request_body(size, eos != 0);
    proxy_on_request_trailers(num: usize) => with_http.on_request_trailers(num);
    proxy_on_response_headers(num: usize, eos: u32) => with_http.on_response_headers(num, eos != 0);
    proxy_on_response_body(size: usize, eos: u32) => with_http.on_response_body(size, eos != 0);
    proxy_on_response_trailers(num: usize) => with_http.on_response_trailers(num);
    proxy_on_new_connection() => with_net.on_new_connection();
    proxy_on_downstream_data(size: usize, eos: u32) => with_net.on_downstream_data(size, eos != 0);
    proxy_on_upstream_data(size: usize, eos: u32) => with_net.on_upstream_data(size, eos != 0);
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_connection_close(id: u32, peer: u32) {
    with_net(id, (), |s| s.on_downstream_close(peer))
}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_connection_close(id: u32, peer: u32) {
    with_net(id, (), |s| s.on_upstream_close(peer))
}

#[no_mangle]
pub extern "C" fn proxy_on_log(id: u32) {
    with_http(id, (), |s| s.on_log())
}

#[no_mangle]
pub extern "C" fn proxy_on_done(id: u32) -> u32 {
    with_http(id, (), |s| s.on_done());
    with_net(id, (), |s| s.on_done());
    let roots: Vec<Shared<Root>> = REGISTRY.with(|r| {
        r.try_borrow()
            .map(|r| r.roots.values().cloned().collect())
            .unwrap_or_default()
    });
    for r in roots {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.forget_connection(id);
        }
    }
    if let Some(r) = root(id) {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.on_done();
        }
    }
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(id: u32) {
    REGISTRY.with(|reg| {
        if let Ok(mut reg) = reg.try_borrow_mut() {
            reg.http.remove(&id);
            reg.net.remove(&id);
            reg.roots.remove(&id);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    _id: u32,
    _token: u32,
    _headers: usize,
    _body: usize,
    _trailers: usize,
) {
}

#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(_id: u32, _token: u32) {}
