//! Exports the shared codec workloads to the wasm/native bench runner.
#![allow(clippy::missing_safety_doc)]

#[allow(dead_code)]
#[path = "../../workloads.rs"]
mod workloads;

/// A buffer of `len` bytes in guest memory (leaked: the runner makes one per workload).
#[no_mangle]
pub extern "C" fn bench_alloc(len: u32) -> *mut u8 {
    let mut v = vec![0u8; len as usize];
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

/// Runs workload `id` on the `len` bytes at `ptr`.
#[no_mangle]
pub unsafe extern "C" fn bench_run(id: u32, ptr: *mut u8, len: u32) -> u64 {
    let input = std::slice::from_raw_parts_mut(ptr, len as usize);
    workloads::run(id, input)
}
