# syntax=docker/dockerfile:1.7

# One image per function, all from this file:
#
#   docker build --build-arg FUNCTION=inbound -t inbound .
#
# FUNCTION names the binary to ship (inbound, status, ingest, fanout, sender,
# api, events, and the jobs migrate and lifecycle). The `build` stage does not
# depend on FUNCTION: it compiles every binary in BINARIES with one cargo
# invocation (the dist profile: fat LTO, one codegen unit), so building the
# nine images in a row compiles the workspace once and the eight later builds
# reuse the cached stage; each image then copies its one binary out of it.
#
# `--target ci` builds a different image instead: the toolchain and the local
# services the workspace's tests need (PostgreSQL, Redis, the Pub/Sub emulator
# and fake-gcs-server), which Cloud Build's test step runs the tests in.

# The build's Debian must match the runtime's (distroless cc-debian12 is
# bookworm) so that the binary's glibc symbols exist at run time.
ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

# ---------------------------------------------------------------- build

FROM rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS build
ARG BINARIES="inbound status ingest fanout sender api events migrate lifecycle"
WORKDIR /src
# sqlx::query! checks against the committed .sqlx/ data, never a live database.
ENV SQLX_OFFLINE=true \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never
COPY . .
# The target directory is a cache mount (it persists between builds on the
# same builder), so the binaries are copied out, stripped, in the same step.
# $bins is split into words on purpose: one --bin flag per binary.
# hadolint ignore=SC2086
RUN --mount=type=cache,id=ese-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=ese-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=ese-target,target=/src/target,sharing=locked \
    set -eu; \
    bins=""; \
    for b in ${BINARIES}; do bins="$bins --bin $b"; done; \
    cargo build --profile dist --locked $bins; \
    mkdir -p /out; \
    for b in ${BINARIES}; do \
        strip --strip-all -o "/out/$b" "target/dist/$b"; \
        chmod 0555 "/out/$b"; \
    done

# One binary out of the build, behind the fixed name /pick/function.
FROM build AS pick
ARG FUNCTION
RUN set -eu; \
    if [ -z "${FUNCTION}" ] || [ ! -x "/out/${FUNCTION}" ]; then \
        echo "set --build-arg FUNCTION=<one of: $(ls /out)>" >&2; exit 1; \
    fi; \
    mkdir /pick; \
    cp "/out/${FUNCTION}" "/pick/${FUNCTION}"; \
    ln -s "${FUNCTION}" /pick/function

# ---------------------------------------------------------------- ci

# What `scripts/test` needs: the Rust toolchain with rustfmt and clippy,
# PostgreSQL's server binaries and redis-server (scripts/test runs private
# servers of its own from them), python3 with venv (it keeps its Python tools,
# fake-gcs-server and schemathesis, in the project venv), Java and the Pub/Sub
# emulator at the path the tests look for it
# (/usr/lib/google-cloud-sdk/platform/pubsub-emulator, from Google Cloud's
# Debian repository). The sources are not in the image: Cloud Build mounts
# the workspace.
FROM rust:${RUST_VERSION}-${DEBIAN_SUITE} AS ci
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
# Unpinned on purpose: the suite's own packages of the day, as on the
# development machines.
# hadolint ignore=DL3008
RUN curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
        | gpg --dearmor -o /usr/share/keyrings/cloud.google.gpg \
    && echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" \
        > /etc/apt/sources.list.d/google-cloud-sdk.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        google-cloud-cli-pubsub-emulator openjdk-17-jre-headless \
        postgresql redis-server python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && rustup component add rustfmt clippy

# ---------------------------------------------------------------- runtime

# glibc, libgcc and CA certificates, no shell, no package manager, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG FUNCTION
LABEL org.opencontainers.image.title="ese-${FUNCTION}" \
      org.opencontainers.image.description="Event Stream Engine: the ${FUNCTION} function" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=pick /pick/ /app/
# 65532 is distroless's "nonroot" user; numeric so that runtimes can verify it is not root.
USER 65532:65532
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/app/function"]
