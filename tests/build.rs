// Generates the tonic client and server for tests/proto/bridge_test.proto with the protoc binary
// shipped by the `protoc-bin-vendored` crate (no system protoc needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/bridge_test.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/bridge_test.proto"], &["proto"])?;
    Ok(())
}
