# offload-plugin for users who build with Docker; same contents as
# deploy/images/plugin.sh (which builds it here without Docker): our release
# binary, glibc, the CA bundle, uid 65532, no shell.
#
#   docker build -f deploy/docker/plugin.Dockerfile -t localhost/offload/plugin:$(version) .
# (context: the repository root; version: [workspace.package] of Cargo.toml)
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p offload-plugin \
 && install -D -m 0755 target/release/offload-plugin /out/usr/bin/offload-plugin

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 65532 plugin && useradd -u 65532 -g 65532 -d /nonexistent -M -s /bin/false plugin
COPY --from=build /out/ /
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/bin/offload-plugin"]

