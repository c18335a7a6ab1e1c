//! What a stream context is to the entry points: the callbacks of an HTTP stream and of a
//! network connection, and what each callback answers the host. The roles implement these
//! traits; `abi` dispatches to them. Depends on nothing, so roles and dispatch import it
//! without importing each other.

/// Declares what a kind of callback answers the host: a `#[repr(u32)]` enum with the ABI's
/// numbers. Each starts with `Continue = 0`, its default, which is also the answer for a
/// context that is unknown or busy (`abi`).
macro_rules! callback_answer {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($(#[$variant_attr:meta])* $variant:ident = $value:literal,)* }
    )*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        #[repr(u32)]
        pub enum $name {
            #[default]
            Continue = 0,
            $($(#[$variant_attr])* $variant = $value,)*
        }
    )*};
}

callback_answer! {
    /// What a headers callback tells the host.
    HeadersAction {
        StopIteration = 1,
    }
    /// What a body callback tells the host.
    DataAction {
        /// Hold the data; later callbacks see the whole held body; `continue_stream` releases it.
        StopIterationAndBuffer = 1,
        #[allow(dead_code)]
        StopIterationAndWatermark = 2,
    }
    /// What a network-filter data callback tells the host.
    NetworkAction {
        StopIteration = 1,
    }
}

/// Callbacks of an HTTP stream context.
pub trait HttpStream {
    fn on_request_headers(&mut self, _num: usize, _eos: bool) -> HeadersAction {
        HeadersAction::Continue
    }
    fn on_request_body(&mut self, _size: usize, _eos: bool) -> DataAction {
        DataAction::Continue
    }
    fn on_request_trailers(&mut self, _num: usize) -> HeadersAction {
        HeadersAction::Continue
    }
    fn on_response_headers(&mut self, _num: usize, _eos: bool) -> HeadersAction {
        HeadersAction::Continue
    }
    fn on_response_body(&mut self, _size: usize, _eos: bool) -> DataAction {
        DataAction::Continue
    }
    fn on_response_trailers(&mut self, _num: usize) -> HeadersAction {
        HeadersAction::Continue
    }
    /// The root's tick released this stream's held response data.
    fn on_flushed(&mut self) {}
    fn on_log(&mut self) {}
    fn on_done(&mut self) {}
}

/// Callbacks of a network (TCP stream) context.
pub trait NetworkStream {
    fn on_new_connection(&mut self) -> NetworkAction {
        NetworkAction::Continue
    }
    fn on_downstream_data(&mut self, _size: usize, _eos: bool) -> NetworkAction {
        NetworkAction::Continue
    }
    fn on_upstream_data(&mut self, _size: usize, _eos: bool) -> NetworkAction {
        NetworkAction::Continue
    }
    fn on_downstream_close(&mut self, _peer: u32) {}
    fn on_upstream_close(&mut self, _peer: u32) {}
    /// The root's tick, with this connection as the effective context.
    fn on_tick(&mut self) {}
    fn on_done(&mut self) {}
}
