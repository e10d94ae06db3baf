# syntax=docker/dockerfile:1
#
# KairosRoute gateway image.
#
#   docker build -t kairos .
#   docker run --rm -p 8080:8080 -e KAIROS_MASTER_KEY=... kairos            # zero-config / demo
#   docker run --rm -p 8080:8080 -v $PWD/deploy/kairos.toml:/etc/kairos/kairos.toml:ro \
#       --env-file deploy/.env kairos serve --config /etc/kairos/kairos.toml
#
# Multi-replica setups: deploy/docker-compose.yml, deploy/k8s/kairos.yaml, docs/deploy.md.

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src

# Only what the build reads. BuildKit transfers just these paths of the context; with the legacy
# builder, add a .dockerignore with `target` (the local target dir is gigabytes).
# rust-toolchain.toml is left out on purpose: it pins 1.95.0 plus rustfmt/clippy for
# development, and would make rustup download those components (or another patch release) here.
# This image already is the 1.95 toolchain, the workspace's rust-version.
COPY Cargo.toml Cargo.lock kairos.example.toml ./
COPY crates ./crates

# Cache mounts keep the registry and compiled dependencies between builds; the binary is copied
# out of the cached target dir because the cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --bin kairos --locked \
    && install -D -m 0755 target/release/kairos /out/kairos

# ---------------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 kairos \
    && useradd --system --uid 10001 --gid kairos --home-dir /var/lib/kairos \
       --shell /usr/sbin/nologin kairos \
    && install -d -o kairos -g kairos -m 0700 /var/lib/kairos \
    && install -d -m 0755 /etc/kairos

COPY --from=builder /out/kairos /usr/local/bin/kairos

# Public listener on all interfaces inside the container (the default outside one is
# 127.0.0.1:8080). KAIROS_* variables win over the config file. The admin listener
# (KAIROS_ADMIN_LISTEN, default 127.0.0.1:8091) is deliberately left on loopback here: deployments
# that need it from outside the container set it explicitly and keep it off public networks.
ENV KAIROS_LISTEN=0.0.0.0:8080 \
    KAIROS_DATA_DIR=/var/lib/kairos \
    KAIROS_LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/kairos
EXPOSE 8080

# Liveness of the process (not of the database: that is /readyz). No curl in the image: bash
# speaks HTTP/1.1 over /dev/tcp to the port of KAIROS_LISTEN.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${KAIROS_LISTEN##*:} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && timeout 2 head -n1 <&3 | grep -q ' 200 '"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kairos"]
CMD ["serve"]
