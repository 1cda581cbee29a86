"""kube-proxy's sync loop for one node in iptables mode: render, compare, restore (root)."""

from __future__ import annotations

import logging
import re
import time
from typing import Callable

from nsk.kernel import iptables
from nsk.proxy import iptables as rules
from nsk.proxy.model import ServicePort

log = logging.getLogger("nsk.kube-proxy")
# kube-proxy's --iptables-sync-period: at least this often a sync writes every chain, which
# also undoes what a person changed by hand; in between, only the chains that changed
FULL_SYNC_PERIOD = 30.0
_CHAIN = re.compile(r"^:(KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z0-9]{16}) ")


class IptablesProxier:
    def __init__(self, netns: str, ctx: rules.NodeContext, fresh: bool = False,
                 save: Callable[[str], str] = iptables.save):
        """`fresh`: the node's namespace was just made, its tables are empty: the base jumps
        go out with the first sync instead of costing an iptables-save and a restore now.
        `save`: iptables-save in a namespace (root)."""
        self.netns, self.ctx, self._save = netns, ctx, save
        if fresh:
            self.previous: frozenset[str] = frozenset()
            self.pending_jumps = rules.missing_jumps("")
        else:
            saved = save(netns)
            # chains a previous control plane left: rewritten or deleted by the first sync
            self.previous = frozenset(m.group(1) for line in saved.splitlines() if (m := _CHAIN.match(line)))
            self.pending_jumps = rules.missing_jumps(saved)
        self.last: rules.Ruleset | None = None  # what the kernel has; None: unknown, sync fully
        self.full_at = 0.0  # monotonic time of the last full sync
        self.last_ports: dict[tuple, ServicePort] = {}
        self.last_sync_ms = 0.0

    def plan(self, ports: list[ServicePort], now: float) -> tuple[rules.Ruleset, str, bool] | None:
        """The rules for `ports`, the restore that brings them, and whether it is a full one:
        every chain on the first sync, after a failure, or when FULL_SYNC_PERIOD has passed,
        else only what changed; None when the kernel already has them."""
        ruleset = rules.render(ports, self.ctx, self.previous)
        if self.last is None or now - self.full_at >= FULL_SYNC_PERIOD:
            if self.last is not None:
                # as kube-proxy ensures its jumps from the built-in chains on every sync: one
                # deleted by hand (PREROUTING -> KUBE-SERVICES, say) comes back
                self.pending_jumps = rules.missing_jumps(self._save(self.netns))
            return ruleset, ruleset.text, True
        if (ruleset.filter_text, ruleset.nat_rules, ruleset.chains) == \
                (self.last.filter_text, self.last.nat_rules, self.last.chains):
            return None  # (only the chains to delete may differ: those are gone already)
        return ruleset, ruleset.since(self.last), False

    def applied(self, ports: list[ServicePort], ruleset: rules.Ruleset, text: str, full: bool,
                started: float) -> None:
        """Record a ruleset the caller has restored, and clear stale UDP conntrack entries."""
        self._clear_stale_udp(ports)
        if full:
            self.full_at = started
        self.previous = ruleset.nat_chains
        self.last = ruleset
        self.last_sync_ms = (time.monotonic() - started) * 1000
        log.info("%s: synced %d service ports (%d nat, %d filter rules; %s, %d lines) in %.1f ms", self.netns,
                 len(ports), *ruleset.rule_counts, "full" if full else "partial", text.count("\n"),
                 self.last_sync_ms)

    def _clear_stale_udp(self, ports: list[ServicePort]) -> None:
        """UDP has no connection to end: conntrack entries keep sending a client to an
        endpoint that is gone, or to the REJECT of a Service that had none. Delete them, as
        kube-proxy does."""
        now = {(p.namespace, p.name, p.port_name, p.protocol): p for p in ports}
        for k, old in self.last_ports.items():
            if old.protocol != "UDP":
                continue
            new = now.get(k)
            old_ready = {e.ip for e in old.endpoints if e.ready}
            new_ready = {e.ip for e in new.endpoints if e.ready} if new else set()
            for ip in sorted(old_ready - new_ready):
                iptables.conntrack_delete(self.netns, "-p", "udp", "--orig-dst", old.cluster_ip, "--dst-nat", ip)
                if old.node_port:
                    iptables.conntrack_delete(self.netns, "-p", "udp", "--dport", str(old.node_port),
                                              "--dst-nat", ip)
        for k, new in now.items():
            old = self.last_ports.get(k)
            if new.protocol == "UDP" and any(e.ready for e in new.endpoints) and \
                    (old is None or not any(e.ready for e in old.endpoints)):
                iptables.conntrack_delete(self.netns, "-p", "udp", "--orig-dst", new.cluster_ip)
        self.last_ports = now


def sync_all(proxiers: list[IptablesProxier], ports: list[ServicePort]) -> int:
    """Sync every node's rules, the restores running side by side; how many nodes changed."""
    t = time.monotonic()
    todo = [(p, *plan) for p in proxiers if (plan := p.plan(ports, t)) is not None]
    for p, *_ in todo:
        p.last = None  # until the restore succeeds: after a failure, the next sync is a full one
    if todo:
        # the jumps first: they create the chains, which the ruleset then declares (flushes) and fills
        iptables.restore_many([(p.netns, p.pending_jumps + text) for p, _, text, _ in todo])
    for p, rs, text, full in todo:
        p.applied(ports, rs, text, full, t)
        p.pending_jumps = ""
    return len(todo)
