"""The EndpointSlice and Endpoints controllers (pure): a Service's EndpointSlices and its
Endpoints from the Pods it selects, ready ones in `addresses`, unready ones in
`notReadyAddresses`.

A named targetPort is looked up in each Pod's containers, so Pods may serve the same
Service on different port numbers; Pods with the same resolved ports share a subset,
as the API server's repacking does.
"""

from __future__ import annotations

import json
import logging

from nsk.api.objects import Key, key, matches
from nsk.api.types import IPV4, Pod, family, ip_key

log = logging.getLogger("nsk.controller-manager")
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


def _members(svc: dict, pods: list[dict], views: dict | None = None) -> list[tuple[dict, list[dict], bool, bool, bool]]:
    """Each Pod the Service selects that has an address: (address, its ports, ready,
    serving, terminating), the conditions as the EndpointSlice controller sets them: a
    terminating Pod is never ready (unless publishNotReadyAddresses), and serving while its
    readiness holds. `views`: Pod.of of each Pod by id, when a caller has them made once."""
    meta, spec = svc["metadata"], svc["spec"]
    publish = bool(spec.get("publishNotReadyAddresses"))
    selector = spec["selector"]
    out = []
    for pod in pods:
        if pod["metadata"]["namespace"] != meta["namespace"]:
            continue
        labels = pod["metadata"].get("labels") or {}
        if not all(labels.get(k) == v for k, v in selector.items()):
            continue
        typed = views[id(pod)] if views is not None else Pod.of(pod)
        if not typed.pod_ip or typed.terminal:
            continue
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
        terminating = bool(pod["metadata"].get("deletionTimestamp"))
        serving = publish or typed.ready
        out.append((addr, ports, serving and (publish or not terminating), serving, terminating))
    return out


def _group(ports: list[dict]) -> tuple:
    return tuple(sorted((p.get("name", ""), p["port"], p["protocol"]) for p in ports))


def _subsets(members: list, publish: bool) -> list[dict]:
    """An Endpoints object's subsets: terminating Pods are left out (ShouldPodBeInEndpoints),
    unless publishNotReadyAddresses; one subset per set of resolved ports."""
    groups: dict[tuple, dict] = {}
    for addr, ports, ready, _, terminating in members:
        if terminating and not publish:
            continue
        group = groups.setdefault(_group(ports), {"addresses": [], "notReadyAddresses": [], "ports": ports})
        group["addresses" if ready else "notReadyAddresses"].append(addr)
    subsets = []
    for _, g in sorted(groups.items()):
        sub = {}
        for k in ("addresses", "notReadyAddresses"):
            if g[k]:
                sub[k] = sorted(g[k], key=lambda a: ip_key(a["ip"]))
        if g["ports"]:
            sub["ports"] = g["ports"]
        subsets.append(sub)
    return subsets


def _endpoints(svc: dict, subsets: list[dict]) -> dict:
    meta = svc["metadata"]
    obj = {"apiVersion": "v1", "kind": "Endpoints",
           "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                        "labels": {**(meta.get("labels") or {}), MANAGED_BY: CONTROLLER}}}
    if subsets:
        obj["subsets"] = subsets
    return obj


SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
MIRRORING_CONTROLLER = "endpointslicemirroring-controller.k8s.io"
SERVICE_NAME = "kubernetes.io/service-name"
SLICE_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"


def _slice(svc: dict, group: tuple, ports: list[dict], endpoints: list[dict], managed_by: str) -> dict:
    from nsk.controllers.deployment import template_hash
    meta = svc["metadata"]
    # a stable name per Service and port set, shaped as the controller's generated ones
    suffix = template_hash({"uid": meta.get("uid", ""), "ports": list(group)})[:5]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{meta['name']}-{suffix}", "namespace": meta["namespace"],
                         "labels": {**(meta.get("labels") or {}), SERVICE_NAME: meta["name"],
                                    SLICE_MANAGED_BY: managed_by},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": meta["name"],
                                              "uid": meta.get("uid", ""), "controller": True,
                                              "blockOwnerDeletion": True}]},
            "addressType": _address_type(endpoints),
            "endpoints": endpoints, "ports": ports}


def _address_type(endpoints: list[dict]) -> str:
    try:
        return family(endpoints[0]["addresses"][0]) if endpoints else IPV4
    except ValueError:
        return IPV4  # not an address: the proxies skip it


def _slice_endpoint(addr: dict, ready: bool, serving: bool, terminating: bool) -> dict:
    e = {"addresses": [addr["ip"]], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}
    for k in ("hostname", "nodeName", "targetRef"):
        if addr.get(k):
            e[k] = addr[k]
    return e


def _slice_groups(members: list) -> list[tuple[tuple, list[dict], list[dict]]]:
    """(port set, ports, endpoints) of each EndpointSlice, its terminating Pods in it too."""
    groups: dict[tuple, tuple[list, list]] = {}
    for addr, ports, ready, serving, terminating in members:
        groups.setdefault(_group(ports), (ports, []))[1].append(_slice_endpoint(addr, ready, serving, terminating))
    return [(g, ports, sorted(eps, key=lambda e: ip_key(e["addresses"][0]))) for g, (ports, eps) in sorted(groups.items())]


def _slices(svc: dict, groups: list) -> list[dict]:
    """The EndpointSlices of a Service with a selector: one per port set; a Service with no
    endpoints gets one empty slice."""
    if not groups:
        return [_slice(svc, (), [], [], SLICE_CONTROLLER)]
    return [_slice(svc, g, ports, eps, SLICE_CONTROLLER) for g, ports, eps in groups]


def mirrored_slices(svc: dict, ep: dict | None) -> list[dict]:
    """The EndpointSlices of a Service without a selector, mirrored from the Endpoints its
    user wrote (the EndpointSlice mirroring controller)."""
    out = []
    for sub in (ep or {}).get("subsets") or []:
        eps = [_slice_endpoint(a, ready, ready, False)
               for key_, ready in (("addresses", True), ("notReadyAddresses", False)) for a in sub.get(key_) or []]
        ports = list(sub.get("ports") or [])
        out.append(_slice(svc, _group(ports), ports, eps, MIRRORING_CONTROLLER))
    return out


def pod_view(pod: dict) -> tuple | None:
    """What a Pod's endpoints are made of (None: it is in none: no address yet, or ended).
    A Pod change that leaves this alone (its binding, a status before it has an address, a
    restart count) changes no Service's endpoints, as podEndpointsChanged has it upstream."""
    typed = Pod.of(pod)
    if not typed.pod_ip or typed.terminal:
        return None
    meta, spec = pod["metadata"], pod["spec"]
    return (typed.pod_ips, typed.ready, bool(meta.get("deletionTimestamp")), meta.get("uid"), typed.node_name,
            spec.get("hostname"), json.dumps(meta.get("labels"), sort_keys=True),
            json.dumps([c.get("ports") for c in spec.get("containers") or []], sort_keys=True))


class _ServiceEndpointsController:
    """What the Endpoints and the EndpointSlice controllers share: which Services a change
    touches (`_affected`), and each Service's members, made once a run for the Services with
    the same selector, ports and publishNotReadyAddresses (a Deployment behind many Services).
    A subclass says what it makes of the members (`_made`) and what it writes (`_service`)."""

    name = ""

    def __init__(self) -> None:
        # each Pod's pod_view as of this controller's last run: a changed Pod whose view is
        # the same touches no Service (an informer's old object, kept only as this view)
        self.views: dict[Key, tuple] = {}

    def reconcile(self, snap) -> list:
        from nsk.controllers.manager import Failed
        names = self._affected(snap)
        if names is None:
            names = {(o["metadata"]["namespace"], o["metadata"]["name"])
                     for kind in ("Service", "Endpoints") for o in snap.list(kind)}
            names |= {(sl["metadata"]["namespace"], _service_of(sl)) for sl in snap.list("EndpointSlice")
                      if _service_of(sl)}
        views: dict[str, dict] = {}
        made: dict[tuple, object] = {}

        def members(svc: dict):
            """What `_made` makes of the Service's members (once a run for the same selector and ports)."""
            ns, spec = svc["metadata"]["namespace"], svc["spec"]
            pods = snap.pods_in(ns)
            if ns not in views:  # each Pod's view made once a run, not once a Service
                views[ns] = {id(p): Pod.of(p) for p in pods}
            publish = bool(spec.get("publishNotReadyAddresses"))
            same = (ns, repr(sorted(spec["selector"].items())), repr(spec.get("ports")), publish)
            if same not in made:
                made[same] = self._made(_members(svc, pods, views[ns]), publish)
            return made[same]

        index = self._index(snap, {ns for ns, _ in names})
        writes: list = []
        for ns_name in sorted(names):
            try:
                writes += self._service(snap, ns_name, members, index)
            except Exception as e:  # noqa: BLE001 - one Service's failure is that Service's Event
                log.exception("%s of %s/%s failed", self.name, *ns_name)
                writes.append(Failed(Key("Service", *ns_name), "Warning", "FailedToUpdateEndpoint",
                                     f"{type(e).__name__}: {e}"))
        return writes

    def _index(self, snap, namespaces: set[str]):
        return None

    def _made(self, members: list, publish: bool):
        raise NotImplementedError

    def _service(self, snap, ns_name: tuple[str, str], members, index) -> list:
        raise NotImplementedError

    def _affected(self, snap) -> set[tuple[str, str]] | None:
        """The (namespace, name) of the Services a change touches (None: every one): a changed
        Service or Endpoints; for a Pod whose pod_view changed, the Services that select it
        now and those whose Endpoints list it (it left them, or is gone)."""
        if snap.changed is None:
            self.views = {key(p): v for p in snap.list("Pod") if (v := pod_view(p)) is not None}
            return None
        out: set[tuple[str, str]] = set()
        for k in snap.changed_kinds("Service", "Endpoints", "EndpointSlice", "Pod"):
            # its own writes come back as changes: only a user's object (to mirror) or one of
            # its own that is gone (to make again) is news, as the slice tracker has it upstream
            if k.kind == "EndpointSlice":  # one gone is named <service>-<suffix>
                sl = snap.get("EndpointSlice", k.namespace, k.name)
                if sl is None:
                    out.add((k.namespace, k.name.rsplit("-", 1)[0]))
                elif (sl["metadata"].get("labels") or {}).get(SLICE_MANAGED_BY) != SLICE_CONTROLLER:
                    out.add((k.namespace, _service_of(sl)))
                continue
            if k.kind == "Endpoints":
                ep = snap.get("Endpoints", k.namespace, k.name)
                if ep is None or not _made_by_controller(ep):
                    out.add((k.namespace, k.name))
                continue
            if k.kind != "Pod":
                out.add((k.namespace, k.name))
                continue
            pod = snap.get("Pod", k.namespace, k.name)
            view = pod_view(pod) if pod is not None else None
            if pod is not None and view == self.views.get(k):
                continue
            if view is None:
                self.views.pop(k, None)
            else:
                self.views[k] = view
            out.update((k.namespace, n) for n in snap.endpoints_of_pod(k.namespace, k.name))
            if view is None:
                continue
            labels = pod["metadata"].get("labels") or {}
            for svc in snap.services_in(k.namespace):
                sel = svc["spec"].get("selector")
                if sel and matches({"matchLabels": sel}, labels):
                    out.add((k.namespace, svc["metadata"]["name"]))
        return out



def _made_by_controller(ep: dict) -> bool:
    """Whether Endpoints are the Endpoints controller's (not a user's own)."""
    return (ep["metadata"].get("labels") or {}).get(MANAGED_BY) == CONTROLLER


def _selects(svc: dict | None) -> bool:
    return bool(svc is not None and svc["spec"].get("selector") and svc["spec"].get("type") != "ExternalName")


class EndpointSliceController(_ServiceEndpointsController):
    """The EndpointSlices of every Service: from the Pods its selector picks, or, without a
    selector, mirrored from the Endpoints its user wrote (upstream's EndpointSlice and
    EndpointSlice mirroring controllers). It runs before the Endpoints controller: the
    proxies follow the slices, and get them first. Slices it made for a Service that is
    gone, or changed, are deleted."""

    name = "endpointslice"

    def _index(self, snap, namespaces: set[str]) -> dict[tuple[str, str], list[dict]]:
        by_svc: dict[tuple[str, str], list[dict]] = {}
        for ns in namespaces:
            for sl in snap.list("EndpointSlice", ns):
                if _service_of(sl) and (sl["metadata"].get("labels") or {}).get(SLICE_MANAGED_BY) in (
                        SLICE_CONTROLLER, MIRRORING_CONTROLLER):
                    by_svc.setdefault((ns, _service_of(sl)), []).append(sl)
        return by_svc

    def _made(self, members: list, publish: bool) -> list:
        return _slice_groups(members)

    def _service(self, snap, ns_name: tuple[str, str], members, index) -> list:
        from nsk.controllers.manager import Delete, Put
        ns, name = ns_name
        svc = snap.get("Service", ns, name)
        if _selects(svc):
            want = _slices(svc, members(svc))
        else:
            have = snap.get("Endpoints", ns, name)
            if have is not None and _made_by_controller(have):
                have = None  # the Endpoints controller's, which it deletes: nothing to mirror
            want = mirrored_slices(svc, have) if svc is not None and svc["spec"].get("type") != "ExternalName" \
                else []
        out: list = []
        old = {sl["metadata"]["name"]: sl for sl in index.get(ns_name, [])}
        for sl in want:
            prev = old.pop(sl["metadata"]["name"], None)
            if prev is None or any(prev.get(f) != sl.get(f) for f in ("endpoints", "ports", "addressType")) \
                    or prev["metadata"].get("labels") != sl["metadata"]["labels"]:
                out.append(Put(sl))
        out += [Delete(Key("EndpointSlice", ns, n), sl["metadata"]["resourceVersion"]) for n, sl in old.items()]
        return out


class EndpointsController(_ServiceEndpointsController):
    """The Endpoints of every Service with a selector, ready Pods in `addresses`, unready
    ones in `notReadyAddresses`; those it made for a Service that lost its selector are
    deleted (a user's own Endpoints never)."""

    name = "endpoints"

    def _made(self, members: list, publish: bool) -> list:
        return _subsets(members, publish)

    def _service(self, snap, ns_name: tuple[str, str], members, index) -> list:
        from nsk.controllers.manager import Delete, Put
        ns, name = ns_name
        svc = snap.get("Service", ns, name)
        have = snap.get("Endpoints", ns, name)
        if _selects(svc):
            obj = _endpoints(svc, members(svc))
            return [] if have is not None and _same(have, obj) else [Put(obj)]
        if have is not None and _made_by_controller(have):
            return [Delete(Key("Endpoints", ns, name), have["metadata"]["resourceVersion"])]
        return []

def _service_of(sl: dict) -> str:
    return (sl["metadata"].get("labels") or {}).get(SERVICE_NAME, "")


def _same(have: dict, want: dict) -> bool:
    return have.get("subsets") == want.get("subsets") and \
        (have["metadata"].get("labels") or {}) == want["metadata"]["labels"]
