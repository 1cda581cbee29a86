"""Service discovery through environment variables, as the source tells it (root)."""

from __future__ import annotations

import pytest

from tests.conftest import WEB, running, wait_for

pytestmark = pytest.mark.root


def service_vars(cluster, pod: str) -> dict:
    out = cluster.exec(pod, "printenv").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "_SERVICE_" in line or "_PORT" in line)


def test_pods_get_the_variables_of_services_that_existed_when_they_started(cluster):
    cluster.up(WEB.format(replicas=2))
    pod = cluster.pods()[0]["metadata"]["name"]
    cluster.nsk("expose", "deployment/web")
    ip = cluster.get("svc", "web")["spec"]["clusterIP"]
    assert "WEB_SERVICE_HOST" not in service_vars(cluster, pod)  # the Pod is older than the Service
    # the source's remedy: scale to 0 and back, the new Pods see the Service
    cluster.nsk("scale", "deployment/web", "--replicas", "0")
    wait_for(lambda: not cluster.pods(), what="no Pods")
    cluster.nsk("scale", "deployment/web", "--replicas", "2")
    wait_for(lambda: len(running(cluster.pods())) == 2, what="2 new Pods")
    env = service_vars(cluster, cluster.pods()[0]["metadata"]["name"])
    assert env["WEB_SERVICE_HOST"] == ip and env["WEB_SERVICE_PORT"] == "80"
    assert env["WEB_PORT"] == f"tcp://{ip}:80" and env["WEB_PORT_80_TCP_ADDR"] == ip


def test_enable_service_links_false_leaves_out_the_services_but_not_kubernetes(cluster):
    cluster.up(WEB.format(replicas=1))
    cluster.nsk("expose", "deployment/web")
    pod = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  enableServiceLinks: {links}
  containers: [{{name: c, image: nginx}}]
"""
    cluster.apply(pod.format(name="linked", links="true") + "---" + pod.format(name="unlinked", links="false"))
    wait_for(lambda: len(running(cluster.pods())) == 3, what="both Pods running")
    linked, unlinked = service_vars(cluster, "linked"), service_vars(cluster, "unlinked")
    assert "WEB_SERVICE_HOST" in linked and "WEB_PORT" in linked
    assert not any(k.startswith("WEB_") for k in unlinked)
    # as kubelet: the API server's own Service is always there
    assert unlinked["KUBERNETES_SERVICE_HOST"] == linked["KUBERNETES_SERVICE_HOST"]
