"""The API server's write path: the one way an object reaches the store.

The CLI, the control plane's controllers and kubelets, and (next) the HTTP API all write
through an `APIServer`: admission (nsk/apiserver/admission.py) for raw input, then the
checks and allocations the API server makes on write — namespaces, immutable fields, a
Service's clusterIP and nodePorts (nsk/api/allocation.py), who may write a kind — and the
store's conditional write. Reads go to the store or an informer directly.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from nsk.api.allocation import Allocations, allocate
from nsk.api.cluster import ClusterConfig, parse_cluster
from nsk.api.objects import Key, key
from nsk.apiserver import registry
from nsk.apiserver.admission import admit
from nsk.errors import AlreadyExists, BadRequest, Conflict, InvalidObject, NotFound, NskError, invalid
from nsk.store import Store
from nsk.store.sqlite import now_iso

SYSTEM_NAMESPACES = registry.resource("Namespace").system_names


def namespace_object(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}


def _paths(a: object, b: object, path: str) -> list[str]:
    """The paths at which two documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b)) for p in _paths(a.get(k), b.get(k), f"{path}.{k}")]
    return [] if a == b else [path]


def not_found(kind: str, name: str, namespace: str = "") -> NotFound:
    r = registry.resource(kind)
    where = f' in namespace "{namespace}"' if namespace and r.namespaced else ""
    return NotFound(f'{r.group_resource} "{name}" not found{where}')


@dataclass(frozen=True)
class DeleteResult:
    lines: tuple[str, ...]
    missing: tuple[str, ...]


class APIServer:
    def __init__(self, store: Store, cfg: ClusterConfig | None = None):
        self.store = store
        self._cfg = cfg

    @property
    def cfg(self) -> ClusterConfig:
        if self._cfg is None:
            self._cfg = parse_cluster(self.store.get_meta("cluster"))
        return self._cfg

    @cfg.setter
    def cfg(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg

    # ---- writes ---------------------------------------------------------------------------

    def create(self, obj: dict, source: str = "", admitted: bool = False) -> dict:
        """Create an object (AlreadyExists if there is one); the stored object."""
        obj = obj if admitted else admit(obj, source)
        k = key(obj)
        with self.store.tx():
            if self.store.get(k.kind, k.namespace, k.name) is not None:
                raise AlreadyExists(f'{registry.resource(k.kind).group_resource} "{k.name}" already exists')
            self._write(obj, source)
            return self.store.get(k.kind, k.namespace, k.name)

    def apply(self, objects: list[dict] | tuple[dict, ...], source: str = "", create_namespaces: bool = False) -> list[str]:
        """Create or update admitted objects in one transaction, in order; kubectl's result
        lines. An object in a namespace that does not exist is refused, as kubectl's
        `namespaces "x" not found` (a Namespace earlier in the same file counts), and nothing
        is changed; `create_namespaces` makes the missing ones first (`nsk up` does)."""
        lines, batch = [], {}
        with self.store.tx():
            if create_namespaces:
                lines += [f"namespace/{ns} created" for ns in self.ensure_namespaces(objects)]
            for obj in objects:
                k = key(obj)
                if obj["metadata"].get("resourceVersion") and self.store.get(k.kind, k.namespace, k.name) is None:
                    raise BadRequest(f'{source + ": " if source else ""}{k.kind} "{k}": resourceVersion should not '
                                     "be set on objects to be created")
                result = self._write(obj, source, batch)
                lines.append(f"{registry.resource(k.kind).type_name}/{k.name} {result}")
        return lines

    def put(self, obj: dict, source: str = "") -> str:
        """Create or update one admitted object (a controller's write): the store's result
        word. With metadata.resourceVersion it is a conditional update (Conflict, NotFound)."""
        with self.store.tx():
            return self._write(obj, source)

    def _write(self, obj: dict, source: str, batch: dict | None = None) -> str:
        """One object through admission to the store. `batch`: what the writes of one
        transaction share (the Services' allocations)."""
        k = key(obj)
        r = registry.resource(k.kind)
        if r.namespaced:
            if not k.namespace:
                raise InvalidObject(k.kind, k.name, [invalid("metadata.namespace", "", "a namespace is required")],
                                    source)
            if self.store.get("Namespace", "", k.namespace, shared=True) is None:
                raise not_found("Namespace", k.namespace)
        old = self.store.get(k.kind, k.namespace, k.name, shared=True)  # read only
        if old is not None:
            obj = self._immutable(old, obj, source)
            marks = {f: old["metadata"][f] for f in ("deletionTimestamp", "deletionGracePeriodSeconds")
                     if f in old["metadata"]}
            if marks:  # set by a delete alone: an update keeps them
                obj = {**obj, "metadata": {**obj["metadata"], **marks}}
        if k.kind == "Service":
            used = batch.get("services") if batch is not None else None
            if used is None:  # read once a batch: a batch of 5,000 Services is not 5,000 reads of all
                used = Allocations(self.store.list("Service"))
                if batch is not None:
                    batch["services"] = used
            obj = allocate(obj, old, used, self.cfg, source)
        try:
            result = self.store.put(obj)
        except Conflict:
            raise Conflict(f'Operation cannot be fulfilled on {r.group_resource} "{k.name}": the object has been '
                           "modified; please apply your changes to the latest version and try again") from None
        except NotFound:
            raise not_found(k.kind, k.name, k.namespace) from None
        if k.kind == "Service":
            used.take(obj)
        return result

    @staticmethod
    def _immutable(old: dict, new: dict, source: str) -> dict:
        """The fields an update may not change, as the API server's ValidateUpdate checks them."""
        k = key(new)
        if k.kind == "Pod":
            a = {f: v for f, v in old["spec"].items() if f != "nodeName"}
            b = {f: v for f, v in new["spec"].items() if f != "nodeName"}
            if a != b:
                raise NskError(f'{source + ": " if source else ""}Pod "{k}" is invalid: spec: Forbidden: pod updates '
                               "may not change fields other than labels and annotations (delete and re-create the Pod)")
            if old["spec"].get("nodeName") and new["spec"].get("nodeName") != old["spec"]["nodeName"]:
                # an apply of the manifest keeps the binding the scheduler made
                new = {**new, "spec": {**new["spec"], "nodeName": old["spec"]["nodeName"]}}
        elif k.kind == "Deployment" and old["spec"].get("selector") != new["spec"].get("selector"):
            raise InvalidObject("Deployment", str(k), [invalid("spec.selector", new["spec"].get("selector"),
                                                               "field is immutable")], source)
        return new

    def ensure_namespaces(self, objects) -> list[str]:
        """Create the namespaces `objects` live in that do not exist yet; the names created."""
        made = []
        for ns in sorted({o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}):
            if self.store.get("Namespace", "", ns) is None:
                self.store.put(namespace_object(ns))
                made.append(ns)
        return made

    def update_status(self, k: Key, status: dict, resource_version: str | None = None) -> bool:
        """The status subresource: replace an object's status; False if it is gone."""
        return self.store.set_status(k, status, resource_version)

    def delete(self, keys: list[Key], grace: int | None = None) -> DeleteResult:
        """Delete objects, and what each cascades to; what kubectl prints, and what was missing.
        `grace`: a Pod's grace period in seconds (kubectl's --grace-period; 0 with --force)."""
        lines, missing = [], []
        with self.store.tx():
            for k in keys:
                r = registry.resource(k.kind)
                if not r.writable:
                    made = "fixed by the Cluster document" if k.kind == "Node" else f"derived from {r.derived_from}"
                    raise NskError(f'{r.plural} are {made}; "{k.name}" cannot be deleted')
                if k.name in r.system_names:
                    raise NskError(f'{k.kind.lower()} "{k.name}" is a system {k.kind.lower()} and cannot be deleted')
                if self.delete_one(k, grace=grace):
                    lines.append(f'{r.type_name} "{k.name}" deleted')
                    if r.cascade:
                        for sub in registry.resources():
                            if sub.namespaced and sub.derived_from is None:
                                for obj in self.store.list(sub.kind, k.name):
                                    self.store.delete(key(obj))
                else:
                    missing.append(f'{r.group_resource} "{k.name}" not found')
        return DeleteResult(tuple(lines), tuple(missing))

    def apply_cluster(self, new: ClusterConfig, source: str = "") -> str:
        """A Cluster document applied to the running cluster: only `spec.proxy.mode` and
        `spec.proxy.ipvs` may change (the control plane then switches every node's proxy);
        any other difference is an error naming the field, and nothing changes."""
        old, want = self.cfg.to_dict(), new.to_dict()
        if new.name != self.cfg.name:
            raise NskError(f'{source}: the Cluster document names "{new.name}", not the running cluster '
                           f'"{self.cfg.name}"')
        diffs = [p for p in _paths(old["spec"], want["spec"], "spec") if not p.startswith("spec.proxy")
                 or p.startswith("spec.proxy.iptables")]
        if diffs:
            raise NskError(f'{source}: Cluster "{new.name}" is invalid: {diffs[0]}: Forbidden: may not change on a '
                           "running cluster (only spec.proxy.mode and spec.proxy.ipvs may)")
        if old == want:
            return f"cluster.nsk.io/{new.name} unchanged"
        from nsk.proxy import config as proxy_config
        with self.store.tx():
            self.store.set_meta("cluster", want)
            self._write(admit(proxy_config.configmap(new)), source)  # kube-proxy's ConfigMap follows
        self.store.wake()  # the control plane switches the nodes' proxies
        self.cfg = new
        return f"cluster.nsk.io/{new.name} configured"

    def delete_one(self, k: Key, resource_version: str | None = None, grace: int | None = None) -> bool:
        """Delete one object (whether it was there). A Pod on a node is deleted gracefully,
        as the API server does: it gets a deletionTimestamp and stays, terminating, until its
        kubelet has ended its containers (SIGTERM, then SIGKILL after the grace period) and
        deletes it for good; meanwhile its Services list it as a terminating endpoint. A Pod
        on no node, one that has ended, or a grace of 0 goes at once."""
        if k.kind == "Pod":
            pod = self.store.get("Pod", k.namespace, k.name)
            if pod is None:
                return self.store.delete(k, resource_version)  # NotFound with a precondition
            meta = pod["metadata"]
            if resource_version is not None and meta.get("resourceVersion") != resource_version:
                raise Conflict(f'Operation cannot be fulfilled on pods "{k.name}": the object has been modified; '
                               "please apply your changes to the latest version and try again")
            if grace is None:
                grace = meta.get("deletionGracePeriodSeconds", pod["spec"].get("terminationGracePeriodSeconds", 30))
            running = pod["spec"].get("nodeName") and (pod.get("status") or {}).get("phase") not in (
                "Succeeded", "Failed")
            if grace > 0 and running:
                if meta.get("deletionTimestamp") and grace >= meta.get("deletionGracePeriodSeconds", grace):
                    return True  # terminating already (a shorter grace may still shorten it)
                pod = {**pod, "metadata": {**meta, "deletionTimestamp": now_iso(time.time() + grace),
                                           "deletionGracePeriodSeconds": grace}}
                self.store.put(pod)
                return True
        return self.store.delete(k, resource_version)

    # ---- kubectl's verbs over the write path --------------------------------------------

    def scale(self, namespace: str, name: str, replicas: int) -> str:
        if replicas < 0:
            raise NskError(f"--replicas: Invalid value: {replicas}: must be greater than or equal to 0")
        with self.store.tx():
            d = self.store.get("Deployment", namespace, name)
            if d is None:
                raise not_found("Deployment", name, namespace)
            d["spec"]["replicas"] = replicas
            self.store.put(d)
        return f"deployment.apps/{name} scaled"

    def expose(self, word: str, name: str, namespace: str, port: int | None, target_port: str | None,
               svc_name: str | None, svc_type: str, protocol: str) -> str:
        """`kubectl expose`: a Service selecting what a Deployment's or Pod's labels select."""
        try:
            kind = registry.lookup(word).kind if word else None
        except NskError:
            kind = None
        if kind not in ("Deployment", "Pod") or not name:
            raise NskError(f'cannot expose "{word}/{name}": give deployment/NAME or pod/NAME')
        obj = self.store.get(kind, namespace, name)
        if obj is None:
            raise not_found(kind, name)
        if kind == "Deployment":
            selector = (obj["spec"]["selector"] or {}).get("matchLabels") or {}
            containers = obj["spec"]["template"]["spec"]["containers"]
        else:
            selector = obj["metadata"].get("labels") or {}
            containers = obj["spec"]["containers"]
        if not selector:
            raise NskError(f"couldn't retrieve selectors via --selector flag or introspection: {kind} {name} has none")
        ports = [p for c in containers for p in c.get("ports") or []]
        if port is None:
            if not ports:
                raise NskError(f"couldn't find port via --port flag or introspection: {kind} {name} declares no ports")
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
        self.create(svc, admitted=True)
        return f"service/{svc['metadata']['name']} exposed"


def system_objects(cfg: ClusterConfig) -> list[dict]:
    """What every cluster has before the user's objects.

    The `kubernetes` Service (the first address of the service range, port 443): Pods see
    its variables, as in the source's `printenv`; nsk has no API server behind it yet, so
    it has no endpoints and connections to it are refused. The cluster DNS add-on as
    kubeadm installs it: the `coredns` Deployment (label k8s-app=kube-dns) behind the
    `kube-dns` Service at the Cluster's dns.clusterIP; its image, nsk/dns, is nsk's own
    DNS server (nsk/workload/registry.py).
    """
    api = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"component": "apiserver", "provider": "kubernetes"}},
           "spec": {"clusterIP": str(ipaddress.ip_network(cfg.service_subnet).network_address + 1),
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}
    labels = {"k8s-app": "kube-dns"}
    # kubeadm's CoreDNS runs at system-cluster-critical priority: a kubelet starts it first
    pod_spec = {"dnsPolicy": "Default", "priorityClassName": "system-cluster-critical",
                "containers": [{"name": "coredns", "image": "nsk/dns",
                                "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                          {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]}]}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
              "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                       "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "kube-dns", "namespace": "kube-system",
                        "labels": {**labels, "kubernetes.io/name": "CoreDNS"}},
           "spec": {"selector": labels, "clusterIP": cfg.dns_cluster_ip,
                    "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                              {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}}
    from nsk.proxy import config as proxy_config
    return [admit(api), admit(deploy), admit(svc), admit(proxy_config.configmap(cfg)),
            *(admit(proxy_config.pod(cfg, n.name)) for n in cfg.nodes)]
