"""The kubelet of one node: Pod sandboxes (network namespaces), containers (processes),
restarts with back-off, and Pod status. Runs inside the control plane process; every
kernel operation goes through the kernel adapter it is given (nsk/kernel/ops.py), so it
is unit-tested with nsk/testing/fakes.py's RecordingKernel."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from nsk.api.cluster import ClusterConfig
from nsk.api.objects import Key, key
from nsk.apiserver.server import APIServer
from nsk.kernel.process import ProcRef, Sandbox
from nsk.errors import KernelError, NskError
from nsk.kubelet import podfiles, portmap
from nsk.kubelet.prober import Prober
from nsk.net.plan import ClusterPlan, NodePlan, netns_name, pod_veth
from nsk.store import Store
from nsk.store.sqlite import now_iso
from nsk.workload import registry as workloads

log = logging.getLogger("nsk.kubelet")

BACKOFF_START = 10.0  # kubelet's container restart back-off: 10 s doubling to 5 min,
BACKOFF_MAX = 300.0  # reset after 10 minutes of running
BACKOFF_RESET = 600.0
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}


@dataclass
class ContainerRun:
    name: str
    spec: dict
    env: dict
    ref: ProcRef | None = None
    pidfd: int | None = None
    restarts: int = 0
    started_at: str = ""
    started_mono: float = 0.0
    backoff: float = 0.0
    next_start: float = 0.0  # monotonic; 0 = not waiting
    last_terminated: dict | None = None
    terminated: dict | None = None  # final, when the restart policy says no more


@dataclass
class PodRun:
    key: Key
    uid: str
    netns: str
    etc_dir: str
    ip: str
    host_network: bool
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    host_ports: list = field(default_factory=list)  # portmap.HostPort
    start_time: str = ""
    prober: Prober | None = None
    grace: float = 30.0  # terminationGracePeriodSeconds
    published: dict | None = None  # the status last written
    kill_at: float = 0.0  # terminating: monotonic time of the SIGKILL


# The built-in PriorityClasses' values (scheduling.k8s.io): a kubelet starts the Pods of the
# higher ones first (kube-proxy, then CoreDNS), as the Priority admission plugin resolves them
PRIORITY_CLASSES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}


def critical(pod: dict) -> int:
    """A Pod's priority: its built-in class's, else 0."""
    return PRIORITY_CLASSES.get(pod["spec"].get("priorityClassName", ""), 0)


class Kubelet:
    def __init__(self, node: NodePlan, cplan: ClusterPlan, cfg: ClusterConfig, store: Store, run_dir: str,
                 watch_fd: Callable[[int, Callable[[], None]], None], unwatch_fd: Callable[[int], None], kernel,
                 api: APIServer | None = None):
        self.node, self.plan, self.cfg, self.store, self.kernel = node, cplan, cfg, store, kernel
        self.api = api or APIServer(store, cfg)  # the control plane's own, where it gives it
        self.run_dir = run_dir
        self.watch_fd, self.unwatch_fd = watch_fd, unwatch_fd
        self.pods: dict[Key, PodRun] = {}
        self.terminating: dict[tuple[Key, str], PodRun] = {}  # (key, uid): deleted, processes ending
        self._svc_env: tuple | None = None  # (services, (namespace, links), variables) of the last start
        self.failed: set[tuple[Key, str]] = set()  # (key, uid) whose sandbox failed: retried, setting no floor
        self.on_change: Callable[[], None] = lambda: None  # a Pod finished terminating: a sync may start it anew
        self.cidr = ipaddress.ip_network(node.pod_cidr)
        self._cursor = 1  # host-local IPAM: the next address after the last one given out
        # portmap's chains of this node: what was written, what is being written, whether
        # the jumps to them are known to be there
        self._ports_written: list | None = None
        self._ports_job = None
        self._ports_jumps = False
        try:
            with open("/etc/resolv.conf") as f:
                self._host_resolv = f.read()
        except OSError:
            self._host_resolv = ""

    def adopt(self) -> int:
        """Take over the Pods a previous control plane of this cluster started on this node
        (root): their sandboxes and processes outlive it, as containers outlive a kubelet.
        A container whose process died meanwhile is started again. Returns how many Pods."""
        procs: dict[str, ProcRef] = {}
        for _, ref, detail in self.store.owned("process"):
            procs[detail] = ProcRef.from_str(ref)
        adopted = 0
        for _, ref, detail in self.store.owned("sandbox"):
            box = json.loads(detail)
            if box["node"] != self.node.name:
                continue
            ns, name = ref.split("/", 1)
            k = Key("Pod", ns, name)
            pod = self.store.get("Pod", ns, name)
            if pod is None or pod["metadata"]["uid"] != box["uid"]:
                # deleted while no one watched: take it over only to tear it down
                gone = PodRun(k, box["uid"], box["netns"], box["etc"], box["ip"], box["netns"] == self.node.netns,
                              grace=1.0)
                for cname in box["env"]:
                    ref_ = procs.get(f"{k}/{cname}")
                    gone.containers[cname] = ContainerRun(cname, {}, {}, ref=ref_)
                self.pods[k] = gone
                self.remove(k)
                continue
            run = PodRun(k, box["uid"], box["netns"], box["etc"], box["ip"], box["netns"] == self.node.netns,
                         start_time=(pod.get("status") or {}).get("startTime", ""),
                         grace=float(pod["spec"].get("terminationGracePeriodSeconds", 30)))
            statuses = {c["name"]: c for c in (pod.get("status") or {}).get("containerStatuses") or []}
            for c in pod["spec"]["containers"]:
                cr = ContainerRun(c["name"], c, box["env"].get(c["name"], {}))
                st = statuses.get(c["name"], {})
                cr.restarts = st.get("restartCount", 0)
                cr.last_terminated = (st.get("lastState") or {}).get("terminated")
                cr.started_at = ((st.get("state") or {}).get("running") or {}).get("startedAt", now_iso())
                cr.started_mono = time.monotonic()
                ref_ = procs.get(f"{k}/{c['name']}")
                run.containers[c["name"]] = cr
                if ref_ is not None and self.kernel.alive(ref_):
                    cr.ref = ref_
                    cr.pidfd = self.kernel.pidfd(ref_)
                    if cr.pidfd is not None:
                        self.watch_fd(cr.pidfd, lambda r=run, c_=cr: self._exited(r, c_))
                else:
                    cr.next_start = time.monotonic()  # it died meanwhile: start it again
            if any(c.get("readinessProbe") or c.get("livenessProbe") for c in pod["spec"]["containers"]):
                first = next(iter(run.containers.values()))
                run.prober = Prober(self.node.netns, run.ip, pod["spec"]["containers"],
                                    Sandbox(run.netns, box["hostname"], first.env, run.etc_dir),
                                    self.kernel, self.watch_fd, self.unwatch_fd,
                                    lambda kind, cname, ok, r=run: self._probe_changed(r, kind, cname, ok))
            run.host_ports = portmap.host_ports(pod, run.ip)
            self.pods[k] = run
            if not run.host_network:
                self._cursor = max(self._cursor, int(ipaddress.ip_address(run.ip)) - int(self.cidr.network_address))
            adopted += 1
        return adopted

    # ---- the loop's entry points ------------------------------------------------------

    def sync(self, pods: list[dict], remove: bool = True, services: list[dict] | None = None, floor: int = 0,
             until: float | None = None) -> bool:
        """Make the node run exactly `pods` (those bound to it); with `remove` False, the
        Pods that are no longer wanted stay for a later sync (their rules are being removed).
        Only Pods of priority `floor` or higher start (the control plane starts the cluster's
        most critical Pods in a pass of their own: CoreDNS is in its Endpoints before the
        thousand Pods behind it start), most critical first, and none after `until`
        (monotonic; one at least), so the loop gets back to its probes and controllers.
        Whether Pods are left to start."""
        deleting = {key(p): p for p in pods if p["metadata"].get("deletionTimestamp")}
        wanted = {key(p): p for p in pods if key(p) not in deleting}
        gone = [k for k, run in self.pods.items() if k not in wanted or run.uid != wanted[k]["metadata"]["uid"]]
        for k in gone if remove else ():
            pod = deleting.get(k)
            if pod is not None and pod["metadata"]["uid"] == self.pods[k].uid:
                self.pods[k].grace = float(pod["metadata"].get("deletionGracePeriodSeconds", self.pods[k].grace))
            self.remove(k)
        ending = {t.key for t in self.terminating.values()}
        for k, pod in deleting.items() if remove else ():
            if k not in self.pods and k not in ending:
                self._deleted(k, pod["metadata"]["uid"])  # never ran here, or ended: nothing to wait for
        self.failed &= {(k, p["metadata"]["uid"]) for k, p in wanted.items()}  # (gone: forgotten)
        left = False
        started = 0  # Pods started that had not failed before: past `until`, the first goes on
        for k, pod in self._to_start(wanted):
            retry = (k, pod["metadata"]["uid"]) in self.failed
            if critical(pod) < floor:
                left = True  # (the rest is less critical)
                break
            if until is not None and (started or retry) and time.monotonic() >= until:
                left = True
                continue
            started += not retry
            try:
                self.start(pod, services)
                self.failed.discard((k, pod["metadata"]["uid"]))
            except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError is no OSError
                # undo what was made (a namespace, files, records); the next sync retries
                self.failed.add((k, pod["metadata"]["uid"]))
                log.exception("pod %s: sandbox failed", k)
                self.store.event(k, "Warning", "FailedCreatePodSandBox", f"{type(e).__name__}: {e}")
                if k in self.pods:
                    try:
                        self.remove(k)
                    except Exception:  # noqa: BLE001 - what is left is removed by `nsk down`
                        log.exception("pod %s: undoing the failed sandbox failed", k)
        with self.store.tx():  # one commit (one wake-up of every watcher) for the node's statuses
            for k in wanted:
                if k in self.pods:
                    self._publish(self.pods[k])
        self._write_host_ports()
        return left

    def _to_start(self, wanted: dict[Key, dict]) -> list[tuple[Key, dict]]:
        """The wanted Pods this node has yet to start, most critical first, and of one
        priority those whose sandbox failed last (one whose namesake still terminates waits
        for it)."""
        ending = {t.key for t in self.terminating.values()}
        return sorted(((k, p) for k, p in wanted.items() if k not in self.pods and k not in ending),
                      key=lambda kv: (-critical(kv[1]), (kv[0], kv[1]["metadata"]["uid"]) in self.failed))

    def next_priority(self, pods: list[dict]) -> int | None:
        """The priority of the most critical of `pods` this node would start now (None: none):
        the floor of the control plane's next pass. A Pod whose sandbox failed is retried in
        every pass but sets no floor, so it never holds the cluster's other Pods back."""
        todo = [(k, p) for k, p in self._to_start({key(p): p for p in pods if not p["metadata"].get("deletionTimestamp")})
                if (k, p["metadata"]["uid"]) not in self.failed]
        return critical(todo[0][1]) if todo else None

    def _write_host_ports(self) -> None:
        """Bring the node's portmap chains to the running Pods' host ports, in the background
        (one write at a time; what changes meanwhile is written when it ends)."""
        want = sorted(hp for run in self.pods.values() for hp in run.host_ports)
        if self._ports_job is not None or want == (self._ports_written or []):
            if self._ports_written is None:
                self._ports_written = want  # none ever, none now: nothing to write
            return
        text = portmap.render(want)
        if not self._ports_jumps:
            try:
                text += portmap.missing_jumps(self.kernel.save(self.node.netns, chains=portmap.JUMP_CHAINS))
            except KernelError as e:
                log.warning("node %s: host ports: %s", self.node.name, e)
                return
        try:
            job = self.kernel.restore_start([(self.node.netns, text)])
        except KernelError as e:
            log.warning("node %s: host ports: %s", self.node.name, e)
            return
        self._ports_job = (job, want)
        for fd in job.fds:
            self.watch_fd(fd, self._host_ports_written)

    @property
    def host_ports_busy(self) -> bool:
        """Whether the node's host port rules are still being written."""
        return self._ports_job is not None

    def _host_ports_written(self) -> None:
        job, want = self._ports_job
        if not job.done():
            return
        for fd in job.fds:
            self.unwatch_fd(fd)
        self._ports_job = None
        try:
            job.result()
            self._ports_written, self._ports_jumps = want, True
        except KernelError as e:
            log.warning("node %s: host ports: %s", self.node.name, e)
            self.store.event(Key("Node", "", self.node.name), "Warning", "FailedHostPorts", str(e))
            return  # the next sync tries again
        self._write_host_ports()
        if self._ports_job is None:
            self.on_change()  # what waits for the rules (`nsk up`) may go on

    def stalled(self, seconds: float) -> None:
        """The control loop was busy for `seconds`: the probes under way do not lose that time."""
        for run in self.pods.values():
            if run.prober is not None:
                run.prober.stalled(seconds)

    def tick(self, now: float) -> float | None:
        """Restart containers whose back-off has run out, run due probes; the next deadline."""
        nxt = None
        for run in list(self.terminating.values()):
            if run.kill_at <= now:
                for c in run.containers.values():
                    if c.ref is not None:
                        self.kernel.kill(c.ref)  # the grace period is over
                        self._ended(run, c)
                self._finalize(run)
            else:
                nxt = run.kill_at if nxt is None else min(nxt, run.kill_at)
        for run in list(self.pods.values()):
            if run.prober is not None:
                t = run.prober.tick(now, lambda name, r=run: r.containers[name].ref is not None)
                if t is not None:
                    nxt = t if nxt is None else min(nxt, t)
            for c in run.containers.values():
                if c.next_start and c.next_start <= now:
                    c.next_start = 0
                    self._start_container(run, c)
                    self.store.own("process", c.ref.to_str(), f"{run.key}/{c.name}")
                    self._publish(run)
                elif c.next_start:
                    nxt = c.next_start if nxt is None else min(nxt, c.next_start)
        return nxt

    # ---- sandboxes ----------------------------------------------------------------------

    def _allocate_ip(self) -> str:
        used = {run.ip for run in [*self.pods.values(), *self.terminating.values()]}
        size = self.cidr.num_addresses
        for step in range(1, size):
            i = (self._cursor + step) % size
            if i < 2 or i == size - 1:  # network, gateway, broadcast
                continue
            ip = str(self.cidr.network_address + i)
            if ip not in used:
                self._cursor = i
                return ip
        raise OSError(28, f"no free address in {self.cidr} on node {self.node.name}")  # ENOSPC

    def start(self, pod: dict, services: list[dict] | None = None) -> None:
        """Create the Pod's sandbox and start its containers (root). `services`: the
        Services that exist now (a later one adds no variables to the Pod's environment)."""
        k = key(pod)
        spec = pod["spec"]
        host_net = bool(spec.get("hostNetwork"))
        if host_net:
            ns_name, ip = self.node.netns, self.node.ip
            etc_dir = os.path.join(self.run_dir, "pods", netns_name(self.plan.name, "pod", k.namespace, k.name))
        else:
            ns_name, ip = netns_name(self.plan.name, "pod", k.namespace, k.name), self._allocate_ip()
            etc_dir = self.kernel.etc_dir(ns_name)
        run = PodRun(k, pod["metadata"]["uid"], ns_name, etc_dir, ip, host_net, start_time=now_iso(),
                     grace=float(spec.get("terminationGracePeriodSeconds", 30)), host_ports=portmap.host_ports(pod, ip))
        self.pods[k] = run
        with self.store.tx():  # recorded before they are made: `nsk down` after a crash finds them
            if not host_net:
                self.store.own("netns", ns_name, str(k))
            self.store.own("etc", etc_dir, str(k))
        if not host_net:
            self.kernel.pod_sandbox(self.node.netns, ns_name, pod_veth(k.namespace, k.name, run.uid), ip,
                                    self.node.gateway)
        os.makedirs(etc_dir, exist_ok=True)
        for fname, text in (("resolv.conf", podfiles.resolv_conf(pod, self.cfg, self._host_resolv)),
                            ("hosts", podfiles.hosts_file(pod, ip, self.cfg))):
            with open(os.path.join(etc_dir, fname), "w") as f:
                f.write(text)
        bound = {**pod, "spec": {**spec, "nodeName": self.node.name}}
        if services is None:
            services = self.store.list("Service")
        svc_env = self._service_env(bound, services)
        for c in spec["containers"]:
            env = podfiles.environment(bound, c, ip, self.node.ip, BASE_ENV, service_env=svc_env)
            run.containers[c["name"]] = ContainerRun(c["name"], c, env)
        if any(c.get("readinessProbe") or c.get("livenessProbe") for c in spec["containers"]):
            first = next(iter(run.containers.values()))
            run.prober = Prober(self.node.netns, ip, spec["containers"],
                                Sandbox(ns_name, self._hostname(pod), first.env, etc_dir),
                                self.kernel, self.watch_fd, self.unwatch_fd,
                                lambda kind, name, ok, r=run: self._probe_changed(r, kind, name, ok))
        for c in run.containers.values():
            self._start_container(run, c)
        # no fork happens inside a store transaction: the sandbox's record, its processes' and
        # the event, one commit (a process in the Pod's namespace is found by `nsk down` anyway)
        with self.store.tx():
            self.store.own("sandbox", str(k), json.dumps({
                "uid": run.uid, "netns": ns_name, "etc": etc_dir, "ip": ip, "node": self.node.name,
                "hostname": self._hostname(pod), "env": {n: c.env for n, c in run.containers.items()}}))
            for c in run.containers.values():
                self.store.own("process", c.ref.to_str(), f"{run.key}/{c.name}")
            self.store.event(k, "Normal", "Started", f"Started {len(run.containers)} container(s) on "
                                                     f"{self.node.name}, IP {ip}, network namespace {ns_name}")

    def _service_env(self, pod: dict, services: list[dict]) -> dict:
        """The Service variables of the Pod's namespace, made once for the Pods a sync starts
        from one list of Services (5,000 Services: 35,000 variables, ~20 ms to make)."""
        which = (pod["metadata"]["namespace"], pod["spec"].get("enableServiceLinks", True))
        made = self._svc_env
        if made is None or made[0] is not services or made[1] != which:  # (the list itself is kept: no id reuse)
            env = podfiles.service_environment(podfiles.visible_services(pod, list(services)))
            made = self._svc_env = (services, which, env)
        return made[2]

    def _hostname(self, pod: dict) -> str:
        if pod["spec"].get("hostNetwork"):
            return self.node.name
        return podfiles.hostname(pod)

    def log_path(self, k: Key, container: str) -> str:
        return os.path.join(self.run_dir, "logs", podfiles.log_name(k.namespace, k.name, container))

    def _start_container(self, run: PodRun, c: ContainerRun) -> None:
        box = Sandbox(run.netns, c.env["HOSTNAME"] if not run.host_network else self.node.name,
                              c.env, run.etc_dir)
        argv = podfiles.argv(c.spec, c.env)
        path = self.log_path(run.key, c.name)
        if c.restarts:  # the last run's output stays as the previous log (`nsk logs --previous`)
            try:
                os.replace(path, path + ".previous")
            except FileNotFoundError:
                pass
        if argv is not None:
            ref = self.kernel.spawn(box, path, argv=argv, cwd=c.spec.get("workingDir"))
        else:
            ctx = workloads.WorkloadContext(self.cfg, self.run_dir, run.key.namespace, run.key.name, self.node.name,
                                            run.ip, c.spec)
            # a built-in workload reads no /etc file: it needs no mount namespace of its own
            box = Sandbox(box.netns, box.hostname, box.env, None)
            entry = workloads.entry_point(c.spec.get("image", ""))(ctx)
            if isinstance(entry, list):  # a command line: exec'd, nothing of ours carried over
                ref = self.kernel.spawn(box, path, argv=entry)
            else:
                ref = self.kernel.spawn(box, path, target=entry, comm=run.key.name)
        c.ref, c.started_at, c.started_mono = ref, now_iso(), time.monotonic()
        c.pidfd = self.kernel.pidfd(ref)
        if c.pidfd is not None:
            self.watch_fd(c.pidfd, lambda: self._exited(run, c))

    def _probe_changed(self, run: PodRun, kind: str, container: str, ok: bool) -> None:
        """A probe crossed its threshold: readiness moves the Pod in or out of its Services'
        endpoints; a failed liveness probe restarts the container, as kubelet does."""
        state = next((s for s in run.prober.states if s.kind == kind and s.container == container), None)
        if kind == "readiness":
            self.store.event(run.key, "Normal" if ok else "Warning", "Ready" if ok else "Unhealthy",
                             f"Readiness probe {'succeeded' if ok else 'failed'}: container {container}"
                             + (f": {state.last_message}" if state and state.last_message else ""))
            self._publish(run)
            return
        c = run.containers[container]
        self.store.event(run.key, "Warning", "Unhealthy", f"Liveness probe failed: container {container}: "
                                                          f"{state.last_message if state else ''}; restarting it")
        if c.ref is not None:
            self.kernel.kill(c.ref)  # its pidfd reports the exit; _exited restarts it

    def _exited(self, run: PodRun, c: ContainerRun) -> None:
        """A container's process ended: record it and restart it as the restart policy says."""
        if c.ref is not None:
            self.kernel.kill_group(c.ref)  # what the container started ends with it (before the reap)
        if self.terminating.get((run.key, run.uid)) is run:
            if c.ref is not None:
                self.kernel.exit_status(c.ref)  # reap it
                self._ended(run, c)
            if all(x.ref is None for x in run.containers.values()):
                self._finalize(run)
            return
        if c.pidfd is not None:
            self.unwatch_fd(c.pidfd)
            os.close(c.pidfd)
            c.pidfd = None
        if c.ref is None or self.pods.get(run.key) is not run:
            return
        code = self.kernel.exit_status(c.ref)
        # None: a process adopted from a previous control plane, not our child: its code is lost
        reason = "Unknown" if code is None else ("Completed" if code == 0 else "Error")
        code = 255 if code is None else code
        self.store.disown("process", c.ref.to_str())
        term = {"exitCode": code, "reason": reason,
                "startedAt": c.started_at, "finishedAt": now_iso(), "containerID": f"nsk://{c.ref.pid}"}
        c.ref = None
        if run.prober is not None:
            run.prober.reset(c.name)
        policy = self._pod_spec(run).get("restartPolicy", "Always")
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            c.terminated = term
        else:
            c.last_terminated = term
            c.restarts += 1
            now = time.monotonic()
            if now - c.started_mono > BACKOFF_RESET:
                c.backoff = 0.0
            # The first restart is immediate; then 10 s, 20 s, 40 s, ... up to 5 minutes.
            c.next_start = now + c.backoff if c.backoff else now
            c.backoff = min(BACKOFF_MAX, c.backoff * 2 if c.backoff else BACKOFF_START)
        self.store.event(run.key, "Warning" if code else "Normal", "BackOff" if c.next_start else "Completed",
                         f"container {c.name} exited with code {code}")
        self._publish(run)

    def _pod_spec(self, run: PodRun) -> dict:
        pod = self.store.get("Pod", run.key.namespace, run.key.name)
        return pod["spec"] if pod else {}

    def remove(self, k: Key) -> None:
        """Begin the Pod's termination; nothing waits for it. Its containers get SIGTERM; the
        sandbox goes once they have ended, or when terminationGracePeriodSeconds is over
        (then SIGKILL), as kubelet's killPod does."""
        run = self.pods.pop(k)
        if run.prober is not None:
            run.prober.close()
        run.kill_at = time.monotonic() + run.grace
        self.terminating[(k, run.uid)] = run
        for c in run.containers.values():
            if c.ref is not None:
                if c.pidfd is None:  # adopted to be torn down: not watched yet
                    c.pidfd = self.kernel.pidfd(c.ref)
                    if c.pidfd is None:  # already gone
                        self._ended(run, c)
                        continue
                    self.watch_fd(c.pidfd, lambda r=run, c_=c: self._exited(r, c_))
                self.kernel.terminate(c.ref)  # its pidfd reports the end: _exited
        if all(c.ref is None for c in run.containers.values()):
            self._finalize(run)

    def _ended(self, run: PodRun, c: ContainerRun) -> None:
        if c.pidfd is not None:
            self.unwatch_fd(c.pidfd)
            os.close(c.pidfd)
            c.pidfd = None
        if c.ref is not None:
            self.store.disown("process", c.ref.to_str())
            c.ref = None

    def _finalize(self, run: PodRun) -> None:
        """Every process of a terminating Pod has ended: its sandbox, files and records go (root)."""
        k = run.key
        self.terminating.pop((k, run.uid), None)
        for c in run.containers.values():
            self._ended(run, c)
        if not run.host_network:
            self.kernel.remove_sandbox(run.netns)  # and what still runs there: a command's children
            self.store.disown("netns", run.netns)
        for fname in ("resolv.conf", "hosts"):
            try:
                os.unlink(os.path.join(run.etc_dir, fname))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(run.etc_dir)
        except OSError:
            pass
        self.store.disown("etc", run.etc_dir)
        self.store.disown("sandbox", str(k))
        self._deleted(k, run.uid)
        for c in run.containers:
            for suffix in ("", ".previous"):
                try:
                    os.unlink(self.log_path(k, c) + suffix)
                except FileNotFoundError:
                    pass
        self.on_change()

    def _deleted(self, k: Key, uid: str) -> None:
        """The end of a graceful deletion: the Pod object goes for good, if it is still the
        one that was deleted (kubelet's final delete, with the uid as precondition)."""
        try:
            with self.store.tx():
                pod = self.store.get("Pod", k.namespace, k.name)
                if pod is not None and pod["metadata"]["uid"] == uid and pod["metadata"].get("deletionTimestamp"):
                    self.store.delete(k, pod["metadata"]["resourceVersion"])
        except NskError as e:  # changed meanwhile: the next sync finds it again
            log.warning("pod %s: final delete: %s", k, e)

    # ---- status -------------------------------------------------------------------------

    def _publish(self, run: PodRun) -> None:
        """Write the Pod's status if it differs from what this kubelet wrote last (the
        kubelet owns a bound Pod's status: no need to read it back)."""
        st = self._status(run)
        if st != run.published:
            self.api.update_status(run.key, st)  # the status subresource, through the API server
            run.published = st

    def _status(self, run: PodRun) -> dict:
        statuses = []
        for c in run.containers.values():
            ready = c.ref is not None and (run.prober is None or run.prober.ready(c.name))
            st = {"name": c.name, "image": c.spec.get("image", ""), "imageID": "", "restartCount": c.restarts,
                  "ready": ready, "started": c.ref is not None}
            if c.ref is not None:
                st["containerID"] = f"nsk://{c.ref.pid}"
                st["state"] = {"running": {"startedAt": c.started_at}}
            elif c.terminated is not None:
                st["state"] = {"terminated": c.terminated}
            else:
                st["state"] = {"waiting": {"reason": "CrashLoopBackOff",
                                           "message": f"back-off restarting failed container {c.name}"}}
            if c.last_terminated:
                st["lastState"] = {"terminated": c.last_terminated}
            statuses.append(st)
        ready = all(s["ready"] for s in statuses)
        if all("terminated" in s["state"] for s in statuses):
            phase = "Succeeded" if all(s["state"]["terminated"]["exitCode"] == 0 for s in statuses) else "Failed"
        else:
            phase = "Running"
        cond = lambda t, ok: {"type": t, "status": "True" if ok else "False"}  # noqa: E731
        return {
            "phase": phase, "hostIP": self.node.ip, "hostIPs": [{"ip": self.node.ip}],
            "podIP": run.ip, "podIPs": [{"ip": run.ip}], "startTime": run.start_time,
            "conditions": [cond("Initialized", True), cond("Ready", ready), cond("ContainersReady", ready),
                           cond("PodScheduled", True)],
            "containerStatuses": statuses,
        }
