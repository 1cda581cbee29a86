"""kube-proxy's sync loop for one node in iptables mode: render, compare, restore (root)."""

from __future__ import annotations

import logging
import re
import time

from nsk.kernel import iptables
from nsk.proxy import iptables as rules
from nsk.proxy.model import ServicePort

log = logging.getLogger("nsk.kube-proxy")
_CHAIN = re.compile(r"^:(KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z0-9]{16}) ")


class IptablesProxier:
    def __init__(self, netns: str, ctx: rules.NodeContext, fresh: bool = False):
        """`fresh`: the node's namespace was just made, its tables are empty: the base jumps
        go out with the first sync instead of costing an iptables-save and a restore now."""
        self.netns, self.ctx = netns, ctx
        if fresh:
            self.previous: frozenset[str] = frozenset()
            self.pending_jumps = rules.missing_jumps("")
        else:
            saved = iptables.save(netns)
            # chains a previous control plane left: rewritten or deleted by the first sync
            self.previous = frozenset(m.group(1) for line in saved.splitlines() if (m := _CHAIN.match(line)))
            self.pending_jumps = rules.missing_jumps(saved)
        self.last_text: str | None = None
        self.last_ports: dict[tuple, ServicePort] = {}
        self.last_sync_ms = 0.0

    def plan(self, ports: list[ServicePort]) -> rules.Ruleset | None:
        """The rules for `ports`, or None when the kernel already has them."""
        ruleset = rules.render(ports, self.ctx, self.previous)
        return None if ruleset.text == self.last_text else ruleset

    def applied(self, ports: list[ServicePort], ruleset: rules.Ruleset, started: float) -> None:
        """Record a ruleset the caller has restored, and clear stale UDP conntrack entries."""
        self._clear_stale_udp(ports)
        self.previous = ruleset.nat_chains
        self.last_text = ruleset.text
        self.last_sync_ms = (time.monotonic() - started) * 1000
        log.info("%s: synced %d service ports (%d nat, %d filter rules) in %.1f ms", self.netns, len(ports),
                 ruleset.nat_rules, ruleset.filter_rules, self.last_sync_ms)


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
    todo = [(p, rs) for p in proxiers if (rs := p.plan(ports)) is not None]
    if todo:
        # the jumps first: they create the chains, which the ruleset then declares (flushes) and fills
        iptables.restore_many([(p.netns, p.pending_jumps + rs.text) for p, rs in todo])
    for p, rs in todo:
        p.applied(ports, rs, t)
        p.pending_jumps = ""
    return len(todo)
