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
`failed()` and `rules(table)`. A failed sync (a restore the kernel refused) becomes a
Warning Event on the Node and a retry with back-off; it never stops the control plane.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

from nsk.errors import KernelError
from nsk.proxy.model import NodeContext, ServicePort, by_port, stale_udp
from nsk.proxy.sync import IptablesProxier

log = logging.getLogger("nsk.kube-proxy")
BACKOFF_START, BACKOFF_MAX = 0.1, 30.0


class Provider(Protocol):
    mode: str
    netns: str
    ctx: NodeContext

    def plan(self, ports: list[ServicePort], now: float) -> str | None: ...

    def applied(self, ports: list[ServicePort], started: float) -> None: ...

    def failed(self) -> None: ...

    def rules(self, table: str | None = None) -> str: ...

    @staticmethod
    def show(kernel, netns: str, table: str | None = None) -> str: ...


MODES: dict[str, Callable[..., Provider]] = {"iptables": IptablesProxier}


def provider_for(mode: str) -> tuple[str, Callable[..., Provider]]:
    """The mode's Provider class; a mode not built yet runs as iptables, and says so."""
    if mode in MODES:
        return mode, MODES[mode]
    log.warning("proxy mode %s is not implemented yet: using iptables", mode)
    return "iptables", MODES["iptables"]


class ProxyManager:
    """Every node's proxy: one sync brings all nodes to the same ServicePorts."""

    def __init__(self, providers: dict[str, Provider], kernel, event: Callable[[str, str, str], None],
                 clock: Callable[[], float] = time.monotonic):
        self.providers, self.kernel, self.event, self.clock = providers, kernel, event, clock
        self.last_ports: dict[tuple, ServicePort] = {}
        self.backoff = 0.0
        self.retry_at = 0.0
        self.healthy = True

    def sync(self, ports: list[ServicePort]) -> bool:
        """Bring every node's rules to `ports`; False when the kernel refused (retried later)."""
        now = self.clock()
        if now < self.retry_at:
            return False
        todo = [(node, p, text) for node, p in self.providers.items() if (text := p.plan(ports, now)) is not None]
        try:
            if todo:
                self.kernel.restore([(p.netns, text) for _, p, text in todo])
        except KernelError as e:
            for _, p, _ in todo:
                p.failed()
            self.backoff = min(BACKOFF_MAX, self.backoff * 2 if self.backoff else BACKOFF_START)
            self.retry_at = now + self.backoff
            self.healthy = False
            log.error("proxy sync failed (retry in %.1f s): %s", self.backoff, e)
            for node, _, _ in todo:
                self.event(node, "FailedSync", f"{e} (retry in {self.backoff:.1f} s)")
            return False
        for _, p, _ in todo:
            p.applied(ports, now)
        self.backoff, self.retry_at, self.healthy = 0.0, 0.0, True
        self._clear_stale_udp(ports)
        return True

    def _clear_stale_udp(self, ports: list[ServicePort]) -> None:
        new = by_port(ports)
        for args in stale_udp(self.last_ports, new):
            for p in self.providers.values():
                try:
                    self.kernel.conntrack_delete(p.netns, args)
                except KernelError as e:  # a stale entry outlives its timeout at worst
                    log.warning("%s", e)
        self.last_ports = new
