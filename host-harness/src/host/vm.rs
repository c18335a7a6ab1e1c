//! The wasmtime side: loading a filter, calling its exports, and what a trap does.
//!
//! A trap kills the VM for good, as in Envoy: every later callback is skipped and every new
//! stream is failed by the stream model (`model/stream.rs`).

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;

use wasmtime::{
    Config, Engine, Extern, Func, Instance, InstancePre, Linker, Module, Store, Val, ValType,
};

use super::abi::LogLevel;
use super::contexts::ContextModel;
use super::state::{
    CallbackRecord, Clock, Crossings, HostState, HostcallStatus, HttpCallRequest, LogEntry, Metric,
    Metrics, SharedHandle, SharedStore,
};

/// Envoy's default `per_connection_buffer_limit_bytes`.
pub const DEFAULT_BUFFER_LIMIT: u32 = 1024 * 1024;
/// Envoy's default HTTP/2 `initial_stream_window_size` (the stream buffer limit of an
/// HTTP/2 client).
pub const DEFAULT_H2_STREAM_WINDOW: u32 = 256 * 1024 * 1024;

/// Where the filter comes from and how it is configured, like one Envoy wasm filter entry.
#[derive(Clone)]
pub struct PluginOptions {
    pub wasm: WasmSource,
    /// `config.configuration` (what `proxy_on_configure` reads).
    pub plugin_config: Vec<u8>,
    /// `vm_config.configuration` (what `proxy_on_vm_start` reads).
    pub vm_config: Vec<u8>,
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    /// Virtual clock (scenarios) or the wall clock (proxy mode).
    pub real_clock: bool,
    /// Extra properties for `proxy_get_property`, keyed by dotted path (`"node.id"`).
    pub properties: Vec<(String, Vec<u8>)>,
    /// Cluster names `proxy_http_call` accepts; any other answers BadArgument like Envoy.
    pub clusters: Vec<String>,
    /// Share data and queues with other plugins (Envoy's are process-wide).
    pub shared: Option<SharedHandle>,
    /// Keep a record of every callback (tests); off in proxy mode to bound memory.
    pub record_callbacks: bool,
    /// The filter chain's buffer limit per HTTP stream (0: none), Envoy's
    /// `bufferLimit()` of the downstream codec stream: `per_connection_buffer_limit_bytes`
    /// (default 1 MiB) for an HTTP/1.1 client, the HTTP/2 `initial_stream_window_size`
    /// (default 256 MiB) for an HTTP/2 client. Default here: 1 MiB.
    pub buffer_limit_bytes: u32,
}

#[derive(Clone)]
pub enum WasmSource {
    File(PathBuf),
    Bytes(Vec<u8>),
    /// WebAssembly text, handy for tiny hand-written guests in tests.
    Wat(String),
}

impl PluginOptions {
    pub fn new(wasm: WasmSource) -> Self {
        Self {
            wasm,
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            plugin_name: "grpc_bridge".into(),
            root_id: String::new(),
            vm_id: String::new(),
            real_clock: false,
            properties: Vec::new(),
            clusters: Vec::new(),
            shared: None,
            record_callbacks: true,
            buffer_limit_bytes: DEFAULT_BUFFER_LIMIT,
        }
    }

    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        Self::new(WasmSource::File(path.into()))
    }

    pub fn plugin_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.plugin_config = config.into();
        self
    }

    pub fn vm_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.vm_config = config.into();
        self
    }

    pub fn property(mut self, path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((path.to_string(), value.into()));
        self
    }

    pub fn cluster(mut self, name: &str) -> Self {
        self.clusters.push(name.to_string());
        self
    }

    pub fn real_clock(mut self, on: bool) -> Self {
        self.real_clock = on;
        self
    }

    /// The HTTP streams' buffer limit (see [`PluginOptions::buffer_limit_bytes`]).
    pub fn buffer_limit(mut self, bytes: u32) -> Self {
        self.buffer_limit_bytes = bytes;
        self
    }

    pub fn shared(mut self, handle: SharedHandle) -> Self {
        self.shared = Some(handle);
        self
    }
}

/// Why a filter could not be loaded or started. The messages name what Envoy would log.
#[derive(Debug)]
pub enum LoadError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    Compile(String),
    NoAbiVersion,
    MissingImport {
        module: String,
        name: String,
    },
    BadExport {
        name: String,
        detail: String,
    },
    Instantiate(String),
    /// The guest trapped while starting (`_initialize`, context create, vm start, configure).
    Trap {
        during: &'static str,
        message: String,
    },
    /// `proxy_on_vm_start` returned false.
    VmStartFailed {
        logs: Vec<String>,
    },
    /// `proxy_on_configure` returned false: the filter rejected its configuration.
    ConfigureFailed {
        logs: Vec<String>,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { path, error } => {
                write!(f, "cannot read wasm file {}: {error}", path.display())
            }
            LoadError::Compile(m) => write!(f, "invalid wasm module: {m}"),
            LoadError::NoAbiVersion => write!(
                f,
                "wasm module exports no proxy-wasm ABI version (proxy_abi_version_0_2_1 etc.)"
            ),
            LoadError::MissingImport { module, name } => write!(
                f,
                "Failed to load Wasm module due to a missing import: {module}.{name}"
            ),
            LoadError::BadExport { name, detail } => {
                write!(f, "bad signature for export {name}: {detail}")
            }
            LoadError::Instantiate(m) => write!(f, "cannot instantiate wasm module: {m}"),
            LoadError::Trap { during, message } => {
                write!(f, "wasm trapped during {during}: {message}")
            }
            LoadError::VmStartFailed { logs } => write_with_logs(
                f,
                "Wasm VM failed to start (proxy_on_vm_start returned false)",
                logs,
            ),
            LoadError::ConfigureFailed { logs } => write_with_logs(
                f,
                "plugin configuration rejected (proxy_on_configure returned false)",
                logs,
            ),
        }
    }
}

/// A failure Envoy reports with the filter's own log lines under it.
fn write_with_logs(f: &mut fmt::Formatter<'_>, what: &str, logs: &[String]) -> fmt::Result {
    write!(f, "{what}")?;
    for l in logs {
        write!(f, "\n  filter: {l}")?;
    }
    Ok(())
}

impl std::error::Error for LoadError {}

/// Outcome of one call into the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invocation {
    /// The export is not there (Envoy then uses the default: Continue / nothing).
    Missing,
    /// The VM had already failed; the guest was not called.
    VmFailed,
    Returned(Option<i32>),
    /// The guest trapped during this call; the VM is now failed.
    Trapped,
}

/// Exported callbacks and the parameter count / result count each must have (ABI 0.2.1).
const CALLBACKS: &[(&str, usize, usize)] = &[
    ("proxy_on_context_create", 2, 0),
    ("proxy_on_vm_start", 2, 1),
    ("proxy_on_configure", 2, 1),
    ("proxy_on_tick", 1, 0),
    ("proxy_on_request_headers", 3, 1),
    ("proxy_on_request_body", 3, 1),
    ("proxy_on_request_trailers", 2, 1),
    ("proxy_on_response_headers", 3, 1),
    ("proxy_on_response_body", 3, 1),
    ("proxy_on_response_trailers", 2, 1),
    ("proxy_on_log", 1, 0),
    ("proxy_on_done", 1, 1),
    ("proxy_on_delete", 1, 0),
    ("proxy_on_new_connection", 1, 1),
    ("proxy_on_downstream_data", 3, 1),
    ("proxy_on_upstream_data", 3, 1),
    ("proxy_on_downstream_connection_close", 2, 0),
    ("proxy_on_upstream_connection_close", 2, 0),
    ("proxy_on_http_call_response", 5, 0),
    ("proxy_on_queue_ready", 2, 0),
];

/// Compiles a module once per process: every plugin shares one engine, and loading the same
/// bytes again (several proxies of one topology, many scenarios) reuses the compiled code,
/// like Envoy sharing one compiled module across its workers. The lock is held while
/// compiling so parallel loads of one module wait instead of compiling it twice. The cache is
/// a few entries compared byte for byte (cheaper than hashing a whole module on every load).
fn compile(bytes: &[u8]) -> Result<(Engine, Module), LoadError> {
    use std::sync::{Mutex, OnceLock};
    const CACHED: usize = 8;
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    static MODULES: Mutex<Vec<(Vec<u8>, Module)>> = Mutex::new(Vec::new());
    let engine = match ENGINE.get() {
        Some(e) => e.clone(),
        None => {
            let e = Engine::new(&Config::new()).map_err(|e| LoadError::Compile(e.to_string()))?;
            ENGINE.get_or_init(|| e).clone()
        }
    };
    let mut cache = MODULES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, module)) = cache.iter().find(|(b, _)| b.as_slice() == bytes) {
        return Ok((engine, module.clone()));
    }
    let module = Module::new(&engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    if cache.len() >= CACHED {
        cache.remove(0);
    }
    cache.push((bytes.to_vec(), module.clone()));
    Ok((engine, module))
}

thread_local! {
    /// Modules already linked against the host functions, by module: linking (defining every
    /// host function, resolving the imports) is done once per module and thread, and each load
    /// only instantiates (what a fuzzer loading a fresh VM per input spends most of its time on
    /// otherwise). Keyed by the compiled module's identity (`Module::same`). The linked
    /// instance is typed by the host state (`InstancePre<HostState<M>>`), stored as `Any`.
    static LINKED: std::cell::RefCell<Vec<(Module, Box<dyn Any>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn linked<M: ContextModel>(module: &Module) -> Option<InstancePre<HostState<M>>> {
    LINKED.with(|l| {
        l.borrow()
            .iter()
            .filter(|(m, _)| Module::same(m, module))
            .find_map(|(_, pre)| pre.downcast_ref::<InstancePre<HostState<M>>>().cloned())
    })
}

fn remember_linked<M: ContextModel>(module: &Module, pre: InstancePre<HostState<M>>) {
    const CACHED: usize = 8;
    LINKED.with(|l| {
        let mut l = l.borrow_mut();
        if l.len() >= CACHED {
            l.remove(0);
        }
        l.push((module.clone(), Box::new(pre)));
    });
}

/// One loaded filter: one VM with its root context, like one Envoy worker's plugin. `M` holds
/// its streams and connections (the model layer; the crate names the whole `Plugin`).
pub struct Vm<M: 'static> {
    pub(crate) store: Store<HostState<M>>,
    exports: HashMap<&'static str, Func>,
    failure: Option<String>,
    pub(crate) next_context_id: u32,
}

impl<M: ContextModel> Vm<M> {
    /// Compiles, instantiates and starts the filter: `_initialize`, root context creation,
    /// `proxy_on_vm_start`, `proxy_on_configure` — failing like Envoy fails the listener.
    /// The actions the start deferred are the model's to run (`Plugin::load`).
    pub(crate) fn start(options: PluginOptions) -> Result<Self, LoadError> {
        let read;
        let bytes: &[u8] = match &options.wasm {
            WasmSource::File(path) => {
                read = std::fs::read(path).map_err(|error| LoadError::Read {
                    path: path.clone(),
                    error,
                })?;
                &read
            }
            WasmSource::Bytes(b) => b,
            // wasmtime's `wat` feature parses text in `Module::new`.
            WasmSource::Wat(text) => text.as_bytes(),
        };
        let (engine, module) = compile(bytes)?;

        let abi_ok = module.exports().any(|e| {
            matches!(
                e.name(),
                "proxy_abi_version_0_2_1" | "proxy_abi_version_0_2_0" | "proxy_abi_version_0_1_0"
            )
        });
        if !abi_ok {
            return Err(LoadError::NoAbiVersion);
        }

        let mut properties = BTreeMap::new();
        for (path, value) in &options.properties {
            properties.insert(path.replace('.', "\0").into_bytes(), value.clone());
        }
        let state = HostState {
            memory: None,
            allocator: None,
            current_context: 0,
            effective_context: 0,
            root_context_id: 1,
            in_configure: false,
            in_log_phase: false,
            vm_config: options.vm_config.clone(),
            plugin_config: options.plugin_config.clone(),
            plugin_name: options.plugin_name.clone(),
            root_id: options.root_id.clone(),
            vm_id: options.vm_id.clone(),
            deferred: VecDeque::new(),
            next_iteration_stopped: false,
            logs: Vec::new(),
            hostcall_statuses: Vec::new(),
            callbacks: Vec::new(),
            record_calls: options.record_callbacks,
            metrics: Metrics::default(),
            shared: options.shared.clone().unwrap_or_else(SharedStore::handle),
            tick_period_ms: 0,
            next_tick_ns: None,
            clock: if options.real_clock {
                Clock::Real
            } else {
                Clock::Virtual {
                    now_ns: Clock::VIRTUAL_EPOCH_NS,
                }
            },
            contexts: M::default(),
            http_calls: BTreeMap::new(),
            next_http_call_token: 1,
            http_call_response: None,
            route_cache_clears: 0,
            crossings: Default::default(),
            done_called: false,
            properties,
            clusters: options.clusters.clone(),
            queue_ready: VecDeque::new(),
            rng_state: 0x9E37_79B9_7F4A_7C15,
            buffer_limit: options.buffer_limit_bytes,
        };
        let mut store = Store::new(&engine, state);
        store.call_hook(|mut ctx, hook| {
            match hook {
                wasmtime::CallHook::CallingHost => ctx.data_mut().crossings.hostcalls += 1,
                wasmtime::CallHook::CallingWasm => ctx.data_mut().crossings.guest_entries += 1,
                _ => {}
            }
            Ok(())
        });
        let pre = match linked(&module) {
            Some(pre) => pre,
            None => {
                let mut linker: Linker<HostState<M>> = Linker::new(&engine);
                super::hostcalls::define(&mut linker)
                    .map_err(|e| LoadError::Instantiate(e.to_string()))?;
                super::wasi::define(&mut linker)
                    .map_err(|e| LoadError::Instantiate(e.to_string()))?;
                for import in module.imports() {
                    if linker
                        .get(&mut store, import.module(), import.name())
                        .is_err()
                    {
                        return Err(LoadError::MissingImport {
                            module: import.module().to_string(),
                            name: import.name().to_string(),
                        });
                    }
                }
                let pre = linker
                    .instantiate_pre(&module)
                    .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
                remember_linked(&module, pre.clone());
                pre
            }
        };
        let instance: Instance = pre
            .instantiate(&mut store)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;

        let memory = instance.get_memory(&mut store, "memory");
        store.data_mut().memory = memory;
        let allocator = instance
            .get_typed_func::<i32, i32>(&mut store, "malloc")
            .or_else(|_| {
                instance.get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            })
            .ok();
        store.data_mut().allocator = allocator;

        let mut exports = HashMap::new();
        for (name, params, results) in CALLBACKS {
            let Some(Extern::Func(func)) = instance.get_export(&mut store, name) else {
                continue;
            };
            let ty = func.ty(&store);
            let params_ok =
                ty.params().len() == *params && ty.params().all(|p| matches!(p, ValType::I32));
            let results_ok =
                ty.results().len() == *results && ty.results().all(|r| matches!(r, ValType::I32));
            if !params_ok || !results_ok {
                return Err(LoadError::BadExport {
                    name: name.to_string(),
                    detail: format!(
                        "expected {params} i32 params and {results} i32 results, got {ty:?}"
                    ),
                });
            }
            exports.insert(*name, func);
        }

        let mut plugin = Vm {
            store,
            exports,
            failure: None,
            next_context_id: 2,
        };

        for start in ["_initialize", "_start"] {
            if let Some(Extern::Func(f)) = instance.get_export(&mut plugin.store, start) {
                if let Err(e) = f.call(&mut plugin.store, &[], &mut []) {
                    return Err(LoadError::Trap {
                        during: start,
                        message: format!("{e:#}"),
                    });
                }
                break;
            }
        }

        let root = plugin.store.data().root_context_id as i32;
        if plugin.invoke("proxy_on_context_create", root as u32, &[root, 0]) == Invocation::Trapped
        {
            return Err(plugin.trap_error("proxy_on_context_create"));
        }
        let vm_config_len = plugin.store.data().vm_config.len() as i32;
        match plugin.invoke("proxy_on_vm_start", root as u32, &[root, vm_config_len]) {
            Invocation::Trapped => return Err(plugin.trap_error("proxy_on_vm_start")),
            Invocation::Returned(Some(0)) => {
                return Err(LoadError::VmStartFailed {
                    logs: plugin.log_lines(),
                })
            }
            _ => {}
        }
        let config_len = plugin.store.data().plugin_config.len() as i32;
        plugin.store.data_mut().in_configure = true;
        let configured = plugin.invoke("proxy_on_configure", root as u32, &[root, config_len]);
        plugin.store.data_mut().in_configure = false;
        match configured {
            Invocation::Trapped => return Err(plugin.trap_error("proxy_on_configure")),
            Invocation::Returned(Some(0)) => {
                return Err(LoadError::ConfigureFailed {
                    logs: plugin.log_lines(),
                })
            }
            _ => {}
        }
        Ok(plugin)
    }

    fn trap_error(&self, during: &'static str) -> LoadError {
        LoadError::Trap {
            during,
            message: self.failure.clone().unwrap_or_default(),
        }
    }

    fn log_lines(&self) -> Vec<String> {
        self.store
            .data()
            .logs
            .iter()
            .map(|l| format!("[{:?}] {}", l.level, l.message))
            .collect()
    }

    /// Why the VM died, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Size of the guest's linear memory in bytes (it only grows: this is the VM's peak).
    pub(crate) fn guest_memory_bytes(&mut self) -> usize {
        match self.store.data().memory {
            Some(memory) => memory.data_size(&self.store),
            None => 0,
        }
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.failure.is_some()
    }

    pub(crate) fn state(&self) -> &HostState<M> {
        self.store.data()
    }

    pub(crate) fn state_mut(&mut self) -> &mut HostState<M> {
        self.store.data_mut()
    }

    pub(crate) fn alloc_context_id(&mut self) -> u32 {
        let id = self.next_context_id;
        self.next_context_id += 1;
        id
    }

    /// Calls one guest export with `current_context = context_id`, as cpp-host's
    /// `SaveRestoreContext` does. A trap marks the VM failed for good.
    pub(crate) fn invoke(
        &mut self,
        callback: &'static str,
        context_id: u32,
        args: &[i32],
    ) -> Invocation {
        if self.failure.is_some() {
            return Invocation::VmFailed;
        }
        let Some(func) = self.exports.get(callback).copied() else {
            return Invocation::Missing;
        };
        let (saved_current, saved_effective, saved_stop) = {
            let s = self.store.data_mut();
            let saved = (
                s.current_context,
                s.effective_context,
                s.next_iteration_stopped,
            );
            s.current_context = context_id;
            s.effective_context = 0;
            s.next_iteration_stopped = false;
            saved
        };
        let params: Vec<Val> = args.iter().map(|a| Val::I32(*a)).collect();
        let mut results = vec![Val::I32(0); func.ty(&self.store).results().len()];
        let outcome = func.call(&mut self.store, &params, &mut results);
        let stopped = self.store.data().next_iteration_stopped;
        {
            let s = self.store.data_mut();
            s.current_context = saved_current;
            s.effective_context = saved_effective;
            // Keep the flag for the caller to read; restored by the next call.
            s.next_iteration_stopped = stopped || saved_stop;
        }
        let invocation = match outcome {
            Ok(()) => Invocation::Returned(results.first().and_then(|v| v.i32())),
            Err(e) => {
                let message = format!("{e:#}");
                let s = self.store.data_mut();
                s.log(
                    LogLevel::Critical,
                    context_id,
                    format!("wasm trap in {callback}: {message}"),
                );
                self.failure = Some(format!("{callback}: {message}"));
                Invocation::Trapped
            }
        };
        let s = self.store.data_mut();
        if s.record_calls {
            s.callbacks.push(CallbackRecord {
                callback,
                context_id,
                args: args.iter().map(|a| *a as i64).collect(),
                returned: match invocation {
                    Invocation::Returned(r) => r.map(|v| v as i64),
                    _ => None,
                },
            });
        }
        invocation
    }

    /// Takes the "send_local_response was called" flag of the last call.
    pub(crate) fn take_next_iteration_stopped(&mut self) -> bool {
        std::mem::replace(&mut self.store.data_mut().next_iteration_stopped, false)
    }
}

/// Records and side channels tests read.
impl<M: ContextModel> Vm<M> {
    pub fn logs(&self) -> &[LogEntry] {
        &self.store.data().logs
    }

    pub(crate) fn take_logs(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.store.data_mut().logs)
    }

    /// Every call into the guest with its arguments and return value.
    pub fn callbacks(&self) -> &[CallbackRecord] {
        &self.store.data().callbacks
    }

    /// Hostcalls that answered the guest with a non-Ok status.
    pub fn hostcall_statuses(&self) -> &[HostcallStatus] {
        &self.store.data().hostcall_statuses
    }

    pub fn metrics(&self) -> Vec<Metric> {
        self.store.data().metrics.all()
    }

    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.metrics().into_iter().find(|m| m.name == name)
    }

    /// Calls across the VM boundary since load.
    pub fn crossings(&self) -> Crossings {
        self.store.data().crossings
    }

    pub fn route_cache_clears(&self) -> u32 {
        self.store.data().route_cache_clears
    }

    pub(crate) fn root_context_id(&self) -> u32 {
        self.store.data().root_context_id
    }

    /// Outstanding `proxy_http_call`s.
    pub fn http_calls(&self) -> Vec<HttpCallRequest> {
        self.store.data().http_calls.values().cloned().collect()
    }
}
