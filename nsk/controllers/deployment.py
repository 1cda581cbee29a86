"""The Deployment controller (pure): which Pods to create and delete so that each
Deployment runs `replicas` Pods of its current template, and the Deployment's status.

Pods are named as a ReplicaSet names them: `<deployment>-<pod-template-hash>-<5 chars>`.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass

from nsk.api.types import Pod

# apimachinery's rand.SafeEncodeString alphabet: no vowels, no look-alike characters
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

BURST_REPLICAS = 500  # the ReplicaSet controller's most Pods created (or deleted) in one sync


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: dict) -> str:
    """A stable short hash of the Pod template (kubernetes' ComputeHash: FNV-32a, safe-encoded)."""
    digits = str(_fnv32a(json.dumps(template, sort_keys=True).encode()))
    return "".join(SAFE_ALPHABET[int(d) % len(SAFE_ALPHABET)] for d in digits)[:10]


def random_suffix(rng: random.Random, n: int = 5) -> str:
    return "".join(rng.choice(SAFE_ALPHABET) for _ in range(n))


@dataclass(frozen=True)
class Plan:
    create: tuple[dict, ...]
    delete: tuple[tuple[str, str], ...]  # (namespace, name)


def owned_pods(deploy: dict, pods: list[dict]) -> list[dict]:
    """Its active Pods: a terminating one (deleted, ending) counts for nothing, as the
    ReplicaSet controller's FilterActivePods has it, so a replacement starts at once."""
    uid = deploy["metadata"]["uid"]
    return [p for p in pods if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
            and not p["metadata"].get("deletionTimestamp")]


def _running(p: dict) -> bool:
    return (p.get("status") or {}).get("phase") == "Running"


def _ready(p: dict) -> bool:
    return Pod.of(p).ready


def reconcile(deploy: dict, pods: list[dict], rng: random.Random, taken: set[str]) -> Plan:
    """Pods to create and delete for one Deployment. `pods` are the Pods it owns."""
    spec, meta = deploy["spec"], deploy["metadata"]
    want = spec["replicas"]
    h = template_hash(spec["template"])
    current = [p for p in pods if p["metadata"].get("labels", {}).get("pod-template-hash") == h]
    old = [p for p in pods if p["metadata"].get("labels", {}).get("pod-template-hash") != h]
    create, delete = [], []
    # Scale down: the youngest and the not-running Pods go first, as a ReplicaSet prefers.
    excess = len(current) - want
    if excess > 0:
        ranked = sorted(current, key=lambda p: (_running(p), p["metadata"]["creationTimestamp"]), reverse=False)
        not_running = [p for p in ranked if not _running(p)]
        running_newest_first = sorted([p for p in ranked if _running(p)],
                                      key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)
        for p in (not_running + running_newest_first)[:excess]:
            delete.append(p)
    # As the ReplicaSet controller's burstReplicas: at most a batch of Pods per sync. Not in
    # Kubernetes: no new batch while a batch's worth still waits for a node, so that a
    # replica count no cluster can run costs a bounded number of Pending Pods, not memory.
    waiting = sum(1 for p in current if not p["spec"].get("nodeName"))
    for _ in range(max(0, min(want - len(current), BURST_REPLICAS - waiting))):
        while True:
            name = f"{meta['name']}-{h}-{random_suffix(rng)}"
            if name not in taken:
                taken.add(name)
                break
        create.append(_pod_from_template(deploy, h, name))
    # Rolling replacement of an older template: old Pods go once the new ones are ready.
    ready_current = sum(1 for p in current if _ready(p))
    if old and ready_current >= want:
        delete += old
    return Plan(tuple(create), tuple((p["metadata"]["namespace"], p["metadata"]["name"]) for p in delete))


def _pod_from_template(deploy: dict, h: str, name: str) -> dict:
    meta = deploy["metadata"]
    tmpl = copy.deepcopy(deploy["spec"]["template"])
    labels = {**(tmpl.get("metadata") or {}).get("labels", {}), "pod-template-hash": h}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": meta["namespace"], "labels": labels,
            "generateName": f"{meta['name']}-{h}-",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{meta['name']}-{h}",
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": tmpl["spec"],
    }


def status(deploy: dict, pods: list[dict]) -> dict:
    h = template_hash(deploy["spec"]["template"])
    current = [p for p in pods if p["metadata"].get("labels", {}).get("pod-template-hash") == h]
    ready = sum(1 for p in pods if _ready(p))
    want = deploy["spec"]["replicas"]
    st = {"observedGeneration": deploy["metadata"].get("generation", 1), "replicas": len(pods),
          "updatedReplicas": len(current), "readyReplicas": ready, "availableReplicas": ready,
          "unavailableReplicas": max(0, want - ready)}
    st = {k: v for k, v in st.items() if v or k == "observedGeneration"}
    st["conditions"] = [{"type": "Available", "status": "True" if ready >= want else "False",
                         "reason": "MinimumReplicasAvailable" if ready >= want else "MinimumReplicasUnavailable"}]
    return st



class DeploymentController:
    """Each Deployment's Pods (created and deleted as `reconcile` plans) and its status."""

    name = "deployment"

    def __init__(self, rng: random.Random):
        self.rng = rng

    def reconcile(self, snap) -> list:
        from nsk.api.objects import Key
        from nsk.controllers.manager import Delete, Put, Status, each
        taken = {p["metadata"]["name"] for p in snap.list("Pod")}

        def one(d: dict) -> list:
            pods = owned_pods(d, snap.pods_in(d["metadata"]["namespace"]))
            plan_ = reconcile(d, pods, self.rng, taken)
            writes: list = [Put(p) for p in plan_.create]
            writes += [Delete(Key("Pod", ns, name)) for ns, name in plan_.delete]
            st = status(d, pods)
            if st != d.get("status"):
                writes.append(Status(Key("Deployment", d["metadata"]["namespace"], d["metadata"]["name"]), st))
            return writes
        return each(_affected(snap), one, "FailedSync")


def _affected(snap) -> list[dict]:
    """The Deployments a change touches: itself, or the owner of a changed Pod (all of the
    namespace's when a Pod is gone and its owner unknown)."""
    if snap.changed is None:
        return snap.list("Deployment")
    by_uid = {d["metadata"]["uid"]: d for d in snap.list("Deployment")}
    out: dict[str, dict] = {}
    for k in snap.changed_kinds("Deployment", "Pod"):
        if k.kind == "Deployment":
            d = snap.get("Deployment", k.namespace, k.name)
            if d is not None:
                out[d["metadata"]["uid"]] = d
            continue
        pod = snap.get("Pod", k.namespace, k.name)
        if pod is None:
            out.update({d["metadata"]["uid"]: d for d in snap.list("Deployment", k.namespace)})
            continue
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("uid") in by_uid:
                out[ref["uid"]] = by_uid[ref["uid"]]
    return list(out.values())


class GarbageCollector:
    """Pods whose owner is gone are deleted (the garbage collector's background cascade)."""

    name = "garbage-collector"

    def reconcile(self, snap) -> list:
        from nsk.api.objects import key
        from nsk.controllers.manager import Delete
        live = {d["metadata"]["uid"] for d in snap.list("Deployment")}
        out = []
        for p in snap.list("Pod"):
            refs = p["metadata"].get("ownerReferences") or []
            if refs and refs[0].get("kind") == "ReplicaSet" and refs[0].get("uid") not in live and \
                    not p["metadata"].get("deletionTimestamp"):
                out.append(Delete(key(p), p["metadata"]["resourceVersion"]))
        return out
