# syntax=docker/dockerfile:1
# The official Envoy 1.40 image with the grpc-bridge filter built from this repo at
# /etc/envoy/grpc_bridge.wasm (the path the configs in envoy/compose/ load). Build context: the
# repo root (envoy/docker-compose.yml sets it), e.g.
#   docker build -f envoy/envoy.Dockerfile -t grpc-bridge/envoy:1.40-dev .

FROM rust:1.95-bookworm AS wasm
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p grpc-bridge --target wasm32-wasip1 \
    && cp target/wasm32-wasip1/release/grpc_bridge.wasm /grpc_bridge.wasm

FROM envoyproxy/envoy:v1.40.0
COPY --from=wasm --chmod=0644 /grpc_bridge.wasm /etc/envoy/grpc_bridge.wasm
