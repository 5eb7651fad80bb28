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
