//! Authentication of bridged traffic (server and tunnel_server roles): a shared secret in a
//! header, compared in constant time against every configured secret, and/or a client
//! certificate verified by Envoy's TLS, read from the connection properties.
//!
//! The decisions (`required`, `verify`) are pure; `PeerCertificate::from_host` reads Envoy's
//! properties (and `from_properties`, also pure, interprets them):
//! `connection.mtls` (bool: 1 byte), `connection.uri_san_peer_certificate`,
//! `connection.dns_san_peer_certificate` (the first SAN of each kind) and
//! `connection.subject_peer_certificate` (RFC 2253). Envoy sets `connection.mtls` only when a
//! peer certificate was presented; the listener must also *verify* it (a `validation_context`
//! with `trusted_ca`, `require_client_certificate: true`), which is what the sample configs do.

use crate::codec::sha1::sha1;
use crate::config::AuthConfig;
use crate::host;

/// What the downstream connection proved with TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    pub mtls: bool,
    pub uri_san: Option<String>,
    pub dns_san: Option<String>,
    pub subject: Option<String>,
}

impl PeerCertificate {
    /// What `verify` needs of the connection under `cfg`: the properties are read only when the
    /// configuration looks at the certificate (each property read is a CEL evaluation in Envoy,
    /// several microseconds; a secret-only configuration needs none).
    pub fn for_config(cfg: &AuthConfig) -> PeerCertificate {
        if cfg.require_client_certificate {
            PeerCertificate::from_host()
        } else {
            PeerCertificate::default()
        }
    }

    /// Reads the connection properties. A property the host does not have (a plaintext
    /// connection, an older host) counts as absent; an error reading one counts as no mTLS.
    pub fn from_host() -> PeerCertificate {
        let get = |name: &str| host::get_property(&["connection", name]).ok().flatten();
        PeerCertificate::from_properties(
            get("mtls").as_deref(),
            get("uri_san_peer_certificate").as_deref(),
            get("dns_san_peer_certificate").as_deref(),
            get("subject_peer_certificate").as_deref(),
        )
    }

    /// The certificate from the raw property values (`None`: the host has no such property or
    /// could not read it). `mtls` is true when its first byte is non-zero. An identity that is
    /// empty or not UTF-8 counts as absent: it can match no allowed value (a lossy conversion
    /// could turn two different byte strings into the same text).
    pub fn from_properties(
        mtls: Option<&[u8]>,
        uri_san: Option<&[u8]>,
        dns_san: Option<&[u8]>,
        subject: Option<&[u8]>,
    ) -> PeerCertificate {
        let text = |v: Option<&[u8]>| -> Option<String> {
            let v = v.filter(|v| !v.is_empty())?;
            std::str::from_utf8(v).ok().map(str::to_owned)
        };
        PeerCertificate {
            mtls: mtls.and_then(|v| v.first()).is_some_and(|b| *b != 0),
            uri_san: text(uri_san),
            dns_san: text(dns_san),
            subject: text(subject),
        }
    }
}

/// Why a request was refused. The messages say what was missing, never what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No secret header (or an empty one).
    MissingSecret,
    /// A secret that matches none of the configured ones.
    WrongSecret,
    /// No verified client certificate on the connection.
    NoClientCertificate,
    /// A client certificate whose identity is not allowed.
    CertificateNotAllowed,
}

impl AuthFailure {
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::MissingSecret => {
                "grpc-bridge: bridged request not authenticated: no credentials"
            }
            AuthFailure::WrongSecret => {
                "grpc-bridge: bridged request not authenticated: invalid credentials"
            }
            AuthFailure::NoClientCertificate => {
                "grpc-bridge: bridged request not authenticated: no verified client certificate"
            }
            AuthFailure::CertificateNotAllowed => {
                "grpc-bridge: bridged request not authenticated: client certificate not allowed"
            }
        }
    }

    /// HTTP status for a refused WebSocket upgrade: 401 when nothing was presented, 403 when
    /// what was presented is not good enough.
    pub fn http_status(self) -> u16 {
        match self {
            AuthFailure::MissingSecret | AuthFailure::NoClientCertificate => 401,
            AuthFailure::WrongSecret | AuthFailure::CertificateNotAllowed => 403,
        }
    }

    /// Metric name suffix.
    pub fn kind(self) -> &'static str {
        match self {
            AuthFailure::MissingSecret => "missing_secret",
            AuthFailure::WrongSecret => "wrong_secret",
            AuthFailure::NoClientCertificate => "no_client_certificate",
            AuthFailure::CertificateNotAllowed => "certificate_not_allowed",
        }
    }
}

/// True if `presented` equals one of `secrets`. Both sides are hashed first, so the comparison
/// takes the same time whatever the lengths; every secret is compared (no early exit), so the
/// time does not reveal which one matched or how much of one did.
pub fn secret_matches(presented: &[u8], secrets: &[crate::config::Secret]) -> bool {
    let p = sha1(presented);
    let mut any = 0u8;
    for s in secrets {
        let d = sha1(s.0.as_bytes());
        let mut diff = 0u8;
        for (x, y) in p.iter().zip(d.iter()) {
            diff |= x ^ y;
        }
        // 1 when equal, without a branch on the secret's bytes.
        any |= ((u16::from(diff).wrapping_sub(1)) >> 8) as u8 & 1;
    }
    any == 1
}

/// Whether a request must authenticate under `cfg`: whatever claims to come from an agent
/// (`marked`), and gRPC-web without the claim (browsers) only when `require_for_unmarked`.
pub fn required(cfg: &AuthConfig, marked: bool, grpc_web: bool) -> bool {
    marked || (grpc_web && cfg.require_for_unmarked)
}

/// The decision: every configured requirement must hold.
pub fn verify(
    cfg: &AuthConfig,
    presented_secret: Option<&[u8]>,
    peer: &PeerCertificate,
) -> Result<(), AuthFailure> {
    if cfg.require_client_certificate {
        if !peer.mtls {
            return Err(AuthFailure::NoClientCertificate);
        }
        let allowed = |list: &[String], value: &Option<String>| {
            list.is_empty() || value.as_ref().is_some_and(|v| list.iter().any(|a| a == v))
        };
        if !(allowed(&cfg.allowed_uri_sans, &peer.uri_san)
            && allowed(&cfg.allowed_dns_sans, &peer.dns_san)
            && allowed(&cfg.allowed_subjects, &peer.subject))
        {
            return Err(AuthFailure::CertificateNotAllowed);
        }
    }
    if !cfg.shared_secrets.is_empty() {
        match presented_secret {
            None | Some([]) => return Err(AuthFailure::MissingSecret),
            Some(p) if !secret_matches(p, &cfg.shared_secrets) => {
                return Err(AuthFailure::WrongSecret)
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn auth(json: &str) -> AuthConfig {
        Config::parse(json.as_bytes())
            .unwrap()
            .auth()
            .unwrap()
            .clone()
    }

    const TWO: &str =
        r#"{"role":"server","auth":{"shared_secrets":["0123456789abcdef","new-secret-0000000"]}}"#;

    #[test]
    fn any_configured_secret_is_accepted() {
        let a = auth(TWO);
        let none = PeerCertificate::default();
        assert_eq!(verify(&a, Some(b"0123456789abcdef"), &none), Ok(()));
        assert_eq!(verify(&a, Some(b"new-secret-0000000"), &none), Ok(()));
    }

    #[test]
    fn missing_wrong_and_prefix_secrets_are_refused() {
        let a = auth(TWO);
        let none = PeerCertificate::default();
        assert_eq!(verify(&a, None, &none), Err(AuthFailure::MissingSecret));
        assert_eq!(
            verify(&a, Some(b""), &none),
            Err(AuthFailure::MissingSecret)
        );
        for bad in [
            &b"0123456789abcde"[..],
            b"0123456789abcdef0",
            b"0123456789abcdeF",
            b"x",
        ] {
            assert_eq!(
                verify(&a, Some(bad), &none),
                Err(AuthFailure::WrongSecret),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn secret_matches_needs_an_exact_match() {
        let s = |v: &str| crate::config::Secret(v.to_string());
        assert!(secret_matches(b"abc", &[s("zzz"), s("abc")]));
        assert!(!secret_matches(b"abc", &[]));
        assert!(!secret_matches(b"abcd", &[s("abc")]));
    }

    #[test]
    fn client_certificate_is_required_and_checked_against_the_lists() {
        let a = auth(
            r#"{"role":"server","auth":{"require_client_certificate":true,"allowed_uri_sans":["spiffe://corp/agent"]}}"#,
        );
        assert_eq!(
            verify(&a, None, &PeerCertificate::default()),
            Err(AuthFailure::NoClientCertificate)
        );
        let mut p = PeerCertificate {
            mtls: true,
            ..Default::default()
        };
        assert_eq!(
            verify(&a, None, &p),
            Err(AuthFailure::CertificateNotAllowed)
        );
        p.uri_san = Some("spiffe://corp/other".into());
        assert_eq!(
            verify(&a, None, &p),
            Err(AuthFailure::CertificateNotAllowed)
        );
        p.uri_san = Some("spiffe://corp/agent".into());
        assert_eq!(verify(&a, None, &p), Ok(()));
        // A certificate alone is enough when no secret is configured.
        let any = auth(r#"{"role":"server","auth":{"require_client_certificate":true}}"#);
        assert_eq!(
            verify(
                &any,
                None,
                &PeerCertificate {
                    mtls: true,
                    ..Default::default()
                }
            ),
            Ok(())
        );
    }

    #[test]
    fn both_factors_when_both_are_configured() {
        let a = auth(
            r#"{"role":"server","auth":{"require_client_certificate":true,"shared_secrets":["0123456789abcdef"]}}"#,
        );
        let cert = PeerCertificate {
            mtls: true,
            ..Default::default()
        };
        assert_eq!(
            verify(&a, Some(b"0123456789abcdef"), &PeerCertificate::default()),
            Err(AuthFailure::NoClientCertificate)
        );
        assert_eq!(verify(&a, None, &cert), Err(AuthFailure::MissingSecret));
        assert_eq!(verify(&a, Some(b"0123456789abcdef"), &cert), Ok(()));
    }

    #[test]
    fn certificate_properties_that_are_empty_or_not_utf8_are_absent() {
        let p = PeerCertificate::from_properties(
            Some(&[1]),
            Some(b"spiffe://corp/agent"),
            Some(&[0xff, 0xfe]),
            Some(b""),
        );
        assert!(p.mtls);
        assert_eq!(p.uri_san.as_deref(), Some("spiffe://corp/agent"));
        assert_eq!(p.dns_san, None);
        assert_eq!(p.subject, None);
        // "\u{FFFD}" is what a lossy conversion of 0xff would give: it must not match it.
        let a = auth(
            r#"{"role":"server","auth":{"require_client_certificate":true,"allowed_dns_sans":["\ufffd\ufffd"]}}"#,
        );
        assert_eq!(
            verify(&a, None, &p),
            Err(AuthFailure::CertificateNotAllowed)
        );
        for mtls in [None, Some(&[][..]), Some(&[0][..]), Some(&[0, 1][..])] {
            assert!(!PeerCertificate::from_properties(mtls, None, None, None).mtls);
        }
        assert!(PeerCertificate::from_properties(Some(&[2, 0]), None, None, None).mtls);
    }

    #[test]
    fn who_must_authenticate() {
        let mut a = auth(TWO);
        assert!(required(&a, true, false) && required(&a, true, true));
        assert!(!required(&a, false, true) && !required(&a, false, false));
        a.require_for_unmarked = true;
        assert!(required(&a, false, true) && !required(&a, false, false));
    }

    #[test]
    fn refusals_map_to_401_and_403_and_never_quote_a_secret() {
        for f in [
            AuthFailure::MissingSecret,
            AuthFailure::WrongSecret,
            AuthFailure::NoClientCertificate,
            AuthFailure::CertificateNotAllowed,
        ] {
            assert!(matches!(f.http_status(), 401 | 403));
            assert!(f
                .message()
                .starts_with("grpc-bridge: bridged request not authenticated"));
        }
    }
}
