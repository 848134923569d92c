# syntax=docker/dockerfile:1
# One image with the three sublet binaries: `sublet` (gateway, `sublet serve`, `sublet
# repair`), `sublet-provider` and `sublet-operator`. The Helm chart and the operator run it
# for every pod; provider pods need /bin/sh for their `identity` init container and `chown`
# for their `data-owner` one (hostPath pools), hence a slim Debian runtime rather than
# distroless.
#
#   docker build -t ghcr.io/sublet-dev/sublet:0.1.0 .
#   docker save ghcr.io/sublet-dev/sublet:0.1.0 -o sublet.tar
#   sudo k3s ctr images import sublet.tar

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# protoc is vendored (protoc-bin-vendored), so no system protobuf is needed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p sublet -p sublet-provider -p sublet-operator --bins \
 && mkdir -p /out \
 && cp target/release/sublet target/release/sublet-provider target/release/sublet-operator /out/

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sublet \
 && useradd --system --uid 10001 --gid sublet --home-dir /var/lib/sublet --shell /usr/sbin/nologin sublet \
 && install -d -o sublet -g sublet -m 0750 /var/lib/sublet
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/sublet
# 9000 S3, 9001 gateway admin (/metrics), 7480 provider gRPC, 7481 provider /metrics,
# 8080 operator /metrics.
EXPOSE 9000 9001 7480 7481 8080
CMD ["sublet", "--help"]
