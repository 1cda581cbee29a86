"""What every proxy mode reads: Service ports with their endpoints (pure).

Built from the API objects the way kube-proxy's ServiceChangeTracker and
EndpointsChangeTracker build their maps: one entry per (Service, port), endpoints with
their node and readiness, traffic policies, affinity.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nsk.api.types import Service, canonical_ip


@dataclass(frozen=True)
class NodeContext:
    """What every mode knows of its node."""

    node: str
    cluster_cidr: str  # the Pod subnet: what kube-proxy's LocalTrafficDetector calls local
    node_ips: tuple[str, ...] = ()  # used with nodePortAddresses
    node_port_addresses: tuple[str, ...] = ()  # CIDRs; empty = every local address
    service_cidr: str = ""  # the Service subnet (nftables mode drops traffic to unallocated ClusterIPs)
    ipvs_scheduler: str = "rr"  # IPVS mode's scheduler (--ipvs-scheduler)
    run_dir: str = ""  # the cluster's run directory (userspace mode hands its proxy table over there)
    # every address on the node's own interfaces but loopback (its IP, cbr0's): where kube-proxy's
    # GetNodeIPs looks for NodePort addresses; empty: node_ips
    local_ips: tuple[str, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        """The node's own addresses: local_ips, else node_ips."""
        return self.local_ips or self.node_ips


def node_port_cidrs(ctx: NodeContext) -> list | None:
    """nodePortAddresses' IPv4 CIDRs (an IPv6 one is not for these rules); None: every local
    address (none given, or 0.0.0.0/0)."""
    nets = [n for c in ctx.node_port_addresses if (n := ipaddress.ip_network(c, strict=False)).version == 4]
    return None if not nets or any(n.prefixlen == 0 for n in nets) else nets


def node_port_ips(ctx: NodeContext) -> tuple[str, ...]:
    """kube-proxy's NodePortAddresses.GetNodeIPs for IPv4: the node's addresses within
    nodePortAddresses' CIDRs, or every one."""
    nets = node_port_cidrs(ctx)
    return ctx.addresses if nets is None else tuple(ip for ip in ctx.addresses if contains_any(nets, ip))


def contains_any(cidrs, ip: str) -> bool:
    """Whether `ip` is in one of `cidrs` (networks or their text; text that is not one, and an
    address of another family, are in none)."""
    for c in cidrs:
        try:
            if ipaddress.ip_address(ip) in (c if not isinstance(c, str) else ipaddress.ip_network(c, strict=False)):
                return True
        except (TypeError, ValueError):
            pass
    return False


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str
    ready: bool = True
    serving: bool | None = None  # None: as ready
    terminating: bool = False

    @property
    def serving_terminating(self) -> bool:
        """Still serving while its Pod ends: kube-proxy's fallback when none is ready."""
        return self.terminating and (self.ready if self.serving is None else self.serving)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def __hash__(self) -> int:  # remembered: the renderers' caches hash every endpoint every sync
        return _cached_hash(self)


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
    health_check_node_port: int = 0  # eTP Local LoadBalancer: where kube-proxy answers the cloud's checks
    endpoints: tuple[Endpoint, ...] = ()

    def __hash__(self) -> int:
        return _cached_hash(self)

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

    @property
    def uses_cluster(self) -> bool:
        """kube-proxy's UsesClusterEndpoints: with external traffic at all, even under eTP
        Local, since a Pod's traffic to an external address short-circuits to all endpoints."""
        return not self.internal_local or self.externally_accessible

    @property
    def uses_local(self) -> bool:
        """kube-proxy's UsesLocalEndpoints."""
        return self.internal_local or (self.externally_accessible and self.external_local)


def _cached_hash(obj) -> int:
    """The hash of a frozen dataclass's fields, computed once."""
    d = obj.__dict__
    h = d.get("_hash")
    if h is None:
        h = d["_hash"] = hash(tuple([d[f] for f in obj.__dataclass_fields__]))
    return h


def _ips(values) -> tuple[str, ...]:
    """Addresses as the renderers may use them: parsed and printed back, so that a string
    that slipped past validation (a newline, an option) can never become part of a rule;
    what does not parse is skipped, as kube-proxy skips it."""
    return tuple(ip for v in values if (ip := canonical_ip(v)) is not None)


def _cidrs(values) -> tuple[str, ...]:
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(str(v).strip(), strict=False)))
        except ValueError:
            pass
    return tuple(out)


def service_ports(services: list[dict], slices: list[dict]) -> list[ServicePort]:
    """Every port of every Service with a virtual IP (not headless, not ExternalName), its
    endpoints from the Service's EndpointSlices, with their conditions, as kube-proxy reads them."""
    by_svc: dict[tuple[str, str], list[dict]] = {}
    for sl in slices:
        svc_name = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if svc_name:
            by_svc.setdefault((sl["metadata"]["namespace"], svc_name), []).append(sl)
    out: list[ServicePort] = []
    for svc in services:
        meta = svc["metadata"]
        mine = by_svc.get((meta["namespace"], meta["name"]), [])
        rvs = (meta.get("resourceVersion"), *sorted((sl["metadata"]["name"], sl["metadata"].get("resourceVersion"))
                                                    for sl in mine))
        k = (meta["namespace"], meta["name"], rvs)
        if None in rvs or any(None in r for r in rvs[1:]):
            out += _ports_of(svc, mine)  # objects not from the store: nothing to key a cache on
            continue
        got = _CACHE.get(k)
        if got is None:
            got = _CACHE[k] = _ports_of(svc, mine)
            if len(_CACHE) > 100_000:
                _CACHE.clear()
        out += got
    return sorted(out, key=lambda s: (s.namespace, s.name, s.port_name, s.protocol))


# (namespace, name, resourceVersions of the Service and its slices) -> its ServicePorts: a
# Service changes only by a write, and a write gives it a new resourceVersion
_CACHE: dict[tuple, tuple[ServicePort, ...]] = {}


def _ports_of(svc: dict, mine: list[dict]) -> tuple[ServicePort, ...]:
    """One Service's ports, its endpoints from its slices `mine`."""
    out = []
    meta, spec = svc["metadata"], svc["spec"]
    typed = Service.of(svc)
    if not typed.has_virtual_ip:
        return ()
    stype = typed.type
    lb_ips = _ips(i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                  if i.get("ip")) if stype == "LoadBalancer" else ()
    cluster_ip = _ips([typed.cluster_ip])
    if not cluster_ip:
        return ()
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        affinity = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds", 10800)
    for p in spec.get("ports") or []:
        name, proto = p.get("name", ""), p.get("protocol", "TCP")
        if proto not in ("TCP", "UDP", "SCTP"):
            continue
        found = []
        for sl in mine:
            sl_ports = sl.get("ports") or []
            match = [sp for sp in sl_ports if (sp.get("name") or "") == name and sp.get("protocol", "TCP") == proto]
            if not match and len(sl_ports) == 1 and len(spec.get("ports") or []) == 1:
                match = sl_ports  # a single unnamed port pairs with a single unnamed port
            for sp in match:
                for e in sl.get("endpoints") or []:
                    cond = e.get("conditions") or {}
                    ready = cond.get("ready") is not False  # unset means ready
                    serving = cond.get("serving")
                    for ip in _ips((e.get("addresses") or [])[:1]):
                        found.append(Endpoint(ip, int(sp["port"]), e.get("nodeName", ""), ready,
                                              ready if serving is None else bool(serving),
                                              bool(cond.get("terminating"))))
        out.append(ServicePort(
            namespace=meta["namespace"], name=meta["name"], port_name=name, protocol=proto, port=int(p["port"]),
            cluster_ip=cluster_ip[0], node_port=int(p.get("nodePort") or 0),
            external_ips=_ips(spec.get("externalIPs") or ()), lb_ips=lb_ips,
            lb_source_ranges=_cidrs(spec.get("loadBalancerSourceRanges") or ()),
            affinity_timeout=int(affinity),
            external_local=spec.get("externalTrafficPolicy") == "Local",
            internal_local=spec.get("internalTrafficPolicy") == "Local",
            health_check_node_port=int(spec.get("healthCheckNodePort") or 0),
            endpoints=tuple(sorted(set(found), key=lambda e: e.address))))  # kube-proxy's order
    return tuple(out)


def categorize(sp: ServicePort, node: str) -> tuple[list[Endpoint], list[Endpoint], bool]:
    """kube-proxy's CategorizeEndpoints: (the endpoints for cluster traffic, those for local
    traffic, whether there is any usable endpoint). Ready ones; when there are none (in the
    cluster, or on this node for a Local policy), those still serving while they terminate."""
    eps = sorted(sp.endpoints, key=lambda e: e.address)  # kube-proxy's order: the "ip:port" string
    cluster: list[Endpoint] = []
    has_any = False
    if sp.uses_cluster:
        cluster = [e for e in eps if e.ready] or [e for e in eps if e.serving_terminating]
        has_any = bool(cluster)
    if not sp.uses_local:
        return cluster, [], has_any
    has_any = has_any or any(e.ready or e.serving_terminating for e in eps)
    local = [e for e in eps if e.node == node and e.ready] or \
        [e for e in eps if e.node == node and e.serving_terminating]
    return cluster, local, has_any


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
