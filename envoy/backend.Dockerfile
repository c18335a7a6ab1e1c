# syntax=docker/dockerfile:1
# The example gRPC backend (tests/src/bin/test-backend.rs: the bridge.test.BridgeTest service the
# test suite uses) as an image. It listens on 127.0.0.1 only, so run it in the network namespace
# of the Envoy in front of it (envoy/docker-compose.yml: network_mode "service:server"). Build
# context: the repo root, e.g.
#   docker build -f envoy/backend.Dockerfile -t grpc-bridge/test-backend:dev .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p grpc-bridge-tests --bin test-backend \
    && cp target/release/test-backend /usr/local/bin/test-backend

FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/test-backend /usr/local/bin/test-backend
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/test-backend"]
CMD ["--port", "50051"]
