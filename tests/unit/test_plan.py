"""The cluster network plan (nsk.net.plan): addresses, kernel names and routes, computed without root."""

from __future__ import annotations

import itertools

import pytest
import yaml

from nsk.api.cluster import ClusterConfig, parse_cluster
from nsk.net.plan import IFNAMSIZ, NodePlan, ifname, netns_name, plan, pod_veth


def cluster(spec: str = "{}", name: str = "lab") -> ClusterConfig:
    return parse_cluster(yaml.safe_load(f"apiVersion: nsk.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\n"
                                        f"spec: {spec}\n"))


def test_default_plan():
    p = plan(cluster())
    assert p.nodes == (
        NodePlan(name="node-1", index=1, ip="172.18.0.2", pod_cidr="10.244.1.0/24", gateway="10.244.1.1",
                 netns="nsk_lab_node_node-1", uplink="n-node-1", labels={}),
        NodePlan(name="node-2", index=2, ip="172.18.0.3", pod_cidr="10.244.2.0/24", gateway="10.244.2.1",
                 netns="nsk_lab_node_node-2", uplink="n-node-2", labels={}),
    )
    assert (p.name, p.wire_netns, p.node_bridge, p.ext_bridge) == ("lab", "nsk_lab_net", "br-nodes", "br-ext")
    assert (p.router_node_ip, p.node_prefix, p.router_ext_ip, p.ext_prefix) == ("172.18.0.1", 24, "192.0.2.1", 24)
    assert [(h.name, h.ip, h.netns, h.uplink) for h in p.hosts] == [
        ("client", "192.0.2.10", "nsk_lab_host_client", "h-client")]


def test_routes_go_to_every_other_node():
    p = plan(cluster("{nodes: [{name: a}, {name: b}, {name: c}]}"))
    assert p.routes(p.node("a")) == [("10.244.2.0/24", "172.18.0.3"), ("10.244.3.0/24", "172.18.0.4")]
    assert p.routes(p.node("b")) == [("10.244.1.0/24", "172.18.0.2"), ("10.244.3.0/24", "172.18.0.4")]
    with pytest.raises(KeyError):
        p.node("d")


def test_node_i_gets_the_ith_slash_24():
    cfg = cluster("{networking: {podSubnet: 10.200.0.0/20, nodeSubnet: 10.0.0.8/29}, "
                  "nodes: [{name: n1}, {name: n2}, {name: n3, labels: {zone: b}}, {name: n4}, {name: n5}]}")
    p = plan(cfg)
    assert [(n.index, n.pod_cidr, n.gateway, n.ip) for n in p.nodes] == [
        (1, "10.200.1.0/24", "10.200.1.1", "10.0.0.10"),
        (2, "10.200.2.0/24", "10.200.2.1", "10.0.0.11"),
        (3, "10.200.3.0/24", "10.200.3.1", "10.0.0.12"),
        (4, "10.200.4.0/24", "10.200.4.1", "10.0.0.13"),
        (5, "10.200.5.0/24", "10.200.5.1", "10.0.0.14"),  # .15 is the broadcast address: /29 is just enough
    ]
    assert p.router_node_ip == "10.0.0.9" and p.node_prefix == 29
    assert p.node("n3").labels == {"zone": "b"}


def test_the_largest_cluster_the_checks_allow_fits():
    """parse_cluster's size checks and plan() agree: the biggest accepted cluster has room for every node."""
    nodes = ", ".join(f"{{name: n{i}}}" for i in range(1, 254))
    p = plan(cluster(f"{{networking: {{podSubnet: 10.0.0.0/16, nodeSubnet: 172.18.0.0/24}}, nodes: [{nodes}]}}"))
    assert (p.nodes[-1].pod_cidr, p.nodes[-1].ip) == ("10.0.253.0/24", "172.18.0.254")
    assert len({n.pod_cidr for n in p.nodes}) == len({n.ip for n in p.nodes}) == 253


def test_netns_names():
    assert netns_name("lab", "pod", "default", "web-1") == "nsk_lab_pod_default_web-1"
    long_a = netns_name("lab", "pod", "n" * 63, "a" * 253)
    long_b = netns_name("lab", "pod", "n" * 63, "a" * 252 + "b")
    assert len(long_a) <= 200 and len(long_b) <= 200 and long_a != long_b
    assert long_a == netns_name("lab", "pod", "n" * 63, "a" * 253)
    # `_` is in no Kubernetes name, so the parts cannot run into each other
    assert netns_name("lab", "pod", "a", "b-c") != netns_name("lab", "pod", "a-b", "c")


@pytest.mark.parametrize("prefix, key, name", [
    ("n-", "node-1", "n-node-1"),
    ("h-", "client", "h-client"),
    ("n-", "a.b", "n-a.b"),
    ("n-", "k" * 12, "n-" + "k" * 12),  # 14 characters: literal
])
def test_ifname_uses_the_key_when_it_fits(prefix, key, name):
    assert ifname(prefix, key) == name


def _keys():
    """Keys of every length up to 80, with the characters that make ifname hash them."""
    for n in range(1, 81):
        for c in ("a", "z9", "x-", "é", "_", "/", " "):
            yield (c * n)[:n]
            yield f"node-{n}" + c * n


def test_ifname_is_always_short_enough_and_distinct():
    for prefix in ("n-", "h-", "veth", "vx-ab-"):
        keys = sorted(set(_keys()))
        names = [ifname(prefix, k) for k in keys]
        assert all(len(n.encode()) <= IFNAMSIZ and n.startswith(prefix) for n in names)
        assert len(set(names)) == len(keys)
        assert names == [ifname(prefix, k) for k in keys]  # deterministic


def test_ifname_distinct_for_long_keys_with_a_common_start():
    keys = [f"a-very-long-node-name-in-zone-{z}-rack-{r}" for z, r in itertools.product("abc", range(50))]
    names = {ifname("n-", k) for k in keys}
    assert len(names) == len(keys) and all(len(n) == IFNAMSIZ for n in names)


def test_ifname_a_key_that_looks_like_a_hash_does_not_take_its_name():
    long_key = "node-with-a-name-longer-than-fits"
    hashed = ifname("n-", long_key)
    assert len(hashed) == IFNAMSIZ
    assert ifname("n-", hashed[2:]) != hashed


def test_ifname_counts_bytes_not_characters():
    """The kernel's limit is in bytes: a non-ASCII key is hashed, never written out."""
    name = ifname("n-", "nœud-1")
    assert name != "n-nœud-1" and name.isascii() and len(name) == IFNAMSIZ


def test_ifname_refuses_a_prefix_that_leaves_no_room():
    with pytest.raises(ValueError):
        ifname("a-very-long-pfx-", "x")


def test_pod_veth():
    a = pod_veth("default", "web-1", "uid-1")
    assert a == pod_veth("default", "web-1", "uid-1")  # deterministic: `nsk status` can show it
    assert a.startswith("veth") and len(a) == IFNAMSIZ
    others = {pod_veth("default", "web-1", "uid-2"), pod_veth("default", "web-2", "uid-1"),
              pod_veth("other", "web-1", "uid-1"), pod_veth("default", "web-1")}
    assert a not in others and len(others) == 4
    assert len(pod_veth("n" * 63, "p" * 253, "u" * 36)) == IFNAMSIZ


def test_pod_veths_of_many_pods_are_distinct():
    veths = {pod_veth(ns, f"web-{i}", f"uid-{i}") for ns in ("default", "prod") for i in range(5000)}
    assert len(veths) == 10000
