# shellcheck shell=bash
# Helpers shared by the image recipes in this folder.

# copy_with_libs ROOT FILE...: copy each file and the shared libraries `ldd`
# names for it (and the dynamic loader) into ROOT at the same paths.
copy_with_libs() {
  local root=$1 f lib
  shift
  for f in "$@"; do
    cp -L --parents "$f" "$root/"
    for lib in $(ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
      [ -e "$root$lib" ] || cp -L --parents "$lib" "$root/"
    done
  done
}

# workspace_version: the `version` of `[workspace.package]` in the root
# Cargo.toml, the tag of the images of our binaries.
workspace_version() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  awk '/^\[workspace.package\]/ {p=1; next} /^\[/ {p=0} p && $1 == "version" {gsub(/"/, "", $3); print $3; exit}' "$here/../../Cargo.toml"
}

# release_bin NAME: our release binary NAME; NAME_BIN (upper case, dashes as
# underscores, e.g. OFFLOAD_PROVIDER_BIN) overrides it, else
# $CARGO_TARGET_DIR/release/NAME (default target/).
release_bin() {
  local name=$1 var repo
  var=$(echo "${name}_BIN" | tr 'a-z-' 'A-Z_')
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  echo "${!var:-${CARGO_TARGET_DIR:-$repo/target}/release/$name}"
}

# binary_rootfs ROOT BIN NAME UID USER: a minimal rootfs holding our binary BIN
# as /usr/bin/NAME, the libraries it links, and an account USER with uid/gid UID.
binary_rootfs() {
  local root=$1 bin=$2 name=$3 uid=$4 user=$5
  [ -x "$bin" ] || { echo "$name: $bin missing: cargo build --release -p $name" >&2; return 1; }
  mkdir -p "$root"/{usr/bin,etc,tmp,proc,sys,dev}
  chmod 1777 "$root/tmp"
  copy_with_libs "$root" "$bin"
  [ "$bin" = "/usr/bin/$name" ] || mv "$root$bin" "$root/usr/bin/$name"
  printf 'root:x:0:0:root:/root:/bin/false\n%s:x:%s:%s:%s:/nonexistent:/bin/false\n' "$user" "$uid" "$uid" "$user" > "$root/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$user" "$uid" > "$root/etc/group"
}

# rust_binary_recipe NAME USER CA [CMD...]: the variables of the recipe of an image
# holding only our release binary NAME (see release_bin) as /usr/bin/NAME (the
# entrypoint), the libraries it links and an account USER with uid 65532 that
# runs it; CA=ca also copies the host's CA bundle (if installed), CA=no-ca does
# not. CMD are the image's default arguments. Repo localhost/offload/<NAME
# without "offload-">, tag the workspace version. The recipe then defines
# `image_inputs() { rust_binary_inputs; }` and
# `image_rootfs() { rust_binary_rootfs "$1"; }`.
# shellcheck disable=SC2034 # IMAGE_* are read by build.sh, which sources the recipe
rust_binary_recipe() {
  RUST_BINARY=$1 RUST_BINARY_USER=$2 RUST_BINARY_CA=$3
  shift 3
  IMAGE_REPO=localhost/offload/${RUST_BINARY#offload-}
  IMAGE_TAG=$(workspace_version)
  IMAGE_CONFIG=(--config.env PATH=/usr/bin:/bin --config.user 65532:65532
    --config.entrypoint "/usr/bin/$RUST_BINARY")
  local arg
  for arg in "$@"; do IMAGE_CONFIG+=(--config.cmd "$arg"); done
  IMAGE_CONFIG+=(--config.workingdir /)
}

# rust_binary_inputs: what the image of rust_binary_recipe is made of (its cache key).
rust_binary_inputs() {
  sha256sum "$(release_bin "$RUST_BINARY")"
  if [ "$RUST_BINARY_CA" = ca ]; then
    dpkg-query -W -f='${Package} ${Version}\n' libc6 ca-certificates 2>/dev/null || true
  else
    dpkg-query -W -f='${Package} ${Version}\n' libc6
  fi
  cat "${BASH_SOURCE[0]}"
}

# rust_binary_rootfs ROOT: the root filesystem of the image of rust_binary_recipe.
rust_binary_rootfs() {
  local root=$1
  binary_rootfs "$root" "$(release_bin "$RUST_BINARY")" "$RUST_BINARY" 65532 "$RUST_BINARY_USER"
  if [ "$RUST_BINARY_CA" = ca ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
}
