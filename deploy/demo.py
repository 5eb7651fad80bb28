#!/usr/bin/env python3
"""The offloading demo, on the two running testbed clusters (scripts/demo runs it).

  demo.py up     install the plugin chart (remote) and the provider chart (local)
                 with real Helm code, offload a 2-replica `busybox httpd`
                 Deployment to the virtual node and fetch its page from a client
                 pod in the local cluster through the workload's stable Service
  demo.py down   remove what `up` installed (the clusters stay)

Needs KUBECONFIG_LOCAL, KUBECONFIG_REMOTE (testbed.sh env), OFFLOAD_KUBECTL,
the images imported into both clusters (deploy/images/build.sh import) and the
Helm SDK on PYTHONPATH (charts/tests/helm-sdk.sh).
"""

import base64
import functools
import sys
import time
from pathlib import Path

import helm_python as helm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "testbed" / "python"))
import offload_testlib as testlib  # noqa: E402 - found through the path above
from offload_testlib import Failed  # noqa: E402

NS = "offload-system"
APP_NS = "demo"
NODE = "offload-remote"
PLUGIN_NODE_PORT = 32400  # in the remote cluster's NodePort range
GATEWAY_NODE_PORT = 30222  # in the local cluster's NodePort range
RELEASE_PLUGIN = "offload"
RELEASE_PROVIDER = "offload"
BUSYBOX = "localhost/offload/busybox:1.0"
HTTPD = ('mkdir -p /tmp/www && echo "hello from $(hostname), running in the remote cluster" '
         '> /tmp/www/index.html && echo "$(hostname): httpd serving /tmp/www on :8080" '
         '&& exec httpd -f -p 8080 -h /tmp/www')


def say(msg):
    print(f"--> {msg}", flush=True)


# Only our own failures are retried: anything else is a bug of the demo, not a slow cluster.
wait_for = functools.partial(testlib.wait_for, retry_on=Failed)


class Cluster(testlib.Cluster):
    """A testbed cluster (offload_testlib) with what the demo does to it."""

    def namespace(self, ns):
        def not_terminating():
            out = self.kubectl("get", "namespace", ns, "-o", "jsonpath={.status.phase}", check=False)
            return out.strip() != "Terminating"

        wait_for(not_terminating, 180, f"namespace {ns} of a previous run to be deleted on the {self.name} cluster")
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        self.wait_default_service_account(ns)

    def install(self, ns, chart, release, values):
        cfg = self.helm(ns)
        try:
            cfg.uninstall(release)  # a previous demo run that was not cleaned up
        except helm.HelmError:
            pass
        try:
            cfg.install(str(ROOT / "charts" / chart), release, values, timeout=180)
        except helm.HelmError as e:
            raise Failed(f"helm install {release} (charts/{chart}) on the {self.name} cluster: {e}") from e


def up():
    local, remote = Cluster("local"), Cluster("remote")
    t0 = time.monotonic()

    say("remote cluster: helm install the plugin chart (the plugin installs the bastion)")
    remote.namespace(NS)
    remote.install(NS, "plugin", RELEASE_PLUGIN, {
        "service": {"type": "NodePort", "nodePort": PLUGIN_NODE_PORT},
    })
    plugin = f"{RELEASE_PLUGIN}-plugin"
    wait_for(lambda: remote.deployment_ready(NS, plugin), 180, f"deployment {plugin} Ready on the remote cluster",
             lambda: remote.describe(NS))
    token = base64.b64decode(remote.get("-n", NS, "secret", f"{plugin}-token")["data"]["token"]).decode()
    # The plugin serves TLS with the certificate its chart generated; the
    # provider pins that certificate's SHA-256 (printed by the chart's NOTES).
    pin = remote.get("-n", NS, "secret", f"{plugin}-tls")["metadata"]["annotations"]["offload.dev/cert-sha256"]
    url = f"https://{remote.node_ip()}:{PLUGIN_NODE_PORT}"
    say(f"plugin Ready, reachable from the local cluster at {url} (certificate {pin})")

    say("local cluster: helm install the provider chart (virtual node + SSH gateway)")
    local.namespace(NS)
    local.install(NS, "provider", RELEASE_PROVIDER, {
        "node": {"name": NODE, "labels": {"offload.dev/demo": "true"}},
        "plugin": {"url": url, "token": {"value": token}, "certSHA256": pin},
        "gateway": {"enabled": True, "nodePort": GATEWAY_NODE_PORT},
    })
    provider = f"{RELEASE_PROVIDER}-provider"
    wait_for(lambda: local.deployment_ready(NS, provider), 180, f"deployment {provider} Ready on the local cluster",
             lambda: local.describe(NS))

    def node_ready():
        n = local.get("node", NODE)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))

    wait_for(node_ready, 120, f"virtual node {NODE} Ready", lambda: local.kubectl("describe", "node", NODE, check=False))
    say(f"virtual node {NODE} is Ready")

    say("local cluster: a 2-replica busybox httpd Deployment on the virtual node, Service name 'web'")
    local.namespace(APP_NS)
    t_apply = time.monotonic()
    local.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": APP_NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"},
                             "annotations": {"interlink.io/tunnel-service": "web"}},
                "spec": {
                    "nodeSelector": {"offload.dev/demo": "true"},
                    "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}],
                    "containers": [{
                        "name": "httpd", "image": BUSYBOX,
                        "command": ["sh", "-c", HTTPD],
                        "ports": [{"name": "http", "containerPort": 8080}],
                    }],
                },
            },
        },
    })
    wait_for(lambda: local.deployment_ready(APP_NS, "web"), 240, "both replicas Running on the virtual node",
             lambda: local.describe(APP_NS))
    say("both replicas run remotely; fetching the page through the Service 'web' from a client pod")

    def fetch():
        name = f"client-{int(time.time() * 1000) % 100000}"
        out = local.kubectl("-n", APP_NS, "run", name, "--image", BUSYBOX, "--restart=Never", "--rm", "-i",
                            "--quiet", "--command", "--", "sh", "-c",
                            # The testbed has no cluster DNS: the Service's environment variables
                            # (set in every pod created after the Service) name it instead.
                            # (Debian's busybox-static wget crashes with -T: `timeout` bounds it.)
                            'for i in 1 2 3 4 5 6; do timeout 5 wget -q -O- "http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/"; done',
                            check=False, timeout=90)
        # Six requests: kube-proxy spreads them over the replicas.
        answers = sorted({line for line in out.splitlines() if line.startswith("hello from")})
        return "\n".join(answers) if answers else None

    page = wait_for(fetch, 180, "the page through the Service web", lambda: local.describe(APP_NS))
    t_page = time.monotonic() - t_apply

    print()
    print("=== local cluster: kubectl get pods -o wide -n demo")
    print(local.kubectl("-n", APP_NS, "get", "pods", "-o", "wide"))
    print("=== local cluster: kubectl get svc,endpoints -n demo")
    print(local.kubectl("-n", APP_NS, "get", "svc,endpoints"))
    print("=== remote cluster: kubectl get pods -o wide -A -l interlink.io=offloading")
    print(remote.kubectl("get", "pods", "-o", "wide", "-A", "-l", "interlink.io=offloading"))
    print("=== local cluster: kubectl logs -n demo deploy/web (apiserver -> provider :10250 -> plugin -> remote)")
    print(wait_for(lambda: (lambda out: out if "serving" in out else None)(
        local.kubectl("-n", APP_NS, "logs", "deploy/web", check=False)), 60, "kubectl logs of the offloaded pod",
        lambda: local.kubectl("-n", APP_NS, "logs", "deploy/web", check=False)))
    web_ip = local.get("-n", APP_NS, "service", "web")["spec"]["clusterIP"]
    print(f"=== the page, fetched 6 times by a client pod in the local cluster through the Service web "
          f"({web_ip}:8080); the replicas that answered:")
    print(page)
    print()
    say(f"kubectl apply -> page served through the tunnel: {t_page:.1f} s (whole demo setup {time.monotonic() - t0:.0f} s)")


def down():
    local, remote = Cluster("local"), Cluster("remote")
    local.kubectl("delete", "namespace", APP_NS, "--ignore-not-found", "--wait=true", check=False, timeout=180)
    for c, rel in ((local, RELEASE_PROVIDER), (remote, RELEASE_PLUGIN)):
        try:
            c.helm(NS).uninstall(rel)
        except helm.HelmError as e:
            print(f"helm uninstall {rel} on the {c.name} cluster: {e}", file=sys.stderr)
    # What the components made outside their releases: the virtual node, the
    # bastion the plugin installed (and its ClusterRole), the remote namespaces.
    local.kubectl("delete", "node", NODE, "--ignore-not-found", check=False)
    remote.kubectl("delete", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/managed-by=offload-plugin",
                   "--ignore-not-found", check=False)
    for c in (local, remote):
        c.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)
    # The remote namespace the plugin made for the app (default prefix "offloading").
    remote.kubectl("delete", "namespace", f"offloading-{APP_NS}", "--ignore-not-found", "--wait=false", check=False)


def main():
    helm.disable_logging()
    cmd = sys.argv[1] if len(sys.argv) > 1 else "up"
    try:
        {"up": up, "down": down}[cmd]()
    except KeyError:
        print(__doc__, file=sys.stderr)
        return 2
    except Failed as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
