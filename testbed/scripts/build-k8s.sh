#!/usr/bin/env bash
# Builds the Kubernetes binaries of the test ground, once per machine, into a cache:
#   $HOME/.cache/offload/kubernetes-1.20.2/bin/{kube-apiserver,kube-controller-manager,
#                                               kube-scheduler,kubelet,kube-proxy,kubectl}
# With the cache present it returns at once.
#
# Why 1.20.2 from Debian's source package: it is the newest Kubernetes whose server parts
# can be built here. Debian bookworm's source `kubernetes 1.20.5+really1.20.2-1.1+deb12u1`
# is the full tree; newer Debian sources (trixie, sid) ship only kubectl, and there is no
# Go module proxy or container registry to get anything else.
#
# Why kubectl is built too: /usr/bin/kubectl on these machines is google-cloud-sdk's 1.32
# dispatcher (not a Debian package, may be absent elsewhere), and Debian's own
# kubernetes-client 1.20 is built with the reflect2 version that crashes on Go 1.19 (see
# below). A self-built kubectl 1.20.2 matches the server exactly.
#
# Env: OFFLOAD_CACHE (default $HOME/.cache/offload)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
# Bump RECIPE whenever the build below changes, so stale caches are rebuilt.
RECIPE=r1
CACHE=${OFFLOAD_CACHE:-$HOME/.cache/offload}/kubernetes-1.20.2
BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

cached() {
  [ "$(cat "$CACHE/recipe" 2>/dev/null)" = "$K8S_DEB_VERSION-$RECIPE" ] || return 1
  [ -f "$CACHE/src/pause.c" ] || return 1
  for b in "${BINS[@]}"; do [ -x "$CACHE/bin/$b" ] || return 1; done
}

if cached; then
  echo "build-k8s.sh: Kubernetes 1.20.2 binaries cached in $CACHE/bin"
  exit 0
fi

"$HERE/install-deps.sh" build

# apt-get source needs deb-src lines; add them for bookworm only (same mirror and key as
# the machine's deb822 file).
if ! grep -rqs '^\(Types: .*deb-src\|deb-src \)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat > /etc/apt/sources.list.d/offload-debsrc.sources <<'X'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
X
  apt-get update -qq
fi

# The build needs ~3 GB of scratch space (Go build cache inside the tree); all of it is
# deleted on exit, only the binaries are kept.
W=$(mktemp -d "${TMPDIR:-/tmp}/offload-k8s-build.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W"
t0=$(date +%s)
if ! apt-get source -qq --download-only "kubernetes=$K8S_DEB_VERSION" 2>"$W/apt-source.err"; then
  cat "$W/apt-source.err" >&2
  echo "build-k8s.sh: cannot download the source package kubernetes=$K8S_DEB_VERSION (deb-src lines? network?)" >&2
  exit 1
fi
dpkg-source -x ./*.dsc src >/dev/null
cd src

# Go 1.19 with the vendored modern-go/reflect2 v1.0.1 makes kube-apiserver die with
# "fatal error: fault" (runtime.mapiterinit via json-iterator) on ordinary requests.
# Debian's reflect2 1.0.2 is safe with Go >= 1.18.
R=vendor/github.com/modern-go/reflect2
rm -rf "$R"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$R"
rm -f "$R"/*_test.go

# CGO_ENABLED=0 + KUBE_STATIC_OVERRIDES=kubelet: make the kubelet static like the rest
# (it is cgo by default); make's default GOLDFLAGS already strip (-s -w).
CGO_ENABLED=0 KUBE_STATIC_OVERRIDES=kubelet \
  make WHAT="$(printf 'cmd/%s ' "${BINS[@]}")" >"$W/make.log" 2>&1 || {
  tail -40 "$W/make.log" >&2
  echo "build-k8s.sh: make failed (log above)" >&2
  exit 1
}

# Write into a temporary dir and rename, so an interrupted run never leaves a half cache.
rm -rf "$CACHE.tmp"
mkdir -p "$CACHE.tmp/bin" "$CACHE.tmp/src"
for b in "${BINS[@]}"; do cp "_output/bin/$b" "$CACHE.tmp/bin/"; done
# images.sh compiles the pause image from the source's own pause.c.
cp build/pause/linux/pause.c "$CACHE.tmp/src/pause.c"
echo "$K8S_DEB_VERSION-$RECIPE" > "$CACHE.tmp/recipe"
rm -rf "$CACHE"
mv "$CACHE.tmp" "$CACHE"
echo "build-k8s.sh: built Kubernetes 1.20.2 into $CACHE/bin in $(( $(date +%s) - t0 )) s"
