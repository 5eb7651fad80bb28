# offload-bastion for users who build with Docker; same contents as
# deploy/images/bastion.sh (which builds it here without Docker): our release
# binary, glibc, the CA bundle, uid 65532, no shell.
#
#   docker build -f deploy/docker/bastion.Dockerfile -t localhost/offload/bastion:$(version) .
# (context: the repository root; version: [workspace.package] of Cargo.toml)
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p offload-bastion \
 && install -D -m 0755 target/release/offload-bastion /out/usr/bin/offload-bastion

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 65532 bastion && useradd -u 65532 -g 65532 -d /nonexistent -M -s /bin/false bastion
COPY --from=build /out/ /
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/bin/offload-bastion"]
CMD ["run"]
