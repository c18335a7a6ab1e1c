//! Everything the host keeps for one VM: contexts, records the tests assert on, metrics,
//! shared data and queues, the clock and the actions Envoy defers until a VM call returns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Memory, TypedFunc};

use super::abi::{LogLevel, MetricKind, Status, StreamType, METRIC_ID_INCREMENT};
use super::contexts::ContextModel;
use super::headers::Headers;

/// One `proxy_log` call, or a line the guest wrote to stdout (info) / stderr (error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub level: LogLevel,
    pub context_id: u32,
    pub message: String,
}

/// A hostcall that answered the guest with something other than Ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostcallStatus {
    pub hostcall: &'static str,
    pub context_id: u32,
    pub status: Status,
}

/// One call the host made into the guest and what it returned (`None`: no return value, or
/// the call trapped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRecord {
    pub callback: &'static str,
    pub context_id: u32,
    pub args: Vec<i64>,
    pub returned: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// Counter total or gauge value.
    pub value: i64,
    /// Every value recorded into a histogram.
    pub samples: Vec<u64>,
}

#[derive(Default)]
pub(crate) struct Metrics {
    by_name: BTreeMap<String, Metric>,
    id_to_name: HashMap<u32, String>,
    next_id: [u32; 3],
}

impl Metrics {
    pub(crate) fn define(&mut self, kind: MetricKind, name: &str) -> u32 {
        let slot = kind as usize;
        let id = self.next_id[slot] * METRIC_ID_INCREMENT + kind as u32;
        self.next_id[slot] += 1;
        self.by_name
            .entry(name.to_string())
            .or_insert_with(|| Metric {
                name: name.to_string(),
                kind,
                value: 0,
                samples: Vec::new(),
            });
        self.id_to_name.insert(id, name.to_string());
        id
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut Metric> {
        let name = self.id_to_name.get(&id)?;
        self.by_name.get_mut(name)
    }

    pub(crate) fn all(&self) -> Vec<Metric> {
        self.by_name.values().cloned().collect()
    }
}

/// Shared data and queues. Envoy keeps them process-wide (across workers and VMs), so
/// several `Plugin`s can share one store through [`SharedStore::handle`].
#[derive(Default)]
pub struct SharedStore {
    data: HashMap<(String, Vec<u8>), (Vec<u8>, u32)>,
    next_cas: u32,
    queues: HashMap<u32, SharedQueue>,
    queue_tokens: HashMap<(String, Vec<u8>), u32>,
    next_queue_token: u32,
}

pub(crate) struct SharedQueue {
    pub(crate) root_context_id: u32,
    pub(crate) items: VecDeque<Vec<u8>>,
}

pub type SharedHandle = Arc<Mutex<SharedStore>>;

impl SharedStore {
    pub fn handle() -> SharedHandle {
        Arc::new(Mutex::new(SharedStore::default()))
    }

    pub(crate) fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.data.get(&(vm_id.to_string(), key.to_vec())).cloned()
    }

    /// proxy-wasm-cpp-host `SharedData::set`: a non-zero CAS must match the stored one.
    pub(crate) fn set(&mut self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> Status {
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        let new_cas = self.next_cas;
        match self.data.get_mut(&(vm_id.to_string(), key.to_vec())) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Status::CasMismatch;
                }
                *entry = (value.to_vec(), new_cas);
            }
            None => {
                self.data
                    .insert((vm_id.to_string(), key.to_vec()), (value.to_vec(), new_cas));
            }
        }
        Status::Ok
    }

    pub(crate) fn register_queue(&mut self, vm_id: &str, name: &[u8], root_context_id: u32) -> u32 {
        let key = (vm_id.to_string(), name.to_vec());
        if let Some(token) = self.queue_tokens.get(&key) {
            if let Some(q) = self.queues.get_mut(token) {
                q.root_context_id = root_context_id;
            }
            return *token;
        }
        self.next_queue_token += 1;
        let token = self.next_queue_token;
        self.queue_tokens.insert(key, token);
        self.queues.insert(
            token,
            SharedQueue {
                root_context_id,
                items: VecDeque::new(),
            },
        );
        token
    }

    pub(crate) fn resolve_queue(&self, vm_id: &str, name: &[u8]) -> Option<u32> {
        self.queue_tokens
            .get(&(vm_id.to_string(), name.to_vec()))
            .copied()
    }

    pub(crate) fn queue_mut(&mut self, token: u32) -> Option<&mut SharedQueue> {
        self.queues.get_mut(&token)
    }
}

/// Virtual time for deterministic scenarios, wall-clock time in proxy mode.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Clock {
    /// Nanoseconds since the Unix epoch; moves only when a scenario advances it.
    Virtual {
        now_ns: u64,
    },
    Real,
}

impl Clock {
    /// 2026-01-01T00:00:00Z: a fixed start so logs and time-stamps repeat run to run.
    pub(crate) const VIRTUAL_EPOCH_NS: u64 = 1_767_225_600_000_000_000;

    pub(crate) fn now_ns(&self) -> u64 {
        match self {
            Clock::Virtual { now_ns } => *now_ns,
            Clock::Real => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        }
    }
}

/// A `proxy_send_local_response` (or Envoy's own failure reply), as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub body: Vec<u8>,
    pub headers: Headers,
    pub grpc_status: Option<u32>,
    pub details: String,
}

/// Work Envoy queues with `addAfterVmCallAction` and runs when the VM call returns.
#[derive(Debug, Clone)]
pub(crate) enum Deferred {
    Continue { context_id: u32, stream: StreamType },
    Close { context_id: u32, stream: StreamType },
    LocalReply { context_id: u32, reply: LocalReply },
}

/// An outgoing `proxy_http_call` waiting for the scenario (or proxy) to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCallRequest {
    pub token: u32,
    pub upstream: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub timeout_ms: u32,
}

/// The answer being delivered in `proxy_on_http_call_response`.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpCallResponse {
    pub(crate) headers: Headers,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Headers,
}

/// `M`: the streams and connections (the model above this layer, see `contexts.rs`).
pub(crate) struct HostState<M> {
    pub(crate) memory: Option<Memory>,
    pub(crate) allocator: Option<TypedFunc<i32, i32>>,
    /// Context whose callback is running (Envoy's `current_context_`).
    pub(crate) current_context: u32,
    /// Set by `proxy_set_effective_context`; reset at every VM call like cpp-host does.
    pub(crate) effective_context: u32,
    pub(crate) root_context_id: u32,
    /// The plugin configuration is visible only during `proxy_on_configure`.
    pub(crate) in_configure: bool,
    /// The access-log phase (`proxy_on_log`) reads the final header maps.
    pub(crate) in_log_phase: bool,
    pub(crate) vm_config: Vec<u8>,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) plugin_name: String,
    pub(crate) root_id: String,
    pub(crate) vm_id: String,
    pub(crate) deferred: VecDeque<Deferred>,
    /// Set by `send_local_response`: the running callback's status is forced to stop.
    pub(crate) next_iteration_stopped: bool,
    pub(crate) logs: Vec<LogEntry>,
    /// Partial stdout/stderr lines (WASI fd_write), flushed on newline.
    pub(crate) hostcall_statuses: Vec<HostcallStatus>,
    pub(crate) callbacks: Vec<CallbackRecord>,
    pub(crate) record_calls: bool,
    pub(crate) metrics: Metrics,
    pub(crate) shared: SharedHandle,
    pub(crate) tick_period_ms: u32,
    /// When the root context's next `proxy_on_tick` is due.
    pub(crate) next_tick_ns: Option<u64>,
    pub(crate) clock: Clock,
    pub(crate) contexts: M,
    pub(crate) http_calls: BTreeMap<u32, HttpCallRequest>,
    pub(crate) next_http_call_token: u32,
    pub(crate) http_call_response: Option<HttpCallResponse>,
    pub(crate) route_cache_clears: u32,
    /// Every crossing of the VM boundary since load (wasmtime's call hook): the price of a
    /// call in Envoy is mostly these, not the guest's own code (docs/BENCHMARKS.md).
    pub(crate) crossings: Crossings,
    pub(crate) done_called: bool,
    /// Static properties (path parts joined by NUL) beyond those derived from the stream.
    pub(crate) properties: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) clusters: Vec<String>,
    pub(crate) queue_ready: VecDeque<(u32, u32)>,
    pub(crate) rng_state: u64,
    /// The HTTP streams' buffer limit (0: none).
    pub(crate) buffer_limit: u32,
}

impl<M: ContextModel> HostState<M> {
    pub(crate) fn log(&mut self, level: LogLevel, context_id: u32, message: String) {
        if std::env::var_os("HOST_HARNESS_ECHO_LOGS").is_some() {
            eprintln!("[wasm {level:?} ctx={context_id}] {message}");
        }
        self.logs.push(LogEntry {
            level,
            context_id,
            message,
        });
    }

    /// The context hostcalls act on: the effective one if set and still alive.
    pub(crate) fn acting_context(&self) -> u32 {
        if self.effective_context != 0 && self.context_exists(self.effective_context) {
            self.effective_context
        } else {
            self.current_context
        }
    }

    pub(crate) fn context_exists(&self, id: u32) -> bool {
        id != 0 && (id == self.root_context_id || self.contexts.is_live(id))
    }

    /// xorshift: deterministic bytes for `random_get` so scenarios repeat exactly.
    pub(crate) fn next_random(&mut self) -> u8 {
        let mut x = self.rng_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng_state = x;
        (x >> 24) as u8
    }
}

/// Calls across the VM boundary: guest -> host (hostcalls, WASI included) and host -> guest
/// (callbacks and the host's `proxy_on_memory_allocate` calls for returned values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crossings {
    pub hostcalls: u64,
    pub guest_entries: u64,
}
