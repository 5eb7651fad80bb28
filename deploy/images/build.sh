#!/usr/bin/env bash
# Builds the images of the project without any registry or Docker, like
# testbed/scripts/images.sh does for the test images, and imports them:
# gateway (Debian's OpenSSH sshd, non-root), and our release binaries bastion,
# provider and plugin (tag: the workspace version). deploy/docker/ holds the
# equivalent Dockerfiles for users who build with Docker.
#
#   deploy/images/build.sh [build] [NAME...]   build (cached by recipe + inputs; default: all)
#   deploy/images/build.sh import SOCKET [NAME...]  import the built ones into a containerd (namespace k8s.io)
#   deploy/images/build.sh list                references of the built images
#   deploy/images/build.sh ref NAME            the reference NAME gets (built or not)
# Cache: $OFFLOAD_CACHE/images/<name>/{image.tar,key,ref,repo} (default ~/.cache/offload).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export OFFLOAD_CACHE=${OFFLOAD_CACHE:-$HOME/.cache/offload}
IMAGES=$OFFLOAD_CACHE/images
RECIPES=(gateway bastion provider plugin)
# shellcheck source=../../testbed/scripts/oci.sh
source "$HERE/../../testbed/scripts/oci.sh"

# gateway_sanity ROOT: the packed sshd starts and parses a config as the tunnel user.
gateway_sanity() {
  local root=$1
  printf 'Port 2222\nHostKey /tmp/k\nPidFile /tmp/p\nUsePAM no\n' > "$root/tmp/c"
  ssh-keygen -q -t ed25519 -N '' -f "$root/tmp/k"
  chown 1000:1000 "$root/tmp/k"
  mknod -m 666 "$root/dev/null" c 1 3
  chroot --userspec=1000:1000 "$root" /usr/sbin/sshd -t -f /tmp/c
  rm -f "$root/dev/null" "$root"/tmp/{c,k,k.pub}
}

build_one() (
  local name=$1 recipe
  recipe=$HERE/$name.sh
  # shellcheck source=/dev/null
  source "$recipe"
  if [ "$name" = gateway ]; then
    build_image build.sh "$name" "$recipe" offload gateway_sanity
  else
    build_image build.sh "$name" "$recipe" offload
  fi
)

cmd=${1:-build}
[ $# -gt 0 ] && shift
case $cmd in
  build)
    names=("$@"); [ ${#names[@]} -gt 0 ] || names=("${RECIPES[@]}")
    for n in "${names[@]}"; do build_one "$n"; done ;;
  list)
    for n in "${RECIPES[@]}"; do
      [ -f "$IMAGES/$n/ref" ] && cat "$IMAGES/$n/ref"
    done
    true ;;
  ref)
    n=${1:?usage: build.sh ref NAME}
    # shellcheck source=/dev/null
    ( source "$HERE/$n.sh" && echo "$IMAGE_REPO:$IMAGE_TAG" ) ;;
  import)
    sock=${1:?usage: build.sh import CONTAINERD_SOCKET [NAME...]}
    shift
    names=("$@"); [ ${#names[@]} -gt 0 ] || names=("${RECIPES[@]}")
    for n in "${names[@]}"; do
      [ -f "$IMAGES/$n/image.tar" ] || continue
      ctr -a "$sock" -n k8s.io images import --base-name "$(cat "$IMAGES/$n/repo")" "$IMAGES/$n/image.tar" >/dev/null
    done ;;
  *) echo "usage: $0 [build [NAME...]|list|ref NAME|import SOCKET [NAME...]]" >&2; exit 2 ;;
esac
