# syntax=docker/dockerfile:1
# Image of slicecache-agent, the node agent the operator runs as a DaemonSet.
# Build from the repository root:
#   docker build -f deploy/agent.Dockerfile -t slicecache/slicecache-agent:0.1.0 .
# deploy/agent.Dockerfile.dockerignore keeps target/ and .git/ out of the
# build context.

# --- build ---
# The locked dependencies need Rust 1.89 or newer (kube 5, uuid); 1.95 is
# what CI builds with. Builder and runtime are both bookworm (same glibc).
FROM rust:1.95-bookworm AS build
# cmake: Pingora builds zlib-ng with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p slicecache-agent --bin slicecache-agent \
 && install -D -m 0755 target/release/slicecache-agent /out/slicecache-agent

# --- runtime ---
FROM debian:bookworm-slim
# ca-certificates: https origins are verified against the system roots.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/slicecache-agent /usr/local/bin/slicecache-agent
# Non-root by default: a memory-only agent needs nothing else, and the
# operator runs it as this uid. Agents with cache devices need root, and
# the operator sets it in their pod spec (runAsUser: 0; privileged for raw
# block devices, because only a privileged container gets device cgroup
# access to a hostPath block device; a hostPathFile device needs uid 0 to
# create its file in the root-owned directory the kubelet makes). See
# docs/operations.md, "Privileges of the agent pods".
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/slicecache-agent"]
CMD ["run", "--config", "/etc/slicecache/agent.yaml"]
