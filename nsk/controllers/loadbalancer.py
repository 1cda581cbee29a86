"""The emulated cloud load balancer (pure): an address from the pool for every
LoadBalancer Service, published in status.loadBalancer.ingress, and the router's routes
that bring Service addresses (LB IPs and externalIPs) to the nodes."""

from __future__ import annotations

import ipaddress
from typing import Callable

from nsk.proxy.model import ServicePort


def assign(services: list[dict], pool: str) -> list[tuple[dict, dict]]:
    """(Service, new status) for every Service whose load-balancer status must change.

    An address already given stays; `spec.loadBalancerIP` is honoured when it lies in the
    pool and is free (a cloud ignores one it cannot give); else the first free address.
    """
    net = ipaddress.ip_network(pool)
    taken = {}
    for s in services:
        for i in ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if s["spec"].get("type") == "LoadBalancer" and i.get("ip"):
                taken[i["ip"]] = s
    changes = []
    for s in services:
        st = s.get("status") or {}
        current = [i.get("ip") for i in (st.get("loadBalancer") or {}).get("ingress") or []]
        if s["spec"].get("type") != "LoadBalancer":
            if current:
                changes.append((s, {k: v for k, v in st.items() if k != "loadBalancer"}))
            continue
        want = s["spec"].get("loadBalancerIP")
        if current and (not want or current == [want]):
            continue
        ip = None
        if want:
            try:
                if ipaddress.ip_address(want) in net and taken.get(want, s) is s:
                    ip = want
            except ValueError:
                pass
        if ip is None:
            if current:
                continue
            ip = next((str(h) for h in net.hosts() if str(h) not in taken), None)
            if ip is None:
                continue  # the pool is exhausted: the Service stays <pending>, as on a cloud
        taken[ip] = s
        changes.append((s, {**st, "loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}))
    return changes


def router_routes(ports: list[ServicePort], nodes: dict[str, str],
                  healthy: Callable[[int], set[str] | None] = lambda port: None) -> dict[str, tuple[str, ...]]:
    """address -> node IPs the router sends it to: every node, or with
    externalTrafficPolicy Local only the nodes whose health check node port answered 200
    (`healthy(port)`: the emulated cloud load balancer's checks; before the first answers,
    the nodes with a ready endpoint). When no node passes, every node (clouds fail open)."""
    routes: dict[str, set[str]] = {}
    for sp in ports:
        hops = set(nodes.values())
        if sp.external_local:
            passed = healthy(sp.health_check_node_port) if sp.health_check_node_port else None
            if passed is not None:
                local = {nodes[n] for n in passed if n in nodes}
            else:
                local = {nodes[e.node] for e in sp.endpoints if e.ready and e.node in nodes}
            hops = local or hops
        for ip in sp.external_ips + sp.lb_ips:
            routes.setdefault(ip, set()).update(hops)
    return {ip: tuple(sorted(h, key=ipaddress.ip_address)) for ip, h in routes.items()}


class LoadBalancerController:
    """The emulated cloud's address assignment, published in each Service's status."""

    name = "service-lb"

    def __init__(self, pool: str):
        self.pool = pool

    def reconcile(self, snap) -> list:
        from nsk.api.objects import key
        from nsk.controllers.manager import Status
        return [Status(key(svc), st) for svc, st in assign(snap.list("Service"), self.pool)]
