#!/usr/bin/env bash
# Builds the test ground's container images without any registry and caches them as
# OCI archives; imports them into a containerd.
#
#   images.sh [build]          build every image whose recipe or inputs changed (default)
#   images.sh list             print the image references
#   images.sh import SOCKET    import every cached image into the containerd at SOCKET
#                              (namespace k8s.io, the one the kubelet sees)
#
# One file per image in images.d/<name>.sh (sourced in a subshell) defines:
#   IMAGE_REPO     e.g. localhost/offload/busybox
#   IMAGE_TAG      never "latest": with a non-latest tag the kubelet's default pull policy
#                  is IfNotPresent, so pods start from the imported image without a registry
#   IMAGE_CONFIG   array of `umoci config` arguments (entrypoint, cmd, env, user, ...)
#   image_inputs   prints everything outside the recipe file the image depends on (package
#                  versions, source hashes); a change rebuilds the image
#   image_rootfs DIR   fills the root filesystem
# Cache: $OFFLOAD_CACHE/images/<name>/{image.tar,key,ref} (OFFLOAD_CACHE default $HOME/.cache/offload).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export OFFLOAD_CACHE=${OFFLOAD_CACHE:-$HOME/.cache/offload}
IMAGES=$OFFLOAD_CACHE/images

# shellcheck source=oci.sh
source "$HERE/oci.sh"

recipes() { ls "$HERE"/images.d/*.sh; }

need() {
  local b
  for b in "$@"; do
    command -v "$b" >/dev/null || { echo "images.sh: '$b' not found; run testbed/scripts/install-deps.sh" >&2; exit 1; }
  done
}

build_one() (
  local recipe=$1 name
  name=$(basename "$recipe" .sh)
  # shellcheck source=/dev/null
  source "$recipe"
  : "${IMAGE_REPO:?$recipe must set IMAGE_REPO}" "${IMAGE_TAG:?$recipe must set IMAGE_TAG}"
  [ "$IMAGE_TAG" != latest ] || { echo "images.sh: $recipe: tag 'latest' would make the kubelet pull from a registry" >&2; exit 1; }
  build_image images.sh "$name" "$recipe" offload-testbed
)

cmd=${1:-build}
case $cmd in
  build)
    need umoci gcc tar sha256sum
    for r in $(recipes); do build_one "$r"; done
    ;;
  list)
    for r in $(recipes); do
      n=$(basename "$r" .sh)
      [ -f "$IMAGES/$n/ref" ] || { echo "images.sh: image $n not built; run testbed/scripts/images.sh" >&2; exit 1; }
      cat "$IMAGES/$n/ref"
    done
    ;;
  import)
    sock=${2:?usage: images.sh import CONTAINERD_SOCKET}
    need ctr
    for r in $(recipes); do
      n=$(basename "$r" .sh)
      [ -f "$IMAGES/$n/image.tar" ] || { echo "images.sh: image $n not built; run testbed/scripts/images.sh" >&2; exit 1; }
      # --base-name: the archive's tag (org.opencontainers.image.ref.name) is appended,
      # giving e.g. localhost/offload/busybox:1.0.
      ctr -a "$sock" -n k8s.io images import --base-name "$(cat "$IMAGES/$n/repo")" "$IMAGES/$n/image.tar" >/dev/null \
        || { echo "images.sh: importing $IMAGES/$n/image.tar into $sock failed" >&2; exit 1; }
    done
    ;;
  *) echo "usage: $0 [build|list|import SOCKET]" >&2; exit 2 ;;
esac
