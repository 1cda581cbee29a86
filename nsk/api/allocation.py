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


def _used(services: list[dict], skip: tuple[str, str]) -> tuple[set[str], set[tuple[int, str]]]:
    ips, ports = set(), set()
    for s in services:
        if (s["metadata"]["namespace"], s["metadata"]["name"]) == skip:
            continue
        spec = s["spec"]
        ips.update(Service.of(s).cluster_ips)
        for p in spec.get("ports") or []:
            if p.get("nodePort"):
                ports.add((p["nodePort"], p.get("protocol", "TCP")))
        if spec.get("healthCheckNodePort"):
            ports.add((spec["healthCheckNodePort"], "TCP"))
    return ips, ports


def needs_health_check(spec: dict) -> bool:
    """A health check node port is kept for a LoadBalancer Service whose external traffic
    stays on nodes with local endpoints: the cloud's load balancer asks each node."""
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def allocate(svc: dict, old: dict | None, services: list[dict], cfg: ClusterConfig, source: str = "") -> dict:
    """The Service with its clusterIP and nodePorts set; InvalidObject (HTTP 422) on conflict."""
    svc = copy.deepcopy(svc)
    meta, spec = svc["metadata"], svc["spec"]
    ref = f"{meta['namespace']}/{meta['name']}"
    ips, ports = _used(services, (meta["namespace"], meta["name"]))
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
            elif want in ips:
                errors.append(invalid("spec.clusterIP", want, "provided IP is already allocated"))
            elif want in reserved and not (meta["namespace"], meta["name"]) in (("default", "kubernetes"),
                                                                                 ("kube-system", "kube-dns")):
                errors.append(invalid("spec.clusterIP", want, f"provided IP is reserved for {reserved[want]}"))
        else:
            reserved = {str(net.network_address + 1), cfg.dns_cluster_ip}
            for host in net.hosts():
                ip = str(host)
                if ip not in ips and ip not in reserved:
                    want = ip
                    break
            else:
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
            if (np, proto) in ports or (np, proto) in mine:
                errors.append(invalid(f"spec.ports[{i}].nodePort", np, "provided port is already allocated"))
                continue
        elif not np or (np, proto) in ports:
            np = next((n for n in range(lo, hi + 1) if (n, proto) not in ports and (n, proto) not in mine), None)
            if np is None:
                errors.append(invalid(f"spec.ports[{i}].nodePort", 0, f"range {lo}-{hi} is full"))
                continue
        p["nodePort"] = np
        mine.add((np, proto))
    if needs_health_check(spec):
        hc = spec.get("healthCheckNodePort") or old_spec.get("healthCheckNodePort")
        if spec.get("healthCheckNodePort") and ((hc, "TCP") in ports or (hc, "TCP") in mine):
            errors.append(invalid("spec.healthCheckNodePort", hc, "provided port is already allocated"))
        elif spec.get("healthCheckNodePort") and not lo <= hc <= hi:
            errors.append(invalid("spec.healthCheckNodePort", hc, f"provided port is not in the valid range. "
                                                                   f"The range of valid ports is {lo}-{hi}"))
        else:
            if not hc or (hc, "TCP") in ports or (hc, "TCP") in mine:
                hc = next((n for n in range(lo, hi + 1) if (n, "TCP") not in ports and (n, "TCP") not in mine), None)
            if hc is None:
                errors.append(invalid("spec.healthCheckNodePort", 0, f"range {lo}-{hi} is full"))
            else:
                spec["healthCheckNodePort"] = hc
    else:
        spec.pop("healthCheckNodePort", None)  # released when no longer needed, as the registry does
    if errors:
        raise InvalidObject("Service", ref, errors, source)
    return svc
