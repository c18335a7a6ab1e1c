//! Server guard role: the wasm half of the hybrid server (`envoy/server-hybrid.yaml`).
//!
//! Envoy's own `grpc_web` filter (C++, after this one) converts gRPC-web to native gRPC and the
//! backend's trailers into the trailer frame; this role keeps what only the bridge knows:
//! - a request that claims to come from an agent (the marker header), or any gRPC-web request
//!   when `auth.require_for_unmarked`, must authenticate (`auth`), else UNAUTHENTICATED;
//! - the marker and the secret header never reach the backend.
//!
//! It acts once per call, in the request headers callback: one read and at most one write of
//! the header map. Every other callback returns at once. The pure-wasm `server` role does the
//! conversion itself and costs about 45 us more Envoy CPU per unary call (docs/BENCHMARKS.md).
//!
//! Limitations against the `server` role: no `max_message_bytes` guard on requests (the
//! backend's own limit applies), no `http1_status` or plain HTTP/1.1 hold bounds (put the
//! `http1_status` role and Envoy's `grpc_http1_bridge` in front as for the server role), and
//! the response framing is Envoy's.

use std::rc::Rc;

use crate::codec::grpc_web::{self, Encoding};
use crate::codec::status::code;
use crate::config::ServerGuardConfig;
use crate::context::{HeadersAction, HttpStream};
use crate::host::{LogLevel, MapType};
use crate::http::envoy_sees_grpc;
use crate::http::stream_host::{StreamHost, WasmHost};
use crate::http::{authenticate, reply_content_type};
use crate::metrics::Metrics;

pub struct GuardStream {
    cfg: Rc<ServerGuardConfig>,
    metrics: Rc<Metrics>,
    /// Content type of the local reply we sent: Envoy drops `content-type` from an empty local
    /// reply, so it is put back when the reply passes our response path.
    replied: Option<String>,
}

impl GuardStream {
    pub fn new(cfg: Rc<ServerGuardConfig>, metrics: Rc<Metrics>) -> Self {
        GuardStream {
            cfg,
            metrics,
            replied: None,
        }
    }

    pub(crate) fn request_headers(&mut self, h: &mut dyn StreamHost) -> HeadersAction {
        let mut headers = match h.headers(MapType::HttpRequestHeaders) {
            Ok(m) => m,
            Err(e) => {
                // Fail closed: a guard that cannot see the request lets nothing through.
                h.log(
                    LogLevel::Warn,
                    &format!("grpc-bridge guard: request headers unreadable: {e:?}"),
                );
                let ct = grpc_web::grpc_web_content_type(Encoding::Binary, "+proto");
                h.send_grpc_error(
                    &ct,
                    code::INTERNAL,
                    "grpc-bridge: request headers unreadable",
                    false,
                );
                self.replied = Some(ct);
                return HeadersAction::StopIteration;
            }
        };
        let ct = headers.get("content-type").unwrap_or_default();
        let web = grpc_web::parse_grpc_web_content_type(&ct);
        let marked = headers.contains(&self.cfg.marker_header);
        let presented = self
            .cfg
            .auth
            .as_ref()
            .and_then(|a| headers.get(&a.secret_header));
        // Bridge-internal headers never reach the backend, whatever the request.
        let mut changed = headers.remove(&self.cfg.marker_header);
        if let Some(a) = self.cfg.auth.as_ref() {
            changed |= headers.remove(&a.secret_header);
            if let Err(f) = authenticate(
                a,
                marked,
                web.is_some(),
                presented.as_deref().map(str::as_bytes),
                &self.metrics,
            ) {
                // Envoy's grpc_web filter comes after us and never sees this reply: it must
                // already be in the client's encoding (trailers-only, status in headers).
                let reply_ct = reply_content_type(&web, &ct, || {
                    grpc_web::grpc_web_content_type(Encoding::Binary, "+proto")
                });
                h.send_grpc_error(
                    &reply_ct,
                    code::UNAUTHENTICATED,
                    f.message(),
                    envoy_sees_grpc(&ct),
                );
                if !envoy_sees_grpc(&ct) {
                    self.replied = Some(reply_ct);
                }
                return HeadersAction::StopIteration;
            }
        }
        if web.is_some() {
            self.metrics.inc(if marked {
                "calls.agent"
            } else {
                "calls.browser"
            });
            // gRPC-web's own request header means nothing to a native backend (Envoy's grpc_web
            // filter decides from content-type and leaves it).
            changed |= headers.remove("x-grpc-web");
        }
        if changed {
            if let Err(e) = h.set_headers(MapType::HttpRequestHeaders, &headers) {
                h.log(
                    LogLevel::Debug,
                    &format!("grpc-bridge guard: cannot rewrite request headers: {e:?}"),
                );
            }
        }
        HeadersAction::Continue
    }
}

impl GuardStream {
    pub(crate) fn response_headers(&mut self, h: &mut dyn StreamHost) -> HeadersAction {
        let Some(ct) = self.replied.take() else {
            return HeadersAction::Continue;
        };
        if let Ok(mut headers) = h.headers(MapType::HttpResponseHeaders) {
            headers.set("content-type", &ct);
            let _ = h.set_headers(MapType::HttpResponseHeaders, &headers);
        }
        HeadersAction::Continue
    }
}

impl HttpStream for GuardStream {
    fn on_request_headers(&mut self, _num: usize, _eos: bool) -> HeadersAction {
        self.request_headers(&mut WasmHost)
    }

    fn on_response_headers(&mut self, _num: usize, _eos: bool) -> HeadersAction {
        self.response_headers(&mut WasmHost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Role};
    use crate::http::stream_host::fake::{Call, FakeHost};
    use crate::http::stream_host::HeaderList;

    const SECRET: &str = "0123456789abcdef-secret";

    fn guard(auth: &str) -> GuardStream {
        let json = format!(r#"{{"role":"server_guard","auth":{auth}}}"#);
        let Ok(Config::ServerGuard(cfg)) = Config::parse(json.as_bytes()) else {
            panic!("not a server_guard config: {json}")
        };
        GuardStream::new(cfg, Rc::new(Metrics::new(Role::ServerGuard)))
    }

    fn request(extra: &[(&str, &str)]) -> FakeHost {
        let mut pairs = vec![
            (":method".to_string(), b"POST".to_vec()),
            (":path".to_string(), b"/pkg.Svc/Call".to_vec()),
            (
                "content-type".to_string(),
                b"application/grpc-web+proto".to_vec(),
            ),
        ];
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        FakeHost {
            request_headers: HeaderList(pairs),
            ..Default::default()
        }
    }

    fn secret_auth() -> String {
        format!(r#"{{"shared_secrets":["{SECRET}"]}}"#)
    }

    #[test]
    fn an_agent_call_with_the_secret_passes_without_the_bridge_headers() {
        let mut g = guard(&secret_auth());
        let mut h = request(&[
            ("x-grpc-bridge", "agent"),
            ("x-grpc-bridge-auth", SECRET),
            ("x-grpc-web", "1"),
        ]);
        assert_eq!(g.request_headers(&mut h), HeadersAction::Continue);
        assert!(
            !h.request_headers.contains("x-grpc-web"),
            "{:?}",
            h.request_headers
        );
        assert!(
            !h.request_headers.contains("x-grpc-bridge"),
            "{:?}",
            h.request_headers
        );
        assert!(
            !h.request_headers.contains("x-grpc-bridge-auth"),
            "{:?}",
            h.request_headers
        );
        assert_eq!(
            h.request_headers.get("content-type").as_deref(),
            Some("application/grpc-web+proto")
        );
        assert_eq!(
            h.calls,
            vec![
                Call::Headers(MapType::HttpRequestHeaders),
                Call::SetHeaders(MapType::HttpRequestHeaders)
            ]
        );
        assert_eq!(g.metrics.pending("calls.agent"), 1);
        assert_eq!(g.metrics.pending("auth_ok"), 1);
    }

    #[test]
    fn an_agent_call_with_a_wrong_or_no_secret_is_refused_with_unauthenticated() {
        for (presented, kind, message) in [
            (
                Some("wrong-secret-0123456789"),
                "wrong_secret",
                "grpc-bridge: bridged request not authenticated: invalid credentials",
            ),
            (
                None,
                "missing_secret",
                "grpc-bridge: bridged request not authenticated: no credentials",
            ),
        ] {
            let mut g = guard(&secret_auth());
            let mut extra = vec![("x-grpc-bridge", "agent")];
            if let Some(p) = presented {
                extra.push(("x-grpc-bridge-auth", p));
            }
            let mut h = request(&extra);
            assert_eq!(g.request_headers(&mut h), HeadersAction::StopIteration);
            assert_eq!(
                h.calls.last(),
                Some(&Call::GrpcError {
                    content_type: "application/grpc-web+proto".into(),
                    code: code::UNAUTHENTICATED,
                    message: message.into(),
                    envoy_sets_status: false,
                })
            );
            assert!(
                !h.calls
                    .contains(&Call::SetHeaders(MapType::HttpRequestHeaders)),
                "refused calls are not forwarded"
            );
            // Envoy's local reply arrives without content-type: it is put back.
            h.response_headers = HeaderList(vec![
                (":status".into(), b"200".to_vec()),
                ("grpc-status".into(), b"16".to_vec()),
            ]);
            g.response_headers(&mut h);
            assert_eq!(
                h.response_headers.get("content-type").as_deref(),
                Some("application/grpc-web+proto")
            );
            assert_eq!(g.metrics.pending(&format!("auth_failures.{kind}")), 1);
            assert_eq!(g.metrics.pending("grpc_status.16"), 1);
        }
    }

    #[test]
    fn a_browser_call_passes_untouched_unless_auth_is_required_for_unmarked_requests() {
        let mut g = guard(&secret_auth());
        let mut h = request(&[]);
        assert_eq!(g.request_headers(&mut h), HeadersAction::Continue);
        assert_eq!(
            h.calls,
            vec![Call::Headers(MapType::HttpRequestHeaders)],
            "nothing to strip: no write"
        );
        assert_eq!(g.metrics.pending("calls.browser"), 1);

        let mut g = guard(&format!(
            r#"{{"shared_secrets":["{SECRET}"],"require_for_unmarked":true}}"#
        ));
        let mut h = request(&[]);
        assert_eq!(g.request_headers(&mut h), HeadersAction::StopIteration);
    }

    #[test]
    fn a_native_grpc_call_claiming_to_be_bridged_gets_envoys_grpc_status() {
        let mut g = guard(&secret_auth());
        let mut h = request(&[("x-grpc-bridge", "agent")]);
        h.request_headers.set("content-type", "application/grpc");
        assert_eq!(g.request_headers(&mut h), HeadersAction::StopIteration);
        assert!(matches!(
            h.calls.last(),
            Some(Call::GrpcError { content_type, envoy_sets_status: true, .. }) if content_type == "application/grpc"
        ));
    }

    #[test]
    fn unreadable_headers_stop_the_call() {
        let mut g = guard(&secret_auth());
        let mut h = request(&[]);
        h.fail = Some(crate::host::Status::BadArgument);
        assert_eq!(g.request_headers(&mut h), HeadersAction::StopIteration);
        assert!(
            matches!(
                h.calls.last(),
                Some(Call::GrpcError {
                    code: code::INTERNAL,
                    ..
                })
            ),
            "{:?}",
            h.calls
        );
    }
}
