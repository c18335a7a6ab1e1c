//! `envoy/agent-fallback.yaml`: native HTTP/2 while it works, gRPC-web over HTTP/1.1 when it
//! does not. The cases must pass either way, and Envoy's cluster stats show which path served.

use grpc_bridge_tests::cases::{report, run_suite, Outcome};
use grpc_bridge_tests::envoy::Envoy;
use grpc_bridge_tests::topology::{NativePath, Topology};
use grpc_bridge_tests::util::rt;

fn rq(e: &Envoy, cluster: &str) -> u64 {
    e.stat(&format!("cluster.{cluster}.upstream_rq_total"))
        .unwrap_or(0)
}

fn run(native: NativePath) -> (Topology, Vec<Outcome>) {
    let mut builder = Topology::builder().fallback(native);
    if native == NativePath::Direct {
        // On a loaded machine the very first HTTP/2 probe can time out; with the default 30 s
        // re-probe interval every call would then take the bridged path. Probe every second
        // and start once the native path is healthy (what the test is about).
        builder = builder.agent_var("REPROBE_INTERVAL", "1s");
    }
    let topo = builder.start().unwrap_or_else(|e| panic!("{e}"));
    if native == NativePath::Direct {
        let a = topo.agent.as_ref().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while a.stat("cluster.native.membership_healthy") != Some(1) {
            assert!(
                std::time::Instant::now() < deadline,
                "the native path never became healthy:\n{}",
                a.stats_matching("cluster.native.health_check")
            );
            // Poll interval of a wait on the stat itself, with a deadline.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let rt = rt();
    let outcomes = rt.block_on(run_suite(topo.client_addr));
    (topo, outcomes)
}

fn check(
    label: &str,
    outcomes: &[Outcome],
    topo: &mut Topology,
    path_check: Result<String, String>,
) {
    let (text, failed) = report(outcomes);
    if failed > 0 || path_check.is_err() {
        let alive = topo
            .check_alive()
            .err()
            .unwrap_or_else(|| "all processes still running".into());
        let stats = topo
            .agent
            .as_ref()
            .map(|a| a.stats_matching("upstream_rq_total"))
            .unwrap_or_default();
        panic!(
            "{label}: {failed} case(s) failed; path check: {path_check:?}\npath: {}\n{text}\n{alive}\n--- agent upstream_rq_total ---\n{stats}\n{}",
            topo.path,
            topo.logs(60)
        );
    }
    println!(
        "{label}\npath: {}\n{text}{}",
        topo.path,
        path_check.unwrap()
    );
}

#[test]
fn fallback_agent_uses_native_h2_when_it_works() {
    let (mut topo, outcomes) = run(NativePath::Direct);
    let a = topo.agent.as_ref().unwrap();
    let (native, bridged) = (rq(a, "native"), rq(a, "bridged_grpc_web"));
    let path_check = if native > 0 && bridged == 0 {
        Ok(format!("native served {native} requests, bridged none"))
    } else {
        Err(format!(
            "native {native} requests, bridged_grpc_web {bridged}"
        ))
    };
    check(
        "fallback agent, native path open",
        &outcomes,
        &mut topo,
        path_check,
    );
}

#[test]
fn fallback_agent_bridges_when_native_h2_is_blocked() {
    let (mut topo, outcomes) = run(NativePath::ThroughHttp11Hop);
    let a = topo.agent.as_ref().unwrap();
    let (native, bridged) = (rq(a, "native"), rq(a, "bridged_grpc_web"));
    let path_check = if bridged > 0 {
        Ok(format!(
            "bridged_grpc_web served {bridged} requests, native {native} (probe-marked down)"
        ))
    } else {
        Err(format!(
            "native {native} requests, bridged_grpc_web {bridged}"
        ))
    };
    check(
        "fallback agent, native path blocked by an HTTP/1.1-only hop",
        &outcomes,
        &mut topo,
        path_check,
    );
}
