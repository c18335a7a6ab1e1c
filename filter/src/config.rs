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
    /// Header that marks a request converted by an agent (lowercase).
    #[serde(default = "defaults::marker_header")]
    pub marker_header: String,
    /// Agent role: how many bytes of a non-gRPC error body are quoted in `grpc-message`.
    #[serde(default = "defaults::error_body_quote_bytes")]
    pub error_body_quote_bytes: u32,
}

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
    pub fn max_held_bytes() -> u32 {
        256 * 1024
    }
    pub fn marker_header() -> String {
        "x-grpc-bridge".to_string()
    }
    pub fn error_body_quote_bytes() -> u32 {
        256
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
            return Err(ConfigError("empty; expected a JSON object such as {\"role\": \"agent\"}".into()));
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
        let m = &self.marker_header;
        if m.is_empty()
            || m.starts_with(':')
            || !m.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return bad("marker_header", "must be a lowercase header name (a-z, 0-9, '-', '_')");
        }
        if self.error_body_quote_bytes > 4096 {
            return bad("error_body_quote_bytes", "must be at most 4096");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(br#"{"role":"server"}"#).unwrap();
        assert_eq!(c.role, Role::Server);
        assert_eq!(c.max_message_bytes, 16 * 1024 * 1024);
        assert_eq!(c.flush_interval_ms, 5);
        assert_eq!(c.marker_header, "x-grpc-bridge");
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
            (r#"{"role":"agent","flush_interval_ms":0}"#, "flush_interval_ms"),
            (r#"{"role":"agent","max_message_bytes":0}"#, "max_message_bytes"),
            (r#"{"role":"agent","max_trailer_bytes":10}"#, "max_trailer_bytes"),
            (r#"{"role":"agent","marker_header":"X-Upper"}"#, "marker_header"),
        ] {
            let e = Config::parse(json.as_bytes()).unwrap_err();
            assert!(e.0.contains(field), "{json}: {e}");
        }
    }

    /// The config reference can't drift: every field serde knows must be in docs/CONFIG.md.
    #[test]
    fn every_field_is_documented() {
        let e = Config::parse(br#"{"role":"agent","__probe__":1}"#).unwrap_err();
        let expected = e.0.split("expected one of").nth(1).expect("serde lists the fields");
        let fields: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        assert!(fields.len() >= 7, "{fields:?}");
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFIG.md")).unwrap();
        for f in fields {
            assert!(doc.contains(&format!("| `{f}` |")), "docs/CONFIG.md lacks a row for `{f}`");
        }
    }

    #[test]
    fn missing_role_and_empty_config_are_rejected() {
        assert!(Config::parse(b"{}").unwrap_err().0.contains("role"));
        assert!(Config::parse(b"").is_err());
        assert!(Config::parse(b"not json").is_err());
    }
}
