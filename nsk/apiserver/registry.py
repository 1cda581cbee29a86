"""The kinds the API server serves: one registration each (pure).

A registration says everything the rest of nsk asks about a kind: its group, version,
plural and short names (what `nsk get` accepts, what an HTTP path names), whether it is
namespaced, its schema, defaults and validation rules (admission), its printer columns
(`nsk get`), whether a user may write it, and what is deleted with it. Adding a kind is
one `register(...)` call below; nothing else lists the kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from nsk.api import validation
from nsk.api.schema import Obj
from nsk.api import schema as s
from nsk.apiserver import printers
from nsk.errors import FieldError, NskError

Table = tuple[list[str], list[list[str]]]
Printer = Callable[[list[dict], bool, bool, float], Table]  # (items, wide, all_namespaces, now)


@dataclass(frozen=True)
class Resource:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    schema: Obj | None = None  # None: not accepted in a manifest
    default: Callable[[dict], None] = lambda obj: None
    validate: Callable[[dict], list[FieldError]] = lambda obj: []
    printer: Printer | None = None
    writable: bool = True  # False: made by nsk alone (Nodes come from the Cluster document)
    derived_from: str | None = None  # shown from another kind (EndpointSlices from Endpoints)
    cascade: bool = False  # deleting one deletes every namespaced object in it (a Namespace)
    system_names: tuple[str, ...] = field(default=())  # objects of this kind a user may not delete

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def type_name(self) -> str:
        """kubectl's resource word in output: `pod`, `deployment.apps`."""
        return self.kind.lower() + (f".{self.group}" if self.group else "")

    @property
    def group_resource(self) -> str:
        """What a NotFound names: `pods`, `deployments.apps`."""
        return self.plural + (f".{self.group}" if self.group else "")

    def words(self) -> tuple[str, ...]:
        """Every word kubectl accepts for the kind."""
        ws = [self.kind.lower(), self.plural, *self.short_names]
        if self.group:
            ws += [f"{self.plural}.{self.group}", f"{self.kind.lower()}.{self.group}"]
        return tuple(ws)


_BY_KIND: dict[str, Resource] = {}
_BY_WORD: dict[str, Resource] = {}


def register(r: Resource) -> Resource:
    if r.kind in _BY_KIND:
        raise ValueError(f"kind {r.kind} is registered twice")
    _BY_KIND[r.kind] = r
    for w in r.words():
        _BY_WORD.setdefault(w, r)
    return r


def resource(kind: str) -> Resource:
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise NskError(f'the server doesn\'t have a resource type "{kind}"') from None


def lookup(word: str) -> Resource:
    """The kind a user's word names (`po`, `services`, `deployment.apps`); an error naming it otherwise."""
    r = _BY_WORD.get(word.lower())
    if r is None:
        raise NskError(f'the server doesn\'t have a resource type "{word}"')
    return r


def resources() -> tuple[Resource, ...]:
    return tuple(_BY_KIND.values())


def manifest_kinds() -> dict[str, Resource]:
    """The kinds a manifest may hold."""
    return {k: r for k, r in _BY_KIND.items() if r.schema is not None}


def namespaced(kind: str) -> bool:
    return resource(kind).namespaced


def _namespaces_table(items: list[dict], wide: bool, all_namespaces: bool, now: float) -> Table:
    return ["NAME", "STATUS", "AGE"], [[i["metadata"]["name"], "Active", printers.age(i, now)] for i in items]


# ---- the kinds ----------------------------------------------------------------------------

register(Resource("Namespace", "", "v1", "namespaces", False, ("ns",),
                  schema=s.KINDS["Namespace"][1], printer=_namespaces_table, cascade=True,
                  system_names=("default", "kube-system", "kube-public", "kube-node-lease")))
register(Resource("Node", "", "v1", "nodes", False, ("no",),
                  printer=lambda items, wide, _all, now: printers.nodes_table(items, wide, now), writable=False))
register(Resource("Pod", "", "v1", "pods", True, ("po",),
                  schema=s.KINDS["Pod"][1], default=validation.default_pod, validate=validation.pod_rules,
                  printer=printers.pods_table))
register(Resource("Service", "", "v1", "services", True, ("svc",),
                  schema=s.KINDS["Service"][1], default=validation.default_service, validate=validation.service_rules,
                  printer=printers.services_table))
register(Resource("Endpoints", "", "v1", "endpoints", True, ("ep",),
                  schema=s.KINDS["Endpoints"][1], default=validation.default_endpoints,
                  validate=validation.endpoints_rules,
                  printer=lambda items, wide, all_ns, now: printers.endpoints_table(items, all_ns, now)))
register(Resource("Deployment", "apps", "v1", "deployments", True, ("deploy",),
                  schema=s.KINDS["Deployment"][1], default=validation.default_deployment,
                  validate=validation.deployment_rules, printer=printers.deployments_table))
register(Resource("ConfigMap", "", "v1", "configmaps", True, ("cm",),
                  schema=s.KINDS["ConfigMap"][1], validate=validation.configmap_rules,
                  printer=lambda items, wide, all_ns, now: printers.configmaps_table(items, all_ns, now)))
register(Resource("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True,
                  printer=lambda items, wide, all_ns, now: printers.endpointslices_table(items, all_ns, now)))
