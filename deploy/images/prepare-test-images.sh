#!/usr/bin/env bash
# Builds what the end-to-end tests need before `cargo test`: the release
# binaries offload-bastion, offload-provider and offload-plugin, and the
# gateway, bastion, provider and plugin images (cached by
# deploy/images/build.sh; seconds when nothing changed). The tests
# (tests/tests/tunnel.rs, tests/tests/charts.rs) import the cached images into
# both testbed clusters themselves, so a cold testbed start (which wipes
# containerd) needs nothing more.
#
#   deploy/images/prepare-test-images.sh
# Honours CARGO_TARGET_DIR (the recipes read the binaries from there).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/../.."
cargo build --release --locked -p offload-bastion -p offload-provider -p offload-plugin
"$HERE/build.sh" build gateway bastion provider plugin
"$HERE/build.sh" list
