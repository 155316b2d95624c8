# syntax=docker/dockerfile:1
# graphbridge container image: `docker build -t graphbridge .` (the production feature set:
# Kafka, NATS, OTLP; no simulator, token issuer or Graph stand-in). The tools image for
# staging and CI (`simulate`, `demo`, `subscriptions stand-in`, e.g. the chart's helm test):
# `docker build --build-arg FEATURES=production,sim -t graphbridge-tools .`
# Builder: the same toolchain packages scripts/setup.sh installs and the same cargo invocation CI
# runs (release profile, --locked). Runtime: Debian slim with the binary, CA roots and the one
# shared library it links (libssl); no shell tools beyond the base, no HEALTHCHECK (Kubernetes
# probes /healthz and /readyz on the admin port instead).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
# The runtime's base image. CI, which reaches Debian's archive but no registry, passes one made
# from Debian packages (mmdebstrap + podman import, scripts/container-check.sh).
ARG RUNTIME_BASE=debian:${DEBIAN_RELEASE}-slim
# Where the binary comes from: `builder` (compiled here) or `prebuilt` (a `graphbridge` binary
# at the root of the build context, e.g. the one CI built: --build-arg BINARY_FROM=prebuilt).
ARG BINARY_FROM=builder

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# librdkafka and aws-lc are compiled from source (rdkafka's cmake-build feature).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake=3.* libssl-dev=3.* libcurl4-openssl-dev=7.* zlib1g-dev=1:1.* pkg-config=1.* \
 && rm -rf /var/lib/apt/lists/*
ARG FEATURES=production
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binary is copied
# out of the cache mount so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --features "$FEATURES" --bin graphbridge \
 && install -D -m 0755 target/release/graphbridge /out/graphbridge

FROM scratch AS prebuilt
COPY graphbridge /out/graphbridge

# hadolint ignore=DL3006
FROM ${BINARY_FROM} AS binary

FROM ${RUNTIME_BASE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="graphbridge" \
      org.opencontainers.image.description="Microsoft Graph change notifications for Teams messages into Kafka and NATS JetStream" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.url="https://graphbridge.dev" \
      org.opencontainers.image.source="https://graphbridge.dev"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=20* libssl3=3.* \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 graphbridge \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/graphbridge --no-create-home \
      --shell /usr/sbin/nologin graphbridge \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/graphbridge /etc/graphbridge /etc/graphbridge/keys
COPY --from=binary /out/graphbridge /usr/local/bin/graphbridge
# Everything the process writes lives under /var/lib/graphbridge (the spool, relative output
# paths) or /tmp: mount volumes there and run with a read-only root filesystem. Keys and config
# are mounted read-only under /etc/graphbridge.
WORKDIR /var/lib/graphbridge
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/graphbridge"]
CMD ["serve"]
