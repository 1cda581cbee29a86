"""Proxy backends behind one interface, and the part that drives them (kube-proxy's
`pkg/proxy` shape: a Provider per node over shared change tracking).

    Services + Endpoints ──▶ model.service_ports (the change trackers' ServicePorts)
                                 │
                 ProxyManager: one Provider per node, of the cluster's mode
                                 │ plan(ports) -> restore input (pure render + diff)
                                 ▼
                 Kernel adapter: every node's restore side by side; conntrack cleanup
                 of stale UDP (model.stale_udp, shared by every mode); the cloud's routes

A mode is one entry in MODES: a class with `plan(ports, now)`, `applied(ports, started)`,
`failed()`, `cleanup(kernel, netns)` and `show(kernel, netns, table)` (what `nsk rules` prints). A failed sync (a restore the kernel refused) becomes a
Warning Event on the Node and a retry with back-off; it never stops the control plane.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import time
from typing import Callable, Protocol

from nsk.errors import KernelError
from nsk.proxy.model import NodeContext, ServicePort, by_port, stale_udp
from nsk.proxy.sync import IptablesProxier, IpvsProxier, NftablesProxier, UserspaceProxier

log = logging.getLogger("nsk.kube-proxy")
BACKOFF_START, BACKOFF_MAX = 0.1, 30.0
# kube-proxy's minSyncPeriod (its default) and burstSyncs: its BoundedFrequencyRunner is a
# token bucket of two syncs, refilled one a period. A change after a quiet spell is synced at
# once; a burst (a thousand Pods coming up) is merged into a sync a second, instead of one
# restore after another.
MIN_SYNC_PERIOD = 1.0
BURST_SYNCS = 2


class Provider(Protocol):
    mode: str
    tool: str  # what loads a plan: "iptables-restore" (--noflush), "nft" (-f -) or "sh" (a script)
    netns: str
    ctx: NodeContext

    def plan(self, ports: list[ServicePort], now: float) -> str | None: ...

    def applied(self, ports: list[ServicePort], started: float) -> None: ...

    def failed(self) -> None: ...

    def cleanup(self, kernel, netns: str) -> None: ...  # a switch away from this mode leaves nothing of it

    @staticmethod
    def show(kernel, netns: str, table: str | None = None) -> str: ...


MODES: dict[str, Callable[..., Provider]] = {"iptables": IptablesProxier, "nftables": NftablesProxier,
                                             "ipvs": IpvsProxier, "userspace": UserspaceProxier}


@functools.cache
def _ipvs_missing() -> str:
    """What this machine lacks for IPVS mode ("" when nothing). As kube-proxy does, the
    kernel modules are loaded when they are not (dummy with no device of its own, so the
    host's namespace gets none)."""
    for tool in ("ipvsadm", "ipset"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {tool})"
    for module, path, args in (("ip_vs", "/proc/net/ip_vs", ()), ("dummy", "/sys/module/dummy", ("numdummies=0",))):
        if not os.path.exists(path):
            try:
                subprocess.run(["modprobe", "-q", module, *args], capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                pass
            if not os.path.exists(path):
                return f"this kernel has no {'IPVS (ip_vs)' if module == 'ip_vs' else 'dummy link type'}"
    return ""


def fallback(mode: str) -> str:
    """Why `mode` runs as iptables mode ("" when it runs as asked): kube-proxy falls back to
    iptables on a kernel without IPVS, as the source describes."""
    if mode == "ipvs":
        missing = _ipvs_missing()
        return f"{missing}, so kube-proxy falls back to iptables mode" if missing else ""
    return ""


def provider_for(mode: str) -> tuple[str, Callable[..., Provider]]:
    """The mode's Provider class; a mode that cannot run here runs as iptables, and says why."""
    why = fallback(mode)
    if not why:
        return mode, MODES[mode]
    log.warning("proxy mode %s: %s", mode, why)
    return "iptables", MODES["iptables"]


class ProxyManager:
    """Every node's proxy: one sync brings all nodes to the same ServicePorts.

    A sync runs beside the control loop: the restores are started and the loop goes on;
    their pidfds, in the loop's selector, report the end. Changes that arrive meanwhile are
    merged into one next sync of the latest ServicePorts, never queued one by one; past a
    burst of two, a sync starts MIN_SYNC_PERIOD after the last at the earliest (`due_at`:
    the loop's timer).
    """

    def __init__(self, providers: dict[str, Provider], kernel, event: Callable[[str, str, str], None],
                 watch: Callable | None = None, unwatch: Callable | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.providers, self.kernel, self.event, self.clock = providers, kernel, event, clock
        self.watch, self.unwatch = watch or (lambda fd, cb: None), unwatch or (lambda fd: None)
        self.last_ports: dict[tuple, ServicePort] = {}
        self.backoff = 0.0
        self.retry_at = 0.0
        self.healthy = True
        self.wanted: tuple[list[ServicePort], int] | None = None  # the latest (ports, revision) asked for
        self.synced_rev = -1  # the revision whose ports every node's kernel has
        self.last_success = 0.0  # wall time of the last sync that left every node's rules up to date
        self._job = None  # (kernel job, [(node, provider)], ports, revision, started)
        self.min_sync_period = MIN_SYNC_PERIOD
        self.tokens, self.tokens_at = float(BURST_SYNCS), float("-inf")  # the bucket, as of tokens_at
        self.due_at: float | None = None  # a wanted sync waits for a token: when it may start
        self.on_done: Callable[[], None] = lambda: None  # the loop's hook: a sync ended

    @property
    def busy(self) -> bool:
        """A restore is running, or a wanted state waits for its turn."""
        return self._job is not None or (self.wanted is not None and self.wanted[1] > self.synced_rev)

    def sync(self, ports: list[ServicePort], revision: int = 0) -> None:
        """Ask for every node's rules to be `ports` (read at `revision`); starts a restore
        unless one runs (then the latest wish waits for it) or the back-off holds."""
        self.wanted = (ports, revision)
        self._start()

    def poll(self) -> None:
        """kube-proxy's periodic look (every --iptables-sync-period): each mode checks that
        its rules are still there and syncs what is due; idle and intact, nothing is written."""
        if not self.busy and self.healthy:
            self._start()

    def retry(self) -> None:
        """The back-off or the minimum sync period has passed: try the latest wish again."""
        self._start()

    def _start(self) -> None:
        if self._job is not None or self.wanted is None:
            return
        now = self.clock()
        if now < self.retry_at:
            return
        self.due_at = self._wait(now)
        if self.due_at is not None:
            return
        ports, rev = self.wanted
        todo = [(node, p, text) for node, p in self.providers.items() if (text := p.plan(ports, now)) is not None]
        if not todo:
            self._succeeded(ports, rev)
            return
        self.tokens -= 1
        try:
            job = self.kernel.restore_start([(p.netns, text) for _, p, text in todo], todo[0][1].tool)
        except KernelError as e:
            self._failed([(n, p) for n, p, _ in todo], e, now)
            return
        self._job = (job, [(n, p) for n, p, _ in todo], ports, rev, now)
        if job.done():
            self._finish()
            return
        for fd in job.fds:
            self.watch(fd, self._check)

    def _wait(self, now: float) -> float | None:
        """When a sync may start, if not now: the bucket refilled up to `now` holds no token."""
        if self.min_sync_period <= 0:
            self.tokens = float(BURST_SYNCS)
            return None
        self.tokens = min(float(BURST_SYNCS), self.tokens + (now - self.tokens_at) / self.min_sync_period)
        self.tokens_at = now
        if self.tokens >= 1 - 1e-9:  # (a token refilled in float steps may fall short by a rounding)
            self.tokens = max(self.tokens, 1.0)
            return None
        return now + (1 - self.tokens) * self.min_sync_period

    def _check(self) -> None:
        if self._job is not None and self._job[0].done():
            self._finish()
            self.on_done()

    def _finish(self) -> None:
        job, todo, ports, rev, started = self._job
        self._job = None
        for fd in job.fds:
            self.unwatch(fd)
        try:
            job.result()
        except KernelError as e:
            self._failed(todo, e, self.clock())
            return
        for _, p in todo:
            p.applied(ports, started)
        self._succeeded(ports, rev)

    def _succeeded(self, ports: list[ServicePort], rev: int) -> None:
        self.backoff, self.retry_at, self.healthy = 0.0, 0.0, True
        self.last_success = time.time()
        self.synced_rev = max(self.synced_rev, rev)
        self._clear_stale_udp(ports)
        if self.wanted is not None and self.wanted[1] > rev:
            self._start()  # what arrived meanwhile, merged into one sync

    def _failed(self, todo, e: KernelError, now: float) -> None:
        for _, p in todo:
            p.failed()
        self.backoff = min(BACKOFF_MAX, self.backoff * 2 if self.backoff else BACKOFF_START)
        self.retry_at = now + self.backoff
        self.healthy = False
        log.error("proxy sync failed (retry in %.1f s): %s", self.backoff, e)
        for node, _ in todo:
            self.event(node, "FailedSync", f"{e} (retry in {self.backoff:.1f} s)")

    def _clear_stale_udp(self, ports: list[ServicePort]) -> None:
        new = by_port(ports)
        for args in stale_udp(self.last_ports, new):
            for p in self.providers.values():
                try:
                    self.kernel.conntrack_delete(p.netns, args)
                except KernelError as e:  # a stale entry outlives its timeout at worst
                    log.warning("%s", e)
        self.last_ports = new
