# shellcheck shell=bash disable=SC2034 # the variables are read by build.sh, which sources this file
# Image recipe: the provider, our offload-provider binary (release build) and the
# libraries it links (plus the CA bundle, if installed), running as uid 65532.
# Built by deploy/images/build.sh; OFFLOAD_PROVIDER_BIN overrides the binary
# (default: $CARGO_TARGET_DIR/release/offload-provider). Tag: the workspace version.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rust_binary_recipe offload-provider provider ca

image_inputs() { rust_binary_inputs; }
image_rootfs() { rust_binary_rootfs "$1"; }
