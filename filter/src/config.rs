//! Plugin configuration: the JSON in the wasm plugin's `configuration` field.
//!
//! This is the only place configuration is parsed. Unknown fields and bad values are rejected
//! at load time (Envoy then refuses the listener) with a message that names the field.

use serde::Deserialize;

/// Which half of the bridge this plugin instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Next to the gRPC client: native gRPC -> gRPC-web over HTTP/1.1, and back.
    Agent,
    /// Next to the gRPC backend: gRPC-web (from an agent or a browser) -> native gRPC, and back.
    Server,
    /// Next to the gRPC backend, in front of Envoy's own `grpc_web` filter, which does the
    /// conversion: this role only authenticates bridged requests and strips the bridge's
    /// headers (`http::guard`; `envoy/server-hybrid.yaml`). Counts as `server` in metrics.
    ServerGuard,
    /// Next to the server role, in front of Envoy's `grpc_http1_bridge`: sets the HTTP status of
    /// a plain HTTP/1.1 gRPC client's response from its `grpc-status` (see `http::http1_status`).
    Http1Status,
    /// Network filter in the agent Envoy (before `tcp_proxy`): wraps the client's whole HTTP/2
    /// connection in one WebSocket connection (client side of RFC 6455).
    TunnelClient,
    /// Network filter in the server Envoy (before `tcp_proxy` to the backend): unwraps it.
    TunnelServer,
}

impl Role {
    pub fn is_tunnel(self) -> bool {
        matches!(self, Role::TunnelClient | Role::TunnelServer)
    }
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub role: Role,
    /// Largest gRPC message (payload bytes) the filter accepts where it frames messages.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: u32,
    /// Largest trailer block carried in a gRPC-web trailer frame.
    #[serde(default = "defaults::max_trailer_bytes")]
    pub max_trailer_bytes: u32,
    /// Server role: how long response data may be held so the trailer frame can still be
    /// appended to the body (the streaming flush tick), in milliseconds.
    #[serde(default = "defaults::flush_interval_ms")]
    pub flush_interval_ms: u32,
    /// Server role: response bytes held before they are released early, without waiting for
    /// the tick. Keep it well below Envoy's buffer limit (`per_connection_buffer_limit_bytes`,
    /// 1 MiB by default): Envoy resets a stream whose paused body outgrows that limit.
    #[serde(default = "defaults::max_held_bytes")]
    pub max_held_bytes: u32,
    /// Server role, plain HTTP/1.1 gRPC clients (their responses are held whole by Envoy's
    /// `grpc_http1_bridge`): response bytes past which the call ends with RESOURCE_EXHAUSTED.
    /// 0: no bound of ours (Envoy's buffer limit still applies).
    #[serde(default = "defaults::http1_hold_bytes")]
    pub http1_hold_bytes: u32,
    /// Server role, plain HTTP/1.1 gRPC clients: milliseconds after the response headers past
    /// which an unfinished call ends with DEADLINE_EXCEEDED. 0: no bound.
    #[serde(default = "defaults::http1_hold_ms")]
    pub http1_hold_ms: u32,
    /// Header that marks a request converted by an agent (lowercase).
    #[serde(default = "defaults::marker_header")]
    pub marker_header: String,
    /// Agent role: how many bytes of a non-gRPC error body are quoted in `grpc-message`.
    #[serde(default = "defaults::error_body_quote_bytes")]
    pub error_body_quote_bytes: u32,
    /// Tunnel client: `Host` of the WebSocket upgrade request (the server's name as proxies
    /// and TLS-inspecting middleboxes must see it). Required for `tunnel_client`.
    #[serde(default)]
    pub tunnel_host: Option<String>,
    /// Tunnel: request path of the upgrade; the server side accepts only this path.
    #[serde(default = "defaults::tunnel_path")]
    pub tunnel_path: String,
    /// Tunnel: WebSocket subprotocol offered by the client and required by the server.
    #[serde(default = "defaults::tunnel_protocol")]
    pub tunnel_protocol: String,
    /// Tunnel client: extra headers on the upgrade request (an auth token, say). Tunnel server:
    /// headers the upgrade request must carry with exactly these values.
    #[serde(default)]
    pub tunnel_headers: std::collections::BTreeMap<String, String>,
    /// Tunnel: largest WebSocket frame payload accepted (close 1009 past it); also the size of
    /// the frames we send at most.
    #[serde(default = "defaults::max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// Tunnel client: WebSocket ping interval on an idle tunnel, so proxies that cut idle
    /// connections keep it; 0 disables.
    #[serde(default = "defaults::ping_interval_ms")]
    pub ping_interval_ms: u32,
    /// `auth` as written: absent (`None`), `"none"` (`Some(None)`) or an object. The server
    /// roles require it: bridged traffic is authenticated unless the operator says `"none"`.
    #[serde(default, rename = "auth", deserialize_with = "auth_setting")]
    pub auth_setting: Option<Option<AuthConfig>>,
    /// Authentication of bridged traffic (docs/CONFIG.md, "auth"); `None`: none (filled from
    /// `auth_setting` by [`Config::parse`]).
    #[serde(skip)]
    pub auth: Option<AuthConfig>,
}

/// `"auth"`: the string `"none"`, or an auth object. (`null` is refused: say `"none"`.)
fn auth_setting<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<AuthConfig>>, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    match v {
        serde_json::Value::String(s) if s == "none" => Ok(Some(None)),
        serde_json::Value::Object(_) => AuthConfig::deserialize(v)
            .map(|a| Some(Some(a)))
            .map_err(D::Error::custom),
        other => Err(D::Error::custom(format!(
            "expected an auth object or \"none\" (no authentication), got {other}"
        ))),
    }
}

/// A secret from the configuration: never printed (`Debug` is redacted).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `auth`: what an agent presents (agent, tunnel_client) or what a server requires (server,
/// tunnel_server) of bridged traffic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Agent / tunnel client: the secret sent in `secret_header` on every bridged request
    /// (the upgrade request for the tunnel).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Server / tunnel server: accepted secrets (several, so they can be rotated).
    #[serde(default)]
    pub shared_secrets: Vec<Secret>,
    /// Header that carries the secret.
    #[serde(default = "defaults::secret_header")]
    pub secret_header: String,
    /// Server / tunnel server: the connection must carry a client certificate verified by
    /// Envoy's TLS (`connection.mtls`).
    #[serde(default)]
    pub require_client_certificate: bool,
    /// Server / tunnel server: if not empty, the certificate's first URI SAN must be one of these.
    #[serde(default)]
    pub allowed_uri_sans: Vec<String>,
    /// Server / tunnel server: if not empty, the certificate's first DNS SAN must be one of these.
    #[serde(default)]
    pub allowed_dns_sans: Vec<String>,
    /// Server / tunnel server: if not empty, the certificate's subject (RFC 2253) must be one of these.
    #[serde(default)]
    pub allowed_subjects: Vec<String>,
    /// Server: gRPC-web requests without the agent marker (browsers) must authenticate too.
    #[serde(default)]
    pub require_for_unmarked: bool,
}

/// Shortest accepted secret (bytes).
pub const MIN_SECRET_BYTES: usize = 16;
/// Longest accepted secret (bytes).
pub const MAX_SECRET_BYTES: usize = 1024;

mod defaults {
    pub fn max_message_bytes() -> u32 {
        16 * 1024 * 1024
    }
    pub fn max_trailer_bytes() -> u32 {
        16 * 1024
    }
    pub fn flush_interval_ms() -> u32 {
        5
    }
    /// One HTTP/2 DATA frame: what the server role holds is released into the downstream
    /// connection's write buffer at once, past Envoy's watermark, so the hold is what that
    /// buffer may exceed its limit by. At 256 KiB it did (tests/tests/soak.rs).
    pub fn max_held_bytes() -> u32 {
        16 * 1024
    }
    pub fn http1_hold_bytes() -> u32 {
        131_072
    }
    pub fn http1_hold_ms() -> u32 {
        1000
    }
    pub fn marker_header() -> String {
        "x-grpc-bridge".to_string()
    }
    pub fn error_body_quote_bytes() -> u32 {
        256
    }
    pub fn tunnel_path() -> String {
        "/grpc-bridge/tunnel".to_string()
    }
    pub fn tunnel_protocol() -> String {
        "grpc-bridge.tunnel.v1".to_string()
    }
    pub fn max_frame_bytes() -> u32 {
        1024 * 1024
    }
    pub fn ping_interval_ms() -> u32 {
        20_000
    }
    pub fn secret_header() -> String {
        "x-grpc-bridge-auth".to_string()
    }
}

/// A configuration error; the message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "grpc-bridge configuration: {}", self.0)
    }
}

impl Config {
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(json).map_err(|_| ConfigError("not valid UTF-8".into()))?;
        if text.trim().is_empty() {
            return Err(ConfigError(
                "empty; expected a JSON object such as {\"role\": \"agent\"}".into(),
            ));
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." || path.is_empty() {
                ConfigError(e.inner().to_string())
            } else {
                ConfigError(format!("field `{}`: {}", path, e.inner()))
            }
        })?;
        let mut cfg = cfg;
        cfg.auth = cfg.auth_setting.clone().flatten();
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: &str| Err(ConfigError(format!("field `{field}`: {why}")));
        if self.max_message_bytes == 0 || self.max_message_bytes > 1 << 30 {
            return bad("max_message_bytes", "must be between 1 and 1073741824");
        }
        if self.max_trailer_bytes < 64 || self.max_trailer_bytes > 1 << 20 {
            return bad("max_trailer_bytes", "must be between 64 and 1048576");
        }
        if self.flush_interval_ms == 0 || self.flush_interval_ms > 1000 {
            return bad("flush_interval_ms", "must be between 1 and 1000");
        }
        if self.max_held_bytes < 1024 || self.max_held_bytes > 64 << 20 {
            return bad("max_held_bytes", "must be between 1024 and 67108864");
        }
        if self.http1_hold_bytes != 0 && !(1024..=32 << 20).contains(&self.http1_hold_bytes) {
            return bad(
                "http1_hold_bytes",
                "must be 0 (no bound) or between 1024 and 33554432",
            );
        }
        if self.http1_hold_ms != 0 && !(100..=3_600_000).contains(&self.http1_hold_ms) {
            return bad(
                "http1_hold_ms",
                "must be 0 (no bound) or between 100 and 3600000",
            );
        }
        if !is_lowercase_header_name(&self.marker_header) {
            return bad(
                "marker_header",
                "must be a lowercase header name (a-z, 0-9, '-', '_')",
            );
        }
        if self.error_body_quote_bytes > 4096 {
            return bad("error_body_quote_bytes", "must be at most 4096");
        }
        let token = |v: &str| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        };
        let clean = |v: &str| !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        match (&self.tunnel_host, self.role) {
            (None, Role::TunnelClient) => {
                return bad("tunnel_host", "required for role tunnel_client")
            }
            (Some(h), _) if h.is_empty() || !clean(h) || h.contains(' ') => {
                return bad("tunnel_host", "must be a host name or host:port")
            }
            _ => {}
        }
        if !self.tunnel_path.starts_with('/')
            || !clean(&self.tunnel_path)
            || self.tunnel_path.contains(' ')
        {
            return bad(
                "tunnel_path",
                "must start with '/' and contain no spaces or control characters",
            );
        }
        if !token(&self.tunnel_protocol) {
            return bad("tunnel_protocol", "must be an HTTP token");
        }
        for (k, v) in &self.tunnel_headers {
            if !token(k) || !clean(v) {
                return bad("tunnel_headers", &format!("invalid header {k:?}"));
            }
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > 64 << 20 {
            return bad("max_frame_bytes", "must be between 1024 and 67108864");
        }
        if self.ping_interval_ms != 0 && self.ping_interval_ms < 100 {
            return bad("ping_interval_ms", "must be 0 (off) or at least 100");
        }
        let guards = matches!(
            self.role,
            Role::Server | Role::ServerGuard | Role::TunnelServer
        );
        if guards && self.auth_setting.is_none() {
            return bad(
                "auth",
                "required for the server roles: {\"shared_secrets\": [...]} and/or {\"require_client_certificate\": true}, or \"none\" to accept unauthenticated bridged traffic",
            );
        }
        if self.role == Role::Http1Status && self.auth_setting.is_some() {
            return bad("auth", "not used by role http1_status");
        }
        if let Some(a) = &self.auth {
            self.validate_auth(a)?;
        }
        Ok(())
    }

    fn validate_auth(&self, a: &AuthConfig) -> Result<(), ConfigError> {
        let bad = |field: &str, why: &str| Err(ConfigError(format!("field `auth.{field}`: {why}")));
        // A secret travels as a header value: visible ASCII only, and long enough to guess badly.
        let secret_ok = |s: &Secret| {
            (MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&s.0.len())
                && s.0.bytes().all(|b| b.is_ascii_graphic())
        };
        let h = &a.secret_header;
        if !is_lowercase_header_name(h) {
            return bad(
                "secret_header",
                "must be a lowercase header name (a-z, 0-9, '-', '_')",
            );
        }
        if *h == self.marker_header {
            return bad("secret_header", "must differ from marker_header");
        }
        let sends = matches!(self.role, Role::Agent | Role::TunnelClient);

        if sends {
            match &a.secret {
                None => {
                    return bad(
                        "secret",
                        "required for role agent and tunnel_client (the secret this agent sends)",
                    )
                }
                Some(s) if !secret_ok(s) => {
                    return bad(
                        "secret",
                        "must be 16 to 1024 visible ASCII characters (no spaces)",
                    )
                }
                _ => {}
            }
            let server_only = [
                ("shared_secrets", !a.shared_secrets.is_empty()),
                ("require_client_certificate", a.require_client_certificate),
                ("allowed_uri_sans", !a.allowed_uri_sans.is_empty()),
                ("allowed_dns_sans", !a.allowed_dns_sans.is_empty()),
                ("allowed_subjects", !a.allowed_subjects.is_empty()),
                ("require_for_unmarked", a.require_for_unmarked),
            ];
            if let Some((f, _)) = server_only.iter().find(|(_, set)| *set) {
                return bad(f, "only for role server and tunnel_server");
            }
            return Ok(());
        }
        if a.secret.is_some() {
            return bad(
                "secret",
                "only for role agent and tunnel_client (servers use shared_secrets)",
            );
        }
        if a.shared_secrets.is_empty() && !a.require_client_certificate {
            return bad(
                "shared_secrets",
                "give at least one secret, or set require_client_certificate",
            );
        }
        if a.shared_secrets.iter().any(|s| !secret_ok(s)) {
            return bad(
                "shared_secrets",
                "each must be 16 to 1024 visible ASCII characters (no spaces)",
            );
        }
        if a.shared_secrets.len() > 16 {
            return bad("shared_secrets", "at most 16 secrets");
        }
        for (f, list) in [
            ("allowed_uri_sans", &a.allowed_uri_sans),
            ("allowed_dns_sans", &a.allowed_dns_sans),
            ("allowed_subjects", &a.allowed_subjects),
        ] {
            if !list.is_empty() && !a.require_client_certificate {
                return bad(f, "needs require_client_certificate: true");
            }
            if list.iter().any(|v| v.is_empty()) {
                return bad(f, "entries must not be empty");
            }
        }
        if a.require_for_unmarked && !matches!(self.role, Role::Server | Role::ServerGuard) {
            return bad("require_for_unmarked", "only for role server");
        }
        Ok(())
    }
}

/// A header name as the filter writes it: non-empty, lowercase a-z, digits, '-' and '_' (so no
/// pseudo-header either).
fn is_lowercase_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(br#"{"role":"server","auth":"none"}"#).unwrap();
        assert_eq!(c.role, Role::Server);
        assert_eq!(c.auth, None);
        assert_eq!(c.max_message_bytes, 16 * 1024 * 1024);
        assert_eq!(c.flush_interval_ms, 5);
        assert_eq!(c.marker_header, "x-grpc-bridge");
    }

    /// Secure by default: a server role with no `auth` does not load; `"none"` must be said.
    #[test]
    fn server_roles_require_auth_or_an_explicit_none() {
        for role in ["server", "server_guard", "tunnel_server"] {
            let e = Config::parse(format!(r#"{{"role":"{role}"}}"#).as_bytes()).unwrap_err();
            assert!(
                e.0.starts_with("field `auth`: required for the server roles"),
                "{role}: {e}"
            );
            let e = Config::parse(format!(r#"{{"role":"{role}","auth":null}}"#).as_bytes())
                .unwrap_err();
            assert!(
                e.0.contains("field `auth`") && e.0.contains("\"none\""),
                "{role}: {e}"
            );
            let e = Config::parse(format!(r#"{{"role":"{role}","auth":"off"}}"#).as_bytes())
                .unwrap_err();
            assert!(e.0.contains("field `auth`"), "{role}: {e}");
            let c =
                Config::parse(format!(r#"{{"role":"{role}","auth":"none"}}"#).as_bytes()).unwrap();
            assert_eq!(c.auth, None);
            let c = Config::parse(
                format!(r#"{{"role":"{role}","auth":{{"shared_secrets":["0123456789abcdef"]}}}}"#)
                    .as_bytes(),
            )
            .unwrap();
            assert!(c.auth.is_some());
        }
        // An agent may leave it out (it then sends no secret); http1_status has no use for it.
        assert_eq!(Config::parse(br#"{"role":"agent"}"#).unwrap().auth, None);
        let e = Config::parse(br#"{"role":"http1_status","auth":"none"}"#).unwrap_err();
        assert!(e.0.contains("field `auth`"), "{e}");
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::parse(br#"{"role":"agent","flush_interval":5}"#).unwrap_err();
        assert!(e.0.contains("flush_interval"), "{e}");
    }

    #[test]
    fn bad_role_names_the_field() {
        let e = Config::parse(br#"{"role":"proxy"}"#).unwrap_err();
        assert!(e.0.contains("`role`") && e.0.contains("proxy"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = Config::parse(br#"{"role":"agent","max_message_bytes":"big"}"#).unwrap_err();
        assert!(e.0.contains("`max_message_bytes`"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        for (json, field) in [
            (
                r#"{"role":"agent","flush_interval_ms":0}"#,
                "flush_interval_ms",
            ),
            (
                r#"{"role":"agent","max_message_bytes":0}"#,
                "max_message_bytes",
            ),
            (
                r#"{"role":"agent","max_trailer_bytes":10}"#,
                "max_trailer_bytes",
            ),
            (
                r#"{"role":"agent","marker_header":"X-Upper"}"#,
                "marker_header",
            ),
            (
                r#"{"role":"server","auth":"none","http1_hold_bytes":10}"#,
                "http1_hold_bytes",
            ),
            (
                r#"{"role":"server","auth":"none","http1_hold_ms":50}"#,
                "http1_hold_ms",
            ),
        ] {
            let e = Config::parse(json.as_bytes()).unwrap_err();
            assert!(e.0.contains(field), "{json}: {e}");
        }
    }

    /// The config reference can't drift: every field serde knows must be in docs/CONFIG.md.
    #[test]
    fn every_field_is_documented() {
        let e = Config::parse(br#"{"role":"agent","__probe__":1}"#).unwrap_err();
        let expected =
            e.0.split("expected one of")
                .nth(1)
                .expect("serde lists the fields");
        let fields: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        assert!(fields.len() >= 7, "{fields:?}");
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFIG.md"))
                .unwrap();
        for f in fields {
            assert!(
                doc.contains(&format!("| `{f}` |")),
                "docs/CONFIG.md lacks a row for `{f}`"
            );
        }
    }

    #[test]
    fn auth_is_checked_per_role_and_names_the_field() {
        let ok = [
            r#"{"role":"agent","auth":{"secret":"0123456789abcdef"}}"#,
            r#"{"role":"tunnel_client","tunnel_host":"h","auth":{"secret":"0123456789abcdef"}}"#,
            r#"{"role":"server","auth":{"shared_secrets":["0123456789abcdef","fedcba9876543210"]}}"#,
            r#"{"role":"server","auth":{"require_client_certificate":true,"allowed_uri_sans":["spiffe://a/b"]}}"#,
            r#"{"role":"tunnel_server","auth":{"shared_secrets":["0123456789abcdef"],"secret_header":"x-k"}}"#,
        ];
        for j in ok {
            Config::parse(j.as_bytes()).unwrap_or_else(|e| panic!("{j}: {e}"));
        }
        for (j, field) in [
            (r#"{"role":"agent","auth":{}}"#, "auth.secret"),
            (
                r#"{"role":"agent","auth":{"secret":"short"}}"#,
                "auth.secret",
            ),
            (
                r#"{"role":"agent","auth":{"secret":"0123456789abcdef","shared_secrets":["0123456789abcdef"]}}"#,
                "auth.shared_secrets",
            ),
            (r#"{"role":"server","auth":{}}"#, "auth.shared_secrets"),
            (
                r#"{"role":"server","auth":{"shared_secrets":["has a space in it!!"]}}"#,
                "auth.shared_secrets",
            ),
            (
                r#"{"role":"server","auth":{"secret":"0123456789abcdef","shared_secrets":["0123456789abcdef"]}}"#,
                "auth.secret",
            ),
            (
                r#"{"role":"server","auth":{"shared_secrets":["0123456789abcdef"],"allowed_uri_sans":["x"]}}"#,
                "auth.allowed_uri_sans",
            ),
            (
                r#"{"role":"server","auth":{"shared_secrets":["0123456789abcdef"],"secret_header":"X-Up"}}"#,
                "auth.secret_header",
            ),
            (
                r#"{"role":"server","auth":{"shared_secrets":["0123456789abcdef"],"secret_header":"x-grpc-bridge"}}"#,
                "auth.secret_header",
            ),
            (
                r#"{"role":"tunnel_server","auth":{"shared_secrets":["0123456789abcdef"],"require_for_unmarked":true}}"#,
                "auth.require_for_unmarked",
            ),
            (
                r#"{"role":"server","auth":{"shared_secret":["0123456789abcdef"]}}"#,
                "shared_secret",
            ),
        ] {
            let e = Config::parse(j.as_bytes()).unwrap_err();
            assert!(e.0.contains(field), "{j}: {e}");
            assert!(
                !e.0.contains("0123456789abcdef"),
                "a secret in an error message: {e}"
            );
        }
    }

    #[test]
    fn secrets_are_never_printed() {
        let c =
            Config::parse(br#"{"role":"server","auth":{"shared_secrets":["0123456789abcdef"]}}"#)
                .unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn auth_fields_are_documented() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFIG.md"))
                .unwrap();
        for f in [
            "secret",
            "shared_secrets",
            "secret_header",
            "require_client_certificate",
            "allowed_uri_sans",
            "allowed_dns_sans",
            "allowed_subjects",
            "require_for_unmarked",
        ] {
            assert!(
                doc.contains(&format!("| `auth.{f}` |")),
                "docs/CONFIG.md lacks a row for `auth.{f}`"
            );
        }
    }

    #[test]
    fn missing_role_and_empty_config_are_rejected() {
        assert!(Config::parse(b"{}").unwrap_err().0.contains("role"));
        assert!(Config::parse(b"").is_err());
        assert!(Config::parse(b"not json").is_err());
    }
}
