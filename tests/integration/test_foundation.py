"""The foundation with real namespaces and real packets (root)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.conftest import WEB, run_nsk, running, wait_for

pytestmark = pytest.mark.root

def answer(text: str) -> dict:
    """The built-in server's `key: value` lines as a dict."""
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.strip().splitlines())}


def test_cross_node_pod_to_pod_keeps_the_client_ip(cluster):
    cluster.up(WEB.format(replicas=2))
    pods = cluster.pods("app=web")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2"]
    a, b = pods
    out = cluster.exec(a["metadata"]["name"], "curl", "-s", "--max-time", "5", b["status"]["podIP"]).stdout
    got = answer(out)
    assert got["pod"] == b["metadata"]["name"]
    assert got["node"] == b["spec"]["nodeName"]
    assert got["client"].split(":")[0] == a["status"]["podIP"]  # no NAT between Pods
    # the node reaches every Pod, on its own node and on the other
    for p in pods:
        out = cluster.exec("node/node-1", "curl", "-s", "--max-time", "5", f"{p['status']['podIP']}/hostname").stdout
        assert out.strip() == p["metadata"]["name"]


def test_pod_ips_come_from_their_nodes_subnet(cluster):
    cluster.up(WEB.format(replicas=4))
    nodes = {n["metadata"]["name"]: n for n in json.loads(cluster.nsk("get", "nodes", "-o", "json").stdout)["items"]}
    for p in cluster.pods():
        cidr = nodes[p["spec"]["nodeName"]]["spec"]["podCIDR"]
        assert p["status"]["podIP"].rsplit(".", 1)[0] == cidr.rsplit(".", 1)[0]
    wide = cluster.nsk("get", "pods", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert len(wide) == 5 and all(" Running " in line and "1/1" in line for line in wide[1:])


def test_exec_in_pod_node_and_host(cluster):
    cluster.up("""
        apiVersion: v1
        kind: Pod
        metadata: {name: box, namespace: default}
        spec:
          containers:
          - name: box
            image: busybox
            command: ["sleep", "3600"]
            env: [{name: GREETING, value: hello}]
        """)
    pod = cluster.get("pod", "box")
    # a command that is not there: a container runtime's words and exit code
    r = cluster.exec("box", "no-such-binary", check=False)
    assert r.returncode == 127 and r.stderr == 'nsk: exec: "no-such-binary": executable file not found in $PATH\n'
    assert cluster.exec("box", "hostname").stdout.strip() == "box"
    assert cluster.exec("box", "sh", "-c", "echo $GREETING").stdout.strip() == "hello"
    resolv = cluster.exec("box", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.96.0.10" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv
    hosts = cluster.exec("box", "cat", "/etc/hosts").stdout
    assert f"{pod['status']['podIP']}\tbox" in hosts
    addr = cluster.exec("box", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert pod["status"]["podIP"] in addr
    # stdin and the exit code pass through
    assert cluster.exec("box", "cat", input="through stdin\n").stdout == "through stdin\n"
    assert cluster.exec("box", "sh", "-c", "exit 7", check=False).returncode == 7
    assert cluster.exec("node/node-1", "hostname").stdout.strip() == "node-1"
    assert "172.18.0.2" in cluster.exec("node/node-1", "ip", "-4", "-o", "addr").stdout
    assert "192.0.2.10" in cluster.exec("host/client", "ip", "-4", "-o", "addr").stdout
    # the outside reaches no Pod directly: only Services (and nothing listens on the node)
    r = cluster.exec("host/client", "curl", "-s", "--max-time", "2", pod["status"]["podIP"], check=False)
    assert r.returncode != 0
    # the Pod's /etc/resolv.conf is its own: the host's is untouched
    with open("/etc/resolv.conf") as f:
        assert f.read() != resolv


def test_two_containers_share_localhost(cluster):
    cluster.up("""
        apiVersion: v1
        kind: Pod
        metadata: {name: duo}
        spec:
          containers:
          - name: server
            image: nginx
            ports: [{containerPort: 8080}]
          - name: sidecar
            image: busybox
            command: ["sh", "-c", "sleep 1; curl -s localhost:8080/hostname; sleep 3600"]
        """)
    assert "Defaulted container" in cluster.exec("duo", "true").stderr
    out = cluster.nsk("exec", "-c", "sidecar", "duo", "--", "curl", "-s", "localhost:8080/hostname")
    assert out.stdout.strip() == "duo"
    wait_for(lambda: "duo" in cluster.nsk("logs", "duo", "-c", "sidecar").stdout, what="the sidecar's log")


def test_deleted_pod_is_replaced_with_a_new_name_and_ip(cluster):
    cluster.up(WEB.format(replicas=2))
    before = {p["metadata"]["name"]: p["status"]["podIP"] for p in cluster.pods()}
    victim = sorted(before)[0]
    assert cluster.nsk("delete", "pod", victim).stdout.strip() == f'pod "{victim}" deleted'
    after = wait_for(lambda: len(running(cluster.pods())) == 2 and
                     {p["metadata"]["name"]: p["status"]["podIP"] for p in running(cluster.pods())}
                     if victim not in {p["metadata"]["name"] for p in cluster.pods()} else None,
                     what="the replacement Pod")
    new = set(after) - set(before)
    assert len(new) == 1
    new_name = new.pop()
    assert new_name.startswith("web-") and after[new_name] != before[victim]
    # the old namespace is gone, the new Pod answers
    assert not os.path.exists(f"/run/netns/nsk_{cluster.name}_pod_default_{victim}")
    out = cluster.exec("node/node-1", "curl", "-s", "--max-time", "5", f"{after[new_name]}/hostname").stdout
    assert out.strip() == new_name


def test_scale_up_and_down(cluster):
    cluster.up(WEB.format(replicas=1))
    assert cluster.nsk("scale", "deployment/web", "--replicas", "5").stdout.strip() == "deployment.apps/web scaled"
    wait_for(lambda: len(running(cluster.pods())) == 5, what="5 running Pods")
    ips = {p["status"]["podIP"] for p in cluster.pods()}
    assert len(ips) == 5
    for ip in ips:
        assert cluster.exec("node/node-2", "curl", "-s", "--max-time", "5", f"{ip}/healthz").stdout == "ok\n"
    cluster.nsk("scale", "deployment", "web", "--replicas=2")  # the source's own form
    wait_for(lambda: len(cluster.pods()) == 2 and len(running(cluster.pods())) == 2, what="2 Pods")
    netns = [n for n in os.listdir("/run/netns") if n.startswith(f"nsk_{cluster.name}_pod_default_")]
    assert len(netns) == 2
    line = cluster.nsk("get", "deployments").stdout.splitlines()[1].split()
    assert line[:4] == ["web", "2/2", "2", "2"]


def test_a_dead_process_is_restarted_and_counted(cluster):
    cluster.up(WEB.format(replicas=1))
    pod = cluster.pods()[0]
    name = pod["metadata"]["name"]
    pid = int(pod["status"]["containerStatuses"][0]["containerID"].split("//")[1])
    os.kill(pid, signal.SIGKILL)
    restarted = wait_for(lambda: [p for p in running(cluster.pods())
                                  if p["status"]["containerStatuses"][0]["restartCount"] == 1],
                         what="the restart")
    assert restarted[0]["metadata"]["name"] == name  # the same Pod, not a replacement
    assert restarted[0]["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137
    line = cluster.nsk("get", "pods").stdout.splitlines()[1].split()
    assert line[0] == name and line[3] == "1"
    out = cluster.exec("node/node-1", "curl", "-s", "--max-time", "5", f"{pod['status']['podIP']}/hostname")
    assert out.stdout.strip() == name


def test_apply_and_delete_on_a_running_cluster(cluster):
    cluster.up(WEB.format(replicas=1))
    solo = """
---
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: lab}
spec: {containers: [{name: c, image: x}]}
"""
    r = cluster.nsk("apply", "-f", "-", input=WEB.format(replicas=3) + solo, check=False)
    assert r.returncode == 1 and r.stderr == 'Error from server (NotFound): namespaces "lab" not found\n'
    assert cluster.get("deploy", "web")["spec"]["replicas"] == 1  # nothing of the file was applied
    out = cluster.apply(WEB.format(replicas=3) + """
---
apiVersion: v1
kind: Namespace
metadata: {name: lab}
---
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: lab}
spec:
  nodeName: node-2
  containers: [{name: c, image: x, ports: [{containerPort: 9376}]}]
""")
    assert out.stdout.splitlines() == ["deployment.apps/web configured", "namespace/lab created", "pod/solo created"]
    wait_for(lambda: len(running(cluster.pods())) == 3, what="3 web Pods")
    solo = wait_for(lambda: running(cluster.pods(namespace="lab")), what="the solo Pod")[0]
    assert solo["spec"]["nodeName"] == "node-2"
    out = cluster.exec("node/node-1", "curl", "-s", "--max-time", "5", f"{solo['status']['podIP']}:9376/hostname")
    assert out.stdout.strip() == "solo"
    path = cluster.tmp / "web.yaml"
    path.write_text(WEB.format(replicas=3))
    assert cluster.nsk("apply", "-f", str(path)).stdout.strip() == "deployment.apps/web unchanged"
    assert cluster.nsk("delete", "-f", str(path)).stdout.strip() == 'deployment.apps "web" deleted'
    wait_for(lambda: not cluster.pods(), what="the Deployment's Pods to go")
    r = cluster.nsk("delete", "deployment", "web", check=False)
    assert r.returncode == 1 and 'deployments.apps "web" not found' in r.stderr


def test_host_network_pod_runs_in_the_node(cluster):
    cluster.up("""
        apiVersion: v1
        kind: Pod
        metadata: {name: agent}
        spec:
          hostNetwork: true
          nodeName: node-2
          containers: [{name: agent, image: x, ports: [{containerPort: 8081}]}]
        """)
    pod = cluster.get("pod", "agent")
    assert pod["status"]["podIP"] == "172.18.0.3"
    out = cluster.exec("host/client", "curl", "-s", "--max-time", "5", "172.18.0.3:8081/hostname").stdout
    assert out.strip() == "agent"


def test_two_clusters_at_once(cluster_factory):
    a, b = cluster_factory(), cluster_factory()
    a.up(WEB.format(replicas=1))
    b.up(WEB.format(replicas=1))
    pa, pb = a.pods()[0], b.pods()[0]
    # the same addresses in two clusters: each answers with its own Pod
    assert pa["status"]["podIP"] == pb["status"]["podIP"]
    assert a.exec("node/node-1", "curl", "-s", pa["status"]["podIP"] + "/hostname").stdout.strip() == \
        pa["metadata"]["name"]
    assert b.exec("node/node-1", "curl", "-s", pb["status"]["podIP"] + "/hostname").stdout.strip() == \
        pb["metadata"]["name"]
    a.nsk("down")
    assert b.exec("node/node-1", "curl", "-s", pb["status"]["podIP"] + "/hostname").stdout.strip() == \
        pb["metadata"]["name"]
    r = run_nsk("get", "pods", check=False)
    assert r.returncode == 0 or "several clusters" in r.stderr


def test_up_of_a_name_in_use_says_so(cluster):
    cluster.up(WEB.format(replicas=1))
    r = cluster.up(WEB.format(replicas=1), check=False)
    assert r.returncode == 1
    assert f'cluster "{cluster.name}" is already up' in r.stderr
    assert "Traceback" not in r.stderr
