//! Authentication of bridged traffic: `auth::required`, `auth::verify` (shared secrets and the
//! client certificate's identity), `auth::secret_matches`, `PeerCertificate::from_properties`
//! (raw connection properties), and the tunnel server's `tunnel_headers_match` with its
//! `constant_time_eq`, all checked against plain `==` reference code.
//!
//! Input: `flags: u8` (bit 0 `require_client_certificate`, bit 1 `require_for_unmarked`, bit 2
//! marked, bit 3 gRPC-web, bit 4 a secret header is presented, bits 5-7 how many secrets), then
//! fields, each a length byte (low 6 bits) and that many bytes, in this order: the secrets, three
//! allow lists (a count byte then the entries: URI SANs, DNS SANs, subjects), the presented
//! secret, the four raw properties (`mtls`, URI SAN, DNS SAN, subject; length 0x3F means the
//! property is missing), a "copy" byte (bit 0 presents secret `n`, bit 1..3 presents allowed
//! identities instead of the raw ones, with the high bits choosing which entries and whether one
//! byte is flipped), then tunnel headers: pairs of name and wanted value, then pairs presented.
//!
//! Invariants: no panic; `from_properties` gives `mtls` iff the first byte is non-zero and an
//! identity iff its bytes are non-empty UTF-8, exactly those bytes; `verify` equals a reference
//! decision (certificate checks before the secret, the same failure kind); it never accepts
//! without a presented secret `==` one configured (when secrets are configured) nor without mTLS
//! and identities `==` an allowed entry of every non-empty list (when a certificate is required);
//! `secret_matches` equals `any(==)`; `constant_time_eq` equals `==`; `required` is `marked ||
//! (grpc_web && require_for_unmarked)`; `tunnel_headers_match` equals its reference; refusals are
//! 401 for nothing presented and 403 otherwise, with a fixed message.
#![no_main]

use std::collections::BTreeMap;

use fuzz_common::Input;
use grpc_bridge::auth::{self, AuthFailure, PeerCertificate};
use grpc_bridge::config::{AuthConfig, Secret};
use grpc_bridge::tunnel::{constant_time_eq, tunnel_headers_match};
use libfuzzer_sys::fuzz_target;

const MISSING: u8 = 0x3F;

fn field<'a>(input: &mut Input<'a>) -> &'a [u8] {
    let n = usize::from(input.u8() & 0x3F);
    input.bytes(n)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn list(input: &mut Input) -> Vec<String> {
    let n = input.u8() % 4;
    (0..n).map(|_| text(field(input))).collect()
}

fn property<'a>(input: &mut Input<'a>) -> Option<&'a [u8]> {
    let len = input.u8() & 0x3F;
    (len != MISSING).then(|| input.bytes(usize::from(len)))
}

/// The reference identity: non-empty UTF-8, else absent.
fn identity(raw: Option<&[u8]>) -> Option<String> {
    let raw = raw?;
    if raw.is_empty() {
        return None;
    }
    std::str::from_utf8(raw).ok().map(String::from)
}

fn reference(
    cfg: &AuthConfig,
    presented: Option<&[u8]>,
    peer: &PeerCertificate,
) -> Result<(), AuthFailure> {
    if cfg.require_client_certificate {
        if !peer.mtls {
            return Err(AuthFailure::NoClientCertificate);
        }
        for (list, value) in [
            (&cfg.allowed_uri_sans, &peer.uri_san),
            (&cfg.allowed_dns_sans, &peer.dns_san),
            (&cfg.allowed_subjects, &peer.subject),
        ] {
            if list.is_empty() {
                continue;
            }
            let ok = match value {
                Some(v) => list.contains(v),
                None => false,
            };
            if !ok {
                return Err(AuthFailure::CertificateNotAllowed);
            }
        }
    }
    if !cfg.shared_secrets.is_empty() {
        let p = match presented {
            Some(p) if !p.is_empty() => p,
            _ => return Err(AuthFailure::MissingSecret),
        };
        if !cfg.shared_secrets.iter().any(|s| s.0.as_bytes() == p) {
            return Err(AuthFailure::WrongSecret);
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let n_secrets = usize::from(flags >> 5);
    let secrets: Vec<Secret> = (0..n_secrets)
        .map(|_| Secret(text(field(&mut input))))
        .collect();
    let uri_sans = list(&mut input);
    let dns_sans = list(&mut input);
    let subjects = list(&mut input);
    let mut presented: Vec<u8> = field(&mut input).to_vec();
    let mtls_raw = property(&mut input).map(<[u8]>::to_vec);
    let mut props: [Option<Vec<u8>>; 3] = [
        property(&mut input).map(<[u8]>::to_vec),
        property(&mut input).map(<[u8]>::to_vec),
        property(&mut input).map(<[u8]>::to_vec),
    ];
    let copy = input.u8();
    let pick = input.u8();
    // Copies of configured values, so acceptance is reached often; maybe one byte flipped.
    let flip = |mut v: Vec<u8>, on: bool| {
        if on {
            let at = usize::from(pick) % v.len().max(1);
            if let Some(b) = v.get_mut(at) {
                *b ^= 1 << (pick % 8);
            }
        }
        v
    };
    if copy & 1 != 0 && !secrets.is_empty() {
        let s = &secrets[usize::from(copy >> 4) % secrets.len()];
        presented = flip(s.0.as_bytes().to_vec(), copy & 0x80 != 0 && pick & 1 != 0);
    }
    for (i, l) in [&uri_sans, &dns_sans, &subjects].into_iter().enumerate() {
        if copy & (2 << i) != 0 && !l.is_empty() {
            let v = l[usize::from(pick >> (2 * i)) % l.len()]
                .as_bytes()
                .to_vec();
            props[i] = Some(flip(v, copy & 0x40 != 0 && pick & 2 != 0));
        }
    }

    let cfg = AuthConfig {
        secret: None,
        shared_secrets: secrets.clone(),
        secret_header: "x-grpc-bridge-secret".to_string(),
        require_client_certificate: flags & 1 != 0,
        allowed_uri_sans: uri_sans,
        allowed_dns_sans: dns_sans,
        allowed_subjects: subjects,
        require_for_unmarked: flags & 2 != 0,
    };
    let (marked, web) = (flags & 4 != 0, flags & 8 != 0);
    assert_eq!(
        auth::required(&cfg, marked, web),
        marked || (web && cfg.require_for_unmarked)
    );

    // Properties.
    let peer = PeerCertificate::from_properties(
        mtls_raw.as_deref(),
        props[0].as_deref(),
        props[1].as_deref(),
        props[2].as_deref(),
    );
    assert_eq!(
        peer.mtls,
        mtls_raw
            .as_ref()
            .and_then(|v| v.first())
            .is_some_and(|b| *b != 0)
    );
    assert_eq!(peer.uri_san, identity(props[0].as_deref()));
    assert_eq!(peer.dns_san, identity(props[1].as_deref()));
    assert_eq!(peer.subject, identity(props[2].as_deref()));

    // The decision.
    let presented = (flags & 0x10 != 0).then_some(presented.as_slice());
    let got = auth::verify(&cfg, presented, &peer);
    assert_eq!(
        got,
        reference(&cfg, presented, &peer),
        "verify vs reference"
    );
    if got.is_ok() {
        if !cfg.shared_secrets.is_empty() {
            let p = presented.expect("accepted without a secret");
            assert!(
                cfg.shared_secrets.iter().any(|s| s.0.as_bytes() == p),
                "accepted a secret that matches none"
            );
        }
        if cfg.require_client_certificate {
            assert!(peer.mtls, "accepted without mTLS");
            for (l, raw) in [
                (&cfg.allowed_uri_sans, &props[0]),
                (&cfg.allowed_dns_sans, &props[1]),
                (&cfg.allowed_subjects, &props[2]),
            ] {
                if !l.is_empty() {
                    let raw = raw.as_deref().expect("accepted without an identity");
                    assert!(
                        l.iter().any(|a| a.as_bytes() == raw),
                        "accepted an identity not allowed"
                    );
                }
            }
        }
    }
    if let Err(f) = got {
        let nothing = matches!(
            f,
            AuthFailure::MissingSecret | AuthFailure::NoClientCertificate
        );
        assert_eq!(f.http_status(), if nothing { 401 } else { 403 });
        // The message is a fixed text (`&'static str`): it cannot quote what was presented.
        assert!(f
            .message()
            .starts_with("grpc-bridge: bridged request not authenticated: "));
    }

    // The comparisons.
    let p = presented.unwrap_or(&[]);
    assert_eq!(
        auth::secret_matches(p, &cfg.shared_secrets),
        cfg.shared_secrets.iter().any(|s| s.0.as_bytes() == p)
    );
    for s in &cfg.shared_secrets {
        let s = s.0.as_bytes();
        assert_eq!(constant_time_eq(p, s), p == s);
        assert_eq!(constant_time_eq(s, s), true);
        if !s.is_empty() {
            assert!(!constant_time_eq(&s[..s.len() - 1], s));
        }
    }

    // Tunnel headers: configured pairs (any case), then presented pairs (lowercase names, as
    // the handshake parser gives them).
    let mut want = BTreeMap::new();
    for _ in 0..input.u8() % 4 {
        want.insert(text(field(&mut input)), text(field(&mut input)));
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for (k, v) in want.iter().filter(|_| copy & 0x10 != 0) {
        headers.push((k.to_ascii_lowercase(), v.clone()));
    }
    while !input.is_empty() {
        let k = text(field(&mut input)).to_ascii_lowercase();
        let v = text(field(&mut input));
        headers.push((k, v));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let reference_headers = want.iter().all(|(name, value)| {
        let got = find(&name.to_ascii_lowercase()).unwrap_or("");
        got.as_bytes() == value.as_bytes()
    });
    assert_eq!(tunnel_headers_match(&want, find), reference_headers);
});
