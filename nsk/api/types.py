"""Typed, read-only views of the objects controllers, proxies and DNS decide on (pure), in
the style of CoreDNS's `object.Service` and `object.Pod`: the few facts they need, each
derived in one place ("does this Service have a virtual IP", "is this Pod ready").

Family-aware: addresses are kept as strings with their IP family beside them; IPv4 is the
only family a cluster enables today, but nothing here assumes it.
"""

from __future__ import annotations

import functools

import ipaddress
from dataclasses import dataclass

IPV4, IPV6 = "IPv4", "IPv6"


def family(ip: str) -> str:
    """`IPv4` or `IPv6`, as spec.ipFamilies names them."""
    return IPV6 if ipaddress.ip_address(ip).version == 6 else IPV4


def _cluster_ips(spec: dict) -> tuple[str, ...]:
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return tuple(ip for ip in ips if ip and ip != "None")


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str  # ClusterIP, NodePort, LoadBalancer, ExternalName
    cluster_ips: tuple[str, ...]  # () for a headless or ExternalName Service
    ip_families: tuple[str, ...]
    external_name: str
    selector: tuple[tuple[str, str], ...]

    @property
    def headless(self) -> bool:
        """`clusterIP: None`: DNS answers with the endpoints themselves, no proxy rules."""
        return self.type != "ExternalName" and not self.cluster_ips

    @property
    def has_virtual_ip(self) -> bool:
        """Whether kube-proxy programs it (and DNS answers its cluster IP)."""
        return self.type != "ExternalName" and bool(self.cluster_ips)

    @property
    def cluster_ip(self) -> str:
        """The primary cluster IP ("" when it has none)."""
        return self.cluster_ips[0] if self.cluster_ips else ""

    @staticmethod
    def of(obj: dict) -> "Service":
        meta, spec = obj["metadata"], obj["spec"]
        stype = spec.get("type") or "ClusterIP"
        ips = () if stype == "ExternalName" else _cluster_ips(spec)
        return Service(meta["namespace"], meta["name"], stype, ips,
                       tuple(spec.get("ipFamilies") or (family(ip) for ip in ips)),
                       spec.get("externalName", "") if stype == "ExternalName" else "",
                       tuple(sorted((spec.get("selector") or {}).items())))


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    node_name: str
    phase: str
    pod_ips: tuple[str, ...]
    ready: bool  # Running with condition Ready=True: a ready endpoint
    terminal: bool  # Succeeded or Failed: no longer an endpoint at all

    @property
    def pod_ip(self) -> str:
        return self.pod_ips[0] if self.pod_ips else ""

    @staticmethod
    def of(obj: dict) -> "Pod":
        meta, st = obj["metadata"], obj.get("status") or {}
        phase = st.get("phase", "Pending")
        ips = tuple(i["ip"] for i in st.get("podIPs") or [] if i.get("ip")) or \
            ((st["podIP"],) if st.get("podIP") else ())
        ready = phase == "Running" and any(c.get("type") == "Ready" and c.get("status") == "True"
                                           for c in st.get("conditions") or [])
        return Pod(meta.get("namespace", ""), meta["name"], meta.get("uid", ""),
                   (obj.get("spec") or {}).get("nodeName", ""), phase, ips, ready, phase in ("Succeeded", "Failed"))


@functools.lru_cache(maxsize=65536)
def canonical_ip(text: object) -> str | None:
    """The address as Python prints it back, or None if it is not one (cached: the same
    endpoint addresses come back in every Service that selects them)."""
    try:
        return str(ipaddress.ip_address(text))
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=65536)
def ip_key(text: str) -> tuple:
    """A sort key ordering addresses numerically (IPv4 first), as ipaddress compares them."""
    a = ipaddress.ip_address(text)
    return (a.version, int(a))
