"""The scheduler (pure): a node for each Pod without one, spreading Pods over the nodes."""

from __future__ import annotations

from nsk.kubelet import portmap
from nsk.net.plan import NodePlan


# kubelet's default maxPods: a node admits at most this many Pods (its /24 would hold 253)
MAX_PODS = 110

SELECTOR_MISMATCH = "node(s) didn't match Pod's node affinity/selector"
TOO_MANY_PODS = "Too many pods"
PORTS_TAKEN = "node(s) didn't have free ports for the requested pod ports"


def wanted_ports(pod: dict) -> list[tuple[str, str, int]]:
    """(hostIP, protocol, hostPort) of each host port a Pod asks for ("" = every address)."""
    out = []
    for c in pod["spec"].get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                ip = p.get("hostIP") or ""
                out.append(("" if ip in ("0.0.0.0", "::") else ip, p.get("protocol", "TCP"), p["hostPort"]))
    return out


def choose(pod: dict, nodes: tuple[NodePlan, ...], load: dict[str, int],
           ports: dict[str, list] | None = None) -> tuple[str | None, str]:
    """(the node with the fewest Pods among those that fit, ""); ties go to the first in
    the Cluster's order. When none fits, (None, why) in the scheduler's words: each
    reason with the number of nodes it ruled out, sorted, as FitError prints them."""
    selector = pod["spec"].get("nodeSelector") or {}
    wanted = wanted_ports(pod)
    fits, reasons = [], {}
    for n in nodes:
        if not all({**n.labels, "kubernetes.io/hostname": n.name}.get(k) == v for k, v in selector.items()):
            reasons[SELECTOR_MISMATCH] = reasons.get(SELECTOR_MISMATCH, 0) + 1
        elif load.get(n.name, 0) >= MAX_PODS:
            reasons[TOO_MANY_PODS] = reasons.get(TOO_MANY_PODS, 0) + 1
        elif any(portmap.conflicts(a, b) for a in wanted for b in (ports or {}).get(n.name, ())):
            reasons[PORTS_TAKEN] = reasons.get(PORTS_TAKEN, 0) + 1
        else:
            fits.append(n)
    if not fits:
        why = ", ".join(sorted(f"{v} {k}" for k, v in reasons.items()))
        return None, f"0/{len(nodes)} nodes are available: {why}."
    return min(fits, key=lambda n: (load.get(n.name, 0), n.index)).name, ""


class Scheduler:
    """Binds each Pod without a node to one (a conditional update: a Pod deleted or changed
    since the snapshot is not brought back), or says why none fits."""

    name = "scheduler"

    def __init__(self, nodes: tuple[NodePlan, ...]):
        self.nodes = nodes

    def reconcile(self, snap) -> list:
        from nsk.api.objects import key
        from nsk.controllers.manager import Put, Status
        gone = snap.changed is not None and any(snap.get("Pod", k.namespace, k.name) is None
                                                for k in snap.changed_kinds("Pod"))
        if snap.changed is None or gone:
            # a Pod gone frees its node's room and ports: every Pod waiting is tried again,
            # as the scheduler moves its unschedulable Pods back to the active queue
            todo = [p for p in snap.list("Pod") if not p["spec"].get("nodeName")]
        else:
            todo = [p for k in snap.changed_kinds("Pod") if (p := snap.get("Pod", k.namespace, k.name)) is not None
                    and not p["spec"].get("nodeName")]
        todo = [p for p in todo if not p["metadata"].get("deletionTimestamp")]
        if not todo:
            return []
        load: dict[str, int] = {}
        ports: dict[str, list] = {}
        for p in snap.list("Pod"):
            if (node := p["spec"].get("nodeName")):
                load[node] = load.get(node, 0) + 1
                ports.setdefault(node, []).extend(wanted_ports(p))
        out: list = []
        for p in sorted(todo, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
            node, why = choose(p, self.nodes, load, ports)
            if node is None:
                st = {"phase": "Pending", "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}]}
                if p.get("status") != st:
                    out.append(Status(key(p), st))
                continue
            load[node] = load.get(node, 0) + 1
            ports.setdefault(node, []).extend(wanted_ports(p))
            out.append(Put({k: v for k, v in p.items() if k != "status"} | {"spec": {**p["spec"], "nodeName": node}}))
        return out
