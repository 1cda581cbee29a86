"""Interfaces, addresses and routes, through pyroute2's netlink in-process (needs root).

A netlink socket belongs to the network namespace it was opened in, so `ipr(name)`
opens IPRoute while the thread is inside the namespace; no helper process is forked.
"""

from __future__ import annotations

import contextlib
import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nsk.kernel import netns


def open_route(ns: str) -> IPRoute:
    """An IPRoute bound to the named namespace (root), subscribed to no multicast group:
    nsk only asks and never listens, and a long-lived socket (a node's) would otherwise
    queue an event for every interface and address the namespace gains."""
    with netns.entered(ns):
        return IPRoute(groups=0)


@contextlib.contextmanager
def ipr(ns: str):
    """An IPRoute bound to the named namespace (root), closed after the block."""
    route = open_route(ns)
    try:
        yield route
    finally:
        route.close()


def index(route: IPRoute, ifname: str) -> int:
    found = route.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname}")
    return found[0]


def up(route: IPRoute, ifname: str) -> int:
    idx = index(route, ifname)
    route.link("set", index=idx, state="up")
    return idx


def bridge_mac(address: str) -> str:
    """The bridge's own MAC: 0a:58 and its IPv4 address (as OVN-Kubernetes writes its own),
    locally administered, and the same for the same address after every `nsk up`."""
    return "0a:58:" + ":".join(f"{int(b):02x}" for b in address.split("."))


def bridge(route: IPRoute, ifname: str, address: str, prefix: int) -> None:
    """A bridge holding `address/prefix`, up (root). Its MAC is set when it is made: a
    bridge left to choose takes the lowest MAC among its ports and changes it as Pods come
    and go, which leaves every Pod a stale ARP entry for its gateway (the CNI bridge
    plugin sets it for the same reason)."""
    route.link("add", ifname=ifname, kind="bridge", address=bridge_mac(address))
    idx = up(route, ifname)
    route.addr("add", index=idx, address=address, prefixlen=prefix)


def veth_into(route: IPRoute, local: str, peer: str, peer_ns: str, master: str | None = None) -> None:
    """A veth pair whose `peer` end is created directly inside `peer_ns` (root)."""
    fd = os.open(netns.path(peer_ns), os.O_RDONLY)
    try:
        route.link("add", ifname=local, kind="veth", peer={"ifname": peer, "net_ns_fd": fd})
    finally:
        os.close(fd)
    idx = index(route, local)
    if master:
        route.link("set", index=idx, master=index(route, master))
    route.link("set", index=idx, state="up")


def address(route: IPRoute, ifname: str, addr: str, prefix: int) -> int:
    idx = up(route, ifname)
    route.addr("add", index=idx, address=addr, prefixlen=prefix)
    return idx


def lo_up(route: IPRoute) -> None:
    up(route, "lo")


def route_add(route: IPRoute, dst: str, gateway: str | None = None, oif: int | None = None,
              scope: int | None = None) -> None:
    kw = {"dst": dst}
    if gateway:
        kw["gateway"] = gateway
    if oif is not None:
        kw["oif"] = oif
    if scope is not None:
        kw["scope"] = scope
    try:
        route.route("add", **kw)
    except NetlinkError as e:
        if e.code != 17:  # EEXIST: already there, as wanted
            raise
