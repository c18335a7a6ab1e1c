# Squid from Debian 12, the same package `make test` runs (squid-openssl 5.7), as a CONNECT-only
# forward proxy. The config comes from envoy/compose/squid.conf (rendered from
# envoy/squid-connect.conf); its pid file and logs go to /var/spool/grpc-bridge-squid, which the
# `proxy` user squid drops to must own. `-d 1` copies cache.log to stderr (docker logs).
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends squid-openssl \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o proxy -g proxy /var/spool/grpc-bridge-squid
EXPOSE 3128
CMD ["squid", "-N", "-d", "1", "-f", "/etc/grpc-bridge/squid.conf"]
