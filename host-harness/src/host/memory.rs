//! Guest memory and the result type of every hostcall. A bad pointer is an
//! `InvalidMemoryAccess` status, never a host panic.

use wasmtime::Caller;

use super::abi::Status;
use super::state::HostState;

/// A hostcall either answers a status or traps (e.g. the guest allocator trapped).
pub(crate) enum HostError {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for HostError {
    fn from(s: Status) -> Self {
        HostError::Status(s)
    }
}

pub(crate) type HostcallResult<T> = Result<T, HostError>;

fn memory<M: 'static>(caller: &Caller<'_, HostState<M>>) -> HostcallResult<wasmtime::Memory> {
    caller
        .data()
        .memory
        .ok_or(HostError::Status(Status::InvalidMemoryAccess))
}

pub(crate) fn read<M: 'static>(
    caller: &Caller<'_, HostState<M>>,
    ptr: i32,
    len: i32,
) -> HostcallResult<Vec<u8>> {
    let m = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = m.data(caller);
    let end = ptr.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    data.get(ptr..end)
        .map(|s| s.to_vec())
        .ok_or(HostError::Status(Status::InvalidMemoryAccess))
}

pub(crate) fn write<M: 'static>(
    caller: &mut Caller<'_, HostState<M>>,
    ptr: i32,
    bytes: &[u8],
) -> HostcallResult<()> {
    let m = memory(caller)?;
    let ptr = ptr as u32 as usize;
    let data = m.data_mut(caller);
    let end = ptr
        .checked_add(bytes.len())
        .ok_or(Status::InvalidMemoryAccess)?;
    let dst = data.get_mut(ptr..end).ok_or(Status::InvalidMemoryAccess)?;
    dst.copy_from_slice(bytes);
    Ok(())
}

/// A little-endian `u32` (pointers, sizes, tokens); 64-bit values go through [`write`].
pub(crate) fn write_u32<M: 'static>(
    caller: &mut Caller<'_, HostState<M>>,
    ptr: i32,
    v: u32,
) -> HostcallResult<()> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Allocates in the guest through its allocator export and copies `bytes` there.
pub(crate) fn alloc_copy<M: 'static>(
    caller: &mut Caller<'_, HostState<M>>,
    bytes: &[u8],
) -> HostcallResult<u32> {
    let alloc = caller
        .data()
        .allocator
        .clone()
        .ok_or(Status::InvalidMemoryAccess)?;
    let ptr = alloc
        .call(&mut *caller, bytes.len() as i32)
        .map_err(HostError::Trap)?;
    if ptr == 0 && !bytes.is_empty() {
        return Err(HostError::Status(Status::InvalidMemoryAccess));
    }
    write(caller, ptr, bytes)?;
    Ok(ptr as u32)
}

/// cpp-host `copyToPointerSize`: allocate, copy, then store pointer and size.
/// An empty value stores a null pointer and size 0.
pub(crate) fn copy_out<M: 'static>(
    caller: &mut Caller<'_, HostState<M>>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> HostcallResult<()> {
    let ptr = if bytes.is_empty() {
        0
    } else {
        alloc_copy(caller, bytes)?
    };
    write_u32(caller, ptr_ptr, ptr)?;
    write_u32(caller, size_ptr, bytes.len() as u32)?;
    Ok(())
}
