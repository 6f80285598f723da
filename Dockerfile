# syntax=docker/dockerfile:1
# workflow-dlq container image: a Rust build stage, then a small Debian runtime that runs as a
# non-root user. Build: `docker build -t workflow-dlq .`; run: see deploy/kubernetes/.

# ---- build ---------------------------------------------------------------------------------
# rdkafka builds its bundled librdkafka with librdkafka's own configure/make (the `cmake-build`
# feature is off): a C toolchain, pkg-config and the headers of what it links — OpenSSL (TLS,
# SASL SCRAM/OAUTHBEARER), Cyrus SASL (GSSAPI/Kerberos) and zlib. The rust image has the
# toolchain; the -dev packages are added here.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev libsasl2-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
# (If the crate starts embedding files from elsewhere with include_str!, copy them here too.)
# The cache mounts keep the registry and compiled dependencies between builds; the binary is
# copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin workflow-dlq \
 && install -D -m 0755 target/release/workflow-dlq /out/workflow-dlq

# ---- runtime -------------------------------------------------------------------------------
# The binary links libssl3/libcrypto3, libsasl2-2 and zlib dynamically (`ldd` shows nothing
# else besides glibc); the GSSAPI module lets SASL/Kerberos clusters work.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libsasl2-2 \
      libsasl2-modules-gssapi-mit zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 nonroot \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=build /out/workflow-dlq /usr/local/bin/workflow-dlq
# Listen on every interface inside the container (the built-in default is 127.0.0.1:8080) and
# log JSON lines; both can be overridden by the deployment.
ENV DLQ_HTTP_ADDR=0.0.0.0:8080 \
    DLQ_LOG_FORMAT=json
EXPOSE 8080
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# No HEALTHCHECK: Kubernetes ignores it (the Deployment's probes call /healthz and /readyz), and
# the runtime image has no HTTP client to run one with — adding curl only for it would add
# attack surface. checkov's check is skipped for that reason (deploy/CHECKS.md):
# checkov:skip=CKV_DOCKER_2:Kubernetes ignores HEALTHCHECK (its probes call /healthz and /readyz) and the image has no HTTP client
ENTRYPOINT ["/usr/local/bin/workflow-dlq"]
CMD ["serve"]
