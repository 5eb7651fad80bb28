#!/usr/bin/env bash
# Makes the Helm SDK for Python (PyPI helm-python-sdk: the Helm v4 Go SDK in a
# shared library) importable, once: the wheel is downloaded with pip into
# $OFFLOAD_CACHE/helm-python-sdk-<version>/ and unpacked there; later runs
# only print the path. Idempotent; safe to run concurrently (flock).
#
#   PYTHONPATH=$(charts/tests/helm-sdk.sh) python3 -c 'import helm_python'
set -euo pipefail
VERSION=${HELM_PYTHON_SDK_VERSION:-0.2.2}
CACHE=${OFFLOAD_CACHE:-$HOME/.cache/offload}/helm-python-sdk-$VERSION
PYTHON=${PYTHON:-python3}
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ ! -f "$CACHE/pylib/.complete" ]; then
  if ! ls "$CACHE"/whl/helm_python_sdk-"$VERSION"-*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
      --only-binary=:all: -d "$CACHE/whl" "helm-python-sdk==$VERSION" >&2
  fi
  rm -rf "$CACHE/pylib.tmp"
  wheels=("$CACHE"/whl/helm_python_sdk-"$VERSION"-*.whl)
  "$PYTHON" -m zipfile -e "${wheels[0]}" "$CACHE/pylib.tmp"
  rm -rf "$CACHE/pylib"
  mv "$CACHE/pylib.tmp" "$CACHE/pylib"
  touch "$CACHE/pylib/.complete"
fi
echo "$CACHE/pylib"
