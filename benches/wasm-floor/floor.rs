//! The floor of a proxy-wasm HTTP filter in Envoy: a module that does nothing but answer every
//! callback with Continue, plus (configurable) N `get_header_map_value` hostcalls in the request
//! headers callback, to price one hostcall. `make bench` builds it with plain rustc (no crates)
//! and the load benchmark's `floor` paths put it into the `native-h2` chain:
//!
//!   configuration ""   : context create, 6 callbacks, done/log/delete per stream, no hostcall
//!   configuration "N"  : the same plus N header reads (each returns a value, so Envoy calls
//!                        back into the VM for `proxy_on_memory_allocate`)
//!   letters            : one operation each of what the agent role does, on unchanged data:
//!                        r/R read/write back the request header map (get/set_header_map_pairs),
//!                        p/P the same for the response headers, b/B read/replace-with-itself
//!                        each response body chunk. "rRpPbB" is the agent's whole unary pattern
//!                        with none of its logic.
//!
//! Not shipped; not part of the workspace (it must build with no dependencies for wasm32-wasip1).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

extern "C" {
    fn proxy_get_buffer_bytes(bt: u32, start: u32, len: u32, out_ptr: *mut *mut u8, out_len: *mut usize) -> u32;
    fn proxy_get_header_map_value(mt: u32, key: *const u8, key_len: usize, out_ptr: *mut *mut u8, out_len: *mut usize) -> u32;
    fn proxy_get_header_map_pairs(mt: u32, out_ptr: *mut *mut u8, out_len: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(mt: u32, ptr: *const u8, len: usize) -> u32;
    fn proxy_set_buffer_bytes(bt: u32, start: u32, len: u32, ptr: *const u8, size: usize) -> u32;
}

/// Bit per letter of the configuration.
static OPS: AtomicU32 = AtomicU32::new(0);
const OP_LETTERS: &[u8] = b"rRpPbB";

fn op(letter: u8) -> bool {
    let bit = OP_LETTERS.iter().position(|&l| l == letter).unwrap_or(31);
    OPS.load(Ordering::Relaxed) & (1 << bit) != 0
}

/// Reads a header map and, if asked, writes the same bytes back.
fn map_round_trip(mt: u32, write: bool) {
    let mut p: *mut u8 = core::ptr::null_mut();
    let mut n: usize = 0;
    if unsafe { proxy_get_header_map_pairs(mt, &mut p, &mut n) } == 0 && write && !p.is_null() {
        unsafe { proxy_set_header_map_pairs(mt, p, n) };
    }
}

/// A bump allocator over a static arena that is reset at each request headers callback: the
/// floor must not measure an allocator.
static mut ARENA: [u8; 1 << 16] = [0; 1 << 16];
static NEXT: AtomicU32 = AtomicU32::new(0);
static READS: AtomicU32 = AtomicU32::new(0);

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Where allocations larger than the arena go (streamed body chunks): one region of fresh
/// pages, grown when a larger one is asked for and reused after that. The floor reads a body
/// chunk and writes it back before the host allocates again, so reuse is safe here.
static BIG_AT: AtomicU32 = AtomicU32::new(0);
static BIG_CAP: AtomicU32 = AtomicU32::new(0);

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    if size > (1 << 15) {
        if size > BIG_CAP.load(Ordering::Relaxed) as usize {
            let pages = size.div_ceil(1 << 16);
            let first = core::arch::wasm32::memory_grow(0, pages);
            if first == usize::MAX {
                return core::ptr::null_mut();
            }
            BIG_AT.store((first << 16) as u32, Ordering::Relaxed);
            BIG_CAP.store((pages << 16) as u32, Ordering::Relaxed);
        }
        return BIG_AT.load(Ordering::Relaxed) as usize as *mut u8;
    }
    let at = NEXT.fetch_add(((size + 7) & !7) as u32, Ordering::Relaxed) as usize;
    if at + size > (1 << 16) {
        NEXT.store(((size + 7) & !7) as u32, Ordering::Relaxed);
        return core::ptr::addr_of_mut!(ARENA) as *mut u8;
    }
    unsafe { (core::ptr::addr_of_mut!(ARENA) as *mut u8).add(at) }
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_id: u32, _parent: u32) {}
#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_id: u32, _size: u32) -> u32 {
    1
}
#[no_mangle]
pub extern "C" fn proxy_on_configure(_id: u32, size: u32) -> u32 {
    // configuration: a decimal N (header reads per request), or empty.
    if size > 0 {
        let mut p: *mut u8 = core::ptr::null_mut();
        let mut n: usize = 0;
        if unsafe { proxy_get_buffer_bytes(7, 0, size, &mut p, &mut n) } == 0 && !p.is_null() {
            let mut v = 0u32;
            let mut ops = 0u32;
            for i in 0..n {
                let d = unsafe { *p.add(i) };
                if d.is_ascii_digit() {
                    v = v * 10 + (d - b'0') as u32;
                } else if let Some(bit) = OP_LETTERS.iter().position(|&l| l == d) {
                    ops |= 1 << bit;
                }
            }
            READS.store(v, Ordering::Relaxed);
            OPS.store(ops, Ordering::Relaxed);
        }
    }
    1
}
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_id: u32, _n: u32, _eos: u32) -> u32 {
    NEXT.store(0, Ordering::Relaxed);
    for _ in 0..READS.load(Ordering::Relaxed) {
        let key = b"content-type";
        let mut p: *mut u8 = core::ptr::null_mut();
        let mut n: usize = 0;
        unsafe { proxy_get_header_map_value(0, key.as_ptr(), key.len(), &mut p, &mut n) };
    }
    if op(b'r') {
        map_round_trip(0, op(b'R'));
    }
    0
}
#[no_mangle]
pub extern "C" fn proxy_on_request_body(_id: u32, _n: u32, _eos: u32) -> u32 {
    0
}
#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_id: u32, _n: u32) -> u32 {
    0
}
#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_id: u32, _n: u32, _eos: u32) -> u32 {
    if op(b'p') {
        map_round_trip(2, op(b'P'));
    }
    0
}
#[no_mangle]
pub extern "C" fn proxy_on_response_body(_id: u32, size: u32, _eos: u32) -> u32 {
    if op(b'b') && size > 0 {
        let mut p: *mut u8 = core::ptr::null_mut();
        let mut n: usize = 0;
        if unsafe { proxy_get_buffer_bytes(1, 0, size, &mut p, &mut n) } == 0 && op(b'B') && !p.is_null() {
            unsafe { proxy_set_buffer_bytes(1, 0, size, p, n) };
        }
    }
    0
}
#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_id: u32, _n: u32) -> u32 {
    0
}
#[no_mangle]
pub extern "C" fn proxy_on_log(_id: u32) {}
#[no_mangle]
pub extern "C" fn proxy_on_done(_id: u32) -> u32 {
    1
}
#[no_mangle]
pub extern "C" fn proxy_on_delete(_id: u32) {}
