"""kube-proxy's iptables mode for one node: render, compare, restore (through the kernel
adapter). It plugs in behind nsk/proxy/provider.py's Provider interface."""

from __future__ import annotations

import logging
import re
import time

from nsk.proxy import iptables as rules
from nsk.proxy.model import NodeContext, ServicePort

log = logging.getLogger("nsk.kube-proxy")
# kube-proxy's --iptables-sync-period: at least this often a sync writes every chain, which
# also undoes what a person changed by hand; in between, only the chains that changed
FULL_SYNC_PERIOD = 30.0
_CHAIN = re.compile(r"^:(KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z0-9]{16}) ")


class IptablesProxier:
    mode = "iptables"

    def __init__(self, netns: str, ctx: NodeContext, kernel, fresh: bool = False):
        """`fresh`: the node's namespace was just made, its tables are empty: the base jumps
        go out with the first sync instead of costing an iptables-save and a restore now."""
        self.netns, self.ctx, self.kernel = netns, ctx, kernel
        if fresh:
            self.previous: frozenset[str] = frozenset()
            self.pending_jumps = rules.missing_jumps("")
        else:
            saved = kernel.save(netns)
            # chains a previous control plane left: rewritten or deleted by the first sync
            self.previous = frozenset(m.group(1) for line in saved.splitlines() if (m := _CHAIN.match(line)))
            self.pending_jumps = rules.missing_jumps(saved)
        self.last: rules.Ruleset | None = None  # what the kernel has; None: unknown, sync fully
        self.full_at = 0.0  # monotonic time of the last full sync
        self.last_sync_ms = 0.0
        self._job: tuple[rules.Ruleset, str, bool] | None = None

    # ---- the Provider interface ---------------------------------------------------------

    def plan(self, ports: list[ServicePort], now: float) -> str | None:
        """The restore input that brings `ports` to the kernel (every chain on the first sync,
        after a failure, or when FULL_SYNC_PERIOD has passed, else only what changed); None
        when the kernel already has them."""
        ruleset = rules.render(ports, self.ctx, self.previous)
        if self.last is None or now - self.full_at >= FULL_SYNC_PERIOD:
            if self.last is not None:
                # as kube-proxy ensures its jumps from the built-in chains on every sync: one
                # deleted by hand (PREROUTING -> KUBE-SERVICES, say) comes back
                self.pending_jumps = rules.missing_jumps(self.kernel.save(self.netns))
            text, full = ruleset.text, True
        elif (ruleset.filter_text, ruleset.nat_rules, ruleset.chains) == \
                (self.last.filter_text, self.last.nat_rules, self.last.chains):
            return None  # (only the chains to delete may differ: those are gone already)
        else:
            text, full = ruleset.since(self.last), False
        self._job = (ruleset, text, full)
        self.last = None  # until the restore succeeds: after a failure, the next sync is a full one
        # the jumps first: they create the chains, which the ruleset then declares (flushes) and fills
        return self.pending_jumps + text

    def applied(self, ports: list[ServicePort], started: float) -> None:
        """The restore `plan` returned is in the kernel."""
        ruleset, text, full = self._job
        self._job = None
        if full:
            self.full_at = started
        self.previous = ruleset.nat_chains
        self.last = ruleset
        self.pending_jumps = ""
        self.last_sync_ms = (time.monotonic() - started) * 1000
        log.info("%s: synced %d service ports (%d nat, %d filter rules; %s, %d lines) in %.1f ms", self.netns,
                 len(ports), *ruleset.rule_counts, "full" if full else "partial", text.count("\n"),
                 self.last_sync_ms)

    def failed(self) -> None:
        self._job = None  # self.last stays None: the next sync writes every chain

    @staticmethod
    def show(kernel, netns: str, table: str | None = None) -> str:
        """A node's live rules of this mode, as `iptables-save` prints them there (root)."""
        return kernel.save(netns, table)
