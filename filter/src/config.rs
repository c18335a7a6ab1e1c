//! Plugin configuration: the JSON in the wasm plugin's `configuration` field.
//!
//! This is the only place configuration is parsed. The configuration is tagged by `role`, and
//! each role has its own struct carrying only the fields that role reads. Unknown fields, fields
//! of another role and bad values are rejected at load time (Envoy then refuses the listener)
//! with a message that names the field.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

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
    /// Every role, in the order of the documentation.
    pub const ALL: [Role; 6] = [
        Role::Agent,
        Role::Server,
        Role::ServerGuard,
        Role::Http1Status,
        Role::TunnelClient,
        Role::TunnelServer,
    ];

    pub fn is_tunnel(self) -> bool {
        matches!(self, Role::TunnelClient | Role::TunnelServer)
    }

    /// The role as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Server => "server",
            Role::ServerGuard => "server_guard",
            Role::Http1Status => "http1_status",
            Role::TunnelClient => "tunnel_client",
            Role::TunnelServer => "tunnel_server",
        }
    }

    /// The fields this role accepts besides `role` (what its struct deserializes; a unit test
    /// checks the two agree).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Role::Agent => AgentConfig::FIELDS,
            Role::Server => ServerConfig::FIELDS,
            Role::ServerGuard => ServerGuardConfig::FIELDS,
            Role::Http1Status => Http1StatusConfig::FIELDS,
            Role::TunnelClient => TunnelClientConfig::FIELDS,
            Role::TunnelServer => TunnelServerConfig::FIELDS,
        }
    }
}

/// Validated configuration: the role and that role's own settings.
///
/// This is what `#[serde(tag = "role", rename_all = "snake_case")]` would derive, parsed by
/// [`Config::parse`] instead: serde's internally tagged enums buffer the object before they
/// pick the variant, so an error inside a variant loses the field's path
/// (`{"role":"agent","max_message_bytes":"big"}` gave `invalid type: string "big", expected
/// u32`, naming no field), and a field of another role would be only "unknown".
///
/// Each role's struct is behind an `Rc` so the root hands it to every stream it creates
/// without copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Config {
    Agent(Rc<AgentConfig>),
    Server(Rc<ServerConfig>),
    ServerGuard(Rc<ServerGuardConfig>),
    Http1Status(Rc<Http1StatusConfig>),
    TunnelClient(Rc<TunnelClientConfig>),
    TunnelServer(Rc<TunnelServerConfig>),
}

/// The `role` key inside a role's struct. `Config::parse` has read it already (it chose the
/// struct); the struct only admits it, so `deny_unknown_fields` does not refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RoleKey;

impl<'de> Deserialize<'de> for RoleKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| RoleKey)
    }
}

/// The checks of a role's values once read, which also fill what is derived from them
/// (`auth`). A role without settings has nothing to check.
trait Validate {
    fn validate(&mut self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Declares the roles' configuration structs from their fields, each written once with its
/// type and its default (the path of the function serde calls for a field left out). For
/// each struct: the struct, which admits the `role` key and refuses unknown fields, and its
/// `FIELDS` (the names in declaration order, serde's order too). `auth { docs }` after the
/// fields adds the role's `auth`: `auth_setting`, the value as written, and `auth`, the
/// settings in force that `validate` fills. Each struct ends with `;`.
macro_rules! role_config {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($fields:tt)* }
        $(auth { $(#[$auth_doc:meta])* })?;
    )*) => {
        $(role_config!(@role $(#[$doc])* $name { $($fields)* } $(auth { $(#[$auth_doc])* })?);)*
    };
    (@role
        $(#[$doc:meta])*
        $name:ident { $($(#[$field_doc:meta])* $field:ident: $ty:ty = $default:literal,)* }
        auth { $(#[$auth_doc:meta])* }
    ) => {
        role_config!(@declare $(#[$doc])* $name {
            $($(#[$field_doc])* #[serde(default = $default)] pub $field: $ty,)*
            /// `auth` as written (see [`auth_setting`]).
            #[serde(default, rename = "auth", deserialize_with = "auth_setting")]
            auth_setting: Option<Option<AuthConfig>>,
            $(#[$auth_doc])*
            #[serde(skip)]
            pub auth: Option<AuthConfig>,
        } FIELDS: [$(stringify!($field),)* "auth"]);
    };
    (@role
        $(#[$doc:meta])*
        $name:ident { $($(#[$field_doc:meta])* $field:ident: $ty:ty = $default:literal,)* }
    ) => {
        role_config!(@declare $(#[$doc])* $name {
            $($(#[$field_doc])* #[serde(default = $default)] pub $field: $ty,)*
        } FIELDS: [$(stringify!($field)),*]);
    };
    (@declare
        $(#[$doc:meta])*
        $name:ident { $($fields:tt)* }
        FIELDS: [$($field_name:expr),*]
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[serde(rename = "role")]
            role_key: RoleKey,
            $($fields)*
        }

        impl $name {
            pub const FIELDS: &'static [&'static str] = &[$($field_name),*];
        }
    };
}

role_config! {
    /// `agent`: native gRPC from the client -> gRPC-web over HTTP/1.1, and back.
    AgentConfig {
        /// Largest gRPC message (payload bytes) of a response the agent frames.
        max_message_bytes: u32 = "defaults::max_message_bytes",
        /// Largest trailer block carried in a gRPC-web trailer frame.
        max_trailer_bytes: u32 = "defaults::max_trailer_bytes",
        /// Header that marks a request converted by an agent (lowercase).
        marker_header: String = "defaults::marker_header",
        /// How many bytes of a non-gRPC error body are quoted in `grpc-message`.
        error_body_quote_bytes: u32 = "defaults::error_body_quote_bytes",
    }
    auth {
        /// The secret this agent presents; `None`: absent or `"none"`, no secret sent (filled by
        /// [`Config::parse`]).
    };

    /// `server`: gRPC-web (from an agent or a browser) -> native gRPC toward the backend, and
    /// back.
    ServerConfig {
        /// Largest gRPC message (payload bytes) of a request the server frames.
        max_message_bytes: u32 = "defaults::max_message_bytes",
        /// Largest trailer block carried in a gRPC-web trailer frame.
        max_trailer_bytes: u32 = "defaults::max_trailer_bytes",
        /// How long response data may be held so the trailer frame can still be appended to
        /// the body (the streaming flush tick), in milliseconds.
        flush_interval_ms: u32 = "defaults::flush_interval_ms",
        /// Response bytes held before they are released early, without waiting for the tick.
        /// Keep it well below Envoy's buffer limit (`per_connection_buffer_limit_bytes`, 1 MiB
        /// by default): Envoy resets a stream whose paused body outgrows that limit.
        max_held_bytes: u32 = "defaults::max_held_bytes",
        /// Plain HTTP/1.1 gRPC clients (their responses are held whole by Envoy's
        /// `grpc_http1_bridge`): response bytes past which the call ends with
        /// RESOURCE_EXHAUSTED. 0: no bound of ours (Envoy's buffer limit still applies).
        http1_hold_bytes: u32 = "defaults::http1_hold_bytes",
        /// Plain HTTP/1.1 gRPC clients: milliseconds after the response headers past which an
        /// unfinished call ends with DEADLINE_EXCEEDED. 0: no bound.
        http1_hold_ms: u32 = "defaults::http1_hold_ms",
        /// Header that marks a request converted by an agent (lowercase); removed before the
        /// backend.
        marker_header: String = "defaults::marker_header",
    }
    auth {
        /// What bridged requests must present; `None`: `"none"`, unauthenticated (filled by
        /// [`Config::parse`]). Required.
    };

    /// `server_guard`: authenticates bridged requests and strips the bridge's headers in front
    /// of Envoy's own `grpc_web` filter.
    ServerGuardConfig {
        /// Header that marks a request converted by an agent (lowercase); removed before the
        /// backend.
        marker_header: String = "defaults::marker_header",
    }
    auth {
        /// What bridged requests must present; `None`: `"none"`, unauthenticated (filled by
        /// [`Config::parse`]). Required.
    };

    /// `http1_status`: sets a plain HTTP/1.1 gRPC client's HTTP status from its `grpc-status`.
    /// It has no setting.
    Http1StatusConfig {};

    /// `tunnel_client`: the client's whole HTTP/2 connection in one WebSocket connection.
    TunnelClientConfig {
        /// `Host` of the WebSocket upgrade request (the server's name as proxies and
        /// TLS-inspecting middleboxes must see it). Required: always `Some` once parsed.
        tunnel_host: Option<String> = "Default::default",
        /// Request path of the upgrade.
        tunnel_path: String = "defaults::tunnel_path",
        /// WebSocket subprotocol offered.
        tunnel_protocol: String = "defaults::tunnel_protocol",
        /// Extra headers on the upgrade request (an auth token, say).
        tunnel_headers: BTreeMap<String, String> = "Default::default",
        /// Largest WebSocket frame payload accepted (close 1009 past it); also the size of the
        /// frames we send at most.
        max_frame_bytes: u32 = "defaults::max_frame_bytes",
        /// WebSocket ping interval on an idle tunnel, so proxies that cut idle connections keep
        /// it; 0 disables.
        ping_interval_ms: u32 = "defaults::ping_interval_ms",
    }
    auth {
        /// The secret sent on the upgrade request; `None`: absent or `"none"` (filled by
        /// [`Config::parse`]).
    };

    /// `tunnel_server`: unwraps the tunnel toward the backend.
    TunnelServerConfig {
        /// The only request path accepted for the upgrade.
        tunnel_path: String = "defaults::tunnel_path",
        /// WebSocket subprotocol the upgrade request must offer.
        tunnel_protocol: String = "defaults::tunnel_protocol",
        /// Headers the upgrade request must carry with exactly these values.
        tunnel_headers: BTreeMap<String, String> = "Default::default",
        /// Largest WebSocket frame payload accepted (close 1009 past it); also the size of the
        /// frames we send at most.
        max_frame_bytes: u32 = "defaults::max_frame_bytes",
    }
    auth {
        /// What the upgrade request must present; `None`: `"none"`, unauthenticated (filled by
        /// [`Config::parse`]). Required.
    };
}

/// `"auth"` as written: absent (`None`), `"none"` (`Some(None)`) or an auth object. The server
/// roles require it: bridged traffic is authenticated unless the operator says `"none"`.
/// (`null` is refused: say `"none"`.)
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

fn bad<T>(field: &str, why: &str) -> Result<T, ConfigError> {
    Err(ConfigError(format!("field `{field}`: {why}")))
}

/// Deserializes `text` as `T`; an error names the path of the field it is about.
fn deserialize_naming_the_field<T: for<'de> Deserialize<'de>>(
    text: &str,
) -> Result<T, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            ConfigError(e.inner().to_string())
        } else {
            ConfigError(format!("field `{}`: {}", path, e.inner()))
        }
    })
}

/// The first look at the configuration: its `role` (errors name it) and its top-level keys,
/// other values skipped.
struct Outline {
    role: Role,
    keys: Vec<String>,
}

impl<'de> Deserialize<'de> for Outline {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OutlineVisitor;
        impl<'de> Visitor<'de> for OutlineVisitor {
            type Value = Outline;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object such as {\"role\": \"agent\"}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outline, A::Error> {
                let mut role = None;
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "role" {
                        role = Some(map.next_value::<Role>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                    keys.push(key);
                }
                let role = role.ok_or_else(|| de::Error::missing_field("role"))?;
                Ok(Outline { role, keys })
            }
        }
        d.deserialize_map(OutlineVisitor)
    }
}

impl Config {
    /// Parses and validates the plugin configuration: `role` first, then a field of another
    /// role is refused by name, then the role's own struct is read (unknown fields, types) and
    /// its values checked.
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(json).map_err(|_| ConfigError("not valid UTF-8".into()))?;
        if text.trim().is_empty() {
            return Err(ConfigError(
                "empty; expected a JSON object such as {\"role\": \"agent\"}".into(),
            ));
        }
        let outline: Outline = deserialize_naming_the_field(text)?;
        let role = outline.role;
        for key in &outline.keys {
            if key == "role" || role.fields().contains(&key.as_str()) {
                continue;
            }
            let users: Vec<&str> = Role::ALL
                .iter()
                .filter(|r| r.fields().contains(&key.as_str()))
                .map(|r| r.name())
                .collect();
            if !users.is_empty() {
                return bad(
                    key,
                    &format!(
                        "not used by role {} (only by {})",
                        role.name(),
                        users.join(", ")
                    ),
                );
            }
        }
        Ok(match role {
            Role::Agent => Config::Agent(load(text)?),
            Role::Server => Config::Server(load(text)?),
            Role::ServerGuard => Config::ServerGuard(load(text)?),
            Role::Http1Status => Config::Http1Status(load(text)?),
            Role::TunnelClient => Config::TunnelClient(load(text)?),
            Role::TunnelServer => Config::TunnelServer(load(text)?),
        })
    }

    pub fn role(&self) -> Role {
        match self {
            Config::Agent(_) => Role::Agent,
            Config::Server(_) => Role::Server,
            Config::ServerGuard(_) => Role::ServerGuard,
            Config::Http1Status(_) => Role::Http1Status,
            Config::TunnelClient(_) => Role::TunnelClient,
            Config::TunnelServer(_) => Role::TunnelServer,
        }
    }

    /// The role's authentication settings; `None`: no `auth`, `"none"`, or a role without it.
    pub fn auth(&self) -> Option<&AuthConfig> {
        match self {
            Config::Agent(c) => c.auth.as_ref(),
            Config::Server(c) => c.auth.as_ref(),
            Config::ServerGuard(c) => c.auth.as_ref(),
            Config::Http1Status(_) => None,
            Config::TunnelClient(c) => c.auth.as_ref(),
            Config::TunnelServer(c) => c.auth.as_ref(),
        }
    }
}

/// Reads a role's struct from `text` (unknown fields, types) and checks its values.
fn load<T: Validate + for<'de> Deserialize<'de>>(text: &str) -> Result<Rc<T>, ConfigError> {
    let mut c: T = deserialize_naming_the_field(text)?;
    c.validate()?;
    Ok(Rc::new(c))
}

fn check_max_message_bytes(v: u32) -> Result<(), ConfigError> {
    if v == 0 || v > 1 << 30 {
        return bad("max_message_bytes", "must be between 1 and 1073741824");
    }
    Ok(())
}

fn check_max_trailer_bytes(v: u32) -> Result<(), ConfigError> {
    if !(64..=1 << 20).contains(&v) {
        return bad("max_trailer_bytes", "must be between 64 and 1048576");
    }
    Ok(())
}

fn check_marker_header(v: &str) -> Result<(), ConfigError> {
    if !is_lowercase_header_name(v) {
        return bad(
            "marker_header",
            "must be a lowercase header name (a-z, 0-9, '-', '_')",
        );
    }
    Ok(())
}

/// An HTTP token (RFC 9110 `tchar`s), not empty.
fn is_token(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// No CR, LF or NUL: safe in a header line.
fn is_clean(v: &str) -> bool {
    !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// The settings both tunnel sides have.
fn check_tunnel(
    path: &str,
    protocol: &str,
    headers: &BTreeMap<String, String>,
    max_frame_bytes: u32,
) -> Result<(), ConfigError> {
    if !path.starts_with('/') || !is_clean(path) || path.contains(' ') {
        return bad(
            "tunnel_path",
            "must start with '/' and contain no spaces or control characters",
        );
    }
    if !is_token(protocol) {
        return bad("tunnel_protocol", "must be an HTTP token");
    }
    for (k, v) in headers {
        if !is_token(k) || !is_clean(v) {
            return bad("tunnel_headers", &format!("invalid header {k:?}"));
        }
    }
    if !(1024..=64 << 20).contains(&max_frame_bytes) {
        return bad("max_frame_bytes", "must be between 1024 and 67108864");
    }
    Ok(())
}

/// Checks `auth` as written for `role` and gives the settings in force (`None`: none).
/// `marker_header`: the role's marker, which the secret header must differ from (the tunnel
/// roles have none).
fn check_auth(
    role: Role,
    setting: &Option<Option<AuthConfig>>,
    marker_header: Option<&str>,
) -> Result<Option<AuthConfig>, ConfigError> {
    let guards = matches!(role, Role::Server | Role::ServerGuard | Role::TunnelServer);
    if guards && setting.is_none() {
        return bad(
            "auth",
            "required for the server roles: {\"shared_secrets\": [...]} and/or {\"require_client_certificate\": true}, or \"none\" to accept unauthenticated bridged traffic",
        );
    }
    let auth = setting.clone().flatten();
    if let Some(a) = &auth {
        check_auth_fields(role, a, marker_header)?;
    }
    Ok(auth)
}

fn check_auth_fields(
    role: Role,
    a: &AuthConfig,
    marker_header: Option<&str>,
) -> Result<(), ConfigError> {
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
    if marker_header == Some(h.as_str()) {
        return bad("secret_header", "must differ from marker_header");
    }
    let sends = matches!(role, Role::Agent | Role::TunnelClient);

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
    if a.require_for_unmarked && !matches!(role, Role::Server | Role::ServerGuard) {
        return bad("require_for_unmarked", "only for role server");
    }
    Ok(())
}

impl Validate for AgentConfig {
    fn validate(&mut self) -> Result<(), ConfigError> {
        check_max_message_bytes(self.max_message_bytes)?;
        check_max_trailer_bytes(self.max_trailer_bytes)?;
        check_marker_header(&self.marker_header)?;
        if self.error_body_quote_bytes > 4096 {
            return bad("error_body_quote_bytes", "must be at most 4096");
        }
        self.auth = check_auth(Role::Agent, &self.auth_setting, Some(&self.marker_header))?;
        Ok(())
    }
}

impl Validate for ServerConfig {
    fn validate(&mut self) -> Result<(), ConfigError> {
        check_max_message_bytes(self.max_message_bytes)?;
        check_max_trailer_bytes(self.max_trailer_bytes)?;
        if self.flush_interval_ms == 0 || self.flush_interval_ms > 1000 {
            return bad("flush_interval_ms", "must be between 1 and 1000");
        }
        if !(1024..=64 << 20).contains(&self.max_held_bytes) {
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
        check_marker_header(&self.marker_header)?;
        self.auth = check_auth(Role::Server, &self.auth_setting, Some(&self.marker_header))?;
        Ok(())
    }
}

impl Validate for ServerGuardConfig {
    fn validate(&mut self) -> Result<(), ConfigError> {
        check_marker_header(&self.marker_header)?;
        self.auth = check_auth(
            Role::ServerGuard,
            &self.auth_setting,
            Some(&self.marker_header),
        )?;
        Ok(())
    }
}

impl Validate for Http1StatusConfig {}

impl Validate for TunnelClientConfig {
    fn validate(&mut self) -> Result<(), ConfigError> {
        match &self.tunnel_host {
            None => return bad("tunnel_host", "required for role tunnel_client"),
            Some(h) if h.is_empty() || !is_clean(h) || h.contains(' ') => {
                return bad("tunnel_host", "must be a host name or host:port")
            }
            Some(_) => {}
        }
        check_tunnel(
            &self.tunnel_path,
            &self.tunnel_protocol,
            &self.tunnel_headers,
            self.max_frame_bytes,
        )?;
        if self.ping_interval_ms != 0 && self.ping_interval_ms < 100 {
            return bad("ping_interval_ms", "must be 0 (off) or at least 100");
        }
        self.auth = check_auth(Role::TunnelClient, &self.auth_setting, None)?;
        Ok(())
    }
}

impl Validate for TunnelServerConfig {
    fn validate(&mut self) -> Result<(), ConfigError> {
        check_tunnel(
            &self.tunnel_path,
            &self.tunnel_protocol,
            &self.tunnel_headers,
            self.max_frame_bytes,
        )?;
        self.auth = check_auth(Role::TunnelServer, &self.auth_setting, None)?;
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

    fn agent(json: &str) -> Rc<AgentConfig> {
        match Config::parse(json.as_bytes()) {
            Ok(Config::Agent(c)) => c,
            other => panic!("{json}: {other:?}"),
        }
    }

    fn server(json: &str) -> Rc<ServerConfig> {
        match Config::parse(json.as_bytes()) {
            Ok(Config::Server(c)) => c,
            other => panic!("{json}: {other:?}"),
        }
    }

    fn err(json: &str) -> String {
        match Config::parse(json.as_bytes()) {
            Err(e) => e.0,
            Ok(c) => panic!("{json} was accepted: {c:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = server(r#"{"role":"server","auth":"none"}"#);
        assert_eq!(c.auth, None);
        assert_eq!(c.max_message_bytes, 16 * 1024 * 1024);
        assert_eq!(c.max_trailer_bytes, 16 * 1024);
        assert_eq!(c.flush_interval_ms, 5);
        assert_eq!(c.max_held_bytes, 16 * 1024);
        assert_eq!(c.http1_hold_bytes, 131_072);
        assert_eq!(c.http1_hold_ms, 1000);
        assert_eq!(c.marker_header, "x-grpc-bridge");
    }

    /// The smallest configuration of each role loads as that role, with every default.
    #[test]
    fn a_minimal_config_of_each_role_parses_with_its_defaults() {
        let a = agent(r#"{"role":"agent"}"#);
        assert_eq!(
            (
                a.max_message_bytes,
                a.max_trailer_bytes,
                a.marker_header.as_str(),
                a.error_body_quote_bytes,
                &a.auth
            ),
            (16 * 1024 * 1024, 16 * 1024, "x-grpc-bridge", 256, &None)
        );
        match Config::parse(br#"{"role":"server_guard","auth":"none"}"#) {
            Ok(Config::ServerGuard(g)) => {
                assert_eq!(
                    (g.marker_header.as_str(), &g.auth),
                    ("x-grpc-bridge", &None)
                )
            }
            other => panic!("{other:?}"),
        }
        let c = Config::parse(br#"{"role":"http1_status"}"#).unwrap();
        assert!(matches!(c, Config::Http1Status(_)), "{c:?}");
        match Config::parse(br#"{"role":"tunnel_client","tunnel_host":"h:443"}"#) {
            Ok(Config::TunnelClient(t)) => {
                assert_eq!(t.tunnel_host.as_deref(), Some("h:443"));
                assert_eq!(t.tunnel_path, "/grpc-bridge/tunnel");
                assert_eq!(t.tunnel_protocol, "grpc-bridge.tunnel.v1");
                assert!(t.tunnel_headers.is_empty());
                assert_eq!(t.max_frame_bytes, 1024 * 1024);
                assert_eq!(t.ping_interval_ms, 20_000);
                assert_eq!(t.auth, None);
            }
            other => panic!("{other:?}"),
        }
        match Config::parse(br#"{"role":"tunnel_server","auth":"none"}"#) {
            Ok(Config::TunnelServer(t)) => {
                assert_eq!(t.tunnel_path, "/grpc-bridge/tunnel");
                assert_eq!(t.tunnel_protocol, "grpc-bridge.tunnel.v1");
                assert!(t.tunnel_headers.is_empty());
                assert_eq!(t.max_frame_bytes, 1024 * 1024);
                assert_eq!(t.auth, None);
            }
            other => panic!("{other:?}"),
        }
        for role in Role::ALL {
            let json = minimal(role);
            assert_eq!(
                Config::parse(json.as_bytes()).unwrap().role(),
                role,
                "{json}"
            );
        }
    }

    /// The smallest configuration of `role` that loads.
    fn minimal(role: Role) -> String {
        let extra = match role {
            Role::Server | Role::ServerGuard | Role::TunnelServer => r#","auth":"none""#,
            Role::TunnelClient => r#","tunnel_host":"h""#,
            Role::Agent | Role::Http1Status => "",
        };
        format!(r#"{{"role":"{}"{extra}}}"#, role.name())
    }

    /// A field of another role is a mistake in the config (it would do nothing): refused, by
    /// name, with the roles that use it.
    #[test]
    fn each_role_refuses_a_field_of_another_role_by_name() {
        for (role, field, value) in [
            (Role::Agent, "tunnel_path", r#""/t""#),
            (Role::Agent, "flush_interval_ms", "5"),
            (Role::Server, "error_body_quote_bytes", "256"),
            (Role::Server, "ping_interval_ms", "0"),
            (Role::ServerGuard, "max_message_bytes", "1024"),
            (Role::Http1Status, "marker_header", r#""x-m""#),
            (Role::TunnelClient, "marker_header", r#""x-m""#),
            (Role::TunnelServer, "ping_interval_ms", "0"),
            (Role::TunnelServer, "tunnel_host", r#""h""#),
        ] {
            let base = minimal(role);
            let json = format!("{},\"{field}\":{value}}}", base.strip_suffix('}').unwrap());
            let users: Vec<&str> = Role::ALL
                .iter()
                .filter(|r| r.fields().contains(&field))
                .map(|r| r.name())
                .collect();
            assert_eq!(
                err(&json),
                format!(
                    "field `{field}`: not used by role {} (only by {})",
                    role.name(),
                    users.join(", ")
                ),
                "{json}"
            );
        }
    }

    /// Secure by default: a server role with no `auth` does not load; `"none"` must be said.
    #[test]
    fn server_roles_require_auth_or_an_explicit_none() {
        for role in ["server", "server_guard", "tunnel_server"] {
            let e = err(&format!(r#"{{"role":"{role}"}}"#));
            assert!(
                e.starts_with("field `auth`: required for the server roles"),
                "{role}: {e}"
            );
            let e = err(&format!(r#"{{"role":"{role}","auth":null}}"#));
            assert!(
                e.contains("field `auth`") && e.contains("\"none\""),
                "{role}: {e}"
            );
            let e = err(&format!(r#"{{"role":"{role}","auth":"off"}}"#));
            assert!(e.contains("field `auth`"), "{role}: {e}");
            let c =
                Config::parse(format!(r#"{{"role":"{role}","auth":"none"}}"#).as_bytes()).unwrap();
            assert_eq!(c.auth(), None);
            let c = Config::parse(
                format!(r#"{{"role":"{role}","auth":{{"shared_secrets":["0123456789abcdef"]}}}}"#)
                    .as_bytes(),
            )
            .unwrap();
            assert!(c.auth().is_some());
        }
        // An agent may leave it out (it then sends no secret); http1_status has no use for it.
        assert_eq!(agent(r#"{"role":"agent"}"#).auth, None);
        assert_eq!(agent(r#"{"role":"agent","auth":"none"}"#).auth, None);
        let e = err(r#"{"role":"http1_status","auth":"none"}"#);
        assert!(
            e.starts_with("field `auth`: not used by role http1_status"),
            "{e}"
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err(r#"{"role":"agent","flush_interval":5}"#);
        assert!(
            e.starts_with(
                "field `flush_interval`: unknown field `flush_interval`, expected one of `role`, "
            ),
            "{e}"
        );
        for role in Role::ALL {
            let base = minimal(role);
            let json = format!("{},\"nope\":1}}", base.strip_suffix('}').unwrap());
            let e = err(&json);
            assert!(
                e.starts_with("field `nope`: unknown field `nope`"),
                "{json}: {e}"
            );
        }
    }

    #[test]
    fn bad_role_names_the_field() {
        let e = err(r#"{"role":"proxy"}"#);
        assert!(e.contains("`role`") && e.contains("proxy"), "{e}");
        let e = err(r#"{"role":7}"#);
        assert!(e.starts_with("field `role`: "), "{e}");
        // Whatever else the object holds, the role is judged first.
        let e = err(r#"{"max_message_bytes":"big","role":"proxy"}"#);
        assert!(
            e.starts_with("field `role`: unknown variant `proxy`"),
            "{e}"
        );
    }

    #[test]
    fn missing_role_and_empty_config_are_rejected() {
        assert!(err("{}").starts_with("missing field `role`"));
        assert!(err(r#"{"max_message_bytes":1024}"#).starts_with("missing field `role`"));
        assert!(err("").starts_with("empty"));
        assert!(Config::parse(b"not json").is_err());
        assert!(err("[1]").starts_with("invalid type: sequence"));
        assert_eq!(
            Config::parse(b"\xff").unwrap_err().0,
            "not valid UTF-8".to_string()
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        for (json, field) in [
            (
                r#"{"role":"agent","max_message_bytes":"big"}"#,
                "max_message_bytes",
            ),
            (
                r#"{"role":"server","auth":"none","max_held_bytes":-1}"#,
                "max_held_bytes",
            ),
            (r#"{"role":"tunnel_client","tunnel_host":5}"#, "tunnel_host"),
            (
                r#"{"role":"tunnel_server","auth":"none","tunnel_headers":{"a":1}}"#,
                "tunnel_headers.a",
            ),
        ] {
            let e = err(json);
            assert!(e.starts_with(&format!("field `{field}`: ")), "{json}: {e}");
        }
    }

    #[test]
    fn duplicate_field_is_named() {
        let e = err(r#"{"role":"agent","marker_header":"a","marker_header":"b"}"#);
        assert!(e.contains("duplicate field `marker_header`"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        for (json, field) in [
            (
                r#"{"role":"server","auth":"none","flush_interval_ms":0}"#,
                "flush_interval_ms",
            ),
            (
                r#"{"role":"server","auth":"none","flush_interval_ms":1001}"#,
                "flush_interval_ms",
            ),
            (
                r#"{"role":"agent","max_message_bytes":0}"#,
                "max_message_bytes",
            ),
            (
                r#"{"role":"server","auth":"none","max_message_bytes":1073741825}"#,
                "max_message_bytes",
            ),
            (
                r#"{"role":"agent","max_trailer_bytes":10}"#,
                "max_trailer_bytes",
            ),
            (
                r#"{"role":"server","auth":"none","max_trailer_bytes":1048577}"#,
                "max_trailer_bytes",
            ),
            (
                r#"{"role":"server","auth":"none","max_held_bytes":1023}"#,
                "max_held_bytes",
            ),
            (
                r#"{"role":"agent","marker_header":"X-Upper"}"#,
                "marker_header",
            ),
            (
                r#"{"role":"server","auth":"none","marker_header":""}"#,
                "marker_header",
            ),
            (
                r#"{"role":"server_guard","auth":"none","marker_header":":path"}"#,
                "marker_header",
            ),
            (
                r#"{"role":"agent","error_body_quote_bytes":4097}"#,
                "error_body_quote_bytes",
            ),
            (
                r#"{"role":"server","auth":"none","http1_hold_bytes":10}"#,
                "http1_hold_bytes",
            ),
            (
                r#"{"role":"server","auth":"none","http1_hold_ms":50}"#,
                "http1_hold_ms",
            ),
            (r#"{"role":"tunnel_client"}"#, "tunnel_host"),
            (
                r#"{"role":"tunnel_client","tunnel_host":"a b"}"#,
                "tunnel_host",
            ),
            (
                r#"{"role":"tunnel_client","tunnel_host":""}"#,
                "tunnel_host",
            ),
            (
                r#"{"role":"tunnel_client","tunnel_host":"h","tunnel_path":"t"}"#,
                "tunnel_path",
            ),
            (
                r#"{"role":"tunnel_server","auth":"none","tunnel_path":"/a b"}"#,
                "tunnel_path",
            ),
            (
                r#"{"role":"tunnel_server","auth":"none","tunnel_protocol":"a/b"}"#,
                "tunnel_protocol",
            ),
            (
                r#"{"role":"tunnel_client","tunnel_host":"h","tunnel_headers":{"a b":"x"}}"#,
                "tunnel_headers",
            ),
            (
                r#"{"role":"tunnel_server","auth":"none","tunnel_headers":{"a":"x\ny"}}"#,
                "tunnel_headers",
            ),
            (
                r#"{"role":"tunnel_client","tunnel_host":"h","max_frame_bytes":1023}"#,
                "max_frame_bytes",
            ),
            (
                r#"{"role":"tunnel_server","auth":"none","max_frame_bytes":67108865}"#,
                "max_frame_bytes",
            ),
            (
                r#"{"role":"tunnel_client","tunnel_host":"h","ping_interval_ms":99}"#,
                "ping_interval_ms",
            ),
        ] {
            let e = err(json);
            assert!(e.starts_with(&format!("field `{field}`: ")), "{json}: {e}");
        }
        // The edges of the ranges load.
        for json in [
            r#"{"role":"server","auth":"none","http1_hold_bytes":0,"http1_hold_ms":0,"flush_interval_ms":1000,"max_held_bytes":1024}"#,
            r#"{"role":"agent","error_body_quote_bytes":0,"max_trailer_bytes":64,"max_message_bytes":1}"#,
            r#"{"role":"tunnel_client","tunnel_host":"h","ping_interval_ms":0,"max_frame_bytes":1024}"#,
            r#"{"role":"tunnel_client","tunnel_host":"h","ping_interval_ms":100}"#,
        ] {
            Config::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
        }
    }

    /// What serde's derive accepts for `role`, from its own "expected one of" list.
    fn serde_fields(role: Role) -> Vec<String> {
        let json = format!(r#"{{"role":"{}","__probe__":1}}"#, role.name());
        let e = Config::parse(json.as_bytes()).unwrap_err();
        let Some(expected) = e.0.split("expected one of").nth(1) else {
            // serde says "there are no fields" of a struct with one field only.
            assert!(e.0.contains("expected `role`"), "{e}");
            return Vec::new();
        };
        let fields: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect();
        assert_eq!(fields.first().map(String::as_str), Some("role"), "{e}");
        fields.into_iter().skip(1).collect()
    }

    /// `Role::fields` (which the foreign-field check uses) is what each struct deserializes.
    #[test]
    fn role_fields_are_the_fields_of_each_struct() {
        for role in Role::ALL {
            assert_eq!(serde_fields(role), role.fields(), "{role:?}");
        }
    }

    /// The config reference can't drift: every field serde knows is in docs/CONFIG.md, whose
    /// `roles` column lists exactly the roles that accept it.
    #[test]
    fn every_field_is_documented() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFIG.md"))
                .unwrap();
        let roles_cell = |field: &str| -> String {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{field}` |")))
                .unwrap_or_else(|| panic!("docs/CONFIG.md lacks a row for `{field}`"));
            row.split('|').nth(2).unwrap_or_default().to_string()
        };
        let mut all = std::collections::BTreeSet::new();
        for role in Role::ALL {
            all.extend(serde_fields(role));
        }
        assert!(all.len() >= 15, "{all:?}");
        for field in &all {
            let cell = roles_cell(field);
            let documented: Vec<&str> = cell
                .split(',')
                .map(|r| r.trim().trim_matches('`'))
                .filter(|r| !r.is_empty())
                .collect();
            let accepted: Vec<&str> = Role::ALL
                .iter()
                .filter(|r| r.fields().contains(&field.as_str()))
                .map(|r| r.name())
                .collect();
            assert_eq!(documented, accepted, "docs/CONFIG.md, roles of `{field}`");
        }
        assert!(roles_cell("role").contains("all"));
        // The summary table, one row per role, says the same.
        for role in Role::ALL {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` | ", role.name())))
                .unwrap_or_else(|| panic!("docs/CONFIG.md lacks a row for role `{role:?}`"));
            let listed: Vec<&str> = row
                .split('|')
                .nth(2)
                .unwrap_or_default()
                .split(',')
                .map(|f| f.trim().trim_end_matches(" (required)").trim_matches('`'))
                .filter(|f| !f.is_empty() && *f != "none")
                .collect();
            assert_eq!(
                listed,
                role.fields(),
                "docs/CONFIG.md, fields of role {role:?}"
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
            r#"{"role":"server_guard","auth":{"shared_secrets":["0123456789abcdef"],"require_for_unmarked":true}}"#,
            r#"{"role":"tunnel_server","auth":{"shared_secrets":["0123456789abcdef"],"secret_header":"x-k"}}"#,
            // The tunnel roles have no marker header for the secret header to collide with.
            r#"{"role":"tunnel_server","auth":{"shared_secrets":["0123456789abcdef"],"secret_header":"x-grpc-bridge"}}"#,
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
                r#"{"role":"tunnel_client","tunnel_host":"h","auth":{}}"#,
                "auth.secret",
            ),
            (
                r#"{"role":"agent","auth":{"secret":"0123456789abcdef","shared_secrets":["0123456789abcdef"]}}"#,
                "auth.shared_secrets",
            ),
            (
                r#"{"role":"tunnel_client","tunnel_host":"h","auth":{"secret":"0123456789abcdef","require_client_certificate":true}}"#,
                "auth.require_client_certificate",
            ),
            (
                r#"{"role":"agent","auth":{"secret":"0123456789abcdef","secret_header":"x-grpc-bridge"}}"#,
                "auth.secret_header",
            ),
            (r#"{"role":"server","auth":{}}"#, "auth.shared_secrets"),
            (
                r#"{"role":"server","auth":{"shared_secrets":["has a space in it!!"]}}"#,
                "auth.shared_secrets",
            ),
            (
                r#"{"role":"server","auth":{"shared_secrets":["0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef","0123456789abcdef"]}}"#,
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
                r#"{"role":"server","auth":{"require_client_certificate":true,"allowed_subjects":[""]}}"#,
                "auth.allowed_subjects",
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
                r#"{"role":"server_guard","auth":{"shared_secrets":["0123456789abcdef"],"secret_header":"x-m"},"marker_header":"x-m"}"#,
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
            let e = err(j);
            assert!(e.contains(field), "{j}: {e}");
            assert!(
                !e.contains("0123456789abcdef"),
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
        let c = Config::parse(br#"{"role":"agent","auth":{"secret":"0123456789abcdef"}}"#).unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    /// The config fuzz target's seeds (written by fuzz/examples/gen_seeds.rs) follow the
    /// schema: a seed named after a role loads as that role, the others are refused.
    #[test]
    fn config_fuzz_seeds_are_what_their_names_say() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/config");
        let mut roles = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let seed = std::fs::read(&path).unwrap();
            // `seed-NN-<what>`
            let what = name.splitn(3, '-').nth(2).unwrap_or_default();
            let named = Role::ALL
                .into_iter()
                .find(|r| r.name().replace('_', "-") == what);
            match (named, Config::parse(&seed)) {
                (Some(role), Ok(c)) => {
                    assert_eq!(c.role(), role, "{name}");
                    roles.push(role);
                }
                (Some(_), Err(e)) => panic!("{name} is refused: {e}"),
                (None, Ok(c)) => panic!("{name} is accepted: {c:?}"),
                (None, Err(_)) => {}
            }
        }
        assert_eq!(roles.len(), Role::ALL.len(), "one seed per role: {roles:?}");
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
}
