#!/usr/bin/env bash
# Builds the tunnel images (gateway, bastion) without any registry, like
# testbed/scripts/images.sh does for the test images, and imports them.
#
#   deploy/images/build.sh [build] [NAME...]   build (cached by recipe + inputs)
#   deploy/images/build.sh import SOCKET       import into a containerd (namespace k8s.io)
#   deploy/images/build.sh list                image references
# Cache: $OFFLOAD_CACHE/images/<name>/{image.tar,key,ref,repo} (default ~/.cache/offload).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export OFFLOAD_CACHE=${OFFLOAD_CACHE:-$HOME/.cache/offload}
IMAGES=$OFFLOAD_CACHE/images
RECIPES=(gateway bastion)

build_one() (
  local name=$1 recipe key dir work
  recipe=$HERE/$name.sh
  # shellcheck source=/dev/null
  source "$recipe"
  key=$( { cat "$recipe"; image_inputs; } | sha256sum | cut -d' ' -f1)
  dir=$IMAGES/$name
  if [ -f "$dir/image.tar" ] && [ "$(cat "$dir/key" 2>/dev/null)" = "$key" ]; then
    return 0
  fi
  work=$(mktemp -d "${TMPDIR:-/tmp}/offload-image-$name.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    umoci init --layout oci
    umoci new --image "oci:$IMAGE_TAG"
    umoci unpack --image "oci:$IMAGE_TAG" bundle >/dev/null
    image_rootfs "$work/bundle/rootfs"
    if [ "$name" = gateway ]; then
      # Sanity: the packed sshd starts and parses a config as the tunnel user.
      printf 'Port 2222\nHostKey /tmp/k\nPidFile /tmp/p\nUsePAM no\n' > bundle/rootfs/tmp/c
      ssh-keygen -q -t ed25519 -N '' -f bundle/rootfs/tmp/k
      chown 1000:1000 bundle/rootfs/tmp/k
      mknod -m 666 bundle/rootfs/dev/null c 1 3
      chroot --userspec=1000:1000 bundle/rootfs /usr/sbin/sshd -t -f /tmp/c
      rm -f bundle/rootfs/dev/null bundle/rootfs/tmp/{c,k,k.pub}
    fi
    umoci repack --image "oci:$IMAGE_TAG" bundle
    umoci config --image "oci:$IMAGE_TAG" --author offload "${IMAGE_CONFIG[@]}"
    umoci gc --layout oci
    tar -C oci -cf image.tar .
  )
  # (not `( ... ) || ...`: that would switch errexit off inside the subshell)
  mkdir -p "$dir"
  mv "$work/image.tar" "$dir/image.tar"
  echo "$IMAGE_REPO" > "$dir/repo"
  echo "$IMAGE_REPO:$IMAGE_TAG" > "$dir/ref"
  echo "$key" > "$dir/key"
  echo "build.sh: built $IMAGE_REPO:$IMAGE_TAG ($(du -h "$dir/image.tar" | cut -f1))" >&2
)

cmd=${1:-build}
[ $# -gt 0 ] && shift
case $cmd in
  build)
    names=("$@"); [ ${#names[@]} -gt 0 ] || names=("${RECIPES[@]}")
    for n in "${names[@]}"; do build_one "$n"; done ;;
  list)
    for n in "${RECIPES[@]}"; do cat "$IMAGES/$n/ref"; done ;;
  import)
    sock=${1:?usage: build.sh import CONTAINERD_SOCKET}
    for n in "${RECIPES[@]}"; do
      [ -f "$IMAGES/$n/image.tar" ] || continue
      ctr -a "$sock" -n k8s.io images import --base-name "$(cat "$IMAGES/$n/repo")" "$IMAGES/$n/image.tar" >/dev/null
    done ;;
  *) echo "usage: $0 [build [NAME...]|list|import SOCKET]" >&2; exit 2 ;;
esac
