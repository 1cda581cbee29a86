"""The control plane's reconcile loop against a real store, with the kernel left out."""

from __future__ import annotations

from nsk.api.cluster import parse_cluster
from nsk.api.objects import Key
from nsk.api.validation import admit
from nsk.daemon import ControlPlane
from nsk.store import Store


class IdleKubelet:
    def sync(self, pods: list[dict]) -> None:
        pass

    def tick(self, now: float) -> None:
        return None


def ready_pod(name: str, ip: str) -> dict:
    pod = admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
                 "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "nginx"}]}})
    pod["status"] = {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
    return pod


def endpoint_ips(store: Store) -> list[str]:
    e = store.get("Endpoints", "default", "web") or {}
    return sorted(a["ip"] for s in e.get("subsets") or [] for a in s.get("addresses") or [])


def control_plane(store: Store, during_proxy_sync) -> ControlPlane:
    """A ControlPlane on `store` with no kernel: idle kubelets, and a proxy sync that only
    calls `during_proxy_sync` (the time another process's write may land)."""
    cp = object.__new__(ControlPlane)
    cp.store, cp.kubelets, cp._seen_rev = store, {"node-1": IdleKubelet()}, -1
    cp.cfg = parse_cluster(None)
    cp._sync_proxies = during_proxy_sync
    return cp


def test_a_write_that_lands_during_a_pass_is_not_taken_as_seen(tmp_path):
    store = Store(str(tmp_path), create=True)
    other = Store(str(tmp_path))  # what `nsk delete pod` uses: another connection, another process
    with store.tx():
        store.put(admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                         "spec": {"clusterIP": "10.96.0.5", "selector": {"app": "web"}, "ports": [{"port": 80}]}}))
        for name, ip in (("web-1", "10.244.1.2"), ("web-2", "10.244.1.3")):
            pod = ready_pod(name, ip)
            status = pod.pop("status")
            store.put(pod)
            store.set_status(Key("Pod", "default", name), status)
    armed = []

    def during_proxy_sync():
        if armed:  # the endpoints of this pass are computed already: web-2 leaves too late for them
            other.delete(Key("Pod", "default", "web-2"))
            armed.clear()

    cp = control_plane(store, during_proxy_sync)
    cp.reconcile()
    assert endpoint_ips(store) == ["10.244.1.2", "10.244.1.3"]
    armed.append(True)
    cp.reconcile(force=True)
    assert endpoint_ips(store) == ["10.244.1.2", "10.244.1.3"]  # this pass could not see the delete
    cp.reconcile()  # the delete's wake-up: a pass must run, not wait for the next resync
    assert endpoint_ips(store) == ["10.244.1.2"]
    cp.reconcile()  # and then nothing is left to do: our own writes are not taken for news
    assert cp.store.revision() == cp._seen_rev
    other.close()
    store.close()
