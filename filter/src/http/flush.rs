//! The server role's flush tick: one per root (so one per worker VM), shared by its streams.

use std::cell::RefCell;
use std::collections::BTreeSet;

use crate::host::{self, LogLevel};
use crate::metrics;

/// Streams whose response data is held until the next tick (see `http::server`).
///
/// Envoy can't inject body bytes from the trailers callback unless the stream's body is still
/// paused. So the server role pauses every response chunk and this tick releases them every
/// `flush_interval_ms`, while the stream's trailers can still be appended. The tick is armed only
/// while some stream holds data.
pub struct FlushScheduler {
    interval_ms: u32,
    due: RefCell<BTreeSet<u32>>,
    armed: RefCell<bool>,
}

impl FlushScheduler {
    pub fn new(interval_ms: u32) -> Self {
        FlushScheduler {
            interval_ms,
            due: RefCell::new(BTreeSet::new()),
            armed: RefCell::new(false),
        }
    }

    /// Registers a stream for release at the next tick, arming the tick if needed.
    pub fn hold(&self, context_id: u32) {
        if let Ok(mut due) = self.due.try_borrow_mut() {
            due.insert(context_id);
        }
        if let Ok(mut armed) = self.armed.try_borrow_mut() {
            if !*armed {
                match host::set_tick_period_ms(self.interval_ms) {
                    Ok(()) => *armed = true,
                    Err(e) => host::log(
                        LogLevel::Error,
                        &format!("grpc-bridge: cannot arm flush tick: {e:?}"),
                    ),
                }
            }
        }
    }

    /// Forgets a stream (it finished or no longer holds data).
    pub fn release(&self, context_id: u32) {
        if let Ok(mut due) = self.due.try_borrow_mut() {
            due.remove(&context_id);
        }
    }

    pub(crate) fn take_due(&self) -> Vec<u32> {
        match self.due.try_borrow_mut() {
            Ok(mut due) => std::mem::take(&mut *due).into_iter().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Slows the tick back to the metrics flush period when nothing is held any more.
    pub(crate) fn settle(&self) {
        let idle = self.due.try_borrow().map(|d| d.is_empty()).unwrap_or(false);
        if let Ok(mut armed) = self.armed.try_borrow_mut() {
            if idle && *armed && host::set_tick_period_ms(metrics::FLUSH_MS).is_ok() {
                *armed = false;
            }
        }
    }
}
