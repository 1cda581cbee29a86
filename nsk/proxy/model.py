"""What every proxy mode reads: Service ports with their endpoints (pure).

Built from the API objects the way kube-proxy's ServiceChangeTracker and
EndpointsChangeTracker build their maps: one entry per (Service, port), endpoints with
their node and readiness, traffic policies, affinity.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nsk.api.types import Service


@dataclass(frozen=True)
class NodeContext:
    """What every mode knows of its node."""

    node: str
    cluster_cidr: str  # the Pod subnet: what kube-proxy's LocalTrafficDetector calls local
    node_ips: tuple[str, ...] = ()  # used with nodePortAddresses
    node_port_addresses: tuple[str, ...] = ()  # CIDRs; empty = every local address


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str
    ready: bool = True

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str  # TCP, UDP, SCTP
    port: int
    cluster_ip: str
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    lb_ips: tuple[str, ...] = ()
    lb_source_ranges: tuple[str, ...] = ()
    affinity_timeout: int = 0  # seconds of ClientIP affinity; 0 = none
    external_local: bool = False
    internal_local: bool = False
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def name_string(self) -> str:
        """kube-proxy's ServicePortName.String(): `ns/name:port`, or `ns/name` for an unnamed port."""
        return f"{self.namespace}/{self.name}" + (f":{self.port_name}" if self.port_name else "")

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.lb_ips)


def _ips(values) -> tuple[str, ...]:
    """Addresses as the renderers may use them: parsed and printed back, so that a string
    that slipped past validation (a newline, an option) can never become part of a rule."""
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_address(v)))
        except (TypeError, ValueError):
            pass  # kube-proxy, too, skips what does not parse
    return tuple(out)


def _cidrs(values) -> tuple[str, ...]:
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(str(v).strip(), strict=False)))
        except ValueError:
            pass
    return tuple(out)


def service_ports(services: list[dict], endpoints: list[dict]) -> list[ServicePort]:
    """Every port of every Service with a virtual IP (not headless, not ExternalName)."""
    eps = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints}
    out = []
    for svc in services:
        meta, spec = svc["metadata"], svc["spec"]
        typed = Service.of(svc)
        if not typed.has_virtual_ip:
            continue
        stype = typed.type
        lb_ips = _ips(i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                      if i.get("ip")) if stype == "LoadBalancer" else ()
        cluster_ip = _ips([typed.cluster_ip])
        if not cluster_ip:
            continue
        affinity = 0
        if spec.get("sessionAffinity") == "ClientIP":
            affinity = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds", 10800)
        ep = eps.get((meta["namespace"], meta["name"]))
        for p in spec.get("ports") or []:
            name, proto = p.get("name", ""), p.get("protocol", "TCP")
            if proto not in ("TCP", "UDP", "SCTP"):
                continue
            found = []
            for sub in (ep or {}).get("subsets") or []:
                sub_ports = sub.get("ports") or []
                match = [sp for sp in sub_ports if sp.get("name", "") == name and sp.get("protocol", "TCP") == proto]
                if not match and len(sub_ports) == 1 and len(spec.get("ports") or []) == 1:
                    match = sub_ports  # a single unnamed port pairs with a single unnamed port
                for sp in match:
                    for key, ready in (("addresses", True), ("notReadyAddresses", False)):
                        for a in sub.get(key) or []:
                            for ip in _ips([a.get("ip")]):
                                found.append(Endpoint(ip, int(sp["port"]), a.get("nodeName", ""), ready))
            out.append(ServicePort(
                namespace=meta["namespace"], name=meta["name"], port_name=name, protocol=proto, port=int(p["port"]),
                cluster_ip=cluster_ip[0], node_port=int(p.get("nodePort") or 0),
                external_ips=_ips(spec.get("externalIPs") or ()), lb_ips=lb_ips,
                lb_source_ranges=_cidrs(spec.get("loadBalancerSourceRanges") or ()),
                affinity_timeout=int(affinity),
                external_local=spec.get("externalTrafficPolicy") == "Local",
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                endpoints=tuple(sorted(set(found), key=lambda e: e.address))))  # kube-proxy's order
    return sorted(out, key=lambda s: (s.namespace, s.name, s.port_name, s.protocol))


def stale_udp(old: dict[tuple, ServicePort], new: dict[tuple, ServicePort]) -> list[tuple[str, ...]]:
    """The conntrack deletions an endpoint change calls for (arguments of `conntrack -D`),
    shared by every mode: UDP has no connection to end, so conntrack entries would keep
    sending a client to an endpoint that is gone, or to the REJECT of a Service that had
    none. kube-proxy deletes them (pkg/proxy/conntrack: CleanStaleEntries)."""
    out: list[tuple[str, ...]] = []
    for k, before in old.items():
        if before.protocol != "UDP":
            continue
        after = new.get(k)
        old_ready = {e.ip for e in before.endpoints if e.ready}
        new_ready = {e.ip for e in after.endpoints if e.ready} if after else set()
        for ip in sorted(old_ready - new_ready):
            out.append(("-p", "udp", "--orig-dst", before.cluster_ip, "--dst-nat", ip))
            if before.node_port:
                out.append(("-p", "udp", "--dport", str(before.node_port), "--dst-nat", ip))
    for k, after in new.items():
        before = old.get(k)
        if after.protocol == "UDP" and any(e.ready for e in after.endpoints) and \
                (before is None or not any(e.ready for e in before.endpoints)):
            out.append(("-p", "udp", "--orig-dst", after.cluster_ip))
    return out


def by_port(ports: list[ServicePort]) -> dict[tuple, ServicePort]:
    return {(p.namespace, p.name, p.port_name, p.protocol): p for p in ports}
