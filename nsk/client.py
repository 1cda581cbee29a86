"""What the CLI does to a running cluster, kubectl's verbs: apply, delete, scale, get."""

from __future__ import annotations

from dataclasses import dataclass

from nsk.api.allocation import allocate
from nsk.api.cluster import parse_cluster
from nsk.api.load import Manifest
from nsk.api.objects import Key, key, type_name
from nsk.errors import NskError
from nsk.lifecycle import ensure_namespaces
from nsk.store import Store


def live_config(store: Store):
    return parse_cluster(store.get_meta("cluster"))


def write(store: Store, obj: dict, cfg, source: str = "") -> str:
    """Store one admitted object, doing what the API server does on write: allocate a
    Service's clusterIP and nodePorts (HTTP 422 on a conflict). Call inside store.tx()."""
    if obj["kind"] == "Service":
        k = key(obj)
        obj = allocate(obj, store.get("Service", k.namespace, k.name), store.list("Service"), cfg, source)
    return store.put(obj)


def apply(store: Store, m: Manifest, source: str) -> list[str]:
    """Create or update every object of the manifest in one transaction; kubectl's result lines."""
    if m.has_cluster_doc and m.cluster.to_dict() != live_config(store).to_dict():
        raise NskError(f"{source}: the Cluster document differs from the running cluster "
                       f'"{live_config(store).name}"; a cluster\'s shape is fixed at `nsk up`')
    lines = []
    with store.tx():
        lines += [f"namespace/{ns} created" for ns in ensure_namespaces(store, m.objects)]
        for obj in m.objects:
            k = key(obj)
            if k.kind == "Pod":
                old = store.get("Pod", k.namespace, k.name)
                if old is not None and _pod_spec_changed(old, obj):
                    raise NskError(f'{source}: Pod "{k}" is invalid: spec: Forbidden: pod updates may not change '
                                   "fields other than labels and annotations (delete and re-create the Pod)")
                if old is not None and old["spec"].get("nodeName") and not obj["spec"].get("nodeName"):
                    obj = {**obj, "spec": {**obj["spec"], "nodeName": old["spec"]["nodeName"]}}
            result = write(store, obj, live_config(store), source)
            lines.append(f"{type_name(k.kind)}/{k.name} {result}")
    return lines


def _pod_spec_changed(old: dict, new: dict) -> bool:
    a = {k: v for k, v in old["spec"].items() if k != "nodeName"}
    b = {k: v for k, v in new["spec"].items() if k != "nodeName"}
    return a != b


@dataclass(frozen=True)
class DeleteResult:
    lines: tuple[str, ...]
    missing: tuple[str, ...]


def delete(store: Store, keys: list[Key]) -> DeleteResult:
    lines, missing = [], []
    with store.tx():
        for k in keys:
            if k.kind in ("Node",):
                raise NskError(f'nodes are fixed by the Cluster document; "{k.name}" cannot be deleted')
            if k.kind == "Namespace" and k.name in ("default", "kube-system", "kube-public", "kube-node-lease"):
                raise NskError(f'namespace "{k.name}" is a system namespace and cannot be deleted')
            if store.delete(k):
                lines.append(f'{type_name(k.kind)} "{k.name}" deleted')
                if k.kind == "Namespace":
                    for kind in ("Deployment", "Pod", "Service", "Endpoints"):
                        for obj in store.list(kind, k.name):
                            store.delete(key(obj))
            else:
                plural = {"Endpoints": "endpoints"}.get(k.kind, k.kind.lower() + "s")
                group = type_name(k.kind).partition(".")[2]
                missing.append(f'{plural}{"." + group if group else ""} "{k.name}" not found')
    return DeleteResult(tuple(lines), tuple(missing))


def scale(store: Store, namespace: str, name: str, replicas: int) -> str:
    if replicas < 0:
        raise NskError(f"--replicas: Invalid value: {replicas}: must be greater than or equal to 0")
    with store.tx():
        d = store.get("Deployment", namespace, name)
        if d is None:
            raise NskError(f'deployments.apps "{name}" not found in namespace "{namespace}"')
        d["spec"]["replicas"] = replicas
        store.put(d)
    return f"deployment.apps/{name} scaled"


def expose(store: Store, kind: str, name: str, namespace: str, port: int | None, target_port: str | None,
           svc_name: str | None, svc_type: str, protocol: str) -> str:
    """`kubectl expose`: a Service selecting what a Deployment's or Pod's labels select."""
    from nsk.api.objects import kind_of
    from nsk.api.validation import admit
    k = kind_of(kind) if kind else None
    if k not in ("Deployment", "Pod") or not name:
        raise NskError(f'cannot expose "{kind}/{name}": give deployment/NAME or pod/NAME')
    obj = store.get(k, namespace, name)
    if obj is None:
        raise NskError(f'{type_name(k).split(".")[0]}s{"." + type_name(k).split(".")[1] if "." in type_name(k) else ""} '
                       f'"{name}" not found')
    if k == "Deployment":
        selector = (obj["spec"]["selector"] or {}).get("matchLabels") or {}
        containers = obj["spec"]["template"]["spec"]["containers"]
    else:
        selector = obj["metadata"].get("labels") or {}
        containers = obj["spec"]["containers"]
    if not selector:
        raise NskError(f"couldn't retrieve selectors via --selector flag or introspection: {k} {name} has none")
    ports = [p for c in containers for p in c.get("ports") or []]
    if port is None:
        if not ports:
            raise NskError(f"couldn't find port via --port flag or introspection: {k} {name} declares no ports")
        svc_ports = [{"port": p["containerPort"], "protocol": p.get("protocol", "TCP"),
                      "targetPort": p["containerPort"]} for p in ports]
        if len(svc_ports) > 1:
            for i, sp in enumerate(svc_ports):
                sp["name"] = f"port-{i + 1}"
    else:
        tp: int | str = port
        if target_port:
            tp = int(target_port) if target_port.isdigit() else target_port
        svc_ports = [{"port": port, "protocol": protocol, "targetPort": tp}]
    svc = admit({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": svc_name or name, "namespace": namespace,
                              "labels": dict(obj["metadata"].get("labels") or {})},
                 "spec": {"selector": dict(selector), "ports": svc_ports, "type": svc_type}})
    with store.tx():
        if store.get("Service", namespace, svc["metadata"]["name"]) is not None:
            raise NskError(f'services "{svc["metadata"]["name"]}" already exists')
        write(store, svc, live_config(store))
    return f"service/{svc['metadata']['name']} exposed"
