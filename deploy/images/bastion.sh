# shellcheck disable=SC2034 # the variables are read by build.sh, which sources this file
# Image recipe: the bastion, our offload-bastion binary (release build) and
# the libraries it links, running as uid 65532. Tag: the workspace version. Built by deploy/images/build.sh;
# BASTION_BIN overrides the binary (default: target/release/offload-bastion).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
IMAGE_REPO=localhost/offload/bastion
# The workspace version (Cargo.toml), like the provider and plugin images.
IMAGE_TAG=$(workspace_version)
IMAGE_CONFIG=(--config.env PATH=/usr/bin:/bin --config.user 65532:65532
  --config.entrypoint /usr/bin/offload-bastion --config.cmd run --config.workingdir /)

bastion_bin() {
  local repo
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  echo "${BASTION_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/offload-bastion}"
}

image_inputs() {
  sha256sum "$(bastion_bin)"
  dpkg-query -W -f='${Package} ${Version}\n' libc6
  cat "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
}

image_rootfs() {
  local root=$1 bin
  # shellcheck source=lib.sh
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
  bin=$(bastion_bin)
  [ -x "$bin" ] || { echo "bastion.sh: $bin missing: cargo build --release -p offload-bastion" >&2; return 1; }
  mkdir -p "$root"/{usr/bin,etc,tmp,proc,sys,dev}
  chmod 1777 "$root/tmp"
  copy_with_libs "$root" "$bin"
  mv "$root$bin" "$root/usr/bin/offload-bastion"
  printf 'root:x:0:0:root:/root:/bin/false\nbastion:x:65532:65532:bastion:/nonexistent:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nbastion:x:65532:\n' > "$root/etc/group"
}
