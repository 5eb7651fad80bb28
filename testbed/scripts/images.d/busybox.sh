# shellcheck shell=bash disable=SC2034 # the variables are read by images.sh, which sources this file
# Image recipe: a shell, coreutils and httpd/wget/nc for test pods, from Debian's
# busybox-static (a static binary, so the image needs no libc).
# Sourced by images.sh; see images.sh for the contract.
IMAGE_REPO=localhost/offload/busybox
# Our recipe version, not busybox's: bump it when this file changes meaningfully.
IMAGE_TAG=1.0
IMAGE_CONFIG=(--config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin --config.cmd sh --config.workingdir /)

image_inputs() {
  dpkg-query -W -f='busybox-static ${Version}\n' busybox-static
}

image_rootfs() {
  local root=$1 applet
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,www}
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  # One symlink per applet at the path busybox itself reports (bin/sh, usr/bin/wget, ...).
  for applet in $(/bin/busybox --list-full); do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
}
