//! Authentication of bridged traffic in real Envoy 1.40 (`auth` in docs/CONFIG.md).
//!
//! - gRPC-web: agent Envoy (`AUTH={"secret":..}`) -> server Envoy (`AUTH={"shared_secrets":..}`)
//!   -> tonic backend: calls pass and the backend sees neither the marker nor the secret;
//!   an agent with a wrong secret gets UNAUTHENTICATED and nothing reaches the backend.
//! - WebSocket tunnel: the same with tunnel-client.yaml -> tunnel-server.yaml.
//! - mTLS: server-tls.yaml with a client CA; the filter reads Envoy's connection properties
//!   (curl as the TLS client, with and without a client certificate).
//!
//! Spoofed markers, missing/wrong/empty secrets on raw requests: `hostile.rs`.

use std::process::Command;
use std::time::Duration;

use grpc_bridge_tests::backend::Backend;
use grpc_bridge_tests::cases::connect;
use grpc_bridge_tests::certs::TestPki;
use grpc_bridge_tests::envoy::{built_wasm_path, Envoy};
use grpc_bridge_tests::grpcweb::{msg_frame, parse_frames, trailer_frame_status};
use grpc_bridge_tests::pb::*;
use grpc_bridge_tests::topology::{ServerSide, Topology, Transport};

const SECRET: &str = "auth-test-secret-0123456789";

fn agent_auth(secret: &str) -> String {
    format!(r#"{{"secret":"{secret}"}}"#)
}

fn server_auth() -> String {
    format!(r#"{{"shared_secrets":["old-secret-being-rotated-out","{SECRET}"]}}"#)
}

/// One unary call with a token; returns the status code and what the backend recorded.
async fn call(
    addr: std::net::SocketAddr,
    backend: &Backend,
    token: &str,
) -> (tonic::Code, Option<Vec<String>>) {
    let mut c = connect(addr).await.expect("connect");
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.unary(UnaryRequest {
            payload: b"auth".to_vec(),
            token: token.into(),
            ..Default::default()
        }),
    )
    .await
    .expect("answer within 10 s");
    let code = match &r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    let seen = backend.call(token).map(|rec| {
        rec.request_metadata
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    });
    (code, seen)
}

fn run(transport: Transport, server: ServerSide, label: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (secret, want) in [
        (SECRET, tonic::Code::Ok),
        ("a-wrong-secret-00000000000", tonic::Code::Unauthenticated),
    ] {
        let topo = Topology::builder()
            .transport(transport)
            .server(server)
            .hop(false)
            .server_var("AUTH", &server_auth())
            .agent_var("AUTH", &agent_auth(secret))
            .start()
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let token = format!("auth-{label}-{}", secret.len());
        let (code, seen) = rt.block_on(call(topo.client_addr, &topo.backend, &token));
        // The tunnel refuses the upgrade (403) and the tunnel client closes the client's
        // connection: tonic reports a transport error (UNKNOWN or UNAVAILABLE by timing).
        let ok = if transport == Transport::WebSocketTunnel && want != tonic::Code::Ok {
            matches!(code, tonic::Code::Unavailable | tonic::Code::Unknown)
        } else {
            code == want
        };
        assert!(
            ok,
            "{label} with secret {secret:?}: {code:?}, want {want:?}\n{}",
            topo.logs(30)
        );
        if transport == Transport::WebSocketTunnel && want != tonic::Code::Ok {
            let log = topo.server.process.log();
            assert!(
                log.contains("refusing upgrade: 403"),
                "{label}: the tunnel server did not refuse: {log}"
            );
        }
        match want {
            tonic::Code::Ok => {
                let seen = seen.expect("the backend recorded the call");
                for leak in ["x-grpc-bridge", "x-grpc-bridge-auth", "x-grpc-web"] {
                    assert!(
                        !seen.iter().any(|k| k == leak),
                        "{label}: the backend saw {leak}: {seen:?}"
                    );
                }
                println!("{label}: right secret: OK, backend saw {seen:?}");
            }
            _ => {
                assert!(
                    seen.is_none(),
                    "{label}: a refused call reached the backend"
                );
                println!("{label}: wrong secret: {code:?}, nothing reached the backend");
            }
        }
    }
}

#[test]
fn grpc_web_with_a_shared_secret() {
    run(Transport::GrpcWeb, ServerSide::Wasm, "grpc-web");
}

#[test]
fn tunnel_with_a_shared_secret() {
    run(Transport::WebSocketTunnel, ServerSide::Wasm, "tunnel");
}

/// The hybrid server (envoy/server-hybrid.yaml): Envoy's grpc_web converts, the wasm in role
/// server_guard refuses the wrong secret before anything reaches the backend.
#[test]
fn hybrid_server_with_a_shared_secret() {
    run(
        Transport::GrpcWeb,
        ServerSide::Hybrid,
        "grpc-web, hybrid server",
    );
}

/// A client certificate and its key.
type CertFiles = (std::path::PathBuf, std::path::PathBuf);

/// (grpc-status, grpc-message) of a curl call to the TLS server.
fn curl(pki: &TestPki, port: u16, marked: bool, cert: Option<&CertFiles>) -> (String, String) {
    let dir = pki.dir();
    let body = dir.join("req.bin");
    std::fs::write(
        &body,
        msg_frame(&UnaryRequest {
            payload: b"tls".to_vec(),
            ..Default::default()
        }),
    )
    .unwrap();
    let out = dir.join("resp.bin");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "--http1.1", "-D", "-", "-o"])
        .arg(&out)
        .arg("--cacert")
        .arg(&pki.server_ca_cert)
        .args([
            "--resolve",
            &format!("{}:{port}:127.0.0.1", pki.server_name),
        ])
        .args([
            "-H",
            "content-type: application/grpc-web+proto",
            "-H",
            "x-grpc-web: 1",
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(format!(
            "https://{}:{port}/bridge.test.BridgeTest/Unary",
            pki.server_name
        ));
    if marked {
        cmd.args(["-H", "x-grpc-bridge: agent"]);
    }
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    let o = cmd.output().expect("run curl");
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let head = String::from_utf8_lossy(&o.stdout).into_owned();
    let h = |n: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.trim().to_string())
    };
    if let Some(s) = h("grpc-status") {
        return (s, h("grpc-message").unwrap_or_default());
    }
    let frames = parse_frames(&std::fs::read(&out).unwrap()).unwrap_or_default();
    trailer_frame_status(&frames)
}

/// The server role behind TLS that asks for client certificates signed by `pki`'s CA, in front
/// of `backend`, checking them by `auth` (the filter's `auth` JSON). Returns Envoy and the
/// bridge listener's port.
fn mtls_server(pki: &TestPki, backend: &Backend, auth: &str) -> (Envoy, u16) {
    let server = Envoy::start_local(
        "mtls-server",
        "server-tls.yaml",
        &[
            ("BACKEND_PORT", backend.addr.port().to_string()),
            ("TLS_CERT", pki.server_cert.display().to_string()),
            ("TLS_KEY", pki.server_key.display().to_string()),
            ("CLIENT_CA", pki.server_ca_cert.display().to_string()),
            ("AUTH", auth.into()),
        ],
    )
    .expect("server Envoy");
    let port = server
        .listener_addr("bridge_server")
        .expect("listener")
        .port();
    (server, port)
}

#[test]
fn mtls_client_certificate_checked_by_the_server_role() {
    built_wasm_path();
    let pki = TestPki::generate("grpc-bridge.test").expect("pki");
    let good = pki
        .client_cert("agent-1", "spiffe://grpc-bridge.test/agent")
        .expect("client cert");
    let other = pki
        .client_cert("intruder", "spiffe://grpc-bridge.test/intruder")
        .expect("client cert");
    let backend = Backend::spawn();
    let (server, port) = mtls_server(
        &pki,
        &backend,
        r#"{"require_client_certificate":true,"allowed_uri_sans":["spiffe://grpc-bridge.test/agent"]}"#,
    );
    let cases: [(&str, bool, Option<&CertFiles>, &str, &str); 4] = [
        ("agent with its certificate", true, Some(&good), "0", ""),
        (
            "agent without a certificate",
            true,
            None,
            "16",
            "grpc-bridge: bridged request not authenticated: no verified client certificate",
        ),
        (
            "agent with another identity",
            true,
            Some(&other),
            "16",
            "grpc-bridge: bridged request not authenticated: client certificate not allowed",
        ),
        (
            "browser (no marker) without a certificate",
            false,
            None,
            "0",
            "",
        ),
    ];
    for (what, marked, cert, code, msg) in cases {
        let (c, m) = curl(&pki, port, marked, cert);
        assert!(
            c == code && m == msg,
            "{what}: grpc-status {c:?} {m:?}, want {code} {msg:?}\n{}",
            server.log_tail(30)
        );
        println!("{what}: grpc-status {c} {m:?}");
    }
}

/// `allowed_dns_sans` and `allowed_subjects` together: the certificate's first DNS SAN and its
/// RFC 2253 subject (as Envoy gives them) must each be listed; each wrong on its own is refused.
#[test]
fn mtls_dns_san_and_subject_checked_by_the_server_role() {
    built_wasm_path();
    let pki = TestPki::generate("grpc-bridge.test").expect("pki");
    let cert = |name: &str, cn: &str, dns: &str| {
        pki.client_cert_named(name, cn, &format!("DNS:{dns}"))
            .expect("client cert")
    };
    let good = cert("good", "agent-1", "agent-1.corp.test");
    let wrong_dns = cert("wrong-dns", "agent-1", "intruder.corp.test");
    let wrong_subject = cert("wrong-subject", "agent-2", "agent-1.corp.test");
    let backend = Backend::spawn();
    let (server, port) = mtls_server(
        &pki,
        &backend,
        r#"{"require_client_certificate":true,"allowed_dns_sans":["agent-1.corp.test"],"allowed_subjects":["CN=agent-1"]}"#,
    );
    let not_allowed =
        "grpc-bridge: bridged request not authenticated: client certificate not allowed";
    let cases: [(&str, &CertFiles, &str, &str); 3] = [
        ("DNS SAN and subject allowed", &good, "0", ""),
        ("DNS SAN not allowed", &wrong_dns, "16", not_allowed),
        ("subject not allowed", &wrong_subject, "16", not_allowed),
    ];
    for (what, cert, code, msg) in cases {
        let (c, m) = curl(&pki, port, true, Some(cert));
        assert_eq!(
            (c.as_str(), m.as_str()),
            (code, msg),
            "{what}\n{}",
            server.log_tail(30)
        );
        println!("{what}: grpc-status {c} {m:?}");
    }
}
