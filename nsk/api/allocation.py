"""ClusterIP and NodePort allocation, as the API server does it on create and update (pure).

Allocation is sequential from the start of each range, so a lab's addresses are the
same every time: 10.96.0.1 is kept for the `kubernetes` Service and the DNS address
(10.96.0.10 by default) for kube-dns, as kubeadm does.
"""

from __future__ import annotations

import copy
import ipaddress

from nsk.api.cluster import ClusterConfig
from nsk.api.types import Service
from nsk.errors import FieldError, InvalidObject, invalid


class Allocations:
    """Who holds each ClusterIP and node port: made once from the Services, then kept up to
    date as a batch of writes allocates (`nsk up` of 5,000 Services reads them once, not once
    a Service), with where the lowest free address and port may be."""

    def __init__(self, services: list[dict]):
        self.ips: dict[str, tuple[str, str]] = {}
        self.ports: dict[tuple[int, str], tuple[str, str]] = {}
        self._held: dict[tuple[str, str], tuple[list[str], list[tuple[int, str]]]] = {}
        self.ip_from = 0  # below this host index, every address is held (or reserved)
        self.port_from: dict[str, int] = {}  # per protocol: below this port, every one is held
        for svc in services:
            self.take(svc)

    def take(self, svc: dict) -> None:
        """`svc` (as written) holds its addresses and ports; what it held before and holds no
        more is free."""
        ref = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        spec = svc["spec"]
        ips = list(Service.of(svc).cluster_ips)
        ports = [(p["nodePort"], p.get("protocol", "TCP")) for p in spec.get("ports") or [] if p.get("nodePort")]
        if spec.get("healthCheckNodePort"):
            ports.append((spec["healthCheckNodePort"], "TCP"))
        old_ips, old_ports = self._held.get(ref, ((), ()))
        if set(old_ips) - set(ips) or set(old_ports) - set(ports):
            self.release(ref)
        for ip in ips:
            self.ips[ip] = ref
        for port in ports:
            self.ports[port] = ref
        self._held[ref] = (ips, ports)

    def release(self, ref: tuple[str, str]) -> None:
        """What `ref` held is free (the lowest free may now be anywhere again)."""
        ips, ports = self._held.pop(ref, ((), ()))
        for ip in ips:
            if self.ips.get(ip) == ref:
                del self.ips[ip]
        for port in ports:
            if self.ports.get(port) == ref:
                del self.ports[port]
        if ips or ports:
            self.ip_from, self.port_from = 0, {}

    def ip_taken(self, ip: str, ref: tuple[str, str]) -> bool:
        return self.ips.get(ip, ref) != ref

    def port_taken(self, port: tuple[int, str], ref: tuple[str, str]) -> bool:
        return self.ports.get(port, ref) != ref

    def free_ip(self, net, reserved: set[str], ref: tuple[str, str]) -> str | None:
        """The lowest address of `net` (hosts only) that nobody else holds and is not reserved."""
        # as net.hosts() counts them: IPv4 without its network and broadcast addresses, IPv6
        # without its Subnet-Router anycast one
        count = net.num_addresses - (2 if net.version == 4 else 1)
        for i in range(self.ip_from, count):
            ip = str(net.network_address + 1 + i)
            if ip not in reserved and not self.ip_taken(ip, ref):
                self.ip_from = i  # every address below is held, or reserved
                return ip
        return None

    def free_port(self, lo: int, hi: int, proto: str, mine: set[tuple[int, str]],
                  ref: tuple[str, str]) -> int | None:
        """The lowest port of lo..hi that nobody else holds, nor this Service already."""
        rest = None
        for n in range(max(lo, self.port_from.get(proto, lo)), hi + 1):
            if self.port_taken((n, proto), ref):
                continue
            if rest is None:
                rest = self.port_from[proto] = n  # every port below is held by another Service
            if (n, proto) not in mine:
                return n
        return None


def needs_health_check(spec: dict) -> bool:
    """A health check node port is kept for a LoadBalancer Service whose external traffic
    stays on nodes with local endpoints: the cloud's load balancer asks each node."""
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def allocate(svc: dict, old: dict | None, used: Allocations, cfg: ClusterConfig, source: str = "") -> dict:
    """The Service with its clusterIP and nodePorts set; InvalidObject (HTTP 422) on conflict.
    `used`: what the other Services hold (the caller takes the result into it once written)."""
    svc = copy.deepcopy(svc)
    meta, spec = svc["metadata"], svc["spec"]
    ref = f"{meta['namespace']}/{meta['name']}"
    me = (meta["namespace"], meta["name"])
    errors: list[FieldError] = []
    net = ipaddress.ip_network(cfg.service_subnet)
    stype = spec.get("type", "ClusterIP")
    old_spec = (old or {}).get("spec") or {}

    if stype == "ExternalName":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    else:
        want = spec.get("clusterIP")
        if want in (None, "") and old_spec.get("clusterIP") and old_spec.get("type") != "ExternalName":
            want = old_spec["clusterIP"]  # kept across updates, as `kubectl apply` keeps it
        elif want not in (None, "") and old_spec.get("clusterIP") not in (None, "", want) \
                and old_spec.get("type") != "ExternalName":
            errors.append(invalid("spec.clusterIP", want, "field is immutable"))
        if want == "None":
            pass
        elif want not in (None, ""):
            reserved = {str(net.network_address + 1): "the kubernetes Service",
                        cfg.dns_cluster_ip: "the cluster DNS Service (kube-dns)"}
            if ipaddress.ip_address(want) not in net or want in (str(net.network_address),
                                                                  str(net.broadcast_address)):
                errors.append(invalid("spec.clusterIP", want, f"provided IP is not in the valid range. "
                                                              f"The range of valid IPs is {cfg.service_subnet}"))
            elif used.ip_taken(want, me):
                errors.append(invalid("spec.clusterIP", want, "provided IP is already allocated"))
            elif want in reserved and not (meta["namespace"], meta["name"]) in (("default", "kubernetes"),
                                                                                 ("kube-system", "kube-dns")):
                errors.append(invalid("spec.clusterIP", want, f"provided IP is reserved for {reserved[want]}"))
        else:
            want = used.free_ip(net, {str(net.network_address + 1), cfg.dns_cluster_ip}, me)
            if want is None:
                errors.append(invalid("spec.clusterIP", "", f"range {cfg.service_subnet} is full"))
        if want:
            spec["clusterIP"] = want
            spec["clusterIPs"] = [want]

    lo, hi = cfg.node_port_range
    old_ports = {(p.get("name", ""), p.get("protocol", "TCP")): p.get("nodePort") for p in old_spec.get("ports") or []}
    mine: set[tuple[int, str]] = set()
    for i, p in enumerate(spec.get("ports") or []):
        proto = p.get("protocol", "TCP")
        if stype not in ("NodePort", "LoadBalancer"):
            p.pop("nodePort", None)
            continue
        np = p.get("nodePort") or old_ports.get((p.get("name", ""), proto))
        if p.get("nodePort"):
            if not lo <= np <= hi:
                errors.append(invalid(f"spec.ports[{i}].nodePort", np,
                                      f"provided port is not in the valid range. The range of valid ports is "
                                      f"{lo}-{hi}"))
                continue
            if used.port_taken((np, proto), me) or (np, proto) in mine:
                errors.append(invalid(f"spec.ports[{i}].nodePort", np, "provided port is already allocated"))
                continue
        elif not np or used.port_taken((np, proto), me):
            np = used.free_port(lo, hi, proto, mine, me)
            if np is None:
                errors.append(invalid(f"spec.ports[{i}].nodePort", 0, f"range {lo}-{hi} is full"))
                continue
        p["nodePort"] = np
        mine.add((np, proto))
    if needs_health_check(spec):
        hc = spec.get("healthCheckNodePort") or old_spec.get("healthCheckNodePort")
        if spec.get("healthCheckNodePort") and (used.port_taken((hc, "TCP"), me) or (hc, "TCP") in mine):
            errors.append(invalid("spec.healthCheckNodePort", hc, "provided port is already allocated"))
        elif spec.get("healthCheckNodePort") and not lo <= hc <= hi:
            errors.append(invalid("spec.healthCheckNodePort", hc, f"provided port is not in the valid range. "
                                                                   f"The range of valid ports is {lo}-{hi}"))
        else:
            if not hc or used.port_taken((hc, "TCP"), me) or (hc, "TCP") in mine:
                hc = used.free_port(lo, hi, "TCP", mine, me)
            if hc is None:
                errors.append(invalid("spec.healthCheckNodePort", 0, f"range {lo}-{hi} is full"))
            else:
                spec["healthCheckNodePort"] = hc
    else:
        spec.pop("healthCheckNodePort", None)  # released when no longer needed, as the registry does
    if errors:
        raise InvalidObject("Service", ref, errors, source)
    return svc
