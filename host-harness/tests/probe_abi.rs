//! The harness's ABI families and Envoy statuses, checked with the probe guest.

mod common;

use common::probe;
use host_harness::{LoadError, Plugin, Status};

fn abi_status(p: &Plugin, name: &str) -> u32 {
    let needle = format!("abi {name}=");
    let line = p
        .logs()
        .iter()
        .find_map(|l| l.message.strip_prefix(&needle).map(str::to_string))
        .unwrap_or_else(|| panic!("no log for {name}: {:#?}", p.logs()));
    line.parse().unwrap()
}

#[test]
fn abi_battery_matches_envoy_statuses() {
    let p = Plugin::load(probe("abi")).expect("load");
    let ok = Status::Ok as u32;
    let cases = [
        ("define_counter", ok),
        ("increment_counter", ok),
        ("increment_counter_zero", Status::BadArgument as u32),
        ("get_counter", ok),
        ("define_gauge", ok),
        ("record_gauge", ok),
        ("increment_gauge_neg", ok),
        ("define_histogram", ok),
        ("record_histogram", ok),
        ("get_histogram", Status::BadArgument as u32),
        ("define_bad_type", Status::BadArgument as u32),
        ("get_unknown_metric", Status::NotFound as u32),
        ("get_shared_missing", Status::NotFound as u32),
        ("set_shared", ok),
        ("get_shared", ok),
        ("set_shared_stale_cas", Status::CasMismatch as u32),
        ("set_shared_cas", ok),
        ("register_queue", ok),
        ("dequeue_empty", Status::Empty as u32),
        ("enqueue", ok),
        ("enqueue_unknown", Status::NotFound as u32),
        ("foreign_clear_route_cache", ok),
        ("foreign_unknown", Status::NotFound as u32),
        ("root_get_header", Status::BadArgument as u32),
        ("root_get_body", ok),
        ("continue_upstream", Status::Unimplemented as u32),
        ("continue_bad_type", Status::BadArgument as u32),
        ("effective_unknown", Status::BadArgument as u32),
        ("log_bad_level", Status::BadArgument as u32),
        ("bad_pointer", Status::InvalidMemoryAccess as u32),
        ("property_plugin_name", ok),
        ("property_unknown", Status::NotFound as u32),
        ("get_buffer_bad_type", Status::BadArgument as u32),
    ];
    for (name, want) in cases {
        assert_eq!(abi_status(&p, name), want, "{name}");
    }
    assert!(p.logs().iter().any(|l| l.message == "abi counter_value=3"));
    assert_eq!(p.metric("probe_requests").unwrap().value, 3);
    assert_eq!(p.metric("probe_gauge").unwrap().value, 5);
    assert_eq!(p.metric("probe_histogram").unwrap().samples, vec![42]);
    assert_eq!(p.route_cache_clears(), 1);
    // Enqueue posts on_queue_ready to the owner, which runs after the configure call.
    assert!(
        p.logs()
            .iter()
            .any(|l| l.message == "queue_ready dequeue=0 len=1"),
        "{:#?}",
        p.logs()
    );
}

#[test]
fn rejected_configuration_reports_the_filter_message() {
    let err = Plugin::load(probe("reject")).err().expect("must fail");
    assert!(matches!(err, LoadError::ConfigureFailed { .. }));
    let text = err.to_string();
    assert!(text.contains("unknown role \"reject\""), "{text}");
}

#[test]
fn invalid_and_missing_wasm_are_clear_errors() {
    let err = Plugin::load(host_harness::PluginOptions::from_file(
        "/nonexistent/x.wasm",
    ))
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("cannot read wasm file /nonexistent/x.wasm"),
        "{err}"
    );
    let err = Plugin::load(host_harness::PluginOptions::new(
        host_harness::WasmSource::Bytes(b"not wasm".to_vec()),
    ))
    .err()
    .unwrap();
    assert!(err.to_string().starts_with("invalid wasm module"), "{err}");
}

#[test]
fn unknown_import_fails_like_envoy() {
    let wat = r#"(module
        (import "env" "proxy_does_not_exist" (func (param i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "proxy_abi_version_0_2_1")))"#;
    let err = Plugin::load(host_harness::PluginOptions::new(
        host_harness::WasmSource::Wat(wat.into()),
    ))
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "Failed to load Wasm module due to a missing import: env.proxy_does_not_exist"
    );
}

#[test]
fn module_without_abi_version_is_rejected() {
    let wat = r#"(module (memory (export "memory") 1))"#;
    let err = Plugin::load(host_harness::PluginOptions::new(
        host_harness::WasmSource::Wat(wat.into()),
    ))
    .err()
    .unwrap();
    assert!(matches!(err, LoadError::NoAbiVersion));
}
