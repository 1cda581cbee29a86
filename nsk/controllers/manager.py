"""The controller manager: each controller is a pure function from a snapshot of the
cluster to the writes that bring it closer to what it should be; the manager applies them
through the API server, each controller on its own (kube-controller-manager's shape).

    snapshot ──▶ controller.reconcile(snapshot) ──▶ [Put, Status, Delete, Event]
                                                          │ one transaction, a savepoint a write
                                                          ▼
                                                    APIServer ──▶ store ──▶ change log

Isolation: a controller that raises, or a write that fails (a Conflict because the object
moved on, a NotFound because it is gone, an invalid object), becomes a Warning Event on
the object concerned (`nsk describe` shows it) and a retry of that controller with
back-off (client-go's per-item exponential back-off: 50 ms doubling to 30 s); the other
controllers, and that controller's other writes, go on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from nsk.api.objects import Key, key
from nsk.errors import NskError

log = logging.getLogger("nsk.controller-manager")
BACKOFF_START = 0.05
BACKOFF_MAX = 30.0


# ---- what a controller returns -----------------------------------------------------------

@dataclass(frozen=True)
class Put:
    """Create or update an object (a conditional update when it carries a resourceVersion)."""
    obj: dict


@dataclass(frozen=True)
class Status:
    key: Key
    status: dict
    resource_version: str | None = None


@dataclass(frozen=True)
class Delete:
    key: Key
    resource_version: str | None = None


@dataclass(frozen=True)
class Event:
    key: Key
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Failed(Event):
    """An Event that reports a failure: the controller is retried with back-off."""


Write = Put | Status | Delete | Event


def target(w: Write) -> Key:
    return key(w.obj) if isinstance(w, Put) else w.key


# ---- what a controller reads -------------------------------------------------------------

class Snapshot:
    """The objects at one revision (an informer's cache), with the typed views and indexes
    controllers share. Read-only: a controller copies an object before changing it.

    `changed`: the keys written since the controllers last ran (a workqueue's keys, merged);
    None means everything (the first run, a resync, a controller that missed changes while
    it backed off). A controller may reconcile only what those keys touch."""

    def __init__(self, informer, changed: frozenset[Key] | set[Key] | None = None):
        self._inf = informer
        self.revision = informer.revision
        self.changed = None if changed is None else frozenset(changed)
        self._by_ns: dict[str, dict[str, list[dict]]] = {}  # kind -> namespace -> objects
        self._endpoints_of_pod: dict[tuple[str, str], set[str]] | None = None

    def changed_kinds(self, *kinds: str) -> list[Key]:
        return [] if self.changed is None else [k for k in self.changed if k.kind in kinds]

    def in_namespace(self, kind: str, namespace: str) -> list[dict]:
        """The objects of `kind` in `namespace` (an index built once a snapshot)."""
        index = self._by_ns.get(kind)
        if index is None:
            index = self._by_ns[kind] = {}
            for o in self.list(kind):
                index.setdefault(o["metadata"]["namespace"], []).append(o)
        return index.get(namespace, [])

    def services_in(self, namespace: str) -> list[dict]:
        return self.in_namespace("Service", namespace)

    def endpoints_of_pod(self, namespace: str, pod: str) -> set[str]:
        """The names of the Services whose Endpoints or EndpointSlices list the Pod (by targetRef)."""
        if self._endpoints_of_pod is None:
            index: dict[tuple[str, str], set[str]] = {}

            def add(ref: dict, service: str) -> None:
                if ref.get("kind") == "Pod":
                    index.setdefault((ref.get("namespace", ""), ref.get("name", "")), set()).add(service)
            for e in self.list("Endpoints"):
                for sub in e.get("subsets") or []:
                    for field_ in ("addresses", "notReadyAddresses"):
                        for a in sub.get(field_) or []:
                            add(a.get("targetRef") or {}, e["metadata"]["name"])
            for sl in self.list("EndpointSlice"):
                service = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
                for e in sl.get("endpoints") or [] if service else []:
                    add(e.get("targetRef") or {}, service)
            self._endpoints_of_pod = index
        return self._endpoints_of_pod.get((namespace, pod), set())

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        return self._inf.list(kind, namespace)

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._inf.get(kind, namespace, name)

    def pods_in(self, namespace: str) -> list[dict]:
        return self.in_namespace("Pod", namespace)


class Controller(Protocol):
    name: str

    def reconcile(self, snap: Snapshot) -> list[Write]: ...


def each(objects: Iterable[dict], fn: Callable[[dict], list[Write]], reason: str) -> list[Write]:
    """fn over every object, a failure of one becoming a Warning Event on it, not the end of the rest."""
    out: list[Write] = []
    for obj in objects:
        try:
            out += fn(obj)
        except Exception as e:  # noqa: BLE001 - one object's failure is that object's Event
            log.exception("%s of %s failed", reason, key(obj))
            out.append(Failed(key(obj), "Warning", reason, f"{type(e).__name__}: {e}"))
    return out


# ---- the manager ---------------------------------------------------------------------------

@dataclass
class _State:
    controller: Controller
    # the keys written since it last ran (its workqueue); None: it has not seen every change
    # (never run, or it backed off), so its next run takes everything
    pending: set[Key] | None = None
    backoff: float = 0.0
    retry_at: float = 0.0
    failures: int = 0
    last_error: str = ""


@dataclass
class ControllerManager:
    api: object  # the APIServer writes go through
    controllers: list[Controller]
    informer: object  # what the controllers read (nsk.store.informer.Informer)
    # told the keys of each transaction the informer took in (a controller's writes, and any
    # other writer's that landed meanwhile): the control plane's proxies follow EndpointSlices
    on_commit: Callable[[set[Key]], None] = lambda keys: None
    clock: Callable[[], float] = time.monotonic
    states: list[_State] = field(init=False)

    def __post_init__(self) -> None:
        self.states = [_State(c) for c in self.controllers]

    def run(self, changed: set[Key] | None) -> int:
        """Run every controller that is not backing off, in turn, each on the keys written
        since it last ran (`changed`: what other writers wrote since the last run; None:
        everything, for every controller). Each controller's writes are one transaction,
        which the informer takes in before the next controller runs: it sees them at once
        (the EndpointSlices are in the store, and on_commit has heard of them, before the
        Endpoints controller starts). How many writes were applied."""
        for st in self.states:
            st.pending = None if changed is None or st.pending is None else st.pending | changed
        applied = 0
        now = self.clock()
        for st in self.states:
            if st.retry_at > now:
                st.pending = None  # what it misses now, it takes whole when it runs again
                continue
            snap, st.pending = Snapshot(self.informer, st.pending), set()
            t0 = time.monotonic()
            try:
                writes = st.controller.reconcile(snap)
            except Exception as e:  # noqa: BLE001 - a controller's bug must not stop the others
                log.exception("controller %s failed", st.controller.name)
                self._failed(st, f"{type(e).__name__}: {e}", now)
                continue
            t1 = time.monotonic()
            n, errors = self._apply(st.controller.name, writes)
            applied += n
            if n >= 100:  # what a big change cost, in the log (reconcile, then the writes)
                log.info("%s: %d writes (reconciled in %.0f ms, written in %.0f ms)", st.controller.name, n,
                         (t1 - t0) * 1000, (time.monotonic() - t1) * 1000)
            if errors:
                self._failed(st, errors[0], now)
            else:
                st.backoff, st.retry_at, st.last_error = 0.0, 0.0, ""
            if n:
                keys = self.informer.sync()
                for other in self.states:
                    if other.pending is not None:
                        other.pending |= keys
                self.on_commit(keys)
        return applied

    def next_retry(self) -> float | None:
        """When a backing-off controller is due again (monotonic), if any is."""
        due = [st.retry_at for st in self.states if st.retry_at]
        return min(due) if due else None

    def _failed(self, st: _State, error: str, now: float) -> None:
        st.pending = None
        st.failures += 1
        st.last_error = error
        st.backoff = min(BACKOFF_MAX, st.backoff * 2 if st.backoff else BACKOFF_START)
        st.retry_at = now + st.backoff

    def _apply(self, name: str, writes: list[Write]) -> tuple[int, list[str]]:
        store = self.api.store
        applied, errors, events = 0, [], []
        with store.tx():
            for w in writes:
                if isinstance(w, Event):
                    events.append(w)
                    continue
                try:
                    with store.savepoint():
                        if isinstance(w, Put):
                            self.api.put(w.obj)
                        elif isinstance(w, Status):
                            self.api.update_status(w.key, w.status, w.resource_version)
                        else:  # a Pod gracefully, as every delete through the API server
                            self.api.delete_one(w.key, w.resource_version)
                    applied += 1
                except NskError as e:  # Conflict, NotFound, Invalid...: retried from a fresh snapshot
                    events.append(Failed(target(w), "Warning", "Failed" + name.title().replace("-", ""), str(e)))
            for ev in events:
                store.event(ev.key, ev.type, ev.reason, ev.message)
                if isinstance(ev, Failed):
                    errors.append(f"{ev.key}: {ev.message}")
        return applied, errors
