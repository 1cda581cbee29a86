"""One cluster's control plane: the store's watch loop driving the controllers and the
kubelets. Started by `nsk up` as `python -m nsk.daemon CLUSTER`; stopped by `nsk down`.

One thread and one selector: the store's notify socket (a write happened), the pidfds of
the Pods' processes (one ended), and timers (restart back-off, resync). Forking Pod
processes from here is safe because there is no other thread.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import selectors
import signal
import socket
import sys
import time

from nsk.api.cluster import parse_cluster
from nsk.api.objects import Key, key
from nsk.controllers import deployment, endpoints, loadbalancer, scheduler
from nsk.kernel import network
from nsk.kubelet.kubelet import Kubelet
from nsk.net.plan import plan
from nsk.proxy.iptables import NodeContext
from nsk.proxy.model import service_ports
from nsk.proxy.sync import IptablesProxier, sync_all
from nsk.store import Store, cluster_dir
from nsk.store.sqlite import NOTIFY

log = logging.getLogger("nsk.control-plane")
RESYNC = 5.0  # seconds: a full reconcile even without a write, as informers resync


class ControlPlane:
    def __init__(self, cluster: str):
        self.dir = cluster_dir(cluster)
        self.store = Store(self.dir)
        self.cfg = parse_cluster(self.store.get_meta("cluster"))
        self.plan = plan(self.cfg)
        self.sel = selectors.DefaultSelector()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = os.path.join(self.dir, NOTIFY)
        if os.path.exists(path):
            os.unlink(path)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ, self._drain)
        self.rng = random.Random()
        self.stopping = False
        self.timers: list[tuple[float, int, object]] = []
        self.kubelets = {n.name: Kubelet(n, self.plan, self.cfg, self.store, self.dir, self._watch, self._unwatch)
                         for n in self.plan.nodes}
        self._seen_rev = -1
        self.proxiers: dict[str, IptablesProxier] = {}
        self.router_have: dict[str, tuple[str, ...]] = {}

    def _watch(self, fd: int, callback, events: int = selectors.EVENT_READ) -> None:
        self.sel.register(fd, events, callback)

    def _unwatch(self, fd: int) -> None:
        try:
            self.sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def _drain(self) -> None:
        while True:
            try:
                self.sock.recv(64)
            except BlockingIOError:
                return

    # ---- bootstrap ----------------------------------------------------------------------

    def bootstrap(self) -> None:
        """Build the cluster network once (root); a restarted control plane finds it made."""
        self.fresh = self.store.get_meta("network") != "ready"
        if not self.fresh:
            return
        t = time.monotonic()
        network.build(self.plan, self.store.own)
        self.store.set_meta("network", "ready")
        for n in self.plan.nodes:
            node = self.store.get("Node", "", n.name)
            if node is not None:
                self.store.set_status(key(node), node_status(n))
        log.info("cluster network built in %.0f ms", (time.monotonic() - t) * 1000)

    def start_proxies(self) -> None:
        """One kube-proxy per node (root)."""
        if self.cfg.proxy_mode != "iptables":
            log.warning("proxy mode %s is not implemented yet: using iptables", self.cfg.proxy_mode)
        for n in self.plan.nodes:
            ctx = NodeContext(n.name, self.cfg.pod_subnet, (n.ip,), self.cfg.node_port_addresses)
            self.proxiers[n.name] = IptablesProxier(n.netns, ctx, fresh=self.fresh)

    # ---- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        # A signal only sets a flag; the wakeup fd makes select() return to look at it
        # (PEP 475 would otherwise resume the wait until the next timer).
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        self.sel.register(wake_r, selectors.EVENT_READ, lambda: wake_r.recv(64))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        self.bootstrap()
        if not self.fresh:  # a restarted control plane: the Pods are still there
            n = sum(k.adopt() for k in self.kubelets.values())
            log.info("adopted %d running Pods from the previous control plane", n)
        self.start_proxies()
        last_resync = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            force = now - last_resync >= RESYNC
            if force:
                last_resync = now
            self.reconcile(force)
            deadlines = [k.tick(time.monotonic()) for k in self.kubelets.values()]
            deadlines = [d for d in deadlines if d is not None] + [last_resync + RESYNC]
            timeout = max(0.0, min(deadlines) - time.monotonic())
            try:
                events = self.sel.select(timeout)
            except InterruptedError:
                continue
            for sel_key, _ in events:
                # an earlier callback of this batch may have closed this fd (a probe timed out)
                if self.sel.get_map().get(sel_key.fd) is sel_key:
                    sel_key.data()
        for k in self.kubelets.values():
            k.close()
        log.info("control plane stopped")

    def reconcile(self, force: bool = False) -> None:
        rev = self.store.revision()
        if rev == self._seen_rev and not force:
            return
        own = self.store.own_revisions
        self._run_deployments()
        self._schedule()
        # Services first: a deleted or unready Pod leaves the rules before the kubelets
        # spend time tearing down and starting Pods; then again for what they changed.
        self._services_pass()
        before = self.store.revision()
        pods = self.store.list("Pod")
        for name, kubelet in self.kubelets.items():
            kubelet.sync([p for p in pods if p["spec"].get("nodeName") == name])
        pods = self.store.list("Pod")
        for d in self.store.list("Deployment"):
            self.store.set_status(key(d), deployment.status(d, deployment.owned_pods(d, pods)))
        if self.store.revision() != before:
            self._services_pass()
        # Seen is what this pass read. Another process may have written while it ran, after
        # the pass had read what that write changed (a Pod deleted while the rules were
        # restored): then its wake-up must find the pass not caught up, or the change would
        # wait for the next resync. Only when every revision taken meanwhile was our own
        # has the pass seen them all.
        end = self.store.revision()
        self._seen_rev = end if end - rev == self.store.own_revisions - own else rev
        # what `nsk up` waits for: every write up to this revision is in the kernel's rules
        if self.store.get_meta("synced") != self._seen_rev:
            self.store.set_meta("synced", self._seen_rev)

    def _services_pass(self) -> None:
        services = self.store.list("Service")
        self._run_endpoints(services, self.store.list("Pod"))
        self._run_load_balancers(services)
        self._sync_proxies()

    def _run_endpoints(self, services: list[dict], pods: list[dict]) -> None:
        have = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in self.store.list("Endpoints")}
        want = endpoints.wanted(services, pods)
        with self.store.tx():
            for k, obj in want.items():
                obj["metadata"]["labels"][endpoints.MANAGED_BY] = endpoints.CONTROLLER
                self.store.put(obj)
            for k, old in have.items():
                if k not in want and (old["metadata"].get("labels") or {}).get(endpoints.MANAGED_BY) == \
                        endpoints.CONTROLLER:
                    self.store.delete(key(old))

    def _run_load_balancers(self, services: list[dict]) -> None:
        """The emulated cloud: an address from the pool for each LoadBalancer Service."""
        with self.store.tx():
            for svc, status in loadbalancer.assign(services, self.cfg.lb_pool):
                self.store.set_status(key(svc), status)

    def _sync_proxies(self) -> None:
        ports = service_ports(self.store.list("Service"), self.store.list("Endpoints"))
        sync_all(list(self.proxiers.values()), ports)
        want = loadbalancer.router_routes(ports, {n.name: n.ip for n in self.plan.nodes})
        network.router_routes(self.plan.wire_netns, want, self.router_have)
        self.router_have = want

    def _run_deployments(self) -> None:
        pods = self.store.list("Pod")
        deploys = self.store.list("Deployment")
        live_uids = {d["metadata"]["uid"] for d in deploys}
        taken = {p["metadata"]["name"] for p in pods}
        with self.store.tx():
            for d in deploys:
                plan_ = deployment.reconcile(d, deployment.owned_pods(d, pods), self.rng, taken)
                for pod in plan_.create:
                    self.store.put(pod)
                for ns, name in plan_.delete:
                    self.store.delete(Key("Pod", ns, name))
            # garbage collection: Pods whose Deployment is gone
            for p in pods:
                refs = p["metadata"].get("ownerReferences") or []
                if refs and refs[0].get("kind") == "ReplicaSet" and refs[0].get("uid") not in live_uids:
                    self.store.delete(key(p))

    def _schedule(self) -> None:
        pods = self.store.list("Pod")
        load: dict[str, int] = {}
        for p in pods:
            if p["spec"].get("nodeName"):
                load[p["spec"]["nodeName"]] = load.get(p["spec"]["nodeName"], 0) + 1
        with self.store.tx():
            for p in pods:
                if p["spec"].get("nodeName"):
                    continue
                node = scheduler.choose(p, self.plan.nodes, load)
                if node is None:
                    self.store.set_status(key(p), {"phase": "Pending", "conditions": [{
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/%d nodes are available: node(s) didn't match Pod's node selector"
                                   % len(self.plan.nodes)}]})
                    continue
                load[node] = load.get(node, 0) + 1
                p["spec"]["nodeName"] = node
                p.pop("status", None)
                self.store.put(p)


def node_status(n) -> dict:
    uname = os.uname()
    from nsk import __version__
    return {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kubelet is posting ready status"}],
        "addresses": [{"type": "InternalIP", "address": n.ip}, {"type": "Hostname", "address": n.name}],
        "nodeInfo": {"kubeletVersion": f"v{__version__}-nsk", "kubeProxyVersion": f"v{__version__}-nsk",
                     "osImage": "nsk network namespace", "kernelVersion": uname.release,
                     "containerRuntimeVersion": "nsk://fork", "operatingSystem": "linux",
                     "architecture": uname.machine},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cluster = argv[0]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cp = None
    try:
        cp = ControlPlane(cluster)
        if os.environ.get("NSK_PROFILE"):  # a cProfile dump of the control plane, for bench work
            import cProfile
            cProfile.runctx("cp.run()", globals(), locals(), os.environ["NSK_PROFILE"])
        else:
            cp.run()
        return 0
    except Exception as e:  # noqa: BLE001 - a fatal error is reported to `nsk up` through the store
        log.exception("control plane failed")
        if cp is not None:
            cp.store.set_meta("fatal", f"{type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
