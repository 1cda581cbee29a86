"""The Deployment controller and the scheduler (pure)."""

from __future__ import annotations

import random

from nsk.api.cluster import ClusterConfig, NodeConfig
from nsk.apiserver.admission import admit
from nsk.controllers import deployment, scheduler
from nsk.net.plan import plan


def deploy(replicas=3, image="nginx"):
    d = admit({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    d["metadata"].update(uid="d-uid", creationTimestamp="2026-01-01T00:00:00Z")
    return d


def as_running(pods, ready=True):
    for i, p in enumerate(pods):
        p["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:{i:02d}Z"
        p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return pods


def test_pods_are_named_and_owned_like_a_replicasets():
    d = deploy()
    p = deployment.reconcile(d, [], random.Random(1), set())
    assert len(p.create) == 3 and not p.delete
    h = deployment.template_hash(d["spec"]["template"])
    for pod in p.create:
        name = pod["metadata"]["name"]
        assert name.startswith(f"web-{h}-") and len(name) == len(f"web-{h}-") + 5
        assert set(name.rsplit("-", 1)[1]) <= set(deployment.SAFE_ALPHABET)
        assert pod["metadata"]["labels"] == {"app": "web", "pod-template-hash": h}
        assert pod["metadata"]["ownerReferences"][0]["name"] == f"web-{h}"
    assert len({pod["metadata"]["name"] for pod in p.create}) == 3


def test_template_hash_is_stable_and_follows_the_template():
    assert deployment.template_hash(deploy()["spec"]["template"]) == \
        deployment.template_hash(deploy()["spec"]["template"])
    assert deployment.template_hash(deploy()["spec"]["template"]) != \
        deployment.template_hash(deploy(image="httpd")["spec"]["template"])


def test_scale_down_removes_the_newest_running_pods_first():
    d = deploy(replicas=3)
    pods = as_running(list(deployment.reconcile(d, [], random.Random(1), set()).create))
    d["spec"]["replicas"] = 1
    p = deployment.reconcile(d, pods, random.Random(1), set())
    assert not p.create
    assert [n for _, n in p.delete] == [pods[2]["metadata"]["name"], pods[1]["metadata"]["name"]]


def test_a_new_template_replaces_old_pods_once_new_ones_are_ready():
    d = deploy(replicas=2)
    old = as_running(list(deployment.reconcile(d, [], random.Random(1), set()).create))
    d2 = deploy(replicas=2, image="httpd")
    p = deployment.reconcile(d2, old, random.Random(2), set())
    assert len(p.create) == 2 and not p.delete  # old ones serve until the new ones are ready
    new = as_running(list(p.create))
    p = deployment.reconcile(d2, old + new, random.Random(3), set())
    assert not p.create and sorted(n for _, n in p.delete) == sorted(o["metadata"]["name"] for o in old)


def test_status_counts_ready_pods():
    d = deploy(replicas=3)
    pods = as_running(list(deployment.reconcile(d, [], random.Random(1), set()).create))
    pods[0]["status"]["conditions"][0]["status"] = "False"
    st = deployment.status(d, pods)
    assert (st["replicas"], st["readyReplicas"], st["updatedReplicas"], st["unavailableReplicas"]) == (3, 2, 3, 1)
    assert st["conditions"][0]["status"] == "False"


def test_scheduler_spreads_and_honours_node_selector():
    p = plan(ClusterConfig(nodes=(NodeConfig("a"), NodeConfig("b", {"zone": "z"}), NodeConfig("c"))))
    pod = {"spec": {}}
    assert scheduler.choose(pod, p.nodes, {}) == ("a", "")
    assert scheduler.choose(pod, p.nodes, {"a": 1}) == ("b", "")
    assert scheduler.choose(pod, p.nodes, {"a": 1, "b": 1}) == ("c", "")
    assert scheduler.choose({"spec": {"nodeSelector": {"zone": "z"}}}, p.nodes, {"b": 9}) == ("b", "")
    assert scheduler.choose({"spec": {"nodeSelector": {"kubernetes.io/hostname": "c"}}}, p.nodes, {}) == ("c", "")
    assert scheduler.choose({"spec": {"nodeSelector": {"zone": "nowhere"}}}, p.nodes, {}) == (
        None, "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")


def test_a_full_node_takes_no_more_pods_and_the_scheduler_says_why():
    """kubelet's maxPods (110): the rest stay Pending with the scheduler's reasons counted."""
    p = plan(ClusterConfig(nodes=(NodeConfig("a"), NodeConfig("b", {"zone": "z"}), NodeConfig("c"))))
    full = {"a": 110, "b": 110, "c": 110}
    assert scheduler.choose({"spec": {}}, p.nodes, {"a": 110, "b": 109, "c": 110}) == ("b", "")
    assert scheduler.choose({"spec": {}}, p.nodes, full) == (None, "0/3 nodes are available: 3 Too many pods.")
    assert scheduler.choose({"spec": {"nodeSelector": {"zone": "z"}}}, p.nodes, full) == (
        None, "0/3 nodes are available: 1 Too many pods, 2 node(s) didn't match Pod's node affinity/selector.")


def test_host_ports_conflict_as_the_schedulers_node_ports_check_says():
    from nsk.kubelet import portmap
    assert portmap.conflicts(("", "TCP", 80), ("", "TCP", 80))
    assert portmap.conflicts(("10.0.0.1", "TCP", 80), ("", "TCP", 80))  # every address includes it
    assert not portmap.conflicts(("10.0.0.1", "TCP", 80), ("10.0.0.2", "TCP", 80))
    assert not portmap.conflicts(("", "UDP", 80), ("", "TCP", 80))
    p = plan(ClusterConfig(nodes=(NodeConfig("a"), NodeConfig("b"))))
    pod = {"spec": {"containers": [{"ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]}]}}
    taken = {"a": [("", "TCP", 8080)]}
    assert scheduler.choose(pod, p.nodes, {}, taken) == ("b", "")
    assert scheduler.choose(pod, p.nodes, {}, {**taken, "b": [("", "TCP", 8080)]}) == (
        None, "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports.")


def test_portmap_rules_are_the_plugins_and_only_parsed_values():
    from nsk.kubelet import portmap
    pod = {"metadata": {"namespace": "default", "name": "hp"},
           "spec": {"containers": [{"ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"},
                                              {"containerPort": 53, "hostPort": 5353, "protocol": "UDP",
                                               "hostIP": "172.18.0.2"}, {"containerPort": 81}]}]}}
    entries = portmap.host_ports(pod, "10.244.1.5")
    assert [(e.protocol, e.host_ip, e.host_port, e.container_port) for e in entries] == [
        ("tcp", "", 8080, 80), ("udp", "172.18.0.2", 5353, 53)]
    assert portmap.host_ports({**pod, "spec": {**pod["spec"], "hostNetwork": True}}, "172.18.0.2") == []
    text = portmap.render(entries)
    assert '-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "hostPort of default/hp" -d 172.18.0.2/32 -m udp ' \
           "--dport 5353 -j DNAT --to-destination 10.244.1.5:53" in text
    assert "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE" in text
    jumps = portmap.missing_jumps("-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n")
    assert jumps.splitlines()[1:3] == ["-I OUTPUT 1 -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
                                       '-I POSTROUTING 1 -m comment --comment "CNI portfwd requiring masquerade" '
                                       "-j CNI-HOSTPORT-MASQ"]


def test_a_huge_replica_count_creates_pods_in_bounded_batches():
    """replicas: 2147483647 once grew the control plane without bound. As the ReplicaSet
    controller (burstReplicas), at most 500 Pods are made per sync, and none while 500 of
    the Deployment's Pods wait for a node: memory stays bounded whatever the count."""
    d = deploy(replicas=2147483647)
    first = list(deployment.reconcile(d, [], random.Random(1), set()).create)
    assert len(first) == deployment.BURST_REPLICAS == 500
    assert deployment.reconcile(d, first, random.Random(1), set()).create == ()  # 500 unscheduled
    placed = [{**p, "spec": {**p["spec"], "nodeName": "a"}} for p in first[:200]] + first[200:]
    assert len(deployment.reconcile(d, placed, random.Random(1), set()).create) == 200
