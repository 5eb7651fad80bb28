"""What the Python programs that drive the two testbed clusters share
(deploy/demo.py, charts/tests/test_charts.py): a `Cluster` reached with the
testbed's kubectl and a kubeconfig, and `wait_for`, a poll with a deadline
that says what it waited for.

Import it with the folder on the path:

    sys.path.insert(0, str(REPO / "testbed" / "python"))
    from offload_testlib import Cluster, Failed, wait_for
"""

import json
import os
import secrets
import subprocess
import time
from pathlib import Path


class Failed(AssertionError):
    """A step did not give what it should. An AssertionError, so unittest
    reports it as a failure, not an error."""


def wait_for(cond, timeout, what, on_timeout=None, retry_on=Exception):
    """Calls `cond` every second until it returns a true value (returned), for
    at most `timeout` seconds. Exceptions of type `retry_on` are remembered and
    retried (the API may hiccup); on timeout, raises Failed naming `what`, the
    last such error and what `on_timeout()` says (e.g. a describe)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except retry_on as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        time.sleep(1)
    extra = f"\n{on_timeout()}" if on_timeout else ""
    raise Failed(f"timed out after {timeout} s waiting for {what}{f' (last error: {last})' if last else ''}{extra}")


class Cluster:
    """One testbed cluster ("local" or "remote"): kubectl with its kubeconfig
    (default: $KUBECONFIG_LOCAL / $KUBECONFIG_REMOTE, as `testbed.sh env`
    prints them) and the kubectl of $OFFLOAD_KUBECTL (default: on PATH)."""

    def __init__(self, name, kubeconfig=None):
        self.name = name
        self.kubeconfig = kubeconfig if kubeconfig is not None else os.environ.get(f"KUBECONFIG_{name.upper()}", "")
        if not self.kubeconfig or not Path(self.kubeconfig).is_file():
            raise Failed(f"{name} cluster: no kubeconfig at {self.kubeconfig!r} (set KUBECONFIG_{name.upper()}; "
                         "is the testbed up? bash testbed/scripts/testbed.sh up)")
        self.kubectl_bin = os.environ.get("OFFLOAD_KUBECTL", "kubectl")
        # Namespaces made by fresh_namespace, deleted by cleanup.
        self.namespaces = []

    def kubectl(self, *args, input=None, check=True, timeout=120):
        """kubectl ARGS on this cluster: its stdout; raises Failed with stderr
        when it fails and `check` is set."""
        r = subprocess.run([self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args], input=input,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise Failed(f"kubectl {' '.join(args)} on the {self.name} cluster: {r.stderr.strip()}")
        return r.stdout

    def get(self, *args):
        return json.loads(self.kubectl("get", "-o", "json", *args))

    def apply(self, obj):
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def helm(self, namespace):
        """The Helm SDK's configuration for `namespace` of this cluster."""
        import helm_python as helm  # only the programs that install charts need the SDK

        return helm.Config(kubeconfig_path=self.kubeconfig, namespace=namespace)

    def wait_default_service_account(self, ns):
        """1.20's ServiceAccount admission refuses pods until it exists."""
        wait_for(lambda: self.kubectl("-n", ns, "get", "serviceaccount", "default", check=False),
                 60, f"the default ServiceAccount of {ns} on the {self.name} cluster")

    def fresh_namespace(self, prefix):
        """A new namespace `<prefix>-<random>`, deleted by cleanup()."""
        ns = f"{prefix}-{secrets.token_hex(3)}"
        self.kubectl("create", "namespace", ns)
        self.namespaces.append(ns)
        self.wait_default_service_account(ns)
        return ns

    def cleanup(self):
        for ns in self.namespaces:
            self.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    def node_ip(self):
        """The InternalIP of the cluster's real node (not a virtual one)."""
        for n in self.get("nodes", "-l", "!virtual-node.interlink/type")["items"]:
            for a in n["status"]["addresses"]:
                if a["type"] == "InternalIP":
                    return a["address"]
        raise Failed(f"{self.name} cluster: no node with an InternalIP")

    def deployment_ready(self, ns, name):
        """Every wanted replica of deployment ns/name is ready."""
        d = self.get("-n", ns, "deployment", name)
        want = d["spec"].get("replicas", 1)
        return d.get("status", {}).get("readyReplicas", 0) >= want

    def describe(self, ns):
        """What to show when something in `ns` did not come: its pods,
        deployments, services and endpoints, the last events and the pods'
        last log lines."""
        objs = self.kubectl("-n", ns, "get", "pods,deploy,svc,endpoints", "-o", "wide", check=False)
        events = self.kubectl("-n", ns, "get", "events", "--sort-by=.lastTimestamp", check=False)
        logs = ""
        for name in self.kubectl("-n", ns, "get", "pods", "-o", "name", check=False).split():
            logs += f"--- {name}\n" + self.kubectl("-n", ns, "logs", name, "--all-containers", "--tail=30",
                                                 check=False)[-3000:]
        return f"objects:\n{objs}\nevents:\n{events[-3000:]}\nlogs:\n{logs}"
