# shellcheck shell=bash disable=SC2034 # the variables are read by build.sh, which sources this file
# Image recipe: the bastion, our offload-bastion binary (release build) and
# the libraries it links, running as uid 65532 with the default command `run`.
# Tag: the workspace version. Built by deploy/images/build.sh; BASTION_BIN (or
# OFFLOAD_BASTION_BIN) overrides the binary (default: target/release/offload-bastion).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OFFLOAD_BASTION_BIN=${BASTION_BIN:-${OFFLOAD_BASTION_BIN:-}}
rust_binary_recipe offload-bastion bastion no-ca run

image_inputs() { rust_binary_inputs; }
image_rootfs() { rust_binary_rootfs "$1"; }
