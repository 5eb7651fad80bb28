#!/usr/bin/env bash
# Runs the chart tests (charts/tests/test_charts.py) with real Helm code: the
# Helm v4 Go SDK from PyPI helm-python-sdk, fetched once into
# $OFFLOAD_CACHE (helm-sdk.sh). The cluster tests need KUBECONFIG_LOCAL and
# KUBECONFIG_REMOTE (`bash testbed/scripts/testbed.sh env`) and the images
# (deploy/images/prepare-test-images.sh, imported by tests/tests/charts.rs or
# `deploy/images/build.sh import SOCKET`).
#
#   charts/tests/run.sh                 # every test
#   charts/tests/run.sh RenderTests     # offline tests only
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYLIB=$("$HERE/helm-sdk.sh")
export PYTHONPATH="$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$HERE/test_charts.py" "$@"
