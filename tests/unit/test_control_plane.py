"""The control plane's reconcile loop against a real store, with the kernel left out."""

from __future__ import annotations

from nsk.api.cluster import parse_cluster
from nsk.api.objects import Key
from nsk.apiserver.admission import admit
from nsk.controllers.manager import ControllerManager
from nsk.daemon import ControlPlane
from nsk.store import Store
from nsk.testing.fakes import RecordingKernel


class IdleKubelet:
    host_ports_busy = False
    pods: dict = {}  # (the Pods it runs: none)

    def sync(self, pods: list[dict], remove: bool = True, services: list[dict] | None = None, floor: int = 0,
             until: float | None = None) -> None:
        pass

    def next_priority(self, pods: list[dict]) -> None:
        return None

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


class WriteDuringRestore(RecordingKernel):
    """A kernel whose restore is the moment another process's write lands."""

    def __init__(self, during):
        super().__init__()
        self.during = during

    def restore_hook(self):
        self.during()


def control_plane(tmp_path, store: Store, kernel) -> ControlPlane:
    """A ControlPlane on `store` with a fake kernel and idle kubelets."""
    store.set_meta("cluster", parse_cluster(None).to_dict())
    cp = ControlPlane("t", kernel=kernel, directory=str(tmp_path))
    cp.kubelets = {"node-1": IdleKubelet()}
    cp.fresh = True
    cp.start_proxies()
    cp.proxies.min_sync_period = 0.0  # kube-proxy's minSyncPeriod 0: every change synced at once
    return cp


def setup_web(store: Store) -> None:
    with store.tx():
        for ns in ("default", "kube-system"):
            store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        store.put(admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                         "spec": {"clusterIP": "10.96.0.5", "selector": {"app": "web"}, "ports": [{"port": 80}]}}))
        for name, ip in (("web-1", "10.244.1.2"), ("web-2", "10.244.1.3")):
            pod = ready_pod(name, ip)
            status = pod.pop("status")
            store.put(pod)
            store.set_status(Key("Pod", "default", name), status)


def test_a_write_that_lands_during_a_pass_is_not_taken_as_seen(tmp_path):
    store = Store(str(tmp_path), create=True)
    other = Store(str(tmp_path))  # what `nsk delete pod` uses: another connection, another process
    setup_web(store)
    armed = []

    def during_restore():
        if armed:  # the endpoints of this pass are computed already: web-2 leaves too late for them
            other.delete(Key("Pod", "default", "web-2"))
            armed.clear()

    cp = control_plane(tmp_path, store, WriteDuringRestore(during_restore))
    cp.reconcile()
    assert endpoint_ips(store) == ["10.244.1.2", "10.244.1.3"]
    armed.append(True)
    store.put(admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other"},
                     "spec": {"clusterIP": "10.96.0.6", "selector": {"app": "other"},
                              "ports": [{"port": 80}]}}))  # a change: rules restored
    cp.reconcile()
    cp.reconcile()  # the delete's wake-up: a pass must run, not wait for the next resync
    assert endpoint_ips(store) == ["10.244.1.2"]
    cp.reconcile()  # and then nothing is left to do: our own writes are not taken for news
    assert cp.store.revision() == cp._seen_rev
    assert store.get_meta("synced") == store.revision()
    other.close()
    store.close()


def test_a_failed_restore_is_an_event_on_the_node_and_is_retried(tmp_path):
    store = Store(str(tmp_path), create=True)
    setup_web(store)
    kernel = RecordingKernel(fail={"iptables-restore": 1})
    cp = control_plane(tmp_path, store, kernel)
    cp.reconcile()  # the control plane survives the kernel's refusal
    events = store.events(Key("Node", "", "node-1"))
    assert events and events[-1][1:3] == ("Warning", "FailedSync") and "iptables-restore" in events[-1][3]
    assert store.get_meta("synced") is None  # `nsk up` does not take the rules for made
    assert endpoint_ips(store) == ["10.244.1.2", "10.244.1.3"]  # the controllers went on
    cp.proxies.retry_at = 0  # the back-off has passed
    cp.reconcile()
    assert len(kernel.ops("restore")) == 2 and "KUBE-SERVICES" in kernel.ops("restore")[1][1][0][1]
    assert store.get_meta("synced") == store.revision()
    store.close()


def test_a_controller_that_fails_becomes_an_event_and_the_others_go_on(tmp_path):
    store = Store(str(tmp_path), create=True)
    setup_web(store)
    cp = control_plane(tmp_path, store, RecordingKernel())

    class Broken:
        name = "broken"

        def reconcile(self, snap):
            raise RuntimeError("a bug")

    cp.controllers = ControllerManager(cp.api, [Broken(), *cp.controllers.controllers], cp.informer, cp._committed)
    cp.reconcile()
    assert endpoint_ips(store) == ["10.244.1.2", "10.244.1.3"]
    state = cp.controllers.states[0]
    assert state.failures == 1 and "a bug" in state.last_error and cp.controllers.next_retry() is not None


def test_a_new_endpoint_goes_to_the_proxies_before_the_endpoints_are_written(tmp_path):
    """kube-proxy follows EndpointSlices: the restore with a new Pod starts once its slice is
    in the store, while the Endpoints object does not list it yet."""
    store = Store(str(tmp_path), create=True)
    setup_web(store)
    seen = []
    kernel = WriteDuringRestore(lambda: seen.append(endpoint_ips(store)))
    cp = control_plane(tmp_path, store, kernel)
    cp.reconcile()
    pod = ready_pod("web-3", "10.244.1.4")
    status = pod.pop("status")
    with store.tx():
        store.put(pod)
        store.set_status(Key("Pod", "default", "web-3"), status)
    seen.clear()
    kernel.calls.clear()
    cp.reconcile()
    first = next(i for i, (_, jobs) in enumerate(kernel.calls) if "10.244.1.4:80" in jobs[0][1])
    assert seen[first] == ["10.244.1.2", "10.244.1.3"]  # the restore came before the Endpoints write
    assert endpoint_ips(store) == ["10.244.1.2", "10.244.1.3", "10.244.1.4"]


class WaitingKubelet(IdleKubelet):
    """A node with Pods to start, the most critical of `priority`: records each sync's floor."""

    def __init__(self, priority: int | None):
        self.priority, self.floors = priority, []

    def sync(self, pods, remove=True, services=None, floor=0, until=None) -> bool:
        self.floors.append(floor)
        return self.priority is not None

    def next_priority(self, pods: list[dict]) -> int | None:
        return self.priority


def test_a_critical_pod_waiting_on_one_node_starts_before_every_nodes_other_pods(tmp_path):
    """The cluster's most critical waiting Pod (CoreDNS on node-1) sets the floor of a pass
    for every node: node-2's ordinary Pods wait for the next pass, so cluster DNS is in its
    Endpoints before a thousand Pods start."""
    store = Store(str(tmp_path), create=True)
    setup_web(store)
    cp = control_plane(tmp_path, store, RecordingKernel())
    dns, web, idle = WaitingKubelet(2000000000), WaitingKubelet(0), WaitingKubelet(None)
    cp.kubelets = {"node-1": dns, "node-2": web, "node-3": idle}
    cp.reconcile()
    assert dns.floors[0] == web.floors[0] == idle.floors[0] == 2000000000
    dns.priority = 0  # started: the next pass is everyone's
    cp.reconcile()
    assert dns.floors[-1] == web.floors[-1] == idle.floors[-1] == 0
    store.close()


class BrokenKubelet(WaitingKubelet):
    """A node whose sync raises before it starts anything."""

    def sync(self, pods, remove=True, services=None, floor=0, until=None) -> bool:
        super().sync(pods, remove, services, floor, until)
        raise OSError("EPERM")


def test_a_node_whose_sync_fails_holds_no_other_nodes_pods_back(tmp_path):
    """A critical Pod on a node whose kubelet keeps failing would otherwise be the floor of
    every pass, and no other node would start its Pods."""
    store = Store(str(tmp_path), create=True)
    setup_web(store)
    cp = control_plane(tmp_path, store, RecordingKernel())
    broken, web = BrokenKubelet(2000000000), WaitingKubelet(0)
    cp.kubelets = {"node-1": broken, "node-2": web}
    cp.reconcile()  # the failure is logged, the loop goes on
    cp._kicked = True  # (node-2 said Pods are left: the loop comes back)
    cp.reconcile()
    assert web.floors[-1] == 0 and broken.floors[-1] == 0
    store.close()
