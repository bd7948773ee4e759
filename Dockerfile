# syntax=docker/dockerfile:1
# harfanglab-intel container image: a static musl binary on `scratch` (target: 12 MB; the same
# image from scripts/build-image.sh measures 7.7 MB, this musl build was not measured here).
#
#   docker build -t harfanglab-intel .
#   docker run --rm --env-file harfanglab-intel.env -v hli-state:/var/lib/harfanglab-intel harfanglab-intel
#
# For users with registry access (it pulls rust:1.95-alpine). Without one, scripts/build-image.sh
# builds the same image from a static binary made on the host (scripts/Containerfile): the
# runtime stage below is line for line the same as that file (tests/container_files.rs checks
# it). See docs/deployment.md ("Container") and docker-compose.yml.

# ---- builder: Alpine's Rust toolchain targets x86_64-unknown-linux-musl natively ----------------
FROM rust:1.95-alpine AS builder
# gcc + musl-dev: compile the C part of `ring` (TLS); ca-certificates: copied to the image.
RUN apk add --no-cache gcc musl-dev ca-certificates
WORKDIR /src
COPY . .
# Rust's musl target links statically by default (crt-static); strip symbols too, the release
# profile only strips debuginfo. No RUSTFLAGS: `+crt-static` there would also hit proc-macros.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
# /out/ctx gets the same files as scripts/build-image.sh's build context.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin harfanglab-intel \
    && mkdir -p /out/ctx/state \
    && cp target/release/harfanglab-intel /out/ctx/harfanglab-intel \
    && cp /etc/ssl/certs/ca-certificates.crt /out/ctx/ca-certificates.crt
# A non-root user for `scratch`, which has no /etc/passwd of its own. 65532 = "nonroot" as in
# the distroless images.
RUN echo 'nonroot:x:65532:65532:harfanglab-intel:/var/lib/harfanglab-intel:/sbin/nologin' > /out/ctx/passwd \
    && echo 'nonroot:x:65532:' > /out/ctx/group

# ---- runtime: the same as scripts/Containerfile, files taken from the builder ----------------
FROM scratch
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="harfanglab-intel" \
      org.opencontainers.image.description="OpenCTI live stream to HarfangLab EDR threat-intel lists (IOC, Sigma, Yara)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# Not read by the connector (its TLS roots are compiled in): there for OPENCTI_CA_FILE /
# HARFANGLAB_INTEL_CA_FILE to name, or for a derived image to extend.
COPY --from=builder /out/ctx/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/ctx/passwd /etc/passwd
COPY --from=builder /out/ctx/group /etc/group
# Owned by the runtime user so a fresh named volume inherits a writable directory.
COPY --from=builder --chown=65532:65532 /out/ctx/state /var/lib/harfanglab-intel
COPY --from=builder /out/ctx/harfanglab-intel /harfanglab-intel
# Metrics on by default in the image: the HEALTHCHECK below asks /healthz. The server binds
# 0.0.0.0:9095 inside the container's own network namespace; nothing is reachable from outside
# unless the port is published (`-p 127.0.0.1:9095:9095`). Set CONNECTOR_EXPOSE_METRICS=false to
# turn it off (the health check then reports "metrics endpoint not enabled").
ENV HARFANGLAB_INTEL_STATE_DIR=/var/lib/harfanglab-intel \
    CONNECTOR_EXPOSE_METRICS=true
USER 65532:65532
VOLUME /var/lib/harfanglab-intel
# Documents the metrics port; EXPOSE publishes nothing by itself.
EXPOSE 9095
# `scratch` has no curl: the binary asks its own /healthz on 127.0.0.1:CONNECTOR_METRICS_PORT
# (3 s budget, no proxy). Exit 0 healthy, 1 unhealthy or unreachable. /healthz is 503 until both
# OpenCTI and HarfangLab have answered once, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/harfanglab-intel", "healthcheck"]
# The connector drains in-flight events on SIGTERM (up to HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT,
# 30 s): give `docker stop` a longer grace period (`--time 45`, compose `stop_grace_period`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/harfanglab-intel"]
CMD ["run"]
