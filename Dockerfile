# syntax=docker/dockerfile:1
#
# churnwatch container image.
#
#   docker build -t churnwatch .
#   docker run --rm -p 9464:9464 -e CHURNWATCH_KAFKA__BROKERS=kafka:9092 churnwatch
#
# The image runs `churnwatch run --config /etc/churnwatch/churnwatch.toml` as uid 10001 and serves
# /metrics, /healthz and /readyz on 0.0.0.0:9464. Mount your own config directory on
# /etc/churnwatch (a directory, not the single file: see deploy/README.md) and override settings
# with CHURNWATCH_<SECTION>__<KEY> / CHURNWATCH_RDKAFKA_<PROPERTY> environment variables.
# Other subcommands work too: `docker run --rm churnwatch simulate --help`.

############################################################################ builder
FROM rust:1-bookworm AS builder

# librdkafka is compiled from source by rdkafka-sys (its ./configure + make build, because
# Cargo.toml enables neither `cmake-build` nor `dynamic-linking`) and linked statically. With the
# rdkafka features this crate uses (default `libz` + `tokio`) it needs a C toolchain, make,
# pkg-config and zlib's headers; the binary then links libz.so.1 dynamically.
# Enabling more rdkafka features needs more here and in the runtime stage:
#   ssl (SASL_SSL, SCRAM): libssl-dev here, libssl3 below
#   gssapi (Kerberos):     libsasl2-dev here, libsasl2-2 below
#   cmake-build:           cmake here
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependency layer: build every dependency (librdkafka takes most of the time) against stub
# sources, so that a change to src/ reuses this layer and recompiles only churnwatch itself.
# Cargo.toml names benches/hot_path.rs, so a stub of it must exist for the manifest to load.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && cargo build --release --locked \
    && rm -rf src benches \
        target/release/.fingerprint/churnwatch-* \
        target/release/deps/churnwatch-* \
        target/release/deps/libchurnwatch-* \
        target/release/churnwatch* target/release/libchurnwatch*

# The real sources. config/churnwatch.toml is compiled in (include_str!: the `demo` default).
COPY src ./src
COPY benches ./benches
COPY config ./config
# The release profile keeps line tables (debug = 1) for profiling; the image drops the DWARF
# sections but keeps the symbol table, so panics and backtraces still name functions.
RUN cargo build --release --locked \
    && strip --strip-debug target/release/churnwatch \
    && install -m 0755 target/release/churnwatch /usr/local/bin/churnwatch \
    && /usr/local/bin/churnwatch --version

############################################################################ runtime
FROM debian:bookworm-slim

# Shared libraries the binary needs (ldd): libz.so.1, libgcc_s.so.1, libm, libc; all are part of
# debian:bookworm-slim. ca-certificates is for TLS to the brokers once the `ssl` feature is on.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 churnwatch \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin churnwatch

COPY --from=builder /usr/local/bin/churnwatch /usr/local/bin/churnwatch
COPY config/churnwatch.toml /etc/churnwatch/churnwatch.toml

LABEL org.opencontainers.image.title="churnwatch" \
      org.opencontainers.image.description="Churn-risk early-warning stream processor: Kafka events in, at-risk customer alerts out" \
      org.opencontainers.image.licenses="Apache-2.0"

# http.listen defaults to 127.0.0.1:9464, which nothing outside the container can reach.
ENV CHURNWATCH_HTTP__LISTEN=0.0.0.0:9464
EXPOSE 9464

# Numeric user, so Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER 10001:10001

# No curl in the image: bash's /dev/tcp sends the request. /healthz answers 200 while the process
# runs (use /readyz to know whether partitions are assigned). Kubernetes ignores HEALTHCHECK
# (deploy/k8s has its own probes); containers that run another subcommand (`simulate`) should
# disable it (deploy/docker-compose.yml does).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^HTTP/1\\.[01] 200' <&3"]

# SIGTERM (docker stop, Kubernetes) drains: last checkpoint, producer flush, offsets committed.
# Give it more than kafka.delivery_timeout_ms (30 s): docker stop -t 60, compose
# stop_grace_period, Kubernetes terminationGracePeriodSeconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["churnwatch"]
CMD ["run", "--config", "/etc/churnwatch/churnwatch.toml"]
