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
