# shellcheck shell=bash disable=SC2034 # the variables are read by build.sh, which sources this file
# Image recipe: the tunnel gateway, Debian's stock OpenSSH sshd running as the
# non-root user `tunnel` (uid 1000). Its sshd_config and authorized_keys come
# from the ConfigMap gateway-manager renders (/etc/ssh/gateway/config), the
# host key from its Secret (/etc/ssh/gateway/hostkey). Same contract as
# testbed/scripts/images.sh recipes; built by deploy/images/build.sh.
IMAGE_REPO=localhost/offload/gateway
IMAGE_TAG=1.0
IMAGE_CONFIG=(--config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin --config.user 1000:1000
  --config.cmd /usr/sbin/sshd --config.cmd -D --config.cmd -e --config.cmd -f
  --config.cmd /etc/ssh/gateway/config/sshd_config --config.workingdir /)

image_inputs() {
  dpkg-query -W -f='${Package} ${Version}\n' openssh-server libc6 coreutils login
  cat "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
}

image_rootfs() {
  local root=$1 f
  # shellcheck source=lib.sh
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/ssh/gateway/config,etc/ssh/gateway/hostkey,tmp,proc,sys,dev,run/sshd,var/empty}
  chmod 1777 "$root/tmp"
  # sshd, the forced command (/bin/false) and the login shell (nologin).
  copy_with_libs "$root" /usr/sbin/sshd /bin/false /usr/sbin/nologin
  # OpenSSH >= 9.8 splits the per-connection part into helpers.
  for f in /usr/lib/openssh/sshd-session /usr/lib/openssh/sshd-auth; do
    [ -e "$f" ] && copy_with_libs "$root" "$f"
  done
  cat > "$root/etc/passwd" <<P
root:x:0:0:root:/root:/usr/sbin/nologin
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin
tunnel:x:1000:1000:tunnel gateway:/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
P
  printf 'root:x:0:\ntunnel:x:1000:\nnogroup:x:65534:\n' > "$root/etc/group"
  # No /etc/shadow: the account is not locked, and has no password.
  printf 'passwd: files\ngroup: files\nshadow: files\n' > "$root/etc/nsswitch.conf"
}
