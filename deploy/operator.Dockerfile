# syntax=docker/dockerfile:1
# Image of slicecache-operator. Build from the repository root:
#   docker build -f deploy/operator.Dockerfile -t slicecache/slicecache-operator:0.1.0 .
# deploy/operator.Dockerfile.dockerignore keeps target/ and .git/ out of the
# build context (BuildKit reads it because it sits next to this file).

# --- build ---
# The locked dependencies need Rust 1.89 or newer (kube 5, uuid); 1.95 is
# what CI builds with. Builder and runtime are both bookworm (same glibc).
FROM rust:1.95-bookworm AS build
# cmake: Pingora, a dependency of the workspace, builds zlib-ng with it even
# when only the operator is compiled (Cargo resolves the whole workspace).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p slicecache-operator --bin slicecache-operator \
 && install -D -m 0755 target/release/slicecache-operator /out/slicecache-operator

# --- runtime ---
FROM debian:bookworm-slim
# ca-certificates: the API server's certificate is checked against the
# in-cluster CA, but a kubeconfig may name a public endpoint.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/slicecache-operator /usr/local/bin/slicecache-operator
# The chart runs it as this uid with a read-only root filesystem; the
# operator writes no files.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/slicecache-operator"]
CMD ["run"]
