"""The scheduler (pure): a node for each Pod without one, spreading Pods over the nodes."""

from __future__ import annotations

from nsk.net.plan import NodePlan


def choose(pod: dict, nodes: tuple[NodePlan, ...], load: dict[str, int]) -> str | None:
    """The node with the fewest Pods among those whose labels match the Pod's nodeSelector
    (ties: the first in the Cluster's order); None if no node fits."""
    selector = pod["spec"].get("nodeSelector") or {}
    fits = [n for n in nodes
            if all({**n.labels, "kubernetes.io/hostname": n.name}.get(k) == v for k, v in selector.items())]
    if not fits:
        return None
    return min(fits, key=lambda n: (load.get(n.name, 0), n.index)).name
