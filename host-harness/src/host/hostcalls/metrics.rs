//! Metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric`, with ids and statuses like proxy-wasm-cpp-host.

use wasmtime::Linker;

use super::common::text;
use crate::host::abi::{MetricKind, Status, METRIC_TYPE_MASK};
use crate::host::contexts::ContextModel;
use crate::host::memory::{self as mem, HostError, HostcallResult};
use crate::host::state::{HostState, Metric};

/// The metric behind `id` for increment and get: an unknown id of a counter or gauge kind is
/// NotFound, of any other kind BadArgument (cpp-host checks the kind bits first).
fn known_metric<M: ContextModel>(s: &mut HostState<M>, id: i32) -> HostcallResult<&mut Metric> {
    let kind = id as u32 & METRIC_TYPE_MASK;
    s.metrics
        .get_mut(id as u32)
        .ok_or(HostError::Status(if kind <= 1 {
            Status::NotFound
        } else {
            Status::BadArgument
        }))
}

pub(super) fn define<M: ContextModel>(l: &mut Linker<HostState<M>>) -> wasmtime::Result<()> {
    hostcall!(
        l,
        "proxy_define_metric",
        |c, t: i32, np: i32, ns: i32, out: i32| {
            let kind = match t {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Err(HostError::Status(Status::BadArgument)),
            };
            let name = text(&mem::read(&c, np, ns)?);
            let id = c.data_mut().metrics.define(kind, &name);
            mem::write_u32(&mut c, out, id)
        }
    );
    hostcall!(l, "proxy_increment_metric", |c, id: i32, offset: i64| {
        let m = known_metric(c.data_mut(), id)?;
        match m.kind {
            MetricKind::Counter if offset > 0 => m.value += offset,
            MetricKind::Gauge => m.value += offset,
            MetricKind::Counter | MetricKind::Histogram => {
                return Err(HostError::Status(Status::BadArgument))
            }
        }
        Ok(())
    });
    hostcall!(l, "proxy_record_metric", |c, id: i32, value: i64| {
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
    });
    hostcall!(l, "proxy_get_metric", |c, id: i32, out: i32| {
        let m = known_metric(c.data_mut(), id)?;
        if m.kind == MetricKind::Histogram {
            return Err(HostError::Status(Status::BadArgument));
        }
        let v = m.value as u64;
        mem::write(&mut c, out, &v.to_le_bytes())
    });
    Ok(())
}
