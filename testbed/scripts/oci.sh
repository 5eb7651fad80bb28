# shellcheck shell=bash
# Packs a container image without Docker or a registry; sourced by the image builders
# testbed/scripts/images.sh (test images) and deploy/images/build.sh (our images).

# oci_image_tar AUTHOR [CHECK]: in the current (empty, scratch) directory, builds the
# image of the recipe sourced before: an OCI layout tagged $IMAGE_TAG whose root
# filesystem `image_rootfs` fills, checked by `CHECK bundle/rootfs` when given, with
# the `umoci config` arguments IMAGE_CONFIG and AUTHOR; packed as ./image.tar.
oci_image_tar() {
  local author=$1 check=${2:-}
  umoci init --layout oci
  umoci new --image "oci:$IMAGE_TAG"
  umoci unpack --image "oci:$IMAGE_TAG" bundle >/dev/null
  image_rootfs "$PWD/bundle/rootfs"
  if [ -n "$check" ]; then "$check" bundle/rootfs; fi
  umoci repack --image "oci:$IMAGE_TAG" bundle
  umoci config --image "oci:$IMAGE_TAG" --author "$author" "${IMAGE_CONFIG[@]}"
  umoci gc --layout oci
  tar -C oci -cf image.tar .
}
