"""kube-proxy's modes for one node: render, compare, load (through the kernel adapter):
iptables (iptables-restore), nftables (`nft -f`, one transaction), IPVS (ipvsadm,
ipset, iptables-restore) and userspace (iptables-restore, and the node's proxy process). Each plugs in behind
nsk/proxy/provider.py's Provider interface."""

from __future__ import annotations

import logging
import re
import time

from nsk.errors import KernelError
from nsk.proxy import iptables as rules
from nsk.proxy import ipvs, userspace
from nsk.proxy import nftables as nft
from nsk.proxy.model import NodeContext, ServicePort, node_port_ips

log = logging.getLogger("nsk.kube-proxy")
# kube-proxy's FullSyncPeriod (pkg/proxy/util): at least this often a sync writes every
# chain, which also undoes what a person changed by hand; in between, only the chains that
# changed. In large-cluster mode there is no periodic full sync (kubernetes#138571).
FULL_SYNC_PERIOD = 3600.0
# its --iptables-sync-period: how often it looks for its canary chain (a full sync when it is
# gone: someone flushed the tables) and how long it waits to retry a failed sync
SYNC_PERIOD = 30.0
_CHAIN = re.compile(r"^:(KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z0-9]{16}) ")


class IptablesProxier:
    mode = "iptables"
    tool = "iptables-restore"

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
        self.last_ports: list[ServicePort] | None = None  # what `last` was rendered from
        self.large = False  # kube-proxy's large-cluster mode, as of the last sync
        self.full_at = 0.0  # monotonic time of the last full sync
        self.canary_at = 0.0  # monotonic time the canary chain was last looked for
        self.last_sync_ms = 0.0
        self._job: tuple | None = None  # (ruleset, text, full, large) of the restore under way
        # on the nft backend, big syncs go in several transactions (rules.staged)
        self.budget = rules.NFT_BACKEND_BUDGET if kernel.iptables_backend == "nft" else 0

    # ---- the Provider interface ---------------------------------------------------------

    def plan(self, ports: list[ServicePort], now: float) -> str | None:
        """The restore input that brings `ports` to the kernel (every chain on the first sync,
        after a failure, or when FULL_SYNC_PERIOD has passed, else only what changed); None
        when the kernel already has them."""
        if self.last is not None and now - self.canary_at >= SYNC_PERIOD:
            self.canary_at = now
            if not self._canary_present():
                log.warning("%s: the canary chain is gone (tables flushed?): syncing every chain", self.netns)
                self.last = None
                self.pending_jumps = rules.node_missing_jumps(self.kernel, self.netns)
        full = self.last is None or (now - self.full_at >= FULL_SYNC_PERIOD and not self.large)
        if not full and ports == self.last_ports:
            return None  # nothing changed: not even a render
        large = rules.large_cluster(ports)
        ruleset = rules.render(ports, self.ctx, self.previous, large)
        if full:
            if self.last is not None:
                # as kube-proxy ensures its jumps from the built-in chains on every sync: one
                # deleted by hand (PREROUTING -> KUBE-SERVICES, say) comes back
                self.pending_jumps = rules.node_missing_jumps(self.kernel, self.netns)
            text, full = ruleset.full(self.budget), True
        elif (ruleset.filter_text, ruleset.nat_rules, ruleset.chains) == \
                (self.last.filter_text, self.last.nat_rules, self.last.chains):
            return None  # (only the chains to delete may differ: those are gone already)
        else:
            text, full = ruleset.since(self.last, self.budget), False
        self._job = (ruleset, text, full, large)
        self.last = None  # until the restore succeeds: after a failure, the next sync is a full one
        # the jumps first: they create the chains, which the ruleset then declares (flushes) and fills
        return self.pending_jumps + text

    def applied(self, ports: list[ServicePort], started: float) -> None:
        """The restore `plan` returned is in the kernel."""
        ruleset, text, full, large = self._job
        self._job = None
        if full:
            self.full_at = self.canary_at = started
        self.previous = ruleset.nat_chains
        self.last, self.last_ports, self.large = ruleset, ports, large
        self.pending_jumps = ""
        self.last_sync_ms = (time.monotonic() - started) * 1000
        log.info("%s: synced %d service ports (%d nat, %d filter rules; %s, %d lines) in %.1f ms", self.netns,
                 len(ports), *ruleset.rule_counts, "full" if full else "partial", text.count("\n"),
                 self.last_sync_ms)

    def failed(self) -> None:
        """The restore failed: self.last stays None, so the next sync writes every chain. A
        staged restore may have made some of its chains before it stopped: they count as
        made, so the next sync deletes those it no longer wants (declaring one that is not
        there, then deleting it, does nothing)."""
        if self._job is not None:
            self.previous |= self._job[0].nat_chains
        self._job = None

    @staticmethod
    def cleanup(kernel, netns: str) -> None:
        """Remove every trace of this mode from the node (a switch to another mode, as
        `kube-proxy --cleanup` does): the jumps from the built-in chains, then the chains."""
        text = rules.cleanup(kernel.save(netns))
        if text:
            kernel.restore(netns, text)

    def _canary_present(self) -> bool:
        try:
            return bool(self.kernel.save(self.netns, chains=[("mangle", rules.KUBE_PROXY_CANARY)]))
        except KernelError as e:
            log.warning("%s", e)
            return False

    @staticmethod
    def show(kernel, netns: str, table: str | None = None) -> str:
        """A node's live rules of this mode, as `iptables-save` prints them there (root)."""
        return kernel.save(netns, table)


class NftablesProxier:
    """kube-proxy's nftables mode: its table `ip kube-proxy`, written whole on the first
    sync, after a failure and hourly (FullSyncPeriod), and otherwise one small transaction
    of what changed (chains, set and map elements)."""

    mode = "nftables"
    tool = "nft"

    def __init__(self, netns: str, ctx: NodeContext, kernel, fresh: bool = False):
        self.netns, self.kernel = netns, kernel
        # nftables mode's default (nodePortAddresses "primary"): NodePorts on the node's IP;
        # with CIDRs, on every local address within them; never on localhost
        nets = [c for c in ctx.node_port_addresses if ":" not in c]
        ips = node_port_ips(ctx) if nets else ctx.node_ips[:1]
        self.ctx = NodeContext(ctx.node, ctx.cluster_cidr, ips, ctx.node_port_addresses, ctx.service_cidr)
        self.last: nft.NftRuleset | None = None
        self.last_ports: list[ServicePort] | None = None
        self.full_at = 0.0
        self.last_sync_ms = 0.0
        self._job: tuple | None = None

    def plan(self, ports: list[ServicePort], now: float) -> str | None:
        full = self.last is None or now - self.full_at >= FULL_SYNC_PERIOD
        if not full and ports == self.last_ports:
            return None
        ruleset = nft.render(ports, self.ctx, self.ctx.service_cidr)
        if full:
            text = ruleset.text + nft.masq_table(self.ctx.cluster_cidr)
        else:
            text = ruleset.since(self.last)
            if not text:
                self.last_ports = ports
                return None
        self._job = (ruleset, text, full)
        self.last = None  # until the transaction succeeds: after a failure, the next sync is a full one
        return text

    def applied(self, ports: list[ServicePort], started: float) -> None:
        ruleset, text, full = self._job
        self._job = None
        if full:
            self.full_at = started
        self.last, self.last_ports = ruleset, ports
        self.last_sync_ms = (time.monotonic() - started) * 1000
        log.info("%s: synced %d service ports (%d rules in %d chains; %s, %d lines) in %.1f ms", self.netns,
                 len(ports), ruleset.rule_count, len(ruleset.chains), "full" if full else "partial",
                 text.count("\n"), self.last_sync_ms)

    def failed(self) -> None:
        self._job = None

    @staticmethod
    def cleanup(kernel, netns: str) -> None:
        """Remove this mode's tables from the node (a switch to another mode)."""
        kernel.nft(netns, "".join(f"add table {t}\ndelete table {t}\n" for t in (nft.TABLE, nft.MASQ_TABLE)))

    @staticmethod
    def show(kernel, netns: str, table: str | None = None) -> str:
        """The node's live kube-proxy table, as `nft list table ip kube-proxy` prints it there."""
        return kernel.nft_list(netns, nft.TABLE)


class IpvsProxier:
    """kube-proxy's IPVS mode: virtual servers through `ipvsadm -R`, its ipsets through
    `ipset restore`, the addresses on kube-ipvs0 through `ip -batch`, and its few iptables
    rules through iptables-restore, as one `sh -e` script a sync, in kube-proxy's order.
    Each sync does only what changed since the last (kube-proxy recomputes everything and
    compares with the kernel: the same result); the kernel's state is read back at the start
    and after a failure."""

    mode = "ipvs"
    tool = "sh"
    DRAIN_CHECK = 60.0  # kube-proxy's rsCheckDeleteInterval: how often draining real servers are looked at

    def __init__(self, netns: str, ctx: NodeContext, kernel, fresh: bool = False):
        self.netns, self.ctx, self.kernel = netns, ctx, kernel
        self.have: ipvs.IpvsState | None = ipvs.IpvsState() if fresh else None  # None: read the kernel first
        self.last_ports: list[ServicePort] | None = None
        self.last_iptables = ""
        self.pending_jumps = rules.missing_jumps("", ipvs.JUMPS, canary=False) if fresh else ""
        self.first = True
        self.full_at: float | None = None  # when the kernel's state was last read (or known)
        self.drain_at = 0.0
        self.last_sync_ms = 0.0
        self._job: tuple | None = None

    def plan(self, ports: list[ServicePort], now: float) -> str | None:
        if self.full_at is None and self.have is not None:
            self.full_at = now  # a fresh node: known empty
        if self.have is None or now - self.full_at >= FULL_SYNC_PERIOD:
            self._observe()
            self.full_at = now
        draining = self.have.draining()
        drained: frozenset[tuple[str, str]] = frozenset()
        if draining and (ports != self.last_ports or now - self.drain_at >= self.DRAIN_CHECK):
            self.drain_at = now
            try:
                conns = ipvs.parse_proc_ip_vs(self.kernel.proc(self.netns, "net/ip_vs"))
                drained = frozenset(k for k in draining if conns.get(k, 0) == 0)
            except KernelError as e:  # they drain on: looked at again at the next check
                log.warning("%s", e)
        if ports == self.last_ports and not drained and not self.pending_jumps:
            return None
        ruleset = ipvs.render(ports, self.ctx, self.ctx.ipvs_scheduler)
        ch = ipvs.changes(self.have, ruleset.state, drained, create_sets=self.first)
        iptables = self.pending_jumps + ruleset.iptables if (self.pending_jumps or
                                                             ruleset.iptables != self.last_iptables) else ""
        if not ch and not iptables:
            self.last_ports = ports
            return None
        self._job = (ruleset, ch, iptables)
        return self._script(ch, iptables)

    def _script(self, ch: "ipvs.Changes", iptables: str) -> str:
        def doc(command: str, lines) -> list[str]:
            return [f"{command} <<'NSK_EOF'", *lines, "NSK_EOF"] if lines else []
        out: list[str] = []
        if self.first:  # kube-proxy's sysctls, and its dummy device (kept down)
            out += [f"echo {v} > /proc/sys/{k.replace('.', '/')}" for k, v in ipvs.SYSCTLS]
            out.append(f"ip link show {ipvs.DEVICE} >/dev/null 2>&1 || ip link add {ipvs.DEVICE} type dummy")
        out += doc("ip -batch -", [f"address replace {a}/32 dev {ipvs.DEVICE}" for a in ch.bind])
        out += doc("ipset -exist restore", ch.ipset)
        out += doc("ipvsadm -R", ch.ipvsadm)
        out += doc(f"iptables-{self.kernel.iptables_backend}-restore -w 5 --noflush",
                   iptables.splitlines())
        out += doc("ip -force -batch -", [f"address del {a}/32 dev {ipvs.DEVICE}" for a in ch.unbind])
        return "\n".join(out) + "\n"

    def _observe(self) -> None:
        """The kernel's IPVS state as it is (a control plane restarted, a failed sync)."""
        out = self.kernel.output
        try:
            addrs = frozenset(line.split()[3].split("/")[0] for line in
                              out(self.netns, ["ip", "-4", "-o", "address", "show", "dev", ipvs.DEVICE]).splitlines()
                              if len(line.split()) > 3)
        except KernelError:  # no kube-ipvs0 yet
            addrs = frozenset()
        try:
            services = ipvs.parse_ipvsadm_save(out(self.netns, ["ipvsadm", "-S", "-n"]))
            sets = ipvs.parse_ipset_save(out(self.netns, ["ipset", "save"]))
        except KernelError as e:
            log.warning("%s", e)
            services, sets = {}, {}
        self.have = ipvs.IpvsState(addrs, services, sets)
        self.first = True
        self.pending_jumps = rules.node_missing_jumps(self.kernel, self.netns, ipvs.JUMPS, canary=False)
        self.last_iptables = ""

    def applied(self, ports: list[ServicePort], started: float) -> None:
        ruleset, ch, iptables = self._job
        self._job = None
        self.have, self.last_ports, self.first = ch.after, ports, False
        if iptables:
            self.last_iptables, self.pending_jumps = ruleset.iptables, ""
        self.last_sync_ms = (time.monotonic() - started) * 1000
        vss, rss = ruleset.counts
        log.info("%s: synced %d service ports (%d virtual, %d real servers; %d ipvsadm, %d ipset lines%s) in %.1f ms",
                 self.netns, len(ports), vss, rss, len(ch.ipvsadm), len(ch.ipset),
                 ", iptables" if iptables else "", self.last_sync_ms)

    def failed(self) -> None:
        self._job = None
        self.have = None  # read the kernel again before the next sync

    @staticmethod
    def cleanup(kernel, netns: str) -> None:
        """Remove every trace of IPVS mode (as `kube-proxy --cleanup`): the virtual servers,
        kube-ipvs0, the KUBE-* chains and jumps, then the ipsets they matched."""
        IptablesProxier.cleanup(kernel, netns)
        kernel.output(netns, ["/bin/sh", "-c", f"ipvsadm -C; ip link del {ipvs.DEVICE} 2>/dev/null; "
                              "for s in $(ipset list -n | grep '^KUBE-'); do ipset destroy $s; done; true"])

    @staticmethod
    def show(kernel, netns: str, table: str | None = None) -> str:
        """`ipvsadm -Ln`, kube-proxy's ipsets (`ipset save`) and `iptables-save`, as on a node."""
        if table:
            return kernel.save(netns, table)
        sets = "".join(line + "\n" for line in kernel.output(netns, ["ipset", "save"]).splitlines()
                       if line.split()[1:2] and line.split()[1].startswith("KUBE-"))
        return (f"# ipvsadm -Ln\n{kernel.output(netns, ['ipvsadm', '-L', '-n'])}"
                f"# ipset save (kube-proxy's sets)\n{sets}# iptables-save\n{kernel.save(netns)}")


class UserspaceProxier:
    """kube-proxy's userspace mode (removed in Kubernetes 1.26): the node's kube-proxy Pod
    listens on a proxy port a Service port and copies the bytes to an endpoint; this
    provider gives out the proxy ports, hands the node's table to that process
    (userspace.publish) and writes the KUBE-PORTALS-* and KUBE-NODEPORT-* chains that send
    the Services' traffic to it."""

    mode = "userspace"
    tool = "iptables-restore"

    def __init__(self, netns: str, ctx: NodeContext, kernel, fresh: bool = False):
        self.netns, self.ctx, self.kernel = netns, ctx, kernel
        self.proxy_ports: dict[str, int] = {}
        self.last_ports: list[ServicePort] | None = None
        self.last_text: str | None = None
        self.pending_jumps = rules.missing_jumps("", userspace.JUMPS, canary=False) if fresh else \
            rules.node_missing_jumps(kernel, netns, userspace.JUMPS, canary=False)
        self.last_sync_ms = 0.0
        self._job: str | None = None

    def plan(self, ports: list[ServicePort], now: float) -> str | None:
        if ports == self.last_ports and self.last_text is not None:
            return None
        self.proxy_ports = userspace.allocate(ports, self.proxy_ports)
        if self.ctx.run_dir:
            userspace.publish(self.ctx.run_dir, self.ctx.node, userspace.table(ports, self.proxy_ports))
        text = userspace.render(ports, self.ctx, self.proxy_ports)
        if text == self.last_text:
            self.last_ports = ports
            return None
        self._job = text
        return self.pending_jumps + text

    def applied(self, ports: list[ServicePort], started: float) -> None:
        self.last_text, self.last_ports, self._job = self._job, ports, None
        self.pending_jumps = ""
        self.last_sync_ms = (time.monotonic() - started) * 1000
        log.info("%s: synced %d service ports (userspace: %d proxy ports) in %.1f ms", self.netns, len(ports),
                 len(self.proxy_ports), self.last_sync_ms)

    def failed(self) -> None:
        self._job, self.last_text = None, None
        self.pending_jumps = rules.node_missing_jumps(self.kernel, self.netns, userspace.JUMPS, canary=False)

    def cleanup(self, kernel, netns: str) -> None:
        """The chains and jumps go, and the node's proxy closes its sockets."""
        IptablesProxier.cleanup(kernel, netns)
        if self.ctx.run_dir:
            userspace.publish(self.ctx.run_dir, self.ctx.node, [])

    @staticmethod
    def show(kernel, netns: str, table: str | None = None) -> str:
        """`iptables-save`, and the proxy sockets the node's kube-proxy listens on (`ss`)."""
        if table:
            return kernel.save(netns, table)
        lo, hi = userspace.PORT_RANGE
        listening = kernel.output(netns, ["ss", "-H", "-ltunp", f"sport >= :{lo} and sport <= :{hi}"])
        return f"# iptables-save\n{kernel.save(netns)}# ss -ltunp (the proxy sockets, ports {lo}-{hi})\n{listening}"
