//! The VM thread of a proxy (like an Envoy worker): it owns the [`Plugin`], takes the
//! connection tasks' events as [`Command`]s, and hands back what the filter released, with
//! the flow-control state of each direction ([`Flow`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

use super::config::LogSink;
use crate::host::abi::{CloseType, LogLevel};
use crate::host::headers::Headers;
use crate::host::vm::{LoadError, PluginOptions};
use crate::model::{ConnectionId, Direction, Frame, NetFrame, Plugin, StreamId};

/// One direction's backlog: bytes released toward a peer and not yet taken by it, plus
/// bytes the model holds for the filter (a paused network filter's buffer). The source of
/// that direction stops reading while the total is over the limit.
pub(crate) struct Flow {
    pending: AtomicUsize,
    held: AtomicUsize,
    /// The model read-disabled this direction's source (watermark back-pressure).
    paused: AtomicBool,
    /// Data handed to the VM thread and not processed yet. The source reads its next chunk
    /// only once the VM has processed the last one, as Envoy runs the filter chain on each
    /// read before the next: back-pressure decided by the filter applies to the very next
    /// read.
    in_vm: AtomicUsize,
    limit: usize,
    drained: Notify,
}

impl Flow {
    pub(crate) fn new(limit: u32) -> Arc<Flow> {
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        Arc::new(Flow {
            pending: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            in_vm: AtomicUsize::new(0),
            limit,
            drained: Notify::new(),
        })
    }

    fn level(&self) -> usize {
        self.pending
            .load(Ordering::Acquire)
            .saturating_add(self.held.load(Ordering::Acquire))
    }

    pub(crate) fn released(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn taken(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    pub(crate) fn set_held(&self, n: usize) {
        let old = self.held.swap(n, Ordering::AcqRel);
        if n < old {
            self.drained.notify_waiters();
        }
    }

    pub(crate) fn sent_to_vm(&self) {
        self.in_vm.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn vm_done(&self) {
        self.in_vm.fetch_sub(1, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        let was = self.paused.swap(paused, Ordering::AcqRel);
        if was && !paused {
            self.drained.notify_waiters();
        }
    }

    pub(crate) async fn wait_for_room(&self) {
        loop {
            // Registered before the check: notify_waiters wakes every Notified created so far.
            let notified = self.drained.notified();
            if self.level() <= self.limit
                && !self.paused.load(Ordering::Acquire)
                && self.in_vm.load(Ordering::Acquire) == 0
            {
                return;
            }
            notified.await;
        }
    }
}

/// Where the VM thread sends what the filter released toward each side of one stream
/// (`F` = [`Frame`]) or connection ([`NetFrame`]), and each direction's backlog.
pub(crate) struct Sink<F> {
    pub(crate) upstream: mpsc::UnboundedSender<F>,
    pub(crate) downstream: mpsc::UnboundedSender<F>,
    pub(crate) upstream_flow: Arc<Flow>,
    pub(crate) downstream_flow: Arc<Flow>,
}

impl<F> Sink<F> {
    /// A sink with each direction's backlog bounded by `limit` bytes (0: unbounded), and the
    /// receivers of what it sends (upstream, downstream).
    pub(crate) fn new(
        limit: u32,
    ) -> (
        Sink<F>,
        (mpsc::UnboundedReceiver<F>, mpsc::UnboundedReceiver<F>),
    ) {
        let (upstream, up_rx) = mpsc::unbounded_channel();
        let (downstream, down_rx) = mpsc::unbounded_channel();
        let sink = Sink {
            upstream,
            downstream,
            upstream_flow: Flow::new(limit),
            downstream_flow: Flow::new(limit),
        };
        (sink, (up_rx, down_rx))
    }

    /// The two directions' backlogs (upstream, downstream), for the tasks that move the data.
    pub(crate) fn flows(&self) -> (Arc<Flow>, Arc<Flow>) {
        (self.upstream_flow.clone(), self.downstream_flow.clone())
    }
}

/// One stream's [`Sink`].
pub(crate) struct StreamSink {
    pub(crate) sides: Sink<Frame>,
    /// Fired when the stream is reset either way: the upstream exchange is abandoned (the
    /// router resets the upstream request), even if the request had already ended.
    pub(crate) cancel_upstream: Option<oneshot::Sender<()>>,
}

/// One connection's [`Sink`].
pub(crate) type ConnSink = Sink<NetFrame>;

pub(crate) enum Command {
    Open {
        headers: Headers,
        end_stream: bool,
        sink: StreamSink,
        opened: oneshot::Sender<StreamId>,
    },
    RequestData(StreamId, Bytes, bool),
    RequestTrailers(StreamId, Headers),
    ResponseHeaders(StreamId, Headers, bool),
    ResponseData(StreamId, Bytes, bool),
    ResponseTrailers(StreamId, Headers),
    Reset(StreamId),
    /// The upstream request failed before or after the response started (connect error,
    /// reset): the router's local reply or a reset.
    UpstreamFailed(StreamId, String),
    /// A client connected (network filter); answers the id and whether the filter already
    /// closed the connection (a failed VM does).
    ConnOpen {
        sink: ConnSink,
        opened: oneshot::Sender<(ConnectionId, bool)>,
    },
    ConnDownstreamData(ConnectionId, Bytes, bool),
    ConnUpstreamData(ConnectionId, Bytes, bool),
    ConnDownstreamClosed(ConnectionId, CloseType),
    ConnUpstreamReset(ConnectionId),
    /// A data command whose source waits (`Flow::in_vm`) until the VM processed it.
    Acked(Box<Command>, Arc<Flow>),
}

impl Command {
    pub(crate) fn acked(self, flow: &Arc<Flow>) -> Command {
        flow.sent_to_vm();
        Command::Acked(Box::new(self), flow.clone())
    }
}

#[derive(Clone)]
pub(crate) struct VmHandle {
    tx: std_mpsc::Sender<Command>,
}

impl VmHandle {
    pub(crate) fn send(&self, c: Command) {
        let _ = self.tx.send(c);
    }
}

/// Guest log lines printed to stderr: `HOST_HARNESS_LOG=trace|debug|info|warn|error`
/// (default info, like Envoy's default log level).
fn stderr_log_level() -> LogLevel {
    match std::env::var("HOST_HARNESS_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "warn" | "warning" => LogLevel::Warn,
        "error" => LogLevel::Error,
        "critical" | "off" => LogLevel::Critical,
        _ => LogLevel::Info,
    }
}

/// Hands released frames to one side, counting their bytes in that side's backlog; true if
/// one of them is a reset.
fn forward(frames: Vec<Frame>, to: &mpsc::UnboundedSender<Frame>, flow: &Flow) -> bool {
    let mut reset = false;
    for f in frames {
        match &f {
            Frame::Data { bytes, .. } => flow.released(bytes.len()),
            Frame::Reset => reset = true,
            _ => {}
        }
        let _ = to.send(f);
    }
    reset
}

/// Starts the VM thread; the plugin is loaded there (a wasmtime store stays on one thread).
pub(super) fn start_vm(
    options: PluginOptions,
    log_sink: Option<LogSink>,
) -> Result<VmHandle, LoadError> {
    let (tx, rx) = std_mpsc::channel::<Command>();
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), LoadError>>();
    std::thread::Builder::new()
        .name("wasm-vm".into())
        .spawn(move || {
            let mut plugin = match Plugin::load(options) {
                Ok(p) => {
                    let _ = ready_tx.send(Ok(()));
                    p
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            vm_loop(&mut plugin, rx, log_sink);
        })
        .expect("spawn vm thread");
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(VmHandle { tx }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LoadError::Instantiate(
            "vm thread died while loading".into(),
        )),
    }
}

fn vm_loop(plugin: &mut Plugin, rx: std_mpsc::Receiver<Command>, log_sink: Option<LogSink>) {
    let mut sinks: HashMap<StreamId, StreamSink> = HashMap::new();
    let mut conns: HashMap<ConnectionId, ConnSink> = HashMap::new();
    let min_level = stderr_log_level();
    loop {
        let cmd = match plugin.next_tick_in() {
            Some(wait) => match rx.recv_timeout(wait) {
                Ok(c) => Some(c),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => return,
            },
        };
        // Data from a source that waits for it to be processed: acknowledged below, after
        // the back-pressure state is published.
        let (cmd, ack) = match cmd {
            Some(Command::Acked(inner, flow)) => (Some(*inner), Some(flow)),
            other => (other, None),
        };
        match cmd {
            Some(Command::Open {
                headers,
                end_stream,
                sink,
                opened,
            }) => {
                let id = plugin.http_new_stream();
                sinks.insert(id, sink);
                let _ = opened.send(id);
                plugin.http_request_headers(id, headers, end_stream);
            }
            Some(Command::RequestData(id, b, end)) => {
                plugin.http_data(id, Direction::Request, &b, end)
            }
            Some(Command::RequestTrailers(id, h)) => {
                plugin.http_trailers(id, Direction::Request, h)
            }
            Some(Command::ResponseHeaders(id, h, end)) => plugin.http_response_headers(id, h, end),
            Some(Command::ResponseData(id, b, end)) => {
                plugin.http_data(id, Direction::Response, &b, end)
            }
            Some(Command::ResponseTrailers(id, h)) => {
                plugin.http_trailers(id, Direction::Response, h)
            }
            Some(Command::Reset(id)) => plugin.http_reset(id),
            Some(Command::UpstreamFailed(id, reason)) => plugin.http_upstream_failed(id, &reason),
            Some(Command::ConnOpen { sink, opened }) => {
                let (id, _) = plugin.connection_open();
                conns.insert(id, sink);
                let _ = opened.send((id, plugin.connection_is_closed(id)));
            }
            Some(Command::ConnDownstreamData(id, b, end)) => {
                plugin.connection_downstream_data(id, &b, end);
            }
            Some(Command::ConnUpstreamData(id, b, end)) => {
                plugin.connection_upstream_data(id, &b, end);
            }
            Some(Command::ConnDownstreamClosed(id, close)) => {
                plugin.connection_downstream_closed(id, close)
            }
            Some(Command::ConnUpstreamReset(id)) => plugin.connection_upstream_reset(id),
            Some(Command::Acked(..)) | None => {}
        }
        plugin.tick_if_due();
        // Ticks can release data of any stream or connection: pump them all.
        sinks.retain(|id, sink| {
            let sides = &sink.sides;
            let reset_up = forward(
                plugin.http_take_upstream(*id),
                &sides.upstream,
                &sides.upstream_flow,
            );
            let reset_down = forward(
                plugin.http_take_downstream(*id),
                &sides.downstream,
                &sides.downstream_flow,
            );
            if reset_up || reset_down {
                if let Some(cancel) = sink.cancel_upstream.take() {
                    let _ = cancel.send(());
                }
            }
            sink.sides
                .upstream_flow
                .set_paused(plugin.http_read_disabled(*id, Direction::Request));
            sink.sides
                .downstream_flow
                .set_paused(plugin.http_read_disabled(*id, Direction::Response));
            let done = plugin.http_is_finished(*id);
            if done {
                plugin.http_forget(*id);
            }
            !done
        });
        conns.retain(|id, sink| {
            for f in plugin.connection_take_upstream(*id) {
                if let NetFrame::Data { bytes, .. } = &f {
                    sink.upstream_flow.released(bytes.len());
                }
                let _ = sink.upstream.send(f);
            }
            for f in plugin.connection_take_downstream(*id) {
                if let NetFrame::Data { bytes, .. } = &f {
                    sink.downstream_flow.released(bytes.len());
                }
                let _ = sink.downstream.send(f);
            }
            let (read_held, write_held) = plugin.connection_held_bytes(*id);
            sink.upstream_flow.set_held(read_held);
            sink.downstream_flow.set_held(write_held);
            let closed = plugin.connection_is_closed(*id);
            if closed {
                plugin.connection_forget(*id);
            }
            !closed
        });
        if let Some(flow) = ack {
            flow.vm_done();
        }
        let lines = plugin.take_logs();
        match &log_sink {
            Some(sink) => sink.lock().unwrap_or_else(|e| e.into_inner()).extend(lines),
            None => {
                for line in lines.iter().filter(|l| l.level >= min_level) {
                    eprintln!("[wasm {:?}] {}", line.level, line.message);
                }
            }
        }
    }
}
