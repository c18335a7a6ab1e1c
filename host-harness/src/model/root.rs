//! What happens outside a single stream or connection: loading (the actions `proxy_on_configure`
//! deferred), the after-VM-call actions Envoy runs when a callback returns, callbacks posted
//! to the root context (queue ready), the root's timer on the virtual or real clock, and the
//! answers to `proxy_http_call`.

use std::time::Duration;

use super::contexts::Plugin;
use super::stream_state::Direction;
use crate::host::abi::StreamType;
use crate::host::headers::Headers;
use crate::host::state::{Clock, Deferred, HttpCallResponse};
use crate::host::vm::{LoadError, PluginOptions, Vm};

impl Plugin {
    /// Compiles, instantiates and starts the filter: `_initialize`, root context creation,
    /// `proxy_on_vm_start`, `proxy_on_configure` — failing like Envoy fails the listener.
    pub fn load(options: PluginOptions) -> Result<Plugin, LoadError> {
        let mut plugin = Vm::start(options)?;
        plugin.run_deferred();
        plugin.after_event();
        Ok(plugin)
    }

    /// Moves the virtual clock forward, firing every tick that falls due, in order.
    pub(crate) fn advance(&mut self, by: Duration) {
        let Clock::Virtual { now_ns } = self.state().clock else {
            return;
        };
        let target = now_ns + by.as_nanos() as u64;
        while let Some(due) = self.state().next_tick_ns.filter(|d| *d <= target) {
            self.set_now(due);
            self.fire_tick();
        }
        self.set_now(target);
    }

    /// Fires `proxy_on_tick` now if it is due (real clock / proxy mode).
    pub(crate) fn tick_if_due(&mut self) {
        let now = self.state().clock.now_ns();
        if self.state().next_tick_ns.is_some_and(|d| d <= now) {
            self.fire_tick();
        }
    }

    /// Time until the next tick, if one is armed.
    pub(crate) fn next_tick_in(&self) -> Option<Duration> {
        let now = self.state().clock.now_ns();
        self.state()
            .next_tick_ns
            .map(|d| Duration::from_nanos(d.saturating_sub(now)))
    }

    fn set_now(&mut self, ns: u64) {
        if let Clock::Virtual { now_ns } = &mut self.state_mut().clock {
            *now_ns = ns.max(*now_ns);
        }
    }

    fn fire_tick(&mut self) {
        let before = self.state().next_tick_ns;
        let root = self.state().root_context_id;
        if !self.is_failed() {
            self.invoke("proxy_on_tick", root, &[root as i32]);
            self.run_deferred();
        }
        // Envoy re-arms the timer after the callback unless the callback changed the period.
        let s = self.state_mut();
        if s.next_tick_ns == before {
            s.next_tick_ns = (s.tick_period_ms != 0)
                .then(|| s.clock.now_ns() + s.tick_period_ms as u64 * 1_000_000);
        }
        self.after_event();
    }

    /// Work Envoy does after an event: posted callbacks (queue ready).
    pub(crate) fn after_event(&mut self) {
        while let Some((root, token)) = self.state_mut().queue_ready.pop_front() {
            if !self.is_failed() {
                self.invoke("proxy_on_queue_ready", root, &[root as i32, token as i32]);
                self.run_deferred();
            }
        }
    }

    /// Runs the after-VM-call actions (Envoy's `DeferAfterCallActions`).
    pub(crate) fn run_deferred(&mut self) {
        while let Some(action) = self.state_mut().deferred.pop_front() {
            match action {
                Deferred::Continue { context_id, stream } => match stream {
                    StreamType::HttpRequest => self.common_continue(context_id, Direction::Request),
                    StreamType::HttpResponse => {
                        self.common_continue(context_id, Direction::Response)
                    }
                    StreamType::Downstream => self.connection_continue_reading(context_id),
                    StreamType::Upstream => {}
                },
                Deferred::Close { context_id, stream } => match stream {
                    StreamType::HttpRequest | StreamType::HttpResponse => {
                        self.reset_stream(context_id)
                    }
                    StreamType::Downstream | StreamType::Upstream => {
                        self.connection_close(context_id, stream)
                    }
                },
                Deferred::LocalReply { context_id, reply } => {
                    self.send_local_reply(context_id, reply, false)
                }
            }
        }
    }

    /// Answers a `proxy_http_call`: `proxy_on_http_call_response` on the root context
    /// (Envoy makes the call on the root context).
    pub fn respond_http_call(
        &mut self,
        token: u32,
        headers: Headers,
        body: &[u8],
        trailers: Headers,
    ) -> bool {
        let response = HttpCallResponse {
            headers,
            body: body.to_vec(),
            trailers,
        };
        self.deliver_http_call_response(token, Some(response))
    }

    /// Fails a `proxy_http_call` (reset / timeout): a response with no headers or body.
    pub fn fail_http_call(&mut self, token: u32) -> bool {
        self.deliver_http_call_response(token, None)
    }

    fn deliver_http_call_response(
        &mut self,
        token: u32,
        response: Option<HttpCallResponse>,
    ) -> bool {
        if self.state_mut().http_calls.remove(&token).is_none() {
            return false;
        }
        let root = self.root_context_id();
        let (nh, nb, nt) = response.as_ref().map_or((0, 0, 0), |r| {
            (
                r.headers.len() as i32,
                r.body.len() as i32,
                r.trailers.len() as i32,
            )
        });
        self.state_mut().http_call_response = response;
        self.invoke(
            "proxy_on_http_call_response",
            root,
            &[root as i32, token as i32, nh, nb, nt],
        );
        self.state_mut().http_call_response = None;
        self.run_deferred();
        self.after_event();
        true
    }
}
