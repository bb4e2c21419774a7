# syntax=docker/dockerfile:1.7

# One image per function, all from this file:
#
#   docker build --build-arg FUNCTION=inbound -t inbound .
#
# FUNCTION names the binary to ship (inbound, status, ingest, fanout, sender,
# api, migrate). It is built from the crate of the same name unless PACKAGE
# names another crate (for a binary that lives in a library crate's src/bin).
#
# Dependencies are cached with BuildKit cache mounts rather than a separate
# dependency layer: the cargo registry and the target directory persist
# between builds on the same builder, so building the seven images in a row
# compiles the dependency graph once and only the workspace crates after that.

# The build's Debian must match the runtime's (distroless cc-debian12 is
# bookworm) so that the binary's glibc symbols exist at run time.
ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS build
ARG FUNCTION
ARG PACKAGE=""
WORKDIR /src
# sqlx::query! checks against the committed .sqlx/ data, never a live database.
ENV SQLX_OFFLINE=true \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never
COPY . .
# The target directory is a cache mount, so the binary is copied out (and
# stripped) in the same step. /out/function points at it so that the runtime
# stage has one fixed entrypoint whatever FUNCTION is.
RUN --mount=type=cache,id=ese-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=ese-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=ese-target,target=/src/target,sharing=locked \
    if [ -z "${FUNCTION}" ]; then echo "set --build-arg FUNCTION=<binary>" >&2; exit 1; fi \
    && cargo build --profile dist --locked -p "${PACKAGE:-$FUNCTION}" --bin "${FUNCTION}" \
    && mkdir -p /out \
    && strip --strip-all -o "/out/${FUNCTION}" "target/dist/${FUNCTION}" \
    && chmod 0555 "/out/${FUNCTION}" \
    && ln -s "${FUNCTION}" /out/function

# glibc, libgcc and CA certificates, no shell, no package manager, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG FUNCTION
LABEL org.opencontainers.image.title="ese-${FUNCTION}" \
      org.opencontainers.image.description="Event Stream Engine: the ${FUNCTION} function" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /app/
# 65532 is distroless's "nonroot" user; numeric so that runtimes can verify it is not root.
USER 65532:65532
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/app/function"]
