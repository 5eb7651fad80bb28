# shellcheck shell=bash
# Packs and caches container images without Docker or a registry; sourced by the image builders
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

# image_key RECIPE: the cache key of the recipe sourced before: its text and what its
# image_inputs prints (package versions, binary hashes), so a change rebuilds the image.
image_key() { { cat "$1"; image_inputs; } | sha256sum | cut -d' ' -f1; }

# image_cached DIR KEY: DIR holds the image built for KEY.
image_cached() { [ -f "$1/image.tar" ] && [ "$(cat "$1/key" 2>/dev/null)" = "$2" ]; }

# build_image TOOL NAME RECIPE AUTHOR [CHECK]: the image of RECIPE (sourced before) in
# $IMAGES/NAME: kept when it was built for the same key, else packed by `oci_image_tar
# AUTHOR CHECK` in a scratch directory and stored; TOOL names the caller in what it
# prints. Call it in a subshell (a `build_one() ( ... )`): its EXIT trap removes the
# scratch directory, and a failing packing step ends that subshell (errexit stays on
# while packing, so no step runs after a failed one) with a line saying which image.
build_image() {
  local tool=$1 name=$2 recipe=$3 key dir
  shift 3
  key=$(image_key "$recipe")
  dir=$IMAGES/$name
  if image_cached "$dir" "$key"; then return 0; fi
  BUILD_WORK=$(mktemp -d "${TMPDIR:-/tmp}/offload-image-$name.XXXXXX")
  trap 'rm -rf "$BUILD_WORK"' EXIT # (a global: the trap runs when the subshell ends)
  (
    trap '[ $? -eq 0 ] || echo "$tool: building image $name from $recipe failed" >&2' EXIT
    cd "$BUILD_WORK" || exit
    oci_image_tar "$@"
  )
  store_image "$BUILD_WORK/image.tar" "$dir" "$key"
  echo "$tool: built $IMAGE_REPO:$IMAGE_TAG ($(du -h "$dir/image.tar" | cut -f1))" >&2
}

# store_image TAR DIR KEY: keeps TAR, the image of the recipe sourced before, in DIR
# (image.tar, repo, ref, key); the archive is renamed into place, so a reader never
# sees half of it.
store_image() {
  local tar=$1 dir=$2 key=$3
  mkdir -p "$dir"
  mv "$tar" "$dir/image.tar.tmp"
  mv "$dir/image.tar.tmp" "$dir/image.tar"
  echo "$IMAGE_REPO" >"$dir/repo"
  echo "$IMAGE_REPO:$IMAGE_TAG" >"$dir/ref"
  echo "$key" >"$dir/key"
}
