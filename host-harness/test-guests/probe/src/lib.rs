//! Probe guest. Modes (plugin configuration):
//! - `stream`: pause every response body chunk (StopIterationAndBuffer), flush held data from
//!   a 5 ms tick with set_effective_context + continue_stream(HttpResponse); in trailers
//!   append a `[TRAILERS]` frame, remove `grpc-status`, return Pause.
//! - `stream-trailers-continue`: as `stream` but Continue from the trailers callback.
//! - `body-continue`: Continue from body callbacks; trailers append (expect NotFound).
//! - `headers-stop`: return StopIteration (1) from response headers and resume on a tick.
//! - `local-reply`: 403 local reply from request headers.
//! - `trap`: unreachable in request headers.
//! - `reject`: refuse the configuration with a message.
//! - `abi`: run a battery of hostcalls at configure time and log each status.
//! - `net`: network filter: prefix the first downstream bytes with `HELLO `, continue
//!   reading and pause; upper-case upstream bytes.
//! - `cumulative`: pause response body chunks (StopIterationAndBuffer) without a tick until 7
//!   bytes are held, then flush from a 5 ms tick (trailers as in `stream`).
//! - `resume-after-reset`: pause response body chunks; arm the 5 ms tick only when the stream
//!   is gone (`proxy_on_delete`), so the tick resumes a finished context.
//! - `buffer-all` / `watermark-all`: StopIterationAndBuffer / StopIterationAndWatermark on
//!   every response body chunk but the last, Continue on the last.
//! - `headers-buffer`: StopAllIterationAndBuffer (3) from response headers, never resumed.
//! - `request-buffer`: StopIterationAndBuffer on every request body chunk but the last.
//! - `originate`: the long-poll spike (docs/ARCHITECTURE.md): from request headers, dispatch
//!   an HTTP call (`proxy_http_call`, cluster `up`) and hold the request; from the tick, with
//!   no upstream response at all, try to write response body bytes (`set_buffer_bytes`), read
//!   the response body, and call a foreign function that would inject data; then answer with a
//!   local reply.
//! Every status worth checking is logged as `name=status`.

use std::cell::RefCell;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, ptr: *const u8, len: usize) -> u32;
    fn proxy_get_buffer_bytes(
        t: u32,
        start: usize,
        len: usize,
        ptr: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(t: u32, start: usize, len: usize, ptr: *const u8, size: usize)
        -> u32;
    fn proxy_set_tick_period_milliseconds(ms: u32) -> u32;
    fn proxy_set_effective_context(id: u32) -> u32;
    fn proxy_continue_stream(t: u32) -> u32;
    fn proxy_remove_header_map_value(t: u32, k: *const u8, kl: usize) -> u32;
    fn proxy_replace_header_map_value(
        t: u32,
        k: *const u8,
        kl: usize,
        v: *const u8,
        vl: usize,
    ) -> u32;
    fn proxy_add_header_map_value(t: u32, k: *const u8, kl: usize, v: *const u8, vl: usize) -> u32;
    fn proxy_get_header_map_value(
        t: u32,
        k: *const u8,
        kl: usize,
        vp: *mut *mut u8,
        vs: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        code: u32,
        dp: *const u8,
        dl: usize,
        bp: *const u8,
        bl: usize,
        hp: *const u8,
        hl: usize,
        grpc: i32,
    ) -> u32;
    fn proxy_define_metric(t: u32, np: *const u8, nl: usize, out: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_get_metric(id: u32, out: *mut u64) -> u32;
    fn proxy_set_shared_data(kp: *const u8, kl: usize, vp: *const u8, vl: usize, cas: u32) -> u32;
    fn proxy_get_shared_data(
        kp: *const u8,
        kl: usize,
        vp: *mut *mut u8,
        vs: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_call_foreign_function(
        np: *const u8,
        nl: usize,
        ap: *const u8,
        al: usize,
        rp: *mut *mut u8,
        rs: *mut usize,
    ) -> u32;
    fn proxy_register_shared_queue(np: *const u8, nl: usize, token: *mut u32) -> u32;
    fn proxy_enqueue_shared_queue(token: u32, dp: *const u8, dl: usize) -> u32;
    fn proxy_dequeue_shared_queue(token: u32, dp: *mut *mut u8, dl: *mut usize) -> u32;
    fn proxy_get_property(pp: *const u8, pl: usize, vp: *mut *mut u8, vl: *mut usize) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        up: *const u8,
        ul: usize,
        hp: *const u8,
        hl: usize,
        bp: *const u8,
        bl: usize,
        tp: *const u8,
        tl: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
}

/// proxy-wasm header map serialization: count, then (key len, value len) pairs, then the
/// NUL-terminated keys and values.
fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend((k.len() as u32).to_le_bytes());
        out.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend(k.as_bytes());
        out.push(0);
        out.extend(v.as_bytes());
        out.push(0);
    }
    out
}

// `originate`: (call token, request context) of calls in flight, and request contexts whose
// poll answered, waiting for the tick. Envoy runs `proxy_http_call` on the root context, so
// its answer arrives at the root (context 1), not at the stream that dispatched it.
thread_local! {
    static ORIGINATE_CALLS: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
    static ORIGINATE: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

fn originate_from_tick() {
    let held: Vec<u32> = ORIGINATE.with(|o| std::mem::take(&mut *o.borrow_mut()));
    for ctx in held {
        let eff = unsafe { proxy_set_effective_context(ctx) };
        let data = b"message from nowhere";
        let set = unsafe { proxy_set_buffer_bytes(RESPONSE_BODY, 0, 0, data.as_ptr(), data.len()) };
        let (get, got) = get_buffer(RESPONSE_BODY, 0, 100);
        let got = got.map_or(0, |b| b.len());
        let f = "inject_encoded_data";
        let mut p: *mut u8 = std::ptr::null_mut();
        let mut n = 0usize;
        let inject = unsafe {
            proxy_call_foreign_function(f.as_ptr(), f.len(), data.as_ptr(), data.len(), &mut p, &mut n)
        };
        let body = "done";
        let local = unsafe {
            proxy_send_local_response(200, std::ptr::null(), 0, body.as_ptr(), body.len(), std::ptr::null(), 0, -1)
        };
        log(&format!(
            "originate tick ctx={ctx} effective={eff} set_response_body={set} get_response_body={get} got={got} foreign_inject_encoded_data={inject} local_response={local}"
        ));
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(ctx: u32, token: u32, headers: u32, body: usize, trailers: u32) {
    let stream = ORIGINATE_CALLS.with(|c| {
        let mut c = c.borrow_mut();
        let i = c.iter().position(|(t, _)| *t == token)?;
        Some(c.remove(i).1)
    });
    log(&format!(
        "originate http_call_response ctx={ctx} token={token} headers={headers} body={body} trailers={trailers} stream={stream:?}"
    ));
    if let Some(s) = stream {
        ORIGINATE.with(|o| o.borrow_mut().push(s));
    }
}

const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
const RESPONSE_TRAILERS: u32 = 3;
const REQUEST_BODY: u32 = 0;
const RESPONSE_BODY: u32 = 1;
const DOWNSTREAM_DATA: u32 = 2;
const UPSTREAM_DATA: u32 = 3;
const PLUGIN_CONFIGURATION: u32 = 7;

struct State {
    mode: String,
    held: Vec<u32>,
    /// Connections that already sent their first bytes.
    seen_connections: Vec<u32>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State { mode: String::new(), held: Vec::new(), seen_connections: Vec::new() });
}

fn mode() -> String {
    STATE.with(|s| s.borrow().mode.clone())
}

fn log(msg: &str) {
    unsafe { proxy_log(2, msg.as_ptr(), msg.len()) };
}

/// A hostcall that adds or replaces `k: v` in header map `map`; its status.
fn header_call(
    call: unsafe extern "C" fn(u32, *const u8, usize, *const u8, usize) -> u32,
    map: u32,
    k: &str,
    v: &str,
) -> u32 {
    unsafe { call(map, k.as_ptr(), k.len(), v.as_ptr(), v.len()) }
}

fn get_buffer(t: u32, start: usize, len: usize) -> (u32, Option<Vec<u8>>) {
    let mut ptr: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let st = unsafe { proxy_get_buffer_bytes(t, start, len, &mut ptr, &mut size) };
    if st != 0 || ptr.is_null() {
        return (st, None);
    }
    (st, Some(unsafe { Vec::from_raw_parts(ptr, size, size) }))
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(size.max(1));
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_ctx: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    let (_, cfg) = get_buffer(PLUGIN_CONFIGURATION, 0, size);
    let mode = String::from_utf8(cfg.unwrap_or_default()).unwrap_or_default();
    STATE.with(|s| s.borrow_mut().mode = mode.clone());
    match mode.as_str() {
        "reject" => {
            log("probe: configuration rejected: unknown role \"reject\"");
            0
        }
        "abi" => {
            abi_battery();
            1
        }
        "headers-stop" | "originate" => {
            unsafe { proxy_set_tick_period_milliseconds(5) };
            1
        }
        _ => 1,
    }
}

fn hold(ctx: u32) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if !s.held.contains(&ctx) {
            s.held.push(ctx);
        }
    });
}

fn abi_battery() {
    let st = |name: &str, v: u32| log(&format!("abi {name}={v}"));
    // Each returns the hostcall's status, and the id, CAS or value it wrote.
    let define_metric = |kind: u32, name: &str| {
        let mut id = 0u32;
        (unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) }, id)
    };
    let get_metric = |id: u32| {
        let mut v = 0u64;
        (unsafe { proxy_get_metric(id, &mut v) }, v)
    };
    let get_shared = |k: &str| {
        let (mut p, mut n, mut cas) = (std::ptr::null_mut(), 0usize, 0u32);
        (unsafe { proxy_get_shared_data(k.as_ptr(), k.len(), &mut p, &mut n, &mut cas) }, cas)
    };
    let set_shared = |k: &str, val: &str, cas: u32| unsafe {
        proxy_set_shared_data(k.as_ptr(), k.len(), val.as_ptr(), val.len(), cas)
    };
    unsafe {
        let (status, id) = define_metric(0, "probe_requests");
        st("define_counter", status);
        st("increment_counter", proxy_increment_metric(id, 3));
        st("increment_counter_zero", proxy_increment_metric(id, 0));
        let (status, v) = get_metric(id);
        st("get_counter", status);
        log(&format!("abi counter_value={v}"));
        let (status, gid) = define_metric(1, "probe_gauge");
        st("define_gauge", status);
        st("record_gauge", proxy_record_metric(gid, 7));
        st("increment_gauge_neg", proxy_increment_metric(gid, -2));
        let (status, hid) = define_metric(2, "probe_histogram");
        st("define_histogram", status);
        st("record_histogram", proxy_record_metric(hid, 42));
        st("get_histogram", get_metric(hid).0);
        st("define_bad_type", define_metric(9, "probe_gauge").0);
        st("get_unknown_metric", get_metric(4000).0);

        let (k, val) = ("key", "v1");
        st("get_shared_missing", get_shared(k).0);
        st("set_shared", set_shared(k, val, 0));
        let (status, cas) = get_shared(k);
        st("get_shared", status);
        st("set_shared_stale_cas", set_shared(k, val, cas + 100));
        st("set_shared_cas", set_shared(k, val, cas));

        let mut p: *mut u8 = std::ptr::null_mut();
        let mut n = 0usize;
        let q = "probe_queue";
        let mut token = 0u32;
        st(
            "register_queue",
            proxy_register_shared_queue(q.as_ptr(), q.len(), &mut token),
        );
        st(
            "dequeue_empty",
            proxy_dequeue_shared_queue(token, &mut p, &mut n),
        );
        st(
            "enqueue",
            proxy_enqueue_shared_queue(token, b"x".as_ptr(), 1),
        );
        st(
            "enqueue_unknown",
            proxy_enqueue_shared_queue(token + 50, b"x".as_ptr(), 1),
        );

        let mut foreign = |f: &str| {
            proxy_call_foreign_function(f.as_ptr(), f.len(), std::ptr::null(), 0, &mut p, &mut n)
        };
        st("foreign_clear_route_cache", foreign("clear_route_cache"));
        st("foreign_unknown", foreign("no_such_function"));

        let hk = ":path";
        st(
            "root_get_header",
            proxy_get_header_map_value(REQUEST_HEADERS, hk.as_ptr(), hk.len(), &mut p, &mut n),
        );
        st("root_get_body", get_buffer(RESPONSE_BODY, 0, 10).0);
        st("continue_upstream", proxy_continue_stream(3));
        st("continue_bad_type", proxy_continue_stream(9));
        st("effective_unknown", proxy_set_effective_context(999));
        st("log_bad_level", proxy_log(9, hk.as_ptr(), hk.len()));
        st("bad_pointer", proxy_log(2, 0x7fff_fff0 as *const u8, 64));
        let mut property =
            |path: &str| proxy_get_property(path.as_ptr(), path.len(), &mut p, &mut n);
        st("property_plugin_name", property("plugin_name"));
        st("property_unknown", property("no\0such"));
        st("get_buffer_bad_type", get_buffer(42, 0, 1).0);
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(_root: u32, token: u32) {
    let mut p: *mut u8 = std::ptr::null_mut();
    let mut n = 0usize;
    let st = unsafe { proxy_dequeue_shared_queue(token, &mut p, &mut n) };
    log(&format!("queue_ready dequeue={st} len={n}"));
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(_root: u32) {
    if mode() == "originate" {
        originate_from_tick();
        return;
    }
    let held: Vec<u32> = STATE.with(|s| std::mem::take(&mut s.borrow_mut().held));
    for ctx in held {
        let eff = unsafe { proxy_set_effective_context(ctx) };
        let cont = unsafe { proxy_continue_stream(1) };
        log(&format!("tick ctx={ctx} effective={eff} continue={cont}"));
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(ctx: u32, _n: u32, _eos: u32) -> u32 {
    match mode().as_str() {
        "originate" => {
            let up = "up";
            let h = serialize_pairs(&[(":method", "POST"), (":path", "/poll"), (":authority", "up")]);
            let body = b"poll 1";
            let mut token = 0u32;
            let st = unsafe {
                proxy_http_call(up.as_ptr(), up.len(), h.as_ptr(), h.len(), body.as_ptr(), body.len(), std::ptr::null(), 0, 5000, &mut token)
            };
            log(&format!("originate request_headers ctx={ctx} http_call={st}"));
            ORIGINATE_CALLS.with(|c| c.borrow_mut().push((token, ctx)));
            // The request is held (no upstream request); the tick after the call's answer
            // tries to write a response.
            1
        }
        "trap" => std::process::abort(),
        "local-reply" => {
            let d = "denied_by_probe";
            let b = "go away";
            unsafe {
                proxy_send_local_response(
                    403,
                    d.as_ptr(),
                    d.len(),
                    b.as_ptr(),
                    b.len(),
                    std::ptr::null(),
                    0,
                    -1,
                )
            };
            1
        }
        _ => {
            let st = header_call(proxy_add_header_map_value, REQUEST_HEADERS, "x-probe", "1");
            log(&format!("add_request_header={st}"));
            0
        }
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_ctx: u32, size: usize, eos: u32) -> u32 {
    log(&format!("request_body size={size} eos={eos}"));
    if mode() == "request-buffer" && eos == 0 {
        return 1;
    }
    let _ = get_buffer(REQUEST_BODY, 0, size);
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_ctx: u32, _n: u32) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(ctx: u32, _n: u32, _eos: u32) -> u32 {
    match mode().as_str() {
        "headers-stop" => {
            STATE.with(|s| s.borrow_mut().held.push(ctx));
            1
        }
        // The upstream of envoy_diff.rs sends its large body once it sees this line.
        "buffer-all" | "watermark-all" => {
            log(&format!("response_headers ctx={ctx}"));
            0
        }
        "headers-buffer" => {
            log(&format!("response_headers ctx={ctx}"));
            3
        }
        "headers-stop-late-status" => {
            // Hold the headers well past the upstream's trailers (on /late it sends them once
            // it sees this line), then let the tick release them; the trailers callback then
            // tries to set :status.
            log(&format!("response_headers held ctx={ctx}"));
            STATE.with(|s| s.borrow_mut().held.push(ctx));
            unsafe { proxy_set_tick_period_milliseconds(600) };
            1
        }
        _ => 0,
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(ctx: u32, size: usize, eos: u32) -> u32 {
    log(&format!("response_body size={size} eos={eos}"));
    match mode().as_str() {
        "stream" | "stream-trailers-continue" => {
            hold(ctx);
            unsafe { proxy_set_tick_period_milliseconds(5) };
            1
        }
        "cumulative" => {
            if size >= 7 || eos != 0 {
                hold(ctx);
                unsafe { proxy_set_tick_period_milliseconds(5) };
            }
            1
        }
        "resume-after-reset" => {
            hold(ctx);
            1
        }
        "buffer-all" if eos == 0 => 1,
        "watermark-all" if eos == 0 => 2,
        _ => 0,
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(ctx: u32, _n: u32) -> u32 {
    let (get_st, held) = get_buffer(RESPONSE_BODY, 0, usize::MAX >> 1);
    log(&format!(
        "trailers get_buffer={get_st} held={}",
        held.map(|h| h.len() as i64).unwrap_or(-1)
    ));
    let frame = b"[TRAILERS]";
    let st = unsafe {
        proxy_set_buffer_bytes(
            RESPONSE_BODY,
            usize::MAX >> 1,
            0,
            frame.as_ptr(),
            frame.len(),
        )
    };
    log(&format!("trailers set_buffer={st}"));
    let k = "grpc-status";
    unsafe { proxy_remove_header_map_value(RESPONSE_TRAILERS, k.as_ptr(), k.len()) };
    if mode() == "headers-stop-late-status" {
        let st = header_call(proxy_replace_header_map_value, RESPONSE_HEADERS, ":status", "404");
        log(&format!("trailers replace_response_status={st}"));
        return 0;
    }
    match mode().as_str() {
        "stream-trailers-continue"
        | "body-continue"
        | "buffer-all"
        | "watermark-all"
        | "headers-buffer"
        | "request-buffer" => 0,
        _ => {
            hold(ctx);
            1
        }
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_log(ctx: u32) {
    log(&format!("on_log ctx={ctx}"));
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_ctx: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(ctx: u32) {
    log(&format!("on_delete ctx={ctx}"));
    if mode() == "resume-after-reset" {
        unsafe { proxy_set_tick_period_milliseconds(5) };
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_new_connection(_ctx: u32) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_data(ctx: u32, size: usize, eos: u32) -> u32 {
    log(&format!("downstream_data size={size} eos={eos}"));
    let first = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let first = !s.seen_connections.contains(&ctx);
        if first {
            s.seen_connections.push(ctx);
        }
        first
    });
    if first {
        let hello = b"HELLO ";
        let st =
            unsafe { proxy_set_buffer_bytes(DOWNSTREAM_DATA, 0, 0, hello.as_ptr(), hello.len()) };
        let cont = unsafe { proxy_continue_stream(2) };
        log(&format!("prepend={st} continue_downstream={cont}"));
        return 1;
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_data(_ctx: u32, size: usize, _eos: u32) -> u32 {
    let (_, data) = get_buffer(UPSTREAM_DATA, 0, size);
    let upper: Vec<u8> = data.unwrap_or_default().to_ascii_uppercase();
    let st = unsafe { proxy_set_buffer_bytes(UPSTREAM_DATA, 0, size, upper.as_ptr(), upper.len()) };
    let cont = unsafe { proxy_continue_stream(3) };
    log(&format!("replace_upstream={st} continue_upstream={cont}"));
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_connection_close(ctx: u32, peer: u32) {
    log(&format!("downstream_close ctx={ctx} peer={peer}"));
}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_connection_close(ctx: u32, peer: u32) {
    log(&format!("upstream_close ctx={ctx} peer={peer}"));
}
