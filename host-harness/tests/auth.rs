//! The real filter's authentication of bridged traffic, scripted with the scenario API: a
//! shared secret, and a client certificate modelled by Envoy's connection properties
//! (`connection.mtls` one byte, `connection.uri_san_peer_certificate` a string), given as
//! plugin properties (docs/HARNESS.md). Real Envoy: `tests/tests/auth.rs`, `tests/tests/hostile.rs`.

mod common;

use host_harness::{Frame, PluginOptions, Scenario, HEADERS_NEVER_UPSTREAM};

const SECRET: &str = "harness-secret-0123456789";

fn server(auth: &str, props: &[(&str, &[u8])]) -> Scenario {
    let mut o = PluginOptions::from_file(common::grpc_bridge_wasm())
        .plugin_config(format!(r#"{{"role":"server","auth":{auth}}}"#));
    for (k, v) in props {
        o = o.property(k, v.to_vec());
    }
    Scenario::new(o).unwrap_or_else(|e| panic!("loading grpc_bridge.wasm: {e}"))
}

fn request(s: &mut Scenario, extra: &[(&str, &str)]) {
    let mut h = vec![
        (":method", "POST"),
        (":path", "/pkg.Svc/Call"),
        (":authority", "backend"),
        ("content-type", "application/grpc-web+proto"),
    ];
    h.extend_from_slice(extra);
    s.request_headers(&h, false)
        .request_body(&[0, 0, 0, 0, 0], true);
}

/// `Some(grpc-status, grpc-message)` of a local reply, `None` if the request went upstream
/// (then the headers the upstream got are checked for leaks).
fn outcome(s: &mut Scenario) -> Option<(String, String)> {
    if let Some(r) = s.local_reply() {
        let get = |k: &str| r.headers.get(k).unwrap_or_default().to_string();
        return Some((get("grpc-status"), get("grpc-message")));
    }
    let up = s.take_upstream();
    let Some(Frame::Headers { headers, .. }) = up.first() else {
        panic!("nothing upstream: {up:?}")
    };
    for leak in HEADERS_NEVER_UPSTREAM {
        assert!(
            headers.get(leak).is_none(),
            "{leak} reached the backend: {headers:?}"
        );
    }
    None
}

/// Extra request headers and the expected refusal (`grpc-message` substring) or `None`.
type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

#[test]
fn shared_secret_is_required_of_marked_requests_only() {
    let auth = format!(r#"{{"shared_secrets":["{SECRET}","another-secret-0000000"]}}"#);
    let cases: &[Case] = &[
        (
            &[
                ("x-grpc-bridge", "agent"),
                ("x-grpc-bridge-auth", SECRET),
                ("keep-alive", "1"),
            ],
            None,
        ),
        (
            &[
                ("x-grpc-bridge", "agent"),
                ("x-grpc-bridge-auth", "another-secret-0000000"),
            ],
            None,
        ),
        (&[("x-grpc-bridge", "agent")], Some("no credentials")),
        (
            &[
                ("x-grpc-bridge", "agent"),
                ("x-grpc-bridge-auth", "harness-secret-012345678"),
            ],
            Some("invalid credentials"),
        ),
        (
            &[("x-grpc-bridge", "agent"), ("x-grpc-bridge-auth", "")],
            Some("no credentials"),
        ),
        // A browser (no marker) is served; a stray secret header does not reach the backend.
        (&[("x-grpc-bridge-auth", "whatever")], None),
        (&[], None),
    ];
    for (extra, want) in cases {
        let mut s = server(&auth, &[]);
        request(&mut s, extra);
        match (outcome(&mut s), want) {
            (None, None) => {}
            (Some((code, msg)), Some(sub)) if code == "16" && msg.contains(sub) => {}
            (got, _) => panic!("{extra:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn require_for_unmarked_refuses_browsers_without_credentials() {
    let mut s = server(
        &format!(r#"{{"shared_secrets":["{SECRET}"],"require_for_unmarked":true}}"#),
        &[],
    );
    request(&mut s, &[]);
    let (code, msg) = outcome(&mut s).expect("refused");
    assert_eq!(code, "16", "{msg}");
}

#[test]
fn client_certificate_from_the_connection_properties() {
    let auth = r#"{"require_client_certificate":true,"allowed_uri_sans":["spiffe://corp/agent"]}"#;
    let marked: &[(&str, &str)] = &[("x-grpc-bridge", "agent")];
    // Plaintext connection: Envoy has no peer certificate properties.
    let mut s = server(auth, &[]);
    request(&mut s, marked);
    assert_eq!(
        outcome(&mut s).map(|o| o.1),
        Some(
            "grpc-bridge: bridged request not authenticated: no verified client certificate".into()
        )
    );
    // A TLS connection: `connection.mtls` (whether the client sent a verified certificate)
    // and the certificate's URI SAN.
    let over_tls = |mtls: u8, uri_san: &[u8]| {
        let mut s = server(
            auth,
            &[
                ("connection.mtls", &[mtls]),
                ("connection.uri_san_peer_certificate", uri_san),
            ],
        );
        request(&mut s, marked);
        outcome(&mut s)
    };
    // mTLS with an allowed URI SAN.
    assert_eq!(over_tls(1, b"spiffe://corp/agent"), None);
    // mTLS, another identity.
    assert!(over_tls(1, b"spiffe://corp/intruder")
        .is_some_and(|(c, m)| c == "16" && m.contains("not allowed")));
    // `connection.mtls` false (a TLS connection without a client certificate).
    assert!(over_tls(0, b"spiffe://corp/agent").is_some_and(|(c, _)| c == "16"));
}

/// The tunnel server refuses an upgrade without the secret (401) before any client byte reaches
/// the backend, then closes the connection at its next tick; with the secret it answers 101.
#[test]
fn tunnel_server_checks_the_secret_on_the_upgrade_and_closes_after_refusing() {
    use host_harness::{ConnectionScenario, NetFrame};
    let opts = || {
        PluginOptions::from_file(common::grpc_bridge_wasm()).plugin_config(format!(
            r#"{{"role":"tunnel_server","auth":{{"shared_secrets":["{SECRET}"]}}}}"#
        ))
    };
    let head = |secret: Option<&str>| {
        let mut h = String::from(
            "GET /grpc-bridge/tunnel HTTP/1.1\r\nhost: b\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\
             sec-websocket-protocol: grpc-bridge.tunnel.v1\r\n",
        );
        if let Some(s) = secret {
            h.push_str(&format!("x-grpc-bridge-auth: {s}\r\n"));
        }
        h.push_str("\r\n");
        h.into_bytes()
    };
    let bytes = |frames: Vec<NetFrame>| -> Vec<u8> {
        frames
            .into_iter()
            .flat_map(|f| match f {
                NetFrame::Data { bytes, .. } => bytes,
                NetFrame::Close => Vec::new(),
            })
            .collect()
    };
    // HTTP/2 SETTINGS from the backend (empty), which carries the answer out.
    let backend_settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];

    let mut c = ConnectionScenario::new(opts()).expect("load");
    c.downstream_data(&head(None), false);
    let up = bytes(c.take_upstream());
    assert!(
        !up.windows(4).any(|w| w == b"GET "),
        "the refused upgrade reached the backend"
    );
    c.upstream_data(&backend_settings, false);
    let down = String::from_utf8_lossy(&bytes(c.take_downstream())).into_owned();
    assert!(down.starts_with("HTTP/1.1 401"), "{down:?}");
    assert!(!c.is_closed(), "closed before the answer went out");
    c.advance_ms(250);
    assert!(c.is_closed(), "a refused tunnel stays open");

    let mut c = ConnectionScenario::new(opts()).expect("load");
    c.downstream_data(&head(Some(SECRET)), false);
    c.upstream_data(&backend_settings, false);
    let down = String::from_utf8_lossy(&bytes(c.take_downstream())).into_owned();
    assert!(down.starts_with("HTTP/1.1 101"), "{down:?}");
    c.advance_ms(250);
    assert!(!c.is_closed());
}
