# syntax=docker/dockerfile:1
# Switchboard in a container: `docker build -t switchboard .` then
# `docker run -p 8080:8080 switchboard`. Multi-stage: the build stage compiles
# the release binary; the runtime stage is Debian slim with only that binary
# and CA certificates (for rediss:// and TLS), running as an unprivileged user.
#
# Not built on the project's CI machines (they cannot pull base images); what
# scripts/test-packages checks instead is described in README.md (Install).

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The commit for `switchboard --version` (no .git in the build context).
ARG SWITCHBOARD_COMMIT=unknown
ENV SWITCHBOARD_COMMIT=${SWITCHBOARD_COMMIT}
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p switchboard-server --bin switchboard \
    && install -D -m 0755 target/release/switchboard /out/switchboard \
    && /out/switchboard config > /out/switchboard.toml

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin switchboard
COPY --from=build /out/switchboard /usr/bin/switchboard
COPY --from=build /out/switchboard.toml /etc/switchboard/switchboard.toml
USER 10001:10001
# In a container the server must listen on every interface (the default is 127.0.0.1).
ENV SWITCHBOARD_LISTEN=0.0.0.0:8080 \
    SWITCHBOARD_LOG_FORMAT=json
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/bin/switchboard"]
CMD ["serve", "--config", "/etc/switchboard/switchboard.toml"]
