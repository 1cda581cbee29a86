"""Building the cluster network of a plan: the wire, the nodes, the external hosts (root).

Each kernel object is recorded through `own(kind, name)` *before* it is made, so that
`nsk down` after a crash at any point removes exactly what exists.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Callable

from nsk.kernel import links, netns, rtnl
from nsk.net.plan import NODE_BRIDGE, POD_IFNAME, ClusterPlan

Own = Callable[[str, str], None]
RT_SCOPE_LINK = 253
LOOPBACK_INDEX = 1  # lo is the first device of every network namespace


def build(p: ClusterPlan, own: Own) -> None:
    """Create the wire namespace (router + two bridges), every node and every external host (root)."""
    own("netns", p.wire_netns)
    netns.create(p.wire_netns)
    with links.ipr(p.wire_netns) as wire:
        links.lo_up(wire)
        links.bridge(wire, p.node_bridge, p.router_node_ip, p.node_prefix)
        links.bridge(wire, p.ext_bridge, p.router_ext_ip, p.ext_prefix)
        # The router forwards between the node network and the external network. It has
        # no route to the Pod subnet: the outside reaches Pods only through Services.
        netns.sysctl(p.wire_netns, "net.ipv4.ip_forward", "1")
        for node in p.nodes:
            own("netns", node.netns)
            netns.create(node.netns)
            links.veth_into(wire, node.uplink, "eth0", node.netns, master=p.node_bridge)
            with links.ipr(node.netns) as r:
                links.lo_up(r)
                links.address(r, "eth0", node.ip, p.node_prefix)
                links.route_add(r, "0.0.0.0/0", gateway=p.router_node_ip)
                gw_prefix = int(node.pod_cidr.split("/")[1])
                links.bridge(r, NODE_BRIDGE, node.gateway, gw_prefix)
                for dst, via in p.routes(node):
                    links.route_add(r, dst, gateway=via)
            for key, value in (("net.ipv4.ip_forward", "1"),
                               # kube-proxy's localhostNodePorts: 127.0.0.1:<nodePort> on the node
                               # reaches the Service (KUBE-FIREWALL drops such packets from outside)
                               ("net.ipv4.conf.all.route_localnet", "1"),
                               # A Pod's packet to a Pod on the same bridge enters and leaves
                               # cbr0: without this the node would tell the Pod to go direct.
                               ("net.ipv4.conf.all.send_redirects", "0"),
                               (f"net.ipv4.conf.{NODE_BRIDGE}.send_redirects", "0")):
                netns.sysctl(node.netns, key, value)
            # With br_netfilter loaded on the host, a Pod's packet would meet the nat table
            # while still being bridged, and a Service that picks the sending Pod itself
            # (hairpin) would need hairpin mode on its port. Pods reach everything through
            # the node's IP stack here, so bridged traffic skips iptables, on every host alike.
            for key in ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"):
                try:
                    netns.sysctl(node.netns, key, "0")
                except FileNotFoundError:
                    pass  # br_netfilter not loaded: bridged traffic never meets iptables
        for host in p.hosts:
            own("netns", host.netns)
            netns.create(host.netns)
            links.veth_into(wire, host.uplink, "eth0", host.netns, master=p.ext_bridge)
            with links.ipr(host.netns) as r:
                links.lo_up(r)
                links.address(r, "eth0", host.ip, p.ext_prefix)
                links.route_add(r, "0.0.0.0/0", gateway=p.router_ext_ip)


def node_socket(node_netns: str) -> tuple[rtnl.Socket, int]:
    """A raw rtnetlink socket in the node's namespace and the index of its Pod bridge, for
    pod_sandbox (root); opened once a node."""
    with netns.entered(node_netns):
        sock = rtnl.Socket(node_netns)
    try:
        (answer,) = sock.transact([rtnl.link_get(NODE_BRIDGE)])
        return sock, rtnl.link_index(answer, NODE_BRIDGE)
    except BaseException:
        sock.close()
        raise


def pod_sandbox(node: rtnl.Socket, bridge_index: int, pod_netns: str, veth: str, ip: str, gateway: str) -> None:
    """A Pod's network namespace: eth0 with ip/32, an on-link route to the node's gateway,
    the default route through it; the node end of the veth up on cbr0 (root).

    `node` is a socket in the node's namespace (node_socket). This is most of what a Pod
    costs, so it takes the raw rtnetlink path (kernel/rtnl.py, which says why): one batch
    on the node's socket (the veth pair, its peer made directly in the Pod's namespace as
    eth0, and a lookup of the peer's index), then one batch on a socket opened inside the
    new namespace while it is being made (lo up, eth0 up, the address, the two routes). A
    failure raises rtnl.NetlinkError (an OSError); the caller removes the namespace, and
    the veth with it.
    """
    ipaddress.IPv4Address(ip), ipaddress.IPv4Address(gateway)  # a bad address fails before anything is made

    def inside() -> tuple[rtnl.Socket, int]:
        sock = rtnl.Socket(pod_netns)
        try:
            return sock, os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            sock.close()
            raise

    pod, pod_fd = netns.create(pod_netns, inside)
    try:
        add = rtnl.veth_add(veth, POD_IFNAME, pod_fd, master=bridge_index)
        add = add._replace(what=f"{add.what} (peer {POD_IFNAME} in {pod_netns})")
        _, answer = node.transact([add, rtnl.link_get(veth)])
        eth0 = rtnl.link_peer_index(answer, veth)
        pod.transact([
            rtnl.link_up(LOOPBACK_INDEX, "lo"),
            rtnl.link_up(eth0, POD_IFNAME),
            rtnl.addr_add(eth0, POD_IFNAME, ip, 32),
            rtnl.route_add(f"{gateway}/32", oif=eth0, name=POD_IFNAME, scope=RT_SCOPE_LINK),
            rtnl.route_add("0.0.0.0/0", gateway=gateway),
        ])
    finally:
        pod.close()
        os.close(pod_fd)


def router_routes(wire_netns: str, want: dict[str, tuple[str, ...]], have: dict[str, tuple[str, ...]]) -> None:
    """Make the router's /32 routes for Service addresses (LoadBalancer IPs, externalIPs)
    equal `want` (address -> node IPs, several = ECMP), given what `have` says exists (root).

    This is the part a cloud load balancer or MetalLB plays: it brings the address to the
    nodes; the nodes' kube-proxy rules then take it from there.
    """
    if want == have:
        return
    with links.ipr(wire_netns) as r:
        for ip in sorted(set(have) - set(want)):
            try:
                r.route("del", dst=f"{ip}/32")
            except Exception:  # noqa: BLE001 - already gone is what we want
                pass
        for ip, hops in sorted(want.items()):
            if have.get(ip) == hops:
                continue
            if len(hops) == 1:
                r.route("replace", dst=f"{ip}/32", gateway=hops[0])
            else:
                r.route("replace", dst=f"{ip}/32", multipath=[{"gateway": h} for h in hops])
