"""The cluster network as data: addresses, kernel names and routes (pure, no kernel).

    host ns "client" (192.0.2.10/24) --eth0--+
                                             |  br-ext 192.0.2.1          (router: forwards,
              nsk_<c>_net  (the "wire")       |                             no NAT, no pod routes)
                                             |  br-nodes 172.18.0.1
    node ns "node-1" (eth0 172.18.0.2) ------+----- node ns "node-2" (eth0 172.18.0.3)
      cbr0 10.244.1.1/24                              cbr0 10.244.2.1/24
      route 10.244.2.0/24 via 172.18.0.3              route 10.244.1.0/24 via 172.18.0.2
      |-- vethXXXXXXXX <-> pod eth0 10.244.1.2/32, default via 10.244.1.1

Pods get a /32 with an on-link route to their node's gateway (as Calico and Cilium do),
so every packet of a Pod, also to a Pod on the same bridge, passes through its node's IP
stack: the node's iptables sees it whether or not the host has br_netfilter loaded.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from nsk.api.cluster import ClusterConfig

IFNAMSIZ = 15  # the kernel's limit on interface names, without the NUL
NODE_BRIDGE = "cbr0"  # kubenet's name for the node's Pod bridge
POD_IFNAME = "eth0"


@dataclass(frozen=True)
class NodePlan:
    name: str
    index: int  # 1-based; node k owns the k-th /24 of the pod subnet
    ip: str
    pod_cidr: str
    gateway: str  # cbr0's address, the Pods' next hop
    netns: str
    uplink: str  # this node's veth end in the wire namespace
    labels: dict


@dataclass(frozen=True)
class HostPlan:
    name: str
    ip: str
    netns: str
    uplink: str


@dataclass(frozen=True)
class ClusterPlan:
    name: str
    wire_netns: str
    node_bridge: str  # in the wire namespace: the node network
    ext_bridge: str  # in the wire namespace: the external network
    router_node_ip: str
    router_ext_ip: str
    node_prefix: int
    ext_prefix: int
    nodes: tuple[NodePlan, ...]
    hosts: tuple[HostPlan, ...]

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def routes(self, node: NodePlan) -> list[tuple[str, str]]:
        """(destination, gateway) of the routes to every other node's Pod /24."""
        return [(o.pod_cidr, o.ip) for o in self.nodes if o.name != node.name]


def netns_name(cluster: str, kind: str, *parts: str) -> str:
    """`nsk_<cluster>_<kind>_<part>_...`: `_` is in no Kubernetes name, so names never collide.

    A name longer than a path component allows is cut and given a hash of the whole.
    """
    name = "_".join(("nsk", cluster, kind, *parts))
    if len(name) > 200:
        name = name[:183] + "-" + _hash(name, 16)
    return name


def ifname(prefix: str, key: str) -> str:
    """`prefix + key` when that is shorter than IFNAMSIZ, else `prefix + hash(key)`: deterministic, unique.

    A hashed name is always exactly IFNAMSIZ long and a literal one shorter, so a key that
    happens to look like another key's hash can never take that key's name. Only ASCII
    letters, digits, '-' and '.' are used literally: the kernel counts bytes, not characters.
    """
    if IFNAMSIZ - len(prefix) < 8:
        raise ValueError(f"interface name prefix {prefix!r} leaves too little room for a unique suffix")
    if len(prefix) + len(key) < IFNAMSIZ and key and all(c.isascii() and (c.isalnum() or c in "-.") for c in key):
        return prefix + key
    return prefix + _hash(key, IFNAMSIZ - len(prefix))


def pod_veth(namespace: str, name: str, uid: str = "") -> str:
    """The node-side veth of a Pod: `veth` + 11 hex digits, like Calico's `cali` names.

    The uid takes part so that a Pod recreated under the same name gets a new interface
    while the old one may still be going away.
    """
    return "veth" + _hash(f"{namespace}/{name}/{uid}", 11)


def _hash(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def plan(cfg: ClusterConfig) -> ClusterPlan:
    pod_net = ipaddress.IPv4Network(cfg.pod_subnet)
    node_net = ipaddress.IPv4Network(cfg.node_subnet)
    ext_net = ipaddress.IPv4Network(cfg.external_subnet)
    node_cidrs = list(pod_net.subnets(new_prefix=24)) if pod_net.prefixlen <= 24 else []
    nodes = []
    for i, n in enumerate(cfg.nodes, start=1):
        cidr = node_cidrs[i]
        nodes.append(NodePlan(
            name=n.name, index=i, ip=str(node_net.network_address + 1 + i), pod_cidr=str(cidr),
            gateway=str(cidr.network_address + 1), netns=netns_name(cfg.name, "node", n.name),
            uplink=ifname("n-", n.name), labels=dict(n.labels)))
    hosts = tuple(HostPlan(h.name, h.ip, netns_name(cfg.name, "host", h.name), ifname("h-", h.name))
                  for h in cfg.hosts)
    return ClusterPlan(
        name=cfg.name, wire_netns=netns_name(cfg.name, "net"), node_bridge="br-nodes", ext_bridge="br-ext",
        router_node_ip=str(node_net.network_address + 1), router_ext_ip=str(ext_net.network_address + 1),
        node_prefix=node_net.prefixlen, ext_prefix=ext_net.prefixlen, nodes=tuple(nodes), hosts=hosts)
