"""`nsk up` and `nsk down`: bring a cluster to life and remove every trace of it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

from nsk.api.load import Manifest
from nsk.api.objects import key
from nsk.api.types import Pod
from nsk.apiserver.server import SYSTEM_NAMESPACES, APIServer, namespace_object, system_objects
from nsk.errors import NskError
from nsk.kubelet import podfiles
from nsk.net.plan import ClusterPlan, plan
from nsk.store import RUN_ROOT, Store, cluster_dir
from nsk.store.informer import Informer

Progress = Callable[..., None]  # (stage, text, final=True): final = the stage is done


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise NskError(f"{what} needs root: it works with network namespaces and /run/nsk (run it with sudo)")


def clusters() -> list[str]:
    try:
        return sorted(d for d in os.listdir(RUN_ROOT) if os.path.isdir(os.path.join(RUN_ROOT, d)))
    except FileNotFoundError:
        return []


def resolve(name: str | None) -> str:
    """The cluster a command means: --cluster, else $NSK_CLUSTER, else the only one that is up."""
    name = name or os.environ.get("NSK_CLUSTER")
    if name:
        return name
    up = clusters()
    if len(up) == 1:
        return up[0]
    if not up:
        raise NskError("no cluster is up: start one with `sudo nsk up FILE`")
    raise NskError(f"several clusters are up ({', '.join(up)}): choose one with --cluster NAME")


def open_store(name: str) -> Store:
    need_root("this command")
    try:
        return Store(cluster_dir(name))
    except FileNotFoundError:
        raise NskError(f'cluster "{name}" is not up (clusters up: {", ".join(clusters()) or "none"})') from None


def node_object(n) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux",
                                                    **n.labels}},
            "spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]}}


def control_plane_pid(store: Store):
    from nsk.kernel import process
    refs = [process.ProcRef.from_str(n) for _, n, _ in store.owned("control-plane")]
    return next((r for r in refs if process.alive(r)), None), refs


def start_control_plane(store: Store, name: str) -> subprocess.Popen:
    """Start `python -m nsk.daemon NAME`, detached, logging to control-plane.log; recorded first."""
    from nsk.kernel import process
    d = cluster_dir(name)
    store.set_meta("fatal", None)
    with open(os.path.join(d, "control-plane.log"), "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "nsk.daemon", name], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    ref = process.ProcRef(child.pid, process.start_time(child.pid) or 0)
    store.own("control-plane", ref.to_str())
    return child


def resume(name: str, timeout: float = 30) -> int:
    """Start a new control plane for a cluster whose control plane died (root); it adopts
    the running Pods and catches up with what changed meanwhile. Returns its PID."""
    need_root("nsk resume")
    try:
        store = Store(cluster_dir(name))
    except FileNotFoundError:
        raise NskError(f'cluster "{name}" is not up (clusters up: {", ".join(clusters()) or "none"})') from None
    alive, refs = control_plane_pid(store)
    if alive:
        raise NskError(f'cluster "{name}" has a running control plane (pid {alive.pid})')
    if store.get_meta("network") != "ready":
        raise NskError(f'cluster "{name}" was never fully created: `sudo nsk down --cluster {name}` removes it')
    for _, ref_s, _ in store.owned("control-plane"):
        store.disown("control-plane", ref_s)  # the dead one
    store.set_meta("synced", None)
    child = start_control_plane(store, name)
    deadline = time.monotonic() + timeout
    start_rev = store.revision()
    while (store.get_meta("synced") or -1) < start_rev:
        if store.get_meta("fatal") or child.poll() is not None:
            raise NskError(f'cluster "{name}": the control plane failed: {store.get_meta("fatal") or "exited"} '
                           f"(see {os.path.join(cluster_dir(name), 'control-plane.log')})")
        if time.monotonic() > deadline:
            raise NskError(f'cluster "{name}": the control plane has not caught up after {timeout:.0f} s')
        time.sleep(0.02)
    store.close()
    return child.pid


def _fill(store: Store, m: Manifest, p: ClusterPlan, source: str) -> None:
    """The store's first objects: config, namespaces, nodes, the file's objects (atomic)."""
    api = APIServer(store, m.cluster)
    with store.tx():
        store.set_meta("cluster", m.cluster.to_dict())
        for ns in SYSTEM_NAMESPACES:
            store.put(namespace_object(ns))
        for n in p.nodes:
            store.put(node_object(n))
        api.apply([*system_objects(m.cluster), *m.objects], source, create_namespaces=True)


@dataclass(frozen=True)
class UpResult:
    plan: ClusterPlan
    pods: int
    seconds: float
    pid: int


def up(m: Manifest, progress: Progress, timeout: float | None = None, source: str = "") -> UpResult:
    """Create the cluster of `m` and wait until every Pod runs (root)."""
    need_root("nsk up")
    name = m.cluster.name
    t0 = time.monotonic()
    d = cluster_dir(name)
    os.makedirs(RUN_ROOT, exist_ok=True)
    try:
        os.mkdir(d, 0o755)  # the lock: one `up` per name
    except FileExistsError:
        raise NskError(_in_use(name)) from None
    try:
        os.makedirs(os.path.join(d, "logs"))
        store = Store(d, create=True)
        p = plan(m.cluster)
        try:
            _fill(store, m, p, source)
        finally:
            store.close()
    except (NskError, KeyboardInterrupt) as e:
        shutil.rmtree(d)  # nothing was created in the kernel yet: leave no trace
        if isinstance(e, KeyboardInterrupt):
            raise NskError(f'interrupted: cluster "{name}" was not made') from None
        raise
    store = Store(d)
    progress("start", f'Creating cluster "{name}" ...')
    child = start_control_plane(store, name)
    progress("control-plane", f"control plane started (pid {child.pid})")
    from nsk.proxy.provider import fallback
    if why := fallback(m.cluster.proxy_mode):
        progress("proxy", f"proxy mode {m.cluster.proxy_mode}: {why}")
    try:
        return _wait_up(m, p, store, child, progress, timeout, t0)
    except KeyboardInterrupt:
        # Ctrl-C means stop: what was made so far goes, as after `nsk down`
        store.close()
        progress("interrupted", f'Interrupted: removing cluster "{name}" ...')
        down(name)
        raise NskError(f'interrupted: cluster "{name}" was removed') from None


def _wait_up(m: Manifest, p: ClusterPlan, store: Store, child, progress: Progress, timeout: float | None,
             t0: float) -> UpResult:
    """Wait until every Pod of `m` runs and the rules have caught up (or fail, saying why)."""
    name = m.cluster.name
    d = cluster_dir(name)

    expected = _expected_pods(m)
    pods, up_keys = Informer(store, ("Pod",)), set()
    limit = timeout if timeout is not None else 60 + 0.2 * expected
    network_done, last, next_look = False, None, 0.0
    while True:
        fatal = store.get_meta("fatal")
        if fatal or child.poll() is not None:
            raise NskError(f'cluster "{name}": the control plane failed: {fatal or "exited"} '
                           f"(see {os.path.join(d, 'control-plane.log')}; `nsk down --cluster {name}` cleans up)")
        if not network_done and store.get_meta("network") == "ready":
            network_done = True
            hosts = f"{len(p.hosts)} external host" + ("" if len(p.hosts) == 1 else "s")
            progress("network", f"network: {len(p.nodes)} nodes, {hosts}")
        for k in pods.sync():  # what changed since the last look, not the whole list again
            obj = pods.get(k.kind, k.namespace, k.name)
            if obj is not None and _pod_up(obj):
                up_keys.add(k)
            else:
                up_keys.discard(k)
        running, total = len(up_keys), len(pods.list("Pod"))
        if network_done and (running, total) != last:
            last = (running, total)
            progress("pods", f"pods: {running}/{expected} running", final=running >= expected)
        if network_done and running >= expected and total >= expected:
            rev = store.revision()
            synced = store.get_meta("synced") or 0
            if synced >= rev:  # endpoints and proxy rules have caught up with the running Pods
                break
        # every half second, not every turn: a look at the Pods that do not run yet
        stuck = {}
        if network_done and running < expected and time.monotonic() >= next_look:
            next_look = time.monotonic() + 0.5
            stuck = {k: why for pod in pods.list("Pod")
                     if (k := key(pod)) not in up_keys and (why := _why_not_running(pod, d, store))}
        if stuck and running + len(stuck) >= expected and time.monotonic() - t0 > 1.0:
            # every Pod that does not run has a reason that waiting will not change: say it now
            # and leave the cluster up to look at
            first = next(iter(stuck))
            lines = "; ".join(f"{k}: {why}" for k, why in list(stuck.items())[:5])
            more = f" (and {len(stuck) - 5} more)" if len(stuck) > 5 else ""
            raise NskError(f'cluster "{name}" is up, but {len(stuck)} of {expected} Pods do not run: {lines}{more}; '
                           f"look with `nsk describe pod {first.name} -n {first.namespace}{_flag(name)}` and "
                           f"`nsk logs {first.name} -n {first.namespace}{_flag(name)}`; "
                           f"`nsk down{_flag(name)}` removes the cluster")
        if time.monotonic() - t0 > limit:
            waiting = [str(key(pod)) for pod in pods.list("Pod") if not _pod_up(pod)][:5]
            raise NskError(f'cluster "{name}": only {running} of {expected} Pods running after {limit:.0f} s '
                           f"(waiting: {', '.join(waiting)}); see `nsk get pods --cluster {name}` and "
                           f"{os.path.join(d, 'control-plane.log')}")
        time.sleep(0.02)
    store.close()
    return UpResult(p, expected, time.monotonic() - t0, child.pid)


def _pod_up(pod: dict) -> bool:
    """Running and ready, and not a container that failed meanwhile (between two restarts
    a crash-looping Pod looks ready for a moment)."""
    typed = Pod.of(pod)
    if typed.phase == "Succeeded":
        return True
    crashed = any(((c.get("lastState") or {}).get("terminated") or {}).get("exitCode")
                  for c in (pod.get("status") or {}).get("containerStatuses") or [])
    return typed.ready and not crashed


def _why_not_running(pod: dict, run_dir: str, store: Store) -> str:
    """Why a Pod does not run, when waiting will not change it ("" otherwise): kubectl's
    reasons, with the container's last words for a crash, or the readiness probe's failure
    once it has failed failureThreshold times in a row without the Pod ever being ready."""
    st = pod.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return f"{c.get('reason', 'Unschedulable')}: {c.get('message', '')}".rstrip(": ")
    if st.get("phase") == "Failed":
        return "Failed"
    for cs in st.get("containerStatuses") or []:
        last = (cs.get("lastState") or {}).get("terminated") or (cs.get("state") or {}).get("terminated")
        if last and last.get("exitCode") and cs.get("restartCount", 0) >= 1:
            meta = pod["metadata"]
            log = os.path.join(run_dir, "logs", podfiles.log_name(meta["namespace"], meta["name"], cs["name"]))
            words = _last_line(log) or _last_line(log + ".previous")  # the new run may not have spoken yet
            return f"CrashLoopBackOff (exit {last['exitCode']}{': ' + words if words else ''})"
    if st.get("phase") == "Running" and not Pod.of(pod).ready:
        for _, _, reason, message in reversed(store.events(key(pod))):
            if reason == "Unhealthy" and message.startswith("Readiness probe failed"):
                return message
            if reason in ("Ready", "Started"):
                break  # a failure older than the Pod's last start or readiness is no reason now
    return ""


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = [x for x in f.read().decode(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:200] if lines else ""


def _flag(name: str) -> str:
    return "" if clusters() == [name] else f" --cluster {name}"


def _expected_pods(m: Manifest) -> int:
    return sum(o["spec"]["replicas"] if o["kind"] == "Deployment" else 1
               for o in [*m.objects, *system_objects(m.cluster)] if o["kind"] in ("Deployment", "Pod"))


def _in_use(name: str) -> str:
    try:
        store = Store(cluster_dir(name))
    except FileNotFoundError:
        return (f'cluster name "{name}" is in use (an `nsk up` of it was interrupted?): '
                f"`sudo nsk down --cluster {name}` removes it")
    alive, refs = control_plane_pid(store)
    store.close()
    if alive:
        return (f'cluster "{name}" is already up (control plane pid {alive.pid}): `sudo nsk down --cluster {name}` '
                "removes it, or choose another name with --cluster")
    return (f'cluster "{name}" exists but its control plane is not running: `sudo nsk resume --cluster {name}` '
            f"starts a new one, `sudo nsk down --cluster {name}` removes the cluster")


@dataclass(frozen=True)
class DownResult:
    namespaces: int
    processes: int


def down(name: str) -> DownResult:
    """Remove every namespace, process and file of the cluster, and only those (root).

    Works from the records alone, so also after `kill -9` of the control plane or of `up`.
    """
    need_root("nsk down")
    from nsk.kernel import netns, process
    d = cluster_dir(name)
    if not os.path.isdir(d):
        raise NskError(f'cluster "{name}" is not up (clusters up: {", ".join(clusters()) or "none"})')
    killed = 0
    if os.path.exists(os.path.join(d, "store.db")):
        store = Store(d)
        # the control plane first, so that nothing new is made while we remove
        for _, ref_s, _ in store.owned("control-plane"):
            ref = process.ProcRef.from_str(ref_s)
            if process.alive(ref):
                process.stop(ref, grace=3.0)
                killed += 1
        for _, ref_s, _ in store.owned("process"):
            ref = process.ProcRef.from_str(ref_s)
            if process.alive(ref):
                process.kill(ref)
                killed += 1
        owned_ns = [n for _, n, _ in store.owned("netns")]
        etc_dirs = [n for _, n, _ in store.owned("etc")]
        store.close()
    else:
        owned_ns, etc_dirs = [], []
    removed = 0
    for ns in owned_ns:
        ino = netns.inode(ns)
        if ino is not None:
            # whatever still runs in a namespace we made (a command's children, an exec'd shell)
            for pid in process.in_netns(ino):
                st = process.start_time(pid)
                if st is not None:
                    process.kill(process.ProcRef(pid, st))
                    killed += 1
        if netns.remove(ns):
            removed += 1
    for etc in etc_dirs:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(etc)
    with contextlib.suppress(OSError):
        os.rmdir(netns.ETC_DIR)  # only when empty
    shutil.rmtree(d)
    with contextlib.suppress(OSError):
        os.rmdir(RUN_ROOT)
    return DownResult(removed, killed)
