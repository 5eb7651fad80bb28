# shellcheck shell=bash disable=SC2034 # the variables are read by images.sh, which sources this file
# Image recipe: the pod sandbox ("pause") image, compiled from the Kubernetes source's
# own build/pause/linux/pause.c (build-k8s.sh keeps a copy next to the binaries).
IMAGE_REPO=localhost/offload/pause
IMAGE_TAG=1.0
# Upstream's pause image runs as 65535 too; the sandbox needs no privileges.
IMAGE_CONFIG=(--config.entrypoint /pause --config.user 65535:65535)

PAUSE_C=$OFFLOAD_CACHE/kubernetes-1.20.2/src/pause.c

image_inputs() {
  [ -f "$PAUSE_C" ] || { echo "images.sh: $PAUSE_C is missing; run testbed/scripts/build-k8s.sh first" >&2; return 1; }
  sha256sum <"$PAUSE_C"
  gcc --version | head -1
}

image_rootfs() {
  local root=$1
  gcc -static -O2 -DVERSION=offload-1.0 -o "$root/pause" "$PAUSE_C"
}
