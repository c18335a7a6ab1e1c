//! A proxy on the gRPC-web (POST) path that wants credentials, in real Envoy 1.40: an
//! intercepting nginx (`tests/nginx/proxy-auth.conf`) answers 407 with an HTML page to every
//! request without the right `Proxy-Authorization`.
//! - Without credentials the agent ends the call UNAUTHENTICATED, quoting the proxy's page, and
//!   the backend never sees it.
//! - With `PROXY_AUTHORIZATION` set on the agent (`envoy/agent.yaml` adds the header) the call
//!   passes.
//!   (The CONNECT path's 407 is in `e2e_tls_proxy.rs`.)

use grpc_bridge_tests::cases::connect;
use grpc_bridge_tests::pb::UnaryRequest;
use grpc_bridge_tests::topology::Topology;
use grpc_bridge_tests::util::rt;

const HOP: &str = "../tests/nginx/proxy-auth.conf";
const CREDENTIALS: &str = "Basic YWdlbnQ6czNjcmV0"; // agent:s3cret, the template's default

fn unary(topo: &Topology, token: &str) -> Result<Vec<u8>, tonic::Status> {
    rt().block_on(async {
        let mut c = connect(topo.client_addr)
            .await
            .expect("connect to the agent");
        c.unary(UnaryRequest {
            payload: b"through the proxy".to_vec(),
            token: token.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().payload)
    })
}

#[test]
fn a_407_on_the_post_path_is_unauthenticated_with_the_proxys_page() {
    let topo = Topology::builder()
        .hop_template(HOP)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let e = unary(&topo, "proxy-auth:none").expect_err("the proxy refuses the call");
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::Unauthenticated,
            "grpc-bridge: upstream answered HTTP 407 (text/html) instead of gRPC-web: \
             <html><body><h1>407 Proxy Authentication Required</h1><p>corp-proxy: log in first</p></body></html>"
        ),
        "{}",
        topo.logs(30)
    );
    assert!(
        topo.backend.call("proxy-auth:none").is_none(),
        "the refused call reached the backend"
    );
}

#[test]
fn configured_proxy_credentials_pass_the_post_path() {
    let topo = Topology::builder()
        .hop_template(HOP)
        .agent_var("PROXY_AUTHORIZATION", CREDENTIALS)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let payload =
        unary(&topo, "proxy-auth:right").unwrap_or_else(|e| panic!("{e:?}\n{}", topo.logs(30)));
    assert_eq!(payload, b"through the proxy");
    let seen = topo
        .backend
        .call("proxy-auth:right")
        .expect("the backend recorded the call");
    assert!(
        !seen
            .request_metadata
            .iter()
            .any(|(k, _)| k == "proxy-authorization"),
        "the proxy's credentials went past the proxy: {:?}",
        seen.request_metadata
    );
}
