#!/usr/bin/env bash
# Builds what the tunnel end-to-end test (tests/tests/tunnel.rs) needs before
# `cargo test`: the release offload-bastion binary and the gateway and bastion
# images (cached by deploy/images/build.sh; seconds when nothing changed). The
# test imports the cached images into both testbed clusters itself, so a cold
# testbed start (which wipes containerd) needs nothing more.
#
#   deploy/images/prepare-test-images.sh
# Honours CARGO_TARGET_DIR (bastion.sh reads the binary from there).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/../.."
cargo build --release --locked -p offload-bastion
"$HERE/build.sh" build gateway bastion
"$HERE/build.sh" list
