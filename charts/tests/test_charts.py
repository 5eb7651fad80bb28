#!/usr/bin/env python3
"""Tests of the Helm charts in charts/, with real Helm code (the Helm v4 Go
SDK through PyPI helm-python-sdk; run.sh makes it importable).

Offline: strict lint (as for Kubernetes 1.20) and rendering with default and
non-default values, asserting on the rendered objects. On the two test
clusters (KUBECONFIG_LOCAL, KUBECONFIG_REMOTE; the images imported): the
plugin chart in the remote cluster, the provider chart in the local one (its
virtual node registers and turns Ready through the plugin's NodePort and
token), and the tcp-tunnel gateway (local) and bastion (remote) charts
carrying a page from a remote pod to a local client. Fresh namespaces, unique
release and node names, everything uninstalled at the end.

    charts/tests/run.sh [-k PATTERN]      # offline and cluster tests
    charts/tests/run.sh RenderTests       # offline only
"""

import base64
import json
import os
import re
import hashlib
import secrets
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import helm_python as helm

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "testbed" / "python"))
import offload_testlib as testlib  # noqa: E402 - found through the path above
from offload_testlib import wait_for  # noqa: E402
CHARTS = REPO / "charts"
PROVIDER = CHARTS / "provider"
PLUGIN = CHARTS / "plugin"
TUNNEL = CHARTS / "tcp-tunnel"
GATEWAY = TUNNEL / "charts" / "gateway"
BASTION = TUNNEL / "charts" / "bastion"
KUBE_VERSION = "v1.20.2"  # the test clusters'; charts must install there


def workspace_version():
    text = (REPO / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)


VERSION = workspace_version()


# ---------------------------------------------------------------- helpers

def render(chart, values=None, name="rel", namespace="ns"):
    """Render offline; returns the list of objects (dicts)."""
    out = helm.Chart.load(str(chart)).render(values or {}, name=name, namespace=namespace, is_install=True)
    return [o for path, text in sorted(out.items()) if not path.endswith("NOTES.txt") for o in parse(text)]


def notes(chart, values=None, name="rel", namespace="ns"):
    out = helm.Chart.load(str(chart)).render(values or {}, name=name, namespace=namespace, is_install=True)
    return "\n".join(t for p, t in sorted(out.items()) if p.endswith("NOTES.txt"))


def parse(manifest):
    objs = []
    for doc in re.split(r"^---\s*$", manifest, flags=re.M):
        if doc.strip() and any(not l.lstrip().startswith("#") and l.strip() for l in doc.splitlines()):
            o = helm.values_from_yaml(doc)
            if o:
                objs.append(o)
    return objs


def find(objs, kind, name=None):
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    if len(hits) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in hits]}")
    return hits[0]


def kinds(objs):
    return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objs)


def container(deploy, name=None):
    cs = deploy["spec"]["template"]["spec"]["containers"]
    return cs[0] if name is None else next(c for c in cs if c["name"] == name)


def lint_problems(chart, values=None):
    r = helm.lint(str(chart), values or {}, strict=True, with_subcharts=True, kube_version=KUBE_VERSION)
    return r["errors"] + [m["error"] for m in r["messages"] if m["severity"] >= 2]


def ssh_keypair(tmp, name):
    path = Path(tmp) / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path.read_text(), (Path(str(path) + ".pub")).read_text().strip()


class Hardened:
    """Checks every chart's workloads must pass."""

    def assert_hardened(self, deploy):
        spec = deploy["spec"]["template"]["spec"]
        self.assertTrue(spec["securityContext"]["runAsNonRoot"], deploy["metadata"]["name"])
        self.assertNotEqual(spec["securityContext"].get("runAsUser"), 0)
        for c in spec["containers"]:
            sc = c["securityContext"]
            self.assertTrue(sc["runAsNonRoot"], c["name"])
            self.assertTrue(sc["readOnlyRootFilesystem"], c["name"])
            self.assertFalse(sc["allowPrivilegeEscalation"], c["name"])
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"], c["name"])
            self.assertNotIn("add", sc["capabilities"])
            self.assertIn("requests", c["resources"], c["name"])
            self.assertIn("limits", c["resources"], c["name"])
            self.assertIn("readinessProbe", c, c["name"])
            self.assertIn("livenessProbe", c, c["name"])

    def assert_no_wildcards(self, objs):
        for o in objs:
            for rule in o.get("rules", []) if o["kind"] in ("Role", "ClusterRole") else []:
                for field in ("apiGroups", "resources", "verbs"):
                    self.assertNotIn("*", rule.get(field, []), f"{o['kind']} {o['metadata']['name']}: {rule}")


def rules_for(role, resource, group=""):
    verbs = set()
    for r in role["rules"]:
        if resource in r.get("resources", []) and group in r.get("apiGroups", []) and not r.get("resourceNames"):
            verbs |= set(r["verbs"])
    return verbs


# ---------------------------------------------------------------- offline

class RenderTests(unittest.TestCase, Hardened):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="charts-test-")
        cls.host_key, cls.host_pub = ssh_keypair(cls.tmp, "host")
        cls.bastion_key, cls.bastion_pub = ssh_keypair(cls.tmp, "bastion")

    def tunnel_values(self, **over):
        v = {
            "ssh": {"publicKey": self.bastion_pub, "hostKey": self.host_key},
        }
        b = {
            "tunnel": {
                "gateway": {"host": "10.201.0.1", "ssh": {
                    "privateKey": base64.b64encode(self.bastion_key.encode()).decode(),
                    "hostKey": self.host_pub}},
                "service": {"gatewayPort": 8181, "targetHost": "10.202.1.7", "targetPort": 8080},
            }
        }
        return v, b

    # lint -------------------------------------------------------------
    def test_lint_strict_defaults(self):
        for chart in (PROVIDER, PLUGIN, TUNNEL, GATEWAY, BASTION):
            with self.subTest(chart=chart.name):
                self.assertEqual(lint_problems(chart), [])

    def test_lint_strict_with_values(self):
        g, b = self.tunnel_values()
        self.assertEqual(lint_problems(TUNNEL, {"gateway": g, "bastion": b}), [])
        self.assertEqual(lint_problems(GATEWAY, g), [])
        self.assertEqual(lint_problems(BASTION, b), [])
        self.assertEqual(lint_problems(PROVIDER, {"plugin": {"url": "https://p.example:4000", "token": {"value": "t"}}}), [])
        self.assertEqual(lint_problems(PLUGIN, {"service": {"type": "NodePort", "nodePort": 30400}}), [])

    def test_lint_catches_schema_violations(self):
        self.assertNotEqual(lint_problems(PROVIDER, {"plugin": {"url": "ftp://x"}}), [])
        self.assertNotEqual(lint_problems(PLUGIN, {"service": {"type": "Ingress"}}), [])
        self.assertNotEqual(lint_problems(PLUGIN, {"no-such-value": 1}), [])

    # provider ---------------------------------------------------------
    def test_provider_defaults(self):
        objs = render(PROVIDER, name="p1", namespace="offload")
        self.assertEqual(kinds(objs), sorted([
            "ClusterRole/offload-provider:offload:p1-provider",
            "ClusterRoleBinding/offload-provider:offload:p1-provider",
            "Deployment/p1-provider",
            "Role/offload-provider:offload:p1-provider",
            "Role/p1-provider-gateway",
            "RoleBinding/offload-provider:offload:p1-provider",
            "RoleBinding/p1-provider-gateway",
            "ServiceAccount/p1-provider",
        ]))
        d = find(objs, "Deployment")
        self.assert_hardened(d)
        c = container(d)
        self.assertEqual(c["image"], f"localhost/offload/provider:{VERSION}")
        args = c["args"]
        for want in ["--node-name=virtual-node", "--node-ip=$(POD_IP)", "--plugin-url=http://127.0.0.1:4000",
                     "--kubelet-addr=0.0.0.0:10250", "--admin-addr=0.0.0.0:9099", "--cpu=100",
                     "--memory=3000Gi", "--pods=10000"]:
            self.assertIn(want, args)
        self.assertFalse(any(a.startswith("--plugin-token-file") for a in args), args)
        # The link: no plain HTTP across a network, answers capped, the bastion key pinned.
        self.assertNotIn("--plugin-insecure", args)
        self.assertIn("--plugin-max-response-size=64MiB", args)
        self.assertIn("--bastion-key-refresh=60s", args)
        self.assertFalse(any(a.startswith(("--plugin-cert-sha256", "--plugin-client-")) for a in args), args)
        self.assertIn({"name": "kubelet", "containerPort": 10250, "protocol": "TCP"}, c["ports"])
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "admin"})
        self.assertEqual(d["spec"]["strategy"]["type"], "Recreate")
        self.assertEqual(d["spec"]["template"]["spec"]["serviceAccountName"], "p1-provider")
        self.assert_no_wildcards(objs)

        cr = find(objs, "ClusterRole")
        self.assertEqual(rules_for(cr, "nodes"), {"get", "list", "watch", "create", "update", "patch", "delete"})
        self.assertEqual(rules_for(cr, "nodes/status"), {"get", "update", "patch"})
        self.assertEqual(rules_for(cr, "pods/status"), {"get", "update", "patch"})
        self.assertNotIn("create", rules_for(cr, "pods"))
        # ConfigMaps and Secrets of pods: read only, cluster-wide.
        self.assertEqual(rules_for(cr, "secrets"), {"get", "list", "watch"})
        self.assertEqual(rules_for(cr, "configmaps"), {"get", "list", "watch"})
        self.assertEqual(rules_for(cr, "tokenreviews", "authentication.k8s.io"), {"create"})
        self.assertEqual(rules_for(cr, "subjectaccessreviews", "authorization.k8s.io"), {"create"})
        self.assertIn("create", rules_for(cr, "events"))
        self.assertIn("create", rules_for(cr, "events", "events.k8s.io"))
        self.assertIn("create", rules_for(cr, "services"))
        self.assertIn("update", rules_for(cr, "endpoints"))
        lease = find(objs, "Role", "offload-provider:offload:p1-provider")
        self.assertEqual(lease["metadata"]["namespace"], "kube-node-lease")
        self.assertEqual(rules_for(lease, "leases", "coordination.k8s.io"), {"get", "create", "update", "patch"})
        gw = find(objs, "Role", "p1-provider-gateway")
        self.assertEqual(gw["metadata"]["namespace"], "offload")
        self.assertIn("patch", rules_for(gw, "deployments", "apps"))
        self.assertIn("create", rules_for(gw, "secrets"))
        crb = find(objs, "ClusterRoleBinding")
        self.assertEqual(crb["subjects"], [{"kind": "ServiceAccount", "name": "p1-provider", "namespace": "offload"}])

        gargs = [a for a in args if a.startswith("--gateway-")]
        self.assertIn("--gateway-address=$(HOST_IP)", gargs)
        self.assertIn("--gateway-namespace=$(POD_NAMESPACE)", gargs)
        self.assertIn("--gateway-node-port=30222", gargs)
        self.assertIn("--gateway-port-range=40000-40999", gargs)
        self.assertIn("--gateway-image=localhost/offload/gateway:1.0", gargs)
        self.assertFalse(any(a.startswith("--bastion-public-key") for a in args))
        self.assertEqual(rules_for(cr, "namespaces"), set())  # only by name:
        self.assertIn({"apiGroups": [""], "resources": ["namespaces"], "resourceNames": ["offload"], "verbs": ["get"]},
                      cr["rules"])

        n = notes(PROVIDER, name="p1", namespace="offload")
        self.assertIn("kubectl get node virtual-node", n)
        self.assertIn("No plugin token is configured", n)

    def test_provider_custom_values(self):
        objs = render(PROVIDER, {
            "node": {"name": "hpc-1", "labels": {"site": "cnaf"},
                     "taints": [{"key": "example.com/gpu", "value": "true", "effect": "NoSchedule"}],
                     "defaultTaint": False, "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"}},
            "plugin": {"url": "https://plugin.example:30400", "mode": "interlink", "token": {"value": "s3cret"},
                       "caSecret": "plugin-ca", "certSHA256": "SHA256:" + "AB:" * 31 + "CD",
                       "clientCertSecret": "provider-client", "maxResponseSize": "8MiB"},
            "kubelet": {"port": 10260, "tlsSecret": "kl-tls", "clientCASecret": "kl-ca", "tokenReview": False},
            "gateway": {"enabled": False},
            "image": {"tag": "9.9.9"},
            "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
        }, name="p2", namespace="x")
        d = find(objs, "Deployment")
        c = container(d)
        self.assertEqual(c["image"], "localhost/offload/provider:9.9.9")
        args = c["args"]
        for want in ["--node-name=hpc-1", "--node-label=site=cnaf", "--node-taint=example.com/gpu=true:NoSchedule",
                     "--no-default-taint", "--cpu=64", "--memory=256Gi", "--pods=500",
                     "--plugin-url=https://plugin.example:30400", "--plugin-mode=interlink",
                     "--plugin-token-file=/var/run/offload/plugin-token/token",
                     "--plugin-ca-file=/var/run/offload/plugin-ca/ca.crt",
                     "--kubelet-addr=0.0.0.0:10260", "--tls-cert-file=/var/run/offload/kubelet-tls/tls.crt",
                     "--client-ca-file=/var/run/offload/kubelet-client-ca/ca.crt", "--token-review=false",
                     "--plugin-cert-sha256=SHA256:" + "AB:" * 31 + "CD",
                     "--plugin-client-cert-file=/var/run/offload/plugin-client/tls.crt",
                     "--plugin-client-key-file=/var/run/offload/plugin-client/tls.key",
                     "--plugin-max-response-size=8MiB"]:
            self.assertIn(want, args)
        # Without --gateway-address the provider runs no tunnel.
        self.assertFalse(any(a.startswith("--gateway-") for a in args), args)
        secret = find(objs, "Secret", "p2-provider-plugin-token")
        self.assertEqual(base64.b64decode(secret["data"]["token"]).decode(), "s3cret")
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["plugin-token"]["secret"]["secretName"], "p2-provider-plugin-token")
        self.assertEqual(vols["kubelet-tls"]["secret"]["secretName"], "kl-tls")
        self.assertEqual(vols["plugin-client"]["secret"]["secretName"], "provider-client")
        self.assertEqual(c["resources"], {"requests": {"cpu": "1", "memory": "64Mi"}, "limits": {"memory": "1Gi"}})
        # Without the gateway: no Role in the release namespace, no Services/Endpoints anywhere.
        self.assertEqual([o for o in objs if o["kind"] == "Role" and o["metadata"]["namespace"] == "x"], [])
        self.assertEqual(rules_for(find(objs, "ClusterRole"), "services"), set())
        self.assertNotIn("No plugin token", notes(PROVIDER, {"plugin": {"token": {"existingSecret": "t"}}}))

        ext = render(PROVIDER, {"plugin": {"token": {"existingSecret": "from-remote", "key": "tok"}}})
        self.assertEqual([o for o in ext if o["kind"] == "Secret"], [])
        self.assertIn("--plugin-token-file=/var/run/offload/plugin-token/tok", container(find(ext, "Deployment"))["args"])

    def test_provider_gateway_values(self):
        objs = render(PROVIDER, {"gateway": {"publicAddress": "gw.example.org:2222", "nodePort": 0,
                                             "name": "gw", "portRange": "41000-41099", "syncInterval": "2s",
                                             "bastionPublicKey": self.bastion_pub,
                                             "image": {"repository": "r/gw", "tag": "2", "pullPolicy": "Always"}}},
                      name="p3", namespace="n3")
        args = container(find(objs, "Deployment"))["args"]
        for want in ["--gateway-address=gw.example.org:2222", "--gateway-node-port=0", "--gateway-name=gw",
                     "--gateway-port-range=41000-41099", "--gateway-sync-interval=2s", "--gateway-image=r/gw:2",
                     "--gateway-image-pull-policy=Always", f"--bastion-public-key={self.bastion_pub}"]:
            self.assertIn(want, args)
        self.assertIn("gw.example.org:2222", notes(PROVIDER, {"gateway": {"publicAddress": "gw.example.org:2222"}}))

    def test_provider_rejects_bad_values(self):
        for bad in [{"plugin": {"url": "ftp://x"}}, {"node": {"name": "Not_A_Node"}},
                    {"node": {"taints": [{"key": "k", "effect": "Sometimes"}]}}, {"gateway": {"portRange": "40000"}},
                    {"nodeName": "typo-at-top-level"}, {"plugin": {"certSHA256": "abc"}},
                    # Plain HTTP to a remote plugin without saying so.
                    {"plugin": {"url": "http://10.1.2.3:30400"}},
                    {"plugin": {"url": "http://127.0.0.1.evil.example:30400"}}]:
            with self.subTest(values=bad), self.assertRaises(helm.HelmError):
                render(PROVIDER, bad)

    def test_provider_plain_http_only_when_insecure(self):
        with self.assertRaisesRegex(helm.HelmError, "plugin.insecure"):
            render(PROVIDER, {"plugin": {"url": "http://10.1.2.3:30400"}})
        args = container(find(render(PROVIDER, {"plugin": {"url": "http://10.1.2.3:30400", "insecure": True}}),
                              "Deployment"))["args"]
        self.assertIn("--plugin-insecure", args)
        # Loopback (a sidecar) needs no flag.
        args = container(find(render(PROVIDER, {"plugin": {"url": "http://localhost:4000"}}), "Deployment"))["args"]
        self.assertNotIn("--plugin-insecure", args)

    # plugin -----------------------------------------------------------
    def test_plugin_rejects_mappings_outside_a_prefix(self):
        for bad in [{"namespacePrefix": ""}, {"namespacePrefix": "kube"}, {"namespacePrefix": "kube-x"},
                    {"instance": "not a label"}, {"maxConcurrentRequests": 0},
                    {"maxOpenStreams": 0}]:
            with self.subTest(values=bad), self.assertRaises(helm.HelmError):
                render(PLUGIN, bad)

    def plugin_config(self, objs, name):
        cm = find(objs, "ConfigMap", name)
        return helm.values_from_yaml(cm["data"]["plugin.yaml"])

    def test_plugin_defaults(self):
        objs = render(PLUGIN, name="pl", namespace="remote")
        self.assertEqual(kinds(objs), sorted([
            "ClusterRole/offload-plugin:remote:pl-plugin", "ClusterRoleBinding/offload-plugin:remote:pl-plugin",
            "ConfigMap/pl-plugin", "Deployment/pl-plugin", "Role/pl-plugin-bastion", "RoleBinding/pl-plugin-bastion",
            "Secret/pl-plugin-tls", "Secret/pl-plugin-token", "Service/pl-plugin", "ServiceAccount/pl-plugin",
        ]))
        d = find(objs, "Deployment")
        self.assert_hardened(d)
        c = container(d)
        self.assertEqual(c["image"], f"localhost/offload/plugin:{VERSION}")
        self.assertEqual(c["args"], ["--config=/etc/offload/plugin.yaml"])
        cfg = self.plugin_config(objs, "pl-plugin")
        self.assertEqual(cfg["listen"], "0.0.0.0:4000")
        self.assertEqual(cfg["token-file"], "/var/run/offload/token/token")
        self.assertEqual(cfg["namespace-prefix"], "offloading")
        self.assertIs(cfg["allow-host-path"], False)
        self.assertIs(cfg["allow-privileged"], False)
        self.assertEqual(cfg["bastion-image"], f"localhost/offload/bastion:{VERSION}")
        self.assertEqual(cfg["bastion-namespace"], "remote")
        self.assertEqual(cfg["bastion-name"], "offload-bastion")
        self.assertNotIn("no-bastion", cfg)
        token = base64.b64decode(find(objs, "Secret", "pl-plugin-token")["data"]["token"]).decode()
        self.assertRegex(token, r"^[A-Za-z0-9]{48}$")
        self.assertNotEqual(token, base64.b64decode(
            find(render(PLUGIN, name="pl"), "Secret", "pl-plugin-token")["data"]["token"]).decode())
        # TLS by default: a generated CA and serving certificate, the pin in an annotation.
        self.assertEqual(cfg["tls-cert"], "/var/run/offload/tls/tls.crt")
        self.assertEqual(cfg["tls-key"], "/var/run/offload/tls/tls.key")
        self.assertEqual(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS")
        tls = find(objs, "Secret", "pl-plugin-tls")
        self.assertEqual(tls["type"], "kubernetes.io/tls")
        self.assertEqual(tls["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")
        crt = base64.b64decode(tls["data"]["tls.crt"]).decode()
        der = ssl.PEM_cert_to_DER_cert(crt)
        self.assertEqual(tls["metadata"]["annotations"]["offload.dev/cert-sha256"],
                         "sha256:" + hashlib.sha256(der).hexdigest())
        names = cert_names(crt)
        self.assertIn(("DNS", "pl-plugin.remote.svc"), names)
        self.assertIn("ca.crt", tls["data"])
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["tls"]["secret"]["secretName"], "pl-plugin-tls")
        n = notes(PLUGIN, name="pl", namespace="remote")
        self.assertIn("offload\\.dev/cert-sha256", n)
        self.assertIn("plugin.url: https://", n)
        ips = cert_names(base64.b64decode(find(render(PLUGIN, {"tls": {"ipAddresses": ["10.9.8.7"],
                                                                          "dnsNames": ["plugin.example"]}}),
                                               "Secret", "rel-plugin-tls")["data"]["tls.crt"]).decode())
        self.assertIn(("IP Address", "10.9.8.7"), ips)
        self.assertIn(("DNS", "plugin.example"), ips)
        svc = find(objs, "Service")
        self.assertEqual(svc["spec"]["type"], "ClusterIP")
        self.assertEqual(svc["spec"]["ports"][0]["port"], 4000)
        self.assertEqual(svc["spec"]["selector"], d["spec"]["selector"]["matchLabels"])
        self.assert_no_wildcards(objs)
        cr = find(objs, "ClusterRole")
        self.assertEqual(rules_for(cr, "pods/log"), {"get"})
        # The streams: WebSocket upgrades are GET, SPDY is POST (create).
        for sub in ("pods/exec", "pods/attach", "pods/portforward"):
            self.assertEqual(rules_for(cr, sub), {"get", "create"}, sub)
        # list/delete: the namespace GC (test_plugin_namespace_gc_and_session_affinity).
        self.assertEqual(rules_for(cr, "namespaces"), {"get", "create", "list", "delete"})
        self.assertEqual(rules_for(cr, "serviceaccounts"), {"get"})
        self.assertNotIn("update", rules_for(cr, "pods"))
        # No cluster-wide read of Secrets (deletecollection returns the data
        # too), no apply over foreign objects (no patch).
        self.assertEqual(rules_for(cr, "secrets"), {"create", "delete"})
        # The instance defaults to the release: two releases never take over
        # each other's objects.
        self.assertEqual(cfg["instance"], "pl-plugin")
        self.assertEqual((cfg["max-concurrent-requests"], cfg["request-timeout"]), (64, "120s"))
        self.assertEqual(cfg["max-open-streams"], 256)
        self.assertEqual(rules_for(cr, "configmaps"), {"get", "create", "update", "delete"})
        named = [r for r in cr["rules"] if r.get("resourceNames")]
        self.assertEqual(named[0]["resourceNames"], ["offload-bastion:remote:offload-bastion"])
        role = find(objs, "Role")
        self.assertIn("patch", rules_for(role, "deployments", "apps"))
        self.assertEqual(role["metadata"]["namespace"], "remote")
        # A standby bastion by default: the plugin holds what the Lease Role grants.
        self.assertEqual(cfg["bastion-replicas"], 2)
        lease_rules = [r for r in role["rules"] if r.get("apiGroups") == ["coordination.k8s.io"]]
        self.assertEqual([r.get("resourceNames") for r in lease_rules], [None, ["offload-bastion-leader"]])
        self.assertEqual([set(r["verbs"]) for r in lease_rules], [{"create"}, {"get", "update"}])
        single = find(render(PLUGIN, {"bastion": {"replicas": 1}}, name="pl", namespace="remote"), "Role")
        self.assertFalse([r for r in single["rules"] if r.get("apiGroups") == ["coordination.k8s.io"]])
        self.assertIn("kubectl -n remote get secret pl-plugin-token", notes(PLUGIN, name="pl", namespace="remote"))

    def test_plugin_namespace_gc_and_session_affinity(self):
        objs = render(PLUGIN, name="pl", namespace="remote")
        cfg = self.plugin_config(objs, "pl-plugin")
        self.assertEqual((cfg["namespace-gc-after"], cfg["namespace-gc-interval"]), ("1h", "60s"))
        self.assertEqual(rules_for(find(objs, "ClusterRole"), "persistentvolumeclaims"), {"list"})
        self.assertEqual(find(objs, "Service")["spec"]["sessionAffinity"], "ClientIP")
        off = render(PLUGIN, {"namespaceGc": {"enabled": False}}, name="pl", namespace="remote")
        self.assertEqual(self.plugin_config(off, "pl-plugin")["namespace-gc-after"], "0s")
        self.assertEqual(rules_for(find(off, "ClusterRole"), "namespaces"), {"get", "create"})
        self.assertEqual(rules_for(find(off, "ClusterRole"), "persistentvolumeclaims"), set())

    def test_plugin_custom_values(self):
        objs = render(PLUGIN, {
            "service": {"type": "NodePort", "nodePort": 30455, "port": 8443},
            "port": 5000,
            "token": {"existingSecret": "shared-token", "key": "bearer"},
            "namespacePrefix": "remote",
            "namespacePrefixExclusions": ["shared", "team-a"],
            "remoteNodeSelector": {"zone": "a"},
            "remoteTolerations": [{"key": "hpc", "operator": "Exists"}],
            "policy": {"allowHostPath": True, "allowPrivileged": True},
            "sweep": {"enabled": False},
            "bastion": {"enabled": False},
            "tls": {"secret": "plugin-tls", "clientCASecret": "callers"},
            "extraConfig": {"remote-minor-version": 20},
        }, name="pl", namespace="remote")
        self.assertEqual([o for o in objs if o["kind"] in ("Secret", "Role", "RoleBinding")], [])
        svc = find(objs, "Service")
        self.assertEqual(svc["spec"]["type"], "NodePort")
        self.assertEqual(svc["spec"]["ports"][0]["nodePort"], 30455)
        self.assertEqual(svc["spec"]["ports"][0]["port"], 8443)
        cfg = self.plugin_config(objs, "pl-plugin")
        self.assertEqual(cfg["listen"], "0.0.0.0:5000")
        self.assertEqual(cfg["token-file"], "/var/run/offload/token/bearer")
        self.assertEqual(cfg["namespace-prefix"], "remote")
        self.assertEqual(cfg["namespace-prefix-exclusions"], "shared,team-a")
        self.assertEqual(json.loads(cfg["node-selector"]), {"zone": "a"})
        self.assertEqual(json.loads(cfg["node-tolerations"]), [{"key": "hpc", "operator": "Exists"}])
        self.assertIs(cfg["allow-host-path"], True)
        self.assertIs(cfg["no-sweep"], True)
        self.assertEqual(cfg["tls-cert"], "/var/run/offload/tls/tls.crt")
        self.assertEqual(cfg["tls-client-ca"], "/var/run/offload/client-ca/ca.crt")
        self.assertEqual(cfg["remote-minor-version"], 20)
        self.assertFalse(any(k.startswith("bastion") for k in cfg), cfg)
        self.assertIs(cfg["no-bastion"], True)
        d = find(objs, "Deployment")
        self.assertEqual(container(d)["readinessProbe"]["httpGet"]["scheme"], "HTTPS")
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["token"]["secret"]["secretName"], "shared-token")
        cr = find(objs, "ClusterRole")
        self.assertEqual(rules_for(cr, "clusterroles", "rbac.authorization.k8s.io"), set())
        self.assertIn("https://<a node IP of this cluster>:30455", notes(PLUGIN, {"service": {"type": "NodePort", "nodePort": 30455}}))

    def test_plugin_plain_http_only_when_insecure(self):
        objs = render(PLUGIN, {"tls": {"insecure": True}}, name="pl", namespace="remote")
        self.assertEqual([o["metadata"]["name"] for o in objs if o["kind"] == "Secret"], ["pl-plugin-token"])
        self.assertNotIn("tls-cert", self.plugin_config(objs, "pl-plugin"))
        self.assertEqual(container(find(objs, "Deployment"))["readinessProbe"]["httpGet"]["scheme"], "HTTP")
        self.assertIn("PLAIN HTTP", notes(PLUGIN, {"tls": {"insecure": True}}))

    def test_plugin_pod_security_values(self):
        cfg = self.plugin_config(render(PLUGIN, name="pl", namespace="remote"), "pl-plugin")
        self.assertEqual(cfg["pod-security-level"], "baseline")
        self.assertEqual(cfg["allow-volume-types"],
                         "configMap,secret,emptyDir,projected,downwardAPI,persistentVolumeClaim,ephemeral")
        self.assertEqual(cfg["allow-capabilities"], "")
        self.assertEqual(cfg["keep-security-annotations"], "")
        cfg = self.plugin_config(render(PLUGIN, {"policy": {
            "level": "restricted", "allowedVolumeTypes": ["configMap", "csi"], "allowedCapabilities": ["NET_ADMIN"],
            "allowedSysctls": ["kernel.msgmax"], "keepSecurityAnnotations": ["container.apparmor.security.beta.kubernetes.io/*"],
        }}, name="pl", namespace="remote"), "pl-plugin")
        self.assertEqual(cfg["pod-security-level"], "restricted")
        self.assertEqual(cfg["allow-volume-types"], "configMap,csi")
        self.assertEqual(cfg["allow-capabilities"], "NET_ADMIN")
        self.assertEqual(cfg["allow-sysctls"], "kernel.msgmax")
        self.assertEqual(cfg["keep-security-annotations"], "container.apparmor.security.beta.kubernetes.io/*")
        for bad in ({"level": "strict"}, {"allowedVolumeTypes": ["nfs,csi"]}):
            with self.subTest(values=bad), self.assertRaises(helm.HelmError):
                render(PLUGIN, {"policy": bad}, name="pl")

    def test_plugin_bastion_watching_one_namespace(self):
        objs = render(PLUGIN, {"bastion": {"watchNamespace": "offloading-work", "name": "b"}}, name="pl", namespace="r")
        cfg = self.plugin_config(objs, "pl-plugin")
        self.assertEqual(cfg["bastion-watch-namespace"], "offloading-work")
        self.assertEqual(cfg["bastion-name"], "b")
        # A Role (not a ClusterRole) for the bastion: the plugin may create only that one, there.
        self.assertEqual(rules_for(find(objs, "ClusterRole"), "clusterroles", "rbac.authorization.k8s.io"), set())
        role = find(objs, "Role", "pl-plugin-bastion-rbac")
        self.assertEqual(role["metadata"]["namespace"], "offloading-work")
        self.assertIn({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
                       "resourceNames": ["b-pod-reader"], "verbs": ["get", "patch", "update", "delete"]}, role["rules"])

    # tcp-tunnel -------------------------------------------------------
    def test_tunnel_requires_keys_and_hosts(self):
        cases = [
            (GATEWAY, {"ssh": {"hostKey": self.host_key}}, "ssh.publicKey is required"),
            (GATEWAY, {"ssh": {"publicKey": self.bastion_pub}}, "ssh.hostKey"),
            (GATEWAY, {"ssh": {"publicKey": self.bastion_pub, "hostKey": "not a key"}}, "OpenSSH private key"),
            (BASTION, {"tunnel": {"gateway": {"host": "h", "ssh": {"privateKey": "AAAA"}},
                                  "service": {"targetHost": "t"}}}, "hostKey is required"),
            (BASTION, {"tunnel": {"gateway": {"ssh": {"privateKey": "AAAA", "hostKey": self.host_pub}},
                                  "service": {"targetHost": "t"}}}, "tunnel.gateway.host is required"),
        ]
        for chart, values, message in cases:
            with self.subTest(message=message):
                with self.assertRaises(helm.HelmError) as e:
                    render(chart, values)
                self.assertIn(message, str(e.exception))

    def test_tunnel_umbrella_and_faults_fixed(self):
        g, b = self.tunnel_values()
        objs = render(TUNNEL, {"gateway": g, "bastion": b}, name="tt", namespace="t")
        self.assertEqual(kinds(objs), sorted([
            "ConfigMap/tt-bastion", "ConfigMap/tt-gateway", "Deployment/tt-bastion", "Deployment/tt-gateway",
            "Secret/tt-bastion", "Secret/tt-gateway-host-key", "Service/tt-gateway", "Service/tt-gateway-nodeport",
        ]))
        for d in (o for o in objs if o["kind"] == "Deployment"):
            self.assert_hardened(d)
            self.assertEqual(d["spec"]["strategy"]["type"], "Recreate")
            self.assertIs(d["spec"]["template"]["spec"]["automountServiceAccountToken"], False)
        # Gateway: keys only, forwarding only, keepalives, pinned host key from the Secret.
        gcm = find(objs, "ConfigMap", "tt-gateway")["data"]
        for line in ["AllowUsers interlink-user", "ClientAliveInterval 5", "ClientAliveCountMax 3",
                     "PasswordAuthentication no", "AllowTcpForwarding remote", "PermitOpen none",
                     "GatewayPorts clientspecified", "PermitTTY no", "ForceCommand /bin/false",
                     "HostKey /etc/ssh/gateway/hostkey/ssh_host_ed25519_key"]:
            self.assertIn(line + "\n", gcm["sshd_config"])
        key_type, key_data = self.bastion_pub.split()[:2]
        self.assertEqual(gcm["authorized_keys"].strip(),
                         f'restrict,port-forwarding,command="/bin/false",permitlisten="0.0.0.0:*" {key_type} {key_data}')
        self.assertIn("interlink-user:x:1000:1000:", gcm["passwd"])
        hk = find(objs, "Secret", "tt-gateway-host-key")
        self.assertEqual(hk["stringData"]["ssh_host_ed25519_key"].strip(), self.host_key.strip())
        np = find(objs, "Service", "tt-gateway-nodeport")
        self.assertEqual(np["spec"]["type"], "NodePort")
        self.assertEqual(np["spec"]["ports"][0]["nodePort"], 30222)
        self.assertEqual(np["spec"]["ports"][0]["port"], 2222)
        # Bastion: forwards file with the pinned host key, key as a file, never in env.
        fw = json.loads(find(objs, "ConfigMap", "tt-bastion")["data"]["forwards.json"])
        self.assertEqual(fw, [{"gateway": "10.201.0.1:30222", "hostKey": self.host_pub,
                               "forwards": {"8181": "10.202.1.7:8080"}}])
        bd = find(objs, "Deployment", "tt-bastion")
        bc = container(bd)
        self.assertEqual(bc["image"], f"localhost/offload/bastion:{VERSION}")
        self.assertIn("--key-file=/var/run/offload/key/ssh-privatekey", bc["args"])
        self.assertIn("--user=interlink-user", bc["args"])
        self.assertIn("--keepalive-secs=3", bc["args"])
        self.assertNotIn("env", bc)
        self.assertNotIn("envFrom", bc)
        self.assertEqual(bc["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(bc["livenessProbe"]["httpGet"]["path"], "/readyz")
        sec = find(objs, "Secret", "tt-bastion")
        self.assertEqual(base64.b64decode(sec["data"]["ssh-privatekey"]).decode(), self.bastion_key)

    def test_tunnel_original_value_names(self):
        g, b = self.tunnel_values()
        g.update({"ssh": {**g["ssh"], "port": 2022, "userName": "tunnel", "allowedPorts": [8181, 8182]},
                  "service": {"port": 30999},
                  "tunnel": {"service": {"sourcePort": 8181, "sourceNodePort": 30281}}})
        objs = render(GATEWAY, g, name="gw", namespace="t")
        svc = find(objs, "Service", "gw-gateway-30281")
        self.assertEqual(svc["spec"]["ports"][0], {"name": "tunnel", "port": 8181, "targetPort": 8181,
                                                    "protocol": "TCP", "nodePort": 30281})
        self.assertEqual(find(objs, "Service", "gw-gateway")["spec"]["ports"][0]["port"], 2022)
        self.assertEqual(find(objs, "Service", "gw-gateway-nodeport")["spec"]["ports"][0]["nodePort"], 30999)
        ak = find(objs, "ConfigMap")["data"]["authorized_keys"]
        self.assertIn('permitlisten="0.0.0.0:8181",permitlisten="0.0.0.0:8182" ', ak)
        self.assertNotIn(":*", ak)
        self.assertIn("AllowUsers tunnel\n", find(objs, "ConfigMap")["data"]["sshd_config"])

        b["tunnel"]["gateway"]["ssh"].update({"port": 31022, "userName": "tunnel", "privateKey": "", "existingSecret": "bkey"})
        b["tunnel"]["service"].update({"gatewayPort": 40001, "targetHost": "web.ns.svc", "targetPort": 80})
        b["tunnel"]["exitOnForwardFailureSeconds"] = 0
        objs = render(BASTION, b, name="bastion-40001-uid", namespace="t")
        self.assertEqual([o for o in objs if o["kind"] == "Secret"], [])
        fw = json.loads(find(objs, "ConfigMap")["data"]["forwards.json"])
        self.assertEqual(fw[0]["gateway"], "10.201.0.1:31022")
        self.assertEqual(fw[0]["forwards"], {"40001": "web.ns.svc:80"})
        d = find(objs, "Deployment", "bastion-40001-uid")
        self.assertEqual(d["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"], "bkey")
        self.assertEqual(container(d)["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertIn("--user=tunnel", container(d)["args"])

    def test_tunnel_subcharts_can_be_switched_off(self):
        g, b = self.tunnel_values()
        only_gw = render(TUNNEL, {"gateway": g, "bastion": {"enabled": False}}, name="tt")
        self.assertFalse(any("bastion" in o["metadata"]["name"] for o in only_gw))
        only_b = render(TUNNEL, {"gateway": {"enabled": False}, "bastion": b}, name="tt")
        self.assertFalse(any("gateway" in o["metadata"]["name"] for o in only_b))


# ---------------------------------------------------------------- clusters

# Generous: the clusters are shared with other tests (a benchmark may fill the
# remote node for minutes) on a loaded 2-core machine.
POD_START = 300

class Cluster(testlib.Cluster):
    """A testbed cluster (offload_testlib) with what the install tests need."""

    def __init__(self, name, kubeconfig):
        super().__init__(name, kubeconfig or "")

    def free_node_port(self):
        used = {p.get("nodePort") for s in self.get("services", "-A")["items"] for p in s["spec"].get("ports", [])}
        # The clusters' NodePort ranges are disjoint (testbed/src/layout.rs);
        # tests/tests/charts.rs passes them in.
        default = {"local": "30000-31499", "remote": "31500-32767"}[self.name]
        lo, hi = map(int, os.environ.get(f"OFFLOAD_NODE_PORTS_{self.name.upper()}", default).split("-"))
        for _ in range(200):
            p = lo + secrets.randbelow(hi - lo)
            if p not in used:
                return p
        raise AssertionError("no free NodePort")

    def wait_ready(self, ns, deploy, timeout=POD_START):
        def ready():
            d = self.get("-n", ns, "deployment", deploy)
            st = d.get("status", {})
            return st.get("readyReplicas", 0) >= 1 and st.get("updatedReplicas", 0) >= 1

        wait_for(ready, timeout, f"deployment {ns}/{deploy} on {self.name} ready",
                 on_timeout=lambda: self.describe(ns))


def cert_names(pem):
    """The subjectAltName entries of a PEM certificate, as (type, value)."""
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        return set(ssl._ssl._test_decode_cert(f.name).get("subjectAltName", ()))


def plugin_tls(cluster, ns, secret):
    """(an SSL context trusting the plugin's generated CA, the certificate's pin)."""
    s = cluster.get("-n", ns, "secret", secret)
    ca = base64.b64decode(s["data"]["ca.crt"]).decode()
    ctx = ssl.create_default_context(cadata=ca)
    # Reached by node IP, which the generated certificate does not name: the
    # CA check is what matters here (the provider pins the certificate itself).
    ctx.check_hostname = False
    return ctx, s["metadata"]["annotations"]["offload.dev/cert-sha256"]


def http(url, token=None, method="GET", body=None, ctx=None):
    req = urllib.request.Request(url, method=method, data=body)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class InstallTests(unittest.TestCase):
    """Installs into the real test clusters."""

    @classmethod
    def setUpClass(cls):
        cls.local = Cluster("local", os.environ.get("KUBECONFIG_LOCAL"))
        cls.remote = Cluster("remote", os.environ.get("KUBECONFIG_REMOTE"))
        cls.run_id = secrets.token_hex(3)

    @classmethod
    def tearDownClass(cls):
        cls.local.cleanup()
        cls.remote.cleanup()

    def install(self, cluster, ns, chart, release, values):
        cfg = cluster.helm(ns)
        t = time.monotonic()
        rel = cfg.install(str(chart), release, values, timeout=POD_START)
        self.addCleanup(self.uninstall, cluster, ns, release)
        self.assertEqual(rel["info"]["status"] if "info" in rel else rel.get("status"), "deployed", rel.keys())
        print(f"  helm install {release} ({chart.name}) on {cluster.name}: {time.monotonic() - t:.2f} s", file=sys.stderr)
        return rel

    def uninstall(self, cluster, ns, release):
        cluster.helm(ns).uninstall(release)

    def test_plugin_and_provider(self):
        remote, local = self.remote, self.local
        # Plugin in the remote cluster, reachable through a NodePort.
        rns = remote.fresh_namespace("charts-plugin")
        rel = f"offl-{self.run_id}"
        node_port = remote.free_node_port()
        # What the plugin creates for the bastion outside its namespace outlives the release.
        self.install(remote, rns, PLUGIN, rel, {
            "service": {"type": "NodePort", "nodePort": node_port},
            # Watching only its own namespace: other tests' offloaded pods are not its business.
            "bastion": {"enabled": True, "watchNamespace": rns},
        })
        t = time.monotonic()
        remote.wait_ready(rns, f"{rel}-plugin")
        print(f"  plugin Ready after {time.monotonic() - t:.1f} s", file=sys.stderr)
        # The generated certificate survives an upgrade (the provider pins it).
        before = remote.get("-n", rns, "secret", f"{rel}-plugin-tls")["data"]
        remote.helm(rns).upgrade(str(PLUGIN), rel, reuse_values=True, timeout=POD_START)
        self.assertEqual(remote.get("-n", rns, "secret", f"{rel}-plugin-tls")["data"], before)
        svc = remote.get("-n", rns, "service", f"{rel}-plugin")
        self.assertEqual(svc["spec"]["ports"][0]["nodePort"], node_port)
        token = base64.b64decode(remote.get("-n", rns, "secret", f"{rel}-plugin-token")["data"]["token"]).decode()
        self.assertEqual(len(token), 48)
        sa = remote.get("-n", rns, "serviceaccount", f"{rel}-plugin")
        self.assertEqual(sa["metadata"]["name"], f"{rel}-plugin")
        # TLS by default, with the certificate the chart generated.
        ctx, pin = plugin_tls(remote, rns, f"{rel}-plugin-tls")
        url = f"https://{remote.node_ip()}:{node_port}"
        # What a user checks: the API answers with the token, refuses without.
        # (kube-proxy may take a few seconds to open a new NodePort on a loaded machine)
        code, body = wait_for(lambda: http(f"{url}/status", token, method="GET", body=b"[]", ctx=ctx), 60,
                              f"the plugin API at {url}")
        self.assertEqual(code, 200, body)
        code, body = http(f"{url}/status", None, method="GET", body=b"[]", ctx=ctx)
        self.assertEqual(code, 401, body)
        # The plugin's least-privilege RBAC lets it read remote pods (readyz) but not nodes.
        can = remote.kubectl("auth", "can-i", "list", "nodes", f"--as=system:serviceaccount:{rns}:{rel}-plugin",
                             check=False).strip()
        self.assertEqual(can, "no")
        can = remote.kubectl("auth", "can-i", "create", "pods", "-n", "offloading-x",
                             f"--as=system:serviceaccount:{rns}:{rel}-plugin", check=False).strip()
        self.assertEqual(can, "yes")

        # Provider in the local cluster, pointing at it with the token.
        lns = local.fresh_namespace("charts-provider")
        prel = f"offl-{self.run_id}"
        node = f"charts-vn-{self.run_id}"
        gateway_node_port = local.free_node_port()
        self.addCleanup(local.kubectl, "delete", "node", node, "--ignore-not-found", check=False)
        self.install(local, lns, PROVIDER, prel, {
            "node": {"name": node, "labels": {"charts-test": self.run_id},
                     "taints": [{"key": "charts-test", "value": "yes", "effect": "NoSchedule"}],
                     "capacity": {"cpu": "12", "memory": "34Gi", "pods": "56"}, "deleteOnShutdown": True},
            "plugin": {"url": url, "token": {"value": token}, "certSHA256": pin},
            "gateway": {"enabled": True, "nodePort": gateway_node_port,
                        "name": f"gw-{self.run_id}"},
        })
        t = time.monotonic()
        local.wait_ready(lns, f"{prel}-provider")

        def node_ready():
            n = local.get("node", node)
            return any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", [])) and n

        n = wait_for(node_ready, POD_START, f"virtual node {node} Ready", on_timeout=lambda: local.describe(lns))
        print(f"  provider pod Ready and node {node} Ready after {time.monotonic() - t:.1f} s", file=sys.stderr)
        self.assertEqual(n["metadata"]["labels"]["charts-test"], self.run_id)
        self.assertEqual(n["metadata"]["labels"]["virtual-node.interlink/type"], "virtual-kubelet")
        taints = {(x["key"], x.get("value"), x["effect"]) for x in n["spec"].get("taints", [])}
        self.assertIn(("charts-test", "yes", "NoSchedule"), taints)
        self.assertIn(("virtual-node.interlink/no-schedule", "true", "NoSchedule"), taints)
        # Our plugin's ping reports no resources, so the capacity is the chart's.
        cap = n["status"]["capacity"]
        self.assertEqual((cap["cpu"], cap["memory"], cap["pods"]), ("12", "34Gi", "56"))
        pod = local.get("-n", lns, "pods", "-l", f"app.kubernetes.io/instance={prel}")["items"][0]
        addrs = {a["type"]: a["address"] for a in n["status"]["addresses"]}
        self.assertEqual(addrs["InternalIP"], pod["status"]["podIP"])
        self.assertEqual(n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250)
        lease = local.get("-n", "kube-node-lease", "lease", node)
        self.assertEqual(lease["spec"]["holderIdentity"], node)
        # Least privilege: the provider reads Secrets, it may not delete them.
        can = local.kubectl("auth", "can-i", "delete", "secrets", "-n", "default",
                            f"--as=system:serviceaccount:{lns}:{prel}-provider", check=False).strip()
        self.assertEqual(can, "no")
        # The plugin installed the bastion next to itself and hands out its public key.
        remote.wait_ready(rns, "offload-bastion", timeout=POD_START)
        code, body = http(f"{url}/bastion/publicKey", token, ctx=ctx)
        self.assertEqual(code, 200, body)
        bastion_key = json.loads(body)["publicKey"]
        self.assertTrue(bastion_key.startswith("ssh-ed25519 "), bastion_key)
        # The provider applied the gateway in its namespace, on the NodePort asked for,
        # authorizing the bastion key it fetched from the plugin.
        gw = f"gw-{self.run_id}"
        local.wait_ready(lns, gw, timeout=POD_START)
        np = local.get("-n", lns, "service", f"{gw}-nodeport")
        self.assertEqual(np["spec"]["ports"][0]["nodePort"], gateway_node_port)
        key_data = bastion_key.split()[1]
        wait_for(lambda: key_data in local.get("-n", lns, "configmap", gw)["data"]["authorized_keys"], 60,
                 "the bastion key in the gateway's authorized_keys", on_timeout=lambda: local.describe(lns))
        # ... and pinned it for later answers.
        pinned = local.get("-n", lns, "configmap", f"{gw}-bastion-pin")["data"]
        self.assertEqual(pinned["publicKey"].split()[:2], bastion_key.split()[:2])
        self.assertTrue(pinned["fingerprint"].startswith("SHA256:"), pinned)

    def test_tcp_tunnel_carries_a_page(self):
        local, remote = self.local, self.remote
        tmp = tempfile.mkdtemp(prefix="charts-tunnel-")
        host_key, host_pub = ssh_keypair(tmp, "host")
        bastion_key, bastion_pub = ssh_keypair(tmp, "bastion")
        gateway_port = 8181
        # A page served in the remote cluster.
        rns = remote.fresh_namespace("charts-tunnel")
        remote.kubectl("-n", rns, "run", "web", "--image=localhost/offload/busybox:1.0", "--restart=Never",
                       "--command", "--", "sh", "-c",
                       f"mkdir -p /www && echo hello-{self.run_id} > /www/index.html && exec httpd -f -p 8080 -h /www")
        wait_for(lambda: remote.get("-n", rns, "pod", "web")["status"].get("podIP"), POD_START, "web pod IP",
                 on_timeout=lambda: remote.describe(rns))
        web_ip = remote.get("-n", rns, "pod", "web")["status"]["podIP"]
        # Gateway in the local cluster (its own NodePort), bastion in the remote one.
        lns = local.fresh_namespace("charts-tunnel")
        node_port = local.free_node_port()
        grel = f"tunnel-{self.run_id}"
        self.install(local, lns, GATEWAY, grel, {
            "ssh": {"publicKey": bastion_pub, "hostKey": host_key, "allowedPorts": [gateway_port]},
            "service": {"port": node_port},
        })
        local.wait_ready(lns, f"{grel}-gateway", timeout=POD_START)
        brel = f"tunnel-{self.run_id}"
        t = time.monotonic()
        self.install(remote, rns, BASTION, brel, {
            "tunnel": {"gateway": {"host": local.node_ip(), "ssh": {
                "port": node_port, "privateKey": base64.b64encode(bastion_key.encode()).decode(),
                "hostKey": host_pub}},
                "service": {"gatewayPort": gateway_port, "targetHost": web_ip, "targetPort": 8080}},
        })
        remote.wait_ready(rns, f"{brel}-bastion", timeout=POD_START)
        print(f"  bastion Ready (forward held) {time.monotonic() - t:.1f} s after install", file=sys.stderr)
        # A local client fetches the page from the gateway pod's forwarded port.
        gw_ip = local.get("-n", lns, "pods", "-l", f"app.kubernetes.io/instance={grel}")["items"][0]["status"]["podIP"]
        local.kubectl("-n", lns, "run", "client", "--image=localhost/offload/busybox:1.0", "--restart=Never",
                      "--command", "--", "sh", "-c",
                      f"for i in $(seq 30); do timeout 5 wget -qO- http://{gw_ip}:{gateway_port}/ && exit 0; sleep 1; done; exit 1")

        def client_done():
            p = local.get("-n", lns, "pod", "client")["status"].get("phase")
            return p if p in ("Succeeded", "Failed") else None

        phase = wait_for(client_done, POD_START, "client pod", on_timeout=lambda: local.describe(lns))
        out = local.kubectl("-n", lns, "logs", "client")
        self.assertEqual((phase, out.strip()), ("Succeeded", f"hello-{self.run_id}"))

        # A bastion pinning another host key is refused and never becomes Ready.
        wrong = ssh_keypair(tmp, "other")[1]
        brel2 = f"wrongkey-{self.run_id}"
        self.install(remote, rns, BASTION, brel2, {
            "tunnel": {"gateway": {"host": local.node_ip(), "ssh": {
                "port": node_port, "privateKey": base64.b64encode(bastion_key.encode()).decode(),
                "hostKey": wrong}},
                "service": {"gatewayPort": gateway_port + 1, "targetHost": web_ip, "targetPort": 8080},
                "exitOnForwardFailureSeconds": 0},
        })

        def logged_refusal():
            pods = remote.get("-n", rns, "pods", "-l", f"app.kubernetes.io/instance={brel2}")["items"]
            if not pods:
                return False
            logs = remote.kubectl("-n", rns, "logs", pods[0]["metadata"]["name"], check=False)
            return "pinned host key" in logs and pods[0]

        wait_for(logged_refusal, POD_START, "the bastion to refuse the wrong host key",
                 on_timeout=lambda: remote.describe(rns))
        for _ in range(10):
            pod = remote.get("-n", rns, "pods", "-l", f"app.kubernetes.io/instance={brel2}")["items"][0]
            ready = [c["status"] for c in pod["status"].get("conditions", []) if c["type"] == "Ready"]
            self.assertNotEqual(ready, ["True"], "a bastion that cannot pin the host key must not be Ready")
            time.sleep(1)
        self.assertEqual(ready, ["False"])

def main():
    helm.disable_logging()
    unittest.main(verbosity=2)



if __name__ == "__main__":
    main()
