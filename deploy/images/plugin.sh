# shellcheck disable=SC2034 # the variables are read by build.sh, which sources this file
# Image recipe: the plugin, our offload-plugin binary (release build) and the
# libraries it links (plus the CA bundle, if installed), running as uid 65532.
# Built by deploy/images/build.sh; OFFLOAD_PLUGIN_BIN overrides the binary
# (default: $CARGO_TARGET_DIR/release/offload-plugin). Tag: the workspace version.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
IMAGE_REPO=localhost/offload/plugin
IMAGE_TAG=$(workspace_version)
IMAGE_CONFIG=(--config.env PATH=/usr/bin:/bin --config.user 65532:65532
  --config.entrypoint /usr/bin/offload-plugin --config.workingdir /)

image_inputs() {
  sha256sum "$(release_bin offload-plugin)"
  dpkg-query -W -f='${Package} ${Version}\n' libc6 ca-certificates 2>/dev/null || true
  cat "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
}

image_rootfs() {
  local root=$1
  binary_rootfs "$root" "$(release_bin offload-plugin)" offload-plugin 65532 plugin
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
}
