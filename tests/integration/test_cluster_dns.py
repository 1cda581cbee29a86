"""Cluster DNS from inside Pods, through the kube-dns ClusterIP (root)."""

from __future__ import annotations

import pytest

from tests.integration.test_foundation import WEB, wait_for

pytestmark = pytest.mark.root

SVC = """
---
apiVersion: v1
kind: Service
metadata: {name: my-nginx}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, protocol: TCP}]
"""


def test_pods_resolve_services_like_kubernetes_pods(cluster):
    cluster.up(WEB.format(replicas=2) + SVC)
    assert [p["status"]["phase"] for p in cluster.pods(namespace="kube-system")] == ["Running", "Running"]
    line = cluster.nsk("get", "svc", "-n", "kube-system").stdout.splitlines()[1].split()
    assert line[:5] == ["kube-dns", "ClusterIP", "10.96.0.10", "<none>", "53/UDP,53/TCP"]
    pod = cluster.pods("app=web")[0]["metadata"]["name"]
    ip = cluster.get("svc", "my-nginx")["spec"]["clusterIP"]
    # the source's words: curl by the Service's name, nslookup, SRV for the named port
    out = cluster.exec(pod, "curl", "-s", "--max-time", "3", "my-nginx/hostname").stdout.strip()
    assert out in {p["metadata"]["name"] for p in cluster.pods("app=web")}
    assert f"Address: {ip}" in cluster.exec(pod, "nslookup", "my-nginx").stdout
    srv = cluster.exec(pod, "dig", "+short", "SRV", "_http._tcp.my-nginx.default.svc.cluster.local").stdout
    assert srv.strip() == "0 100 80 my-nginx.default.svc.cluster.local."
    assert cluster.exec(pod, "dig", "+tcp", "+short", "my-nginx.default.svc.cluster.local").stdout.strip() == ip
    assert cluster.exec(pod, "getent", "hosts", "my-nginx.default").stdout.split()[0] == ip
    r = cluster.exec(pod, "dig", "nothing.default.svc.cluster.local")
    assert "status: NXDOMAIN" in r.stdout
    # a Python resolver sees the same
    py = cluster.exec(pod, "python3", "-c", "import socket; print(socket.gethostbyname('my-nginx'))").stdout
    assert py.strip() == ip


def test_records_follow_the_cluster(cluster):
    cluster.up(WEB.format(replicas=1) + SVC)
    pod = cluster.pods("app=web")[0]["metadata"]["name"]
    cluster.apply("""
apiVersion: v1
kind: Service
metadata: {name: late, namespace: default}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
""")
    pod_ip = cluster.pods("app=web")[0]["status"]["podIP"]
    wait_for(lambda: cluster.exec(pod, "dig", "+short", "late.default.svc.cluster.local").stdout.strip() == pod_ip,
             what="the headless Service's A record")
    cluster.nsk("scale", "deployment/web", "--replicas", "2")
    wait_for(lambda: len(cluster.exec(pod, "dig", "+short", "late.default.svc.cluster.local").stdout.split()) == 2,
             what="two A records")
    cluster.nsk("delete", "svc", "late")
    wait_for(lambda: "NXDOMAIN" in cluster.exec(pod, "dig", "late.default.svc.cluster.local").stdout,
             what="NXDOMAIN after the delete")
