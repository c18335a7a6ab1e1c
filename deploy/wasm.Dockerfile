# syntax=docker/dockerfile:1
# The grpc-bridge filter as an OCI image in the layout Istio (WasmPlugin) and Envoy Gateway
# (EnvoyExtensionPolicy, code type Image) load: the "compat" variant of the Wasm OCI image spec,
# a FROM scratch image whose single layer holds exactly one file, /plugin.wasm. Build context: the
# repo root:
#   docker build -f deploy/wasm.Dockerfile -t registry.example.com/grpc-bridge/wasm:0.1.0 .
#   docker push registry.example.com/grpc-bridge/wasm:0.1.0
# Without Docker, deploy/oci-image builds the same layout from an already built .wasm.

FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p grpc-bridge --target wasm32-wasip1 \
    && cp target/wasm32-wasip1/release/grpc_bridge.wasm /plugin.wasm

# Exactly one COPY and nothing else that makes a layer: one layer, one file.
FROM scratch
COPY --from=build /plugin.wasm /plugin.wasm
