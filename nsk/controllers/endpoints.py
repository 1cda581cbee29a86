"""The endpoints controller (pure): Endpoints (and EndpointSlices) from the Pods a
Service selects, ready ones in `addresses`, unready ones in `notReadyAddresses`.

A named targetPort is looked up in each Pod's containers, so Pods may serve the same
Service on different port numbers; Pods with the same resolved ports share a subset,
as the API server's repacking does.
"""

from __future__ import annotations

import ipaddress

from nsk.api.objects import matches
from nsk.api.types import IPV4, Pod, family

MANAGED_BY = "endpoints.kubernetes.io/managed-by"
CONTROLLER = "endpoint-controller"


def resolve_port(pod: dict, target: int | str, protocol: str) -> int | None:
    if isinstance(target, int):
        return target
    for c in pod["spec"].get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and p.get("protocol", "TCP") == protocol:
                return p["containerPort"]
    return None


def endpoints_for(svc: dict, pods: list[dict]) -> dict:
    """The Endpoints object of a Service with a selector."""
    meta, spec = svc["metadata"], svc["spec"]
    groups: dict[tuple, dict] = {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    for pod in pods:
        if pod["metadata"]["namespace"] != meta["namespace"]:
            continue
        if not matches({"matchLabels": spec["selector"]}, pod["metadata"].get("labels") or {}):
            continue
        typed = Pod.of(pod)
        if not typed.pod_ip or typed.terminal:
            continue
        if pod["metadata"].get("deletionTimestamp") and not publish:
            continue  # terminating: only in the EndpointSlice (ShouldPodBeInEndpoints)
        ports = []
        for sp in spec.get("ports") or []:
            port = resolve_port(pod, sp.get("targetPort", sp["port"]), sp.get("protocol", "TCP"))
            if port is not None:
                entry = {"port": port, "protocol": sp.get("protocol", "TCP")}
                if sp.get("name"):
                    entry = {"name": sp["name"], **entry}
                ports.append(entry)
        if spec.get("ports") and not ports:
            continue
        addr = {"ip": typed.pod_ip, "nodeName": pod["spec"].get("nodeName", ""),
                "targetRef": {"kind": "Pod", "namespace": pod["metadata"]["namespace"],
                              "name": pod["metadata"]["name"], "uid": pod["metadata"].get("uid", "")}}
        if pod["spec"].get("hostname"):
            addr["hostname"] = pod["spec"]["hostname"]
        group = groups.setdefault(tuple(sorted((p.get("name", ""), p["port"], p["protocol"]) for p in ports)),
                                  {"addresses": [], "notReadyAddresses": [], "ports": ports})
        group["addresses" if typed.ready or publish else "notReadyAddresses"].append(addr)
    subsets = []
    for _, g in sorted(groups.items()):
        sub = {}
        for k in ("addresses", "notReadyAddresses"):
            if g[k]:
                sub[k] = sorted(g[k], key=lambda a: ipaddress.ip_address(a["ip"]))
        if g["ports"]:
            sub["ports"] = g["ports"]
        subsets.append(sub)
    obj = {"apiVersion": "v1", "kind": "Endpoints",
           "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                        "labels": dict(meta.get("labels") or {})}}
    if subsets:
        obj["subsets"] = subsets
    return obj


def wanted(services: list[dict], pods: list[dict]) -> dict[tuple[str, str], dict]:
    """(namespace, name) -> Endpoints, for every Service with a selector (not ExternalName)."""
    out = {}
    for svc in services:
        spec = svc["spec"]
        if spec.get("selector") and spec.get("type") != "ExternalName":
            out[(svc["metadata"]["namespace"], svc["metadata"]["name"])] = endpoints_for(svc, pods)
    return out


def endpoint_slice(ep: dict) -> dict:
    """The EndpointSlice the EndpointSlice controller would derive (shown by `nsk get endpointslices`)."""
    meta = ep["metadata"]
    endpoints, ports = [], []
    for sub in ep.get("subsets") or []:
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for a in sub.get(key) or []:
                e = {"addresses": [a["ip"]], "conditions": {"ready": ready, "serving": ready, "terminating": False}}
                if a.get("nodeName"):
                    e["nodeName"] = a["nodeName"]
                if a.get("targetRef"):
                    e["targetRef"] = a["targetRef"]
                endpoints.append(e)
        for p in sub.get("ports") or []:
            if p not in ports:
                ports.append(p)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{meta['name']}-nsk", "namespace": meta["namespace"],
                         "labels": {"kubernetes.io/service-name": meta["name"],
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                         "creationTimestamp": meta.get("creationTimestamp")},
            "addressType": family(endpoints[0]["addresses"][0]) if endpoints else IPV4,
            "endpoints": endpoints, "ports": ports}


class EndpointsController:
    """The Endpoints of every Service with a selector; those it made for a Service that is
    gone, or lost its selector, are deleted (a user's own Endpoints are never touched)."""

    name = "endpoints"

    def reconcile(self, snap) -> list:
        from nsk.api.objects import Key
        from nsk.controllers.manager import Delete, Put, each
        want_keys = set()

        def one(svc: dict) -> list:
            spec = svc["spec"]
            if not spec.get("selector") or spec.get("type") == "ExternalName":
                return []
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            want_keys.add((ns, name))
            obj = endpoints_for(svc, snap.pods_in(ns))
            obj["metadata"]["labels"][MANAGED_BY] = CONTROLLER
            have = snap.get("Endpoints", ns, name)
            if have is not None and _same(have, obj):
                return []
            return [Put(obj)]
        names = _affected(snap)
        if names is None:
            services, endpoints = snap.list("Service"), snap.list("Endpoints")
        else:
            services = [s for ns, n in names if (s := snap.get("Service", ns, n)) is not None]
            endpoints = [e for ns, n in names if (e := snap.get("Endpoints", ns, n)) is not None]
        out = each(services, one, "FailedToUpdateEndpoint")
        for e in endpoints:
            ns, name = e["metadata"]["namespace"], e["metadata"]["name"]
            if (ns, name) not in want_keys and (e["metadata"].get("labels") or {}).get(MANAGED_BY) == CONTROLLER:
                out.append(Delete(Key("Endpoints", ns, name), e["metadata"]["resourceVersion"]))
        return out


def _affected(snap) -> set[tuple[str, str]] | None:
    """The (namespace, name) of the Services a change touches (None: every one): a changed
    Service or Endpoints; for a changed Pod, the Services that select it now and those whose
    Endpoints list it (it left them, or is gone)."""
    if snap.changed is None:
        return None
    out: set[tuple[str, str]] = set()
    for k in snap.changed_kinds("Service", "Endpoints", "Pod"):
        if k.kind != "Pod":
            out.add((k.namespace, k.name))
            continue
        out.update((k.namespace, n) for n in snap.endpoints_of_pod(k.namespace, k.name))
        pod = snap.get("Pod", k.namespace, k.name)
        if pod is None:
            continue
        labels = pod["metadata"].get("labels") or {}
        for svc in snap.services_in(k.namespace):
            sel = svc["spec"].get("selector")
            if sel and matches({"matchLabels": sel}, labels):
                out.add((k.namespace, svc["metadata"]["name"]))
    return out


def _same(have: dict, want: dict) -> bool:
    return have.get("subsets") == want.get("subsets") and \
        (have["metadata"].get("labels") or {}) == want["metadata"]["labels"]
