"""One cluster's control plane: wiring. The store's change log feeds an informer; the
controller manager turns each snapshot into writes; the kubelets make the node's Pods;
the proxy manager brings every node's rules to the Services. Started by `nsk up` as
`python -m nsk.daemon CLUSTER`; stopped by `nsk down`.

One thread and one selector: the store's notify socket (a write happened), the pidfds of
the Pods' processes (one ended), probe sockets, and timers (restart back-off, retries,
resync). Forking Pod processes from here is safe because there is no other thread.

One owner per piece of state: objects belong to the store and reach it only through the
API server; a Pod's sandbox and processes belong to its node's kubelet; a node's rules to
its proxy Provider; the router's routes to the cloud load balancer's part of the proxy pass.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import selectors
import signal
import socket
import sys
import time

from nsk.api.cluster import parse_cluster
from nsk.api.objects import Key
from nsk.apiserver.server import APIServer
from nsk.controllers import deployment, endpoints, loadbalancer, scheduler
from nsk.controllers.manager import ControllerManager, Snapshot
from nsk.errors import KernelError, NskError
from nsk.kernel import network
from nsk.kernel.ops import Kernel
from nsk.kubelet.kubelet import Kubelet
from nsk.net.plan import plan
from nsk.proxy import config as proxy_config
from nsk.proxy.healthcheck import CloudChecks, HealthServer, health_check_ports
from nsk.proxy.sync import SYNC_PERIOD
from nsk.proxy.model import NodeContext, service_ports
from nsk.proxy.provider import ProxyManager, provider_for
from nsk.store import Store, cluster_dir
from nsk.store.informer import Informer
from nsk.store.sqlite import NOTIFY

log = logging.getLogger("nsk.control-plane")
# seconds: a full reconcile even without a write, as informers resync (a safety net:
# every change reaches the controllers through the watch; at 1,000 Services a pass over
# everything costs a few hundred ms, so it is rare, as client-go's resyncs are)
RESYNC = 300.0
MAX_ROUNDS = 20  # controller rounds in one pass before the loop looks at its sockets again
# seconds of Pod starts a pass, shared by the nodes' kubelets: what bounds the loop's pause
# while a thousand Pods start (~14 ms each). Not much shorter: each pass's Pods reach the
# rules in a sync of their own, and where many Services select them each sync rewrites
# every one of those Services' chains (at 1 s, 10 nodes, 300 Pods behind 100 NodePort
# Services on the nft backend came up in 130 s instead of 27 s).
KUBELET_BUDGET = 5.0
# seconds of a loop turn (a pass of Pod starts, a big services pass) past which the probes
# under way are given that time back: their answers wait in their sockets meanwhile
STALL = 0.05
# CPython's own trigger for a full collection of cyclic garbage: this many young collections
# since the last. The loop makes it when it has nothing else to do (see run): a full
# collection of a 1,000-Service control plane's heap takes ~0.15 s, too long for the middle
# of a change's way to the rules.
FULL_GC_AFTER = 10
KINDS = ("Namespace", "Node", "Pod", "Service", "Endpoints", "EndpointSlice", "Deployment", "ConfigMap")


class ControlPlane:
    def __init__(self, cluster: str, kernel=None, directory: str | None = None):
        self.dir = directory or cluster_dir(cluster)
        self.store = Store(self.dir)
        # what the controllers write, the informer takes back undecoded (two bursts of a new
        # Pod behind 1,000 Services: a bigger one is decoded, as any other writer's)
        self.store.keep_decoded = 4096
        self.cfg = parse_cluster(self.store.get_meta("cluster"))
        self.plan = plan(self.cfg)
        self.api = APIServer(self.store, self.cfg)
        self.kernel = kernel or Kernel(self.cfg.iptables_backend, self.dir)
        self.informer = Informer(self.store, KINDS)
        self.sel = selectors.DefaultSelector()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = os.path.join(self.dir, NOTIFY)
        if os.path.exists(path):
            os.unlink(path)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ, self._drain)
        self.stopping = False
        self.controllers = ControllerManager(self.api, [
            deployment.DeploymentController(random.Random()), deployment.GarbageCollector(),
            scheduler.Scheduler(self.plan.nodes), endpoints.EndpointSliceController(), endpoints.EndpointsController(),
            loadbalancer.LoadBalancerController(self.cfg.lb_pool), proxy_config.KubeProxyPods(self.cfg)],
            self.informer, self._committed)
        self.kubelets = {n.name: Kubelet(n, self.plan, self.cfg, self.store, self.dir, self._watch, self._unwatch,
                                         self.kernel, self.api) for n in self.plan.nodes}
        for k in self.kubelets.values():
            k.on_change = self._kick
        self.proxies: ProxyManager | None = None
        self.router_have: dict[str, tuple[str, ...]] = {}
        self._cluster_doc = self.store.get_meta("cluster")  # as applied: a new spec.proxy switches the proxies
        self._configmap_rv: str | None = None  # kube-proxy's ConfigMap as last followed
        self._switch_pending = False  # a new spec.proxy waits for the running sync to end
        self.ports: list = []  # the ServicePorts of the last services pass
        self._ports_stale = True  # a Service or EndpointSlice changed since: the next pass reads them again
        self.hc_ports: list[int] = []  # their health check node ports, which the cloud checks
        self.health = HealthServer(self.kernel.listen_socket, self._watch, self._unwatch, time.monotonic,
                                   lambda: (self.proxies.healthy, self.proxies.last_success) if self.proxies
                                   else (False, 0.0))
        self.cloud = CloudChecks(self._cloud_connect, self._watch, self._unwatch, time.monotonic, self._kick)
        self._seen_rev = -1
        self._unsettled = False  # the controllers stopped before they rested: the next pass takes everything
        self._kicked = False  # a restore or a Pod's termination ended: what waited for it may go on
        self._kubelets_failed: set[str] = set()  # nodes whose last kubelet sync raised

    def _watch(self, fd: int, callback, events: int = selectors.EVENT_READ) -> None:
        self.sel.register(fd, events, callback)

    def _unwatch(self, fd: int) -> None:
        try:
            self.sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def _cloud_connect(self, ip: str, port: int) -> socket.socket:
        sock = self.kernel.probe_socket(self.plan.wire_netns, ip)
        sock.connect_ex((ip, port))
        return sock

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
            self.api.update_status(Key("Node", "", n.name), node_status(n))
        log.info("cluster network built in %.0f ms", (time.monotonic() - t) * 1000)

    def _proxy_config_changed(self) -> bool:
        """A Cluster document applied with another spec.proxy: switch every node's proxy
        (once no sync runs): the old mode's rules and tables go, the new mode syncs whole.
        False while the switch has to wait for a running sync."""
        self._follow_configmap()
        doc = self.store.get_meta("cluster")
        if doc == self._cluster_doc:
            return True
        cfg = parse_cluster(doc)
        if (cfg.proxy_mode, cfg.ipvs_scheduler) == (self.cfg.proxy_mode, self.cfg.ipvs_scheduler):
            return True
        if self.proxies is not None and self.proxies.busy:
            return False  # after this sync: a later pass looks again
        self._cluster_doc = doc
        old = next(iter(self.proxies.providers.values())) if self.proxies else None
        self.cfg = cfg
        self.api.cfg = cfg
        mode, cls = provider_for(cfg.proxy_mode)
        if old is not None and type(old) is cls and old.ctx.ipvs_scheduler != cfg.ipvs_scheduler:
            log.info("proxy mode %s: scheduler %s -> %s on every node", mode, old.ctx.ipvs_scheduler, cfg.ipvs_scheduler)
            self.start_proxies(fresh=False)  # the virtual servers are edited (-E), not made anew
        elif old is not None and type(old) is not cls:
            for n in self.plan.nodes:
                try:
                    self.proxies.providers[n.name].cleanup(self.kernel, n.netns)
                except KernelError as e:
                    log.error("%s", e)
            log.info("proxy mode: %s -> %s on every node", old.mode, mode)
            self.start_proxies(fresh=False)
        return True

    def _follow_configmap(self) -> None:
        """kube-system/kube-proxy changed (`nsk apply`, `nsk edit`): its mode becomes the
        Cluster's spec.proxy, which the switch then follows; a config kube-proxy would refuse
        is a Warning Event on the ConfigMap, and the running mode stays."""
        cm = self.informer.get("ConfigMap", proxy_config.NAMESPACE, proxy_config.NAME)
        rv = cm["metadata"].get("resourceVersion") if cm else None
        if rv is None or rv == self._configmap_rv:
            return
        self._configmap_rv = rv
        try:
            mode, scheduler = proxy_config.proxy_of(cm)
        except NskError as e:
            self.store.event(Key("ConfigMap", proxy_config.NAMESPACE, proxy_config.NAME), "Warning",
                             "FailedProxyConfig", f"{e} (the proxies keep running {self.cfg.proxy_mode} mode)")
            return
        doc = self.store.get_meta("cluster")
        proxy = (doc.get("spec") or {}).get("proxy") or {}
        if (proxy.get("mode", "iptables"), (proxy.get("ipvs") or {}).get("scheduler", "rr")) != (mode, scheduler):
            doc = {**doc, "spec": {**doc["spec"], "proxy": {**proxy, "mode": mode, "ipvs": {"scheduler": scheduler}}}}
            self.store.set_meta("cluster", doc)

    def start_proxies(self, fresh: bool | None = None) -> None:
        """One kube-proxy per node, of the cluster's mode (root). `fresh`: the nodes' tables
        are known empty (the network was just built)."""
        mode, cls = provider_for(self.cfg.proxy_mode)
        providers = {}
        for n in self.plan.nodes:
            ctx = NodeContext(n.name, self.cfg.pod_subnet, (n.ip,), self.cfg.node_port_addresses,
                              self.cfg.service_subnet, self.cfg.ipvs_scheduler, self.dir, (n.ip, n.gateway))
            providers[n.name] = cls(n.netns, ctx, self.kernel, fresh=self.fresh if fresh is None else fresh)
        self.proxies = ProxyManager(providers, self.kernel, self._node_event, self._watch, self._unwatch)
        self.proxies.on_done = self._kick
        self.store.set_meta("proxy-mode", mode)

    def _kick(self) -> None:
        self._kicked = True

    def _node_event(self, node: str, reason: str, message: str) -> None:
        self.store.event(Key("Node", "", node), "Warning", reason, message)

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
        gc.set_threshold(*gc.get_threshold()[:2], 1 << 30)  # no full collection but the loop's own
        last_resync = last_poll = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            force = now - last_resync >= RESYNC
            if force:
                last_resync = now
            self.reconcile(force)
            if self.proxies is not None and now - last_poll >= SYNC_PERIOD:
                last_poll = now
                self.proxies.poll()  # each node's canary, and a full sync when one is due
            if self.proxies.due_at is not None and self.proxies.due_at <= time.monotonic():
                self.proxies.retry()  # a sync that waited for the minimum sync period
                self._kicked = True  # (with nothing to write, it is done now: `nsk up` hears of it next pass)
            self.health.expire()
            busy = time.monotonic() - now
            if busy > STALL:  # a long pass: the probes under way get that time back
                for k in self.kubelets.values():
                    k.stalled(busy)
            deadlines = [k.tick(time.monotonic()) for k in self.kubelets.values()]
            deadlines.append(self.cloud.tick(self.hc_ports, {n.name: n.ip for n in self.plan.nodes}))
            deadlines += [self.controllers.next_retry(), self.proxies.retry_at or None, self.proxies.due_at,
                          last_resync + RESYNC,
                          last_poll + SYNC_PERIOD]
            if self._kicked:
                deadlines.append(time.monotonic())
            timeout = max(0.0, min(d for d in deadlines if d is not None) - time.monotonic())
            if timeout > 0 and gc.get_count()[2] >= FULL_GC_AFTER and not self.proxies.busy:
                gc.collect()  # idle, and no restore to compete with for the CPU
                continue
            try:
                events = self.sel.select(timeout)
            except InterruptedError:
                continue
            for sel_key, _ in events:
                # an earlier callback of this batch may have closed this fd (a probe timed out)
                if self.sel.get_map().get(sel_key.fd) is sel_key:
                    sel_key.data()
        self.kernel.close()
        log.info("control plane stopped")

    def reconcile(self, force: bool = False) -> None:
        """One pass: controllers until they rest, then the Services' rules, then the kubelets."""
        changed = self._sync()
        now = time.monotonic()
        retry_due = (self.controllers.next_retry() or float("inf")) <= now
        if self.proxies is not None and not self.proxies.healthy and self.proxies.retry_at <= now:
            self.proxies.retry()
            retry_due = True
        if self._switch_pending:
            self._switch_pending = not self._proxy_config_changed()
            switched = not self._switch_pending
        else:
            switched = False
        if not changed and not force and not retry_due and not self._kicked and not switched and \
                self._seen_rev == self.informer.revision:
            return
        self._kicked = False
        self._settle(None if force else changed)
        # Services first: a deleted or unready Pod leaves the rules before the kubelets
        # spend time tearing down and starting Pods; then again for what they changed.
        self._services_pass()
        first = self.informer.revision
        snap = Snapshot(self.informer)
        by_node: dict[str, list[dict]] = {name: [] for name in self.kubelets}
        for p in snap.list("Pod"):
            node = p["spec"].get("nodeName")
            if node in by_node:
                by_node[node].append(p)
        # A deleted Pod's sandbox goes only once the rules no longer send traffic to it: while a
        # restore runs (or waits its turn), the kubelets start Pods but remove none.
        remove = self.proxies is None or not self.proxies.busy
        # The cluster's most critical waiting Pods (kube-proxy, then CoreDNS) start in a pass
        # of their own on every node: cluster DNS is in its Endpoints a second into `nsk up`,
        # before a thousand Pods start. The kubelets start Pods for KUBELET_BUDGET a pass
        # between them, then the loop goes back to its probes, controllers and proxies.
        # (A node whose last sync failed sets no floor: its Pods hold no other node's back.)
        floor = max((self._next_priority(name, by_node[name]) for name in self.kubelets
                     if name not in self._kubelets_failed), default=0)
        t0, share = time.monotonic(), KUBELET_BUDGET / max(1, len(self.kubelets))
        before, left = sum(len(k.pods) for k in self.kubelets.values()), False
        services = snap.list("Service")  # one list for every node (each makes its Pods' Service variables once)
        for i, (name, kubelet) in enumerate(self.kubelets.items()):
            try:
                if kubelet.sync(by_node[name], remove=remove, services=services, floor=floor,
                                until=t0 + share * (i + 1)):
                    self._kicked = left = True  # Pods left to start: the loop comes back at once
                self._kubelets_failed.discard(name)
            except Exception:  # noqa: BLE001 - one node's failure must not stop the others
                log.exception("kubelet %s: sync failed", name)
                self._kubelets_failed.add(name)
        if time.monotonic() - t0 > 0.5:
            log.info("kubelets: %d Pods started in %.0f ms%s", sum(len(k.pods) for k in self.kubelets.values())
                     - before, (time.monotonic() - t0) * 1000, ", more left for the next pass" if left else "")
        self._settle(self._sync())
        if self.informer.revision != first:
            self._services_pass()
        self._seen_rev = self.informer.revision
        # what `nsk up` waits for: every write up to this revision is in the kernel's rules
        if self.proxies is not None and not self.proxies.busy and self.proxies.healthy and \
                not any(k.host_ports_busy for k in self.kubelets.values()):
            synced = min(self._seen_rev, self.proxies.synced_rev)
            if self.store.get_meta("synced") != synced:
                self.store.set_meta("synced", synced)

    def _next_priority(self, node: str, pods: list[dict]) -> int:
        """The priority of the most critical Pod `node` would start now (0: none)."""
        try:
            p = self.kubelets[node].next_priority(pods)
        except Exception:  # noqa: BLE001 - as a failed sync: no floor from this node
            log.exception("kubelet %s: next_priority failed", node)
            return 0
        return 0 if p is None else p

    def _settle(self, changed: set | None) -> None:
        """Run the controllers on what changed until they write nothing more (bounded; what
        is left then is taken whole on the next pass)."""
        if self._unsettled:
            changed = None
        for _ in range(MAX_ROUNDS):
            if not self.controllers.run(changed):
                self._unsettled = False
                return
            changed = self._sync()  # what other writers wrote meanwhile (the controllers' own: taken)
        self._unsettled = True

    def _sync(self) -> set[Key]:
        """The informer brought up to the store; the keys that changed."""
        keys = self.informer.sync()
        self._saw(keys)
        return keys

    def _saw(self, keys: set[Key]) -> None:
        """Every change the informer takes in passes here, whoever synced it."""
        if any(k.kind in ("Service", "EndpointSlice") for k in keys):
            self._ports_stale = True
        if Key("ConfigMap", proxy_config.NAMESPACE, proxy_config.NAME) in keys:
            self._switch_pending = self._kicked = True  # kube-proxy's config: a pass looks at it soon

    def _committed(self, keys: set[Key]) -> None:
        """A controller's writes are in (with what else landed): new EndpointSlices go to the
        proxies at once, before the Endpoints controller runs (kube-proxy follows slices)."""
        self._saw(keys)
        if any(k.kind == "EndpointSlice" for k in keys):
            self._services_pass()

    def _services_pass(self) -> None:
        if self.proxies is None:
            return
        t0 = time.monotonic()
        if self._ports_stale:  # (a pass after a Pod's status alone reads nothing again)
            self.ports = service_ports(self.informer.list("Service"), self.informer.list("EndpointSlice"))
            self.hc_ports = health_check_ports(self.ports)
            self._ports_stale = False
        ports = self.ports
        t1 = time.monotonic()
        self.proxies.sync(ports, self.informer.revision)
        if time.monotonic() - t0 > 0.2:
            log.info("services pass: %d service ports read in %.0f ms, planned in %.0f ms", len(ports),
                     (t1 - t0) * 1000, (time.monotonic() - t1) * 1000)
        for failure in self.health.sync(ports, {n.name: n.netns for n in self.plan.nodes}):
            log.warning("%s", failure)
        want = loadbalancer.router_routes(ports, {n.name: n.ip for n in self.plan.nodes}, self.cloud.healthy)
        if want != self.router_have:
            try:
                self.kernel.router_routes(self.plan.wire_netns, want, self.router_have)
                self.router_have = want
            except KernelError as e:
                log.error("%s", e)
                self.router_have = {}  # unknown: every route is made again next time


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
