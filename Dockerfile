# The `strata` image: one binary for every role (single, storage, insert,
# select, alert, operator). Build from the repository root:
#
#   docker build -t strata:dev .
#
# Stage 1 compiles a release binary; stage 2 is a small Debian runtime with
# only the binary, CA certificates (for HTTPS Alertmanagers and remote
# write) and an unprivileged user.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cached registry and target directories keep rebuilds incremental.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin strata \
    && cp target/release/strata /strata

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/strata --create-home strata
COPY --from=build /strata /usr/local/bin/strata
USER 10001
WORKDIR /var/lib/strata
# single 8428, insert 8480, select 8481, storage 8482 + RPC 8400, alert 8880,
# operator 8080 (docs/cluster.md).
EXPOSE 8428 8480 8481 8482 8400 8880 8080
ENTRYPOINT ["/usr/local/bin/strata"]
CMD ["single", "--listen", "0.0.0.0:8428", "--data-dir", "/var/lib/strata/data"]
