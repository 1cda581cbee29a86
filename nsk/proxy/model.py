"""What every proxy mode reads: Service ports with their endpoints (pure).

Built from the API objects the way kube-proxy's ServiceChangeTracker and
EndpointsChangeTracker build their maps: one entry per (Service, port), endpoints with
their node and readiness, traffic policies, affinity.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def service_ports(services: list[dict], endpoints: list[dict]) -> list[ServicePort]:
    """Every port of every Service with a virtual IP (not headless, not ExternalName)."""
    eps = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints}
    out = []
    for svc in services:
        meta, spec = svc["metadata"], svc["spec"]
        stype = spec.get("type", "ClusterIP")
        if stype == "ExternalName" or spec.get("clusterIP") in (None, "", "None"):
            continue
        lb_ips = tuple(i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                       if i.get("ip")) if stype == "LoadBalancer" else ()
        affinity = 0
        if spec.get("sessionAffinity") == "ClientIP":
            affinity = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds", 10800)
        ep = eps.get((meta["namespace"], meta["name"]))
        for p in spec.get("ports") or []:
            name, proto = p.get("name", ""), p.get("protocol", "TCP")
            found = []
            for sub in (ep or {}).get("subsets") or []:
                sub_ports = sub.get("ports") or []
                match = [sp for sp in sub_ports if sp.get("name", "") == name and sp.get("protocol", "TCP") == proto]
                if not match and len(sub_ports) == 1 and len(spec.get("ports") or []) == 1:
                    match = sub_ports  # a single unnamed port pairs with a single unnamed port
                for sp in match:
                    for key, ready in (("addresses", True), ("notReadyAddresses", False)):
                        for a in sub.get(key) or []:
                            found.append(Endpoint(a["ip"], sp["port"], a.get("nodeName", ""), ready))
            out.append(ServicePort(
                namespace=meta["namespace"], name=meta["name"], port_name=name, protocol=proto, port=p["port"],
                cluster_ip=spec["clusterIP"], node_port=p.get("nodePort") or 0,
                external_ips=tuple(spec.get("externalIPs") or ()), lb_ips=lb_ips,
                lb_source_ranges=tuple(s.strip() for s in spec.get("loadBalancerSourceRanges") or ()),
                affinity_timeout=affinity,
                external_local=spec.get("externalTrafficPolicy") == "Local",
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                endpoints=tuple(sorted(set(found), key=lambda e: (e.ip, e.port)))))
    return sorted(out, key=lambda s: (s.namespace, s.name, s.port_name, s.protocol))
