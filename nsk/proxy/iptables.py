"""kube-proxy's iptables mode as a pure renderer: Service ports in, iptables-restore text out.

The chains, their names, the rule order and the comments are kube-proxy's
(pkg/proxy/iptables/proxier.go), so `iptables-save` on an nsk node reads like a real
node's:

    PREROUTING/OUTPUT -> KUBE-SERVICES -> KUBE-SVC-<hash>  (ClusterIP, policy Cluster)
                                       -> KUBE-SVL-<hash>  (policy Local)
                                       -> KUBE-EXT-<hash>  (externalIPs, LB IPs; NodePorts via KUBE-NODEPORTS)
                      KUBE-SVC/SVL    -> KUBE-SEP-<hash>   (one per endpoint: DNAT, hairpin masquerade)
    POSTROUTING -> KUBE-POSTROUTING: MASQUERADE what KUBE-MARK-MASQ marked (0x4000)

The text is applied with `iptables-restore --noflush`: only KUBE-* chains are declared
(and so rewritten), a user's own rules elsewhere survive a sync, and chains of Services
that are gone are deleted with -X.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass

from nsk.proxy import masquerade
from nsk.proxy.masquerade import KUBE_MARK_MASQ, KUBE_POSTROUTING, MASQ_MARK, NSK_IP_MASQ
from nsk.proxy.masquerade import comment as _comment
from nsk.proxy.model import (Endpoint, NodeContext, ServicePort, categorize, contains_any, node_port_cidrs,
                             node_port_ips)


KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"

KUBE_FIREWALL = "KUBE-FIREWALL"  # the kubelet's once; kube-proxy writes it now (localhostNodePorts)
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"
FILTER_CHAINS = (KUBE_NODEPORTS, KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_PROXY_FIREWALL,
                 KUBE_FIREWALL)
NAT_CHAINS = (KUBE_NODEPORTS, KUBE_SERVICES, KUBE_MARK_MASQ, KUBE_POSTROUTING, NSK_IP_MASQ)

# (table, built-in chain, kube chain, comment, extra match): kube-proxy's iptablesJumpChains,
# plus nsk's own egress masquerade (what ip-masq-agent does on a real node). In each built-in
# chain of the filter table they stand in the order `iptables -L` shows on a kube-proxy node
# (kube-proxy prepends them); KUBE-FIREWALL's come last, after the others.
JUMPS = (
    ("filter", "INPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", "-m conntrack --ctstate NEW"),
    ("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports", ""),
    ("filter", "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals",
     "-m conntrack --ctstate NEW"),
    ("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", "-m conntrack --ctstate NEW"),
    ("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules", ""),
    ("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", "-m conntrack --ctstate NEW"),
    ("filter", "FORWARD", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals",
     "-m conntrack --ctstate NEW"),
    ("filter", "OUTPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", "-m conntrack --ctstate NEW"),
    ("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", "-m conntrack --ctstate NEW"),
    ("filter", "INPUT", KUBE_FIREWALL, "", ""),
    ("filter", "OUTPUT", KUBE_FIREWALL, "", ""),
    ("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals", ""),
    ("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", ""),
    *masquerade.JUMPS,
)


@functools.lru_cache(maxsize=1 << 17)  # every sync names the same chains again: remember them
def _hash(text: str) -> str:
    """kube-proxy's portProtoHash: base32(sha256(text)), first 16 characters.

    Base32 turns each 5 bytes into 8 characters, so the first 16 characters are those of
    the digest's first 10 bytes: encoding only those gives the same name in a third of the
    time (Python's b32encode was a quarter of a full sync of 200 Services)."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode()


def svc_chain(prefix: str, sp: ServicePort) -> str:
    """KUBE-SVC-/KUBE-SVL-/KUBE-EXT-/KUBE-FW- + hash of `ns/name:port` + protocol."""
    return f"{prefix}-{_hash(sp.name_string + sp.proto)}"


def sep_chain(sp: ServicePort, ep: Endpoint) -> str:
    return _sep_name(sp.name_string, sp.proto, ep.address)


def _sep_name(name: str, proto: str, address: str) -> str:
    return f"KUBE-SEP-{_hash(name + proto + address)}"


def probability(n: int) -> str:
    """kube-proxy's probability(): 1/n with ten decimals."""
    return f"{1.0 / n:0.10f}"


def jump_rule(chain: str, target: str, comment: str, extra: str) -> str:
    return " ".join(filter(None, [f"-A {chain}", extra, _comment(comment) if comment else "", f"-j {target}"]))


@dataclass(frozen=True)
class Ruleset:
    """A node's KUBE-* rules, as iptables-restore --noflush input: `text` writes every
    chain (a full sync), `since(old)` only what changed since `old` (a partial one)."""
    filter_text: str  # the *filter table, whole (small: kube-proxy writes it whole each sync)
    nat_rules: tuple[str, ...]  # the rules of the base nat chains (NAT_CHAINS)
    chains: tuple[tuple[str, tuple[str, ...]], ...]  # each per-Service nat chain and its rules
    stale: tuple[str, ...] = ()  # chains an earlier sync made that are gone: `text` deletes them

    @functools.cached_property
    def nat_chains(self) -> frozenset[str]:
        """The per-Service chains it declares, to delete when gone."""
        return frozenset(c for c, _ in self.chains)

    @property
    def rule_counts(self) -> tuple[int, int]:
        """(nat, filter) rules."""
        return len(self.nat_rules) + sum(len(rs) for _, rs in self.chains), self.filter_text.count("\n-A ")

    @property
    def text(self) -> str:
        return self.full()

    def full(self, budget: int = 0) -> str:
        """The restore that writes every chain (a full sync); `budget` as in _restore."""
        return self._restore(self.chains, self.stale, budget)

    def since(self, old: "Ruleset", budget: int = 0) -> str:
        """The restore that takes a node whose kernel has `old` to this ruleset: the base
        chains whole, and of the per-Service chains only those that are new or changed,
        with the ones gone deleted. kube-proxy's partial sync (MinimizeIPTablesRestore):
        one endpoint change then restores a few rules, not every Service's chains."""
        have = dict(old.chains)
        changed = tuple((c, rs) for c, rs in self.chains if have.get(c) != rs)
        return self._restore(changed, tuple(sorted(old.nat_chains - self.nat_chains)), budget)

    def _restore(self, chains: tuple[tuple[str, tuple[str, ...]], ...], gone: tuple[str, ...],
                 budget: int = 0) -> str:
        """One transaction (kube-proxy's one restore); with a `budget` of rules that the
        per-Service chains exceed, those chains go first in transactions of their own of
        about that many rules (see staged), and the last writes the base chains and
        deletes what is gone."""
        head = ""
        if budget and sum(len(rs) for _, rs in chains) > budget:
            head, chains = staged(chains, [r for r in self.nat_rules if r.startswith(f"-A {KUBE_MARK_MASQ} ")],
                                  budget), ()
        declared = [*NAT_CHAINS, *(c for c, _ in chains), *gone]  # before any rule jumps to one
        lines = [self.filter_text, "*nat", *(f":{c} - [0:0]" for c in declared), *self.nat_rules]
        lines += [r for _, rs in chains for r in rs] + [f"-X {c}" for c in gone] + ["COMMIT", ""]
        return head + "\n".join(lines)


# The order in which per-Service chains can be written in transactions apart: each kind
# jumps only to kinds before it (and to KUBE-MARK-MASQ), so every state in between is whole.
_STAGES = {"KUBE-SEP": 0, "KUBE-SVC": 1, "KUBE-SVL": 1, "KUBE-EXT": 2, "KUBE-FW": 3}
# Rules a transaction of per-Service chains holds on iptables' nft backend (see staged).
NFT_BACKEND_BUDGET = 3000


def staged(chains: tuple[tuple[str, tuple[str, ...]], ...], mark_masq: list[str], budget: int) -> str:
    """iptables-restore input writing `chains` in several transactions (*nat ... COMMIT
    blocks) of about `budget` rules, endpoints' chains first, then the Services' that jump
    to them: each transaction leaves every chain whole and every jump with its target, and
    no base chain jumps to a new chain before the last transaction (_restore's) writes them,
    so after each one a Service's nat rules send its traffic to its old endpoints or to its
    new ones. (A Service whose endpoints and policy both changed may have its new endpoints
    under its old policy for a transaction, as when kube-proxy takes the two changes in two
    syncs; the filter table is a transaction of its own, as in kube-proxy's one restore.)

    Why: iptables-nft-restore 1.8.x (Debian 12's 1.8.9) notes every chain a transaction
    names, each rule's jump target too, in a sorted list that it walks from the start for
    each one (nft-cache.c: nft_cache_level_set -> cache_chain_list_insert): quadratic. A
    partial sync that adds an endpoint to 100 Services of 300 (30,826 lines, naming 30,000
    chains) took 33 s in one transaction, 3.1 s staged. Each transaction reads the table's
    chains again (~0.1 s at 30,000 chains), hence a few thousand rules each. The legacy
    backend writes the whole table each COMMIT, so there one transaction is cheapest (no
    budget). docs/benchmarks.md has the measurements."""
    blocks: list[list[tuple[str, tuple[str, ...]]]] = [[]]
    size = 0
    for chain in sorted(chains, key=lambda c: _STAGES.get(c[0].rsplit("-", 1)[0], 1)):
        if blocks[-1] and size + len(chain[1]) > budget:
            blocks.append([])
            size = 0
        blocks[-1].append(chain)
        size += len(chain[1])
    out = []
    for i, block in enumerate(blocks):
        # the endpoints' chains jump to KUBE-MARK-MASQ: the first transaction makes sure of it
        mark = [f":{KUBE_MARK_MASQ} - [0:0]", *mark_masq] if i == 0 else []
        out += ["*nat", *mark, *(f":{c} - [0:0]" for c, _ in block), *(r for _, rs in block for r in rs), "COMMIT"]
    return "\n".join(out) + "\n"


# kube-proxy's largeClusterEndpointsThreshold: above this many endpoints (counted per
# Service port, ready or not) it drops the comments of the endpoint rules, for speed
LARGE_CLUSTER_ENDPOINTS = 1000


def large_cluster(ports: list[ServicePort]) -> bool:
    return sum(len(sp.endpoints) for sp in ports) > LARGE_CLUSTER_ENDPOINTS


@functools.lru_cache(maxsize=65536)
def _service(sp: ServicePort, ctx: NodeContext, large: bool) -> tuple[tuple[str, ...], ...]:
    """One Service port's share of every list `render` joins: (filter rules, nat rules,
    KUBE-EXTERNAL-SERVICES rules, KUBE-NODEPORTS rules, its own chains with their rules).
    Cached: a sync renders again only the Services that changed, as kube-proxy writes
    only their chains."""
    def ep_comment(text: str) -> str:
        return "" if large else " " + _comment(text)

    f_rules: list[str] = []
    n_rules: list[str] = []
    ext_services: list[str] = []
    nodeports: list[str] = []
    svc_rules: list[str] = []
    cidr = ctx.cluster_cidr
    name, proto = sp.name_string, sp.proto
    match = f"-m {proto} -p {proto}"
    uses_cluster, uses_local = sp.uses_cluster, sp.uses_local
    cluster_eps, local_eps, has_endpoints = categorize(sp, ctx.node)
    svc = svc_chain("KUBE-SVC", sp)
    svl = svc_chain("KUBE-SVL", sp)
    ext = svc_chain("KUBE-EXT", sp)
    fw = svc_chain("KUBE-FW", sp)
    internal_chain = svl if sp.internal_local else svc
    external_policy_chain = svl if sp.external_local else svc

    # What to do when there is nowhere to send the traffic (kube-proxy's filter targets).
    internal_filter = external_filter = None
    if not has_endpoints:
        internal_filter = external_filter = ("REJECT", f"{name} has no endpoints")
    else:
        if sp.internal_local and not local_eps:
            internal_filter = ("DROP", f"{name} has no local endpoints")
        if sp.external_local and not local_eps:
            external_filter = ("DROP", f"{name} has no local endpoints")

    if sp.health_check_node_port:  # open whether or not this node has local endpoints
        f_rules.append(f"-A {KUBE_NODEPORTS} {_comment(f'{name} health check node port')} -m tcp -p tcp "
                       f"--dport {sp.health_check_node_port} -j ACCEPT")

    chains_here: list[str] = []
    # each endpoint's KUBE-SEP chain, whole: the same in every sync that keeps the endpoint
    sep_chains = {ep: _sep(name, proto, ep, bool(sp.affinity_timeout), large)
                  for ep in sorted({*cluster_eps, *local_eps}, key=_address)}
    seps = {ep: chain for ep, (chain, _) in sep_chains.items()}
    if has_endpoints and uses_cluster:
        chains_here.append(svc)
    if has_endpoints and uses_local and local_eps:
        chains_here.append(svl)
    # the EXT chain whenever there are endpoints anywhere: even with none for external
    # traffic here (eTP Local), a Pod's or the node's own traffic short-circuits through
    # it to the Service (kube-proxy's usesExternalTrafficChain)
    if has_endpoints and sp.externally_accessible:
        chains_here.append(ext)
        if not sp.external_local:
            svc_rules.append(f"-A {ext} {_comment(f'masquerade traffic for {name} external destinations')} "
                             f"-j {KUBE_MARK_MASQ}")
        else:
            svc_rules.append(f"-A {ext} {_comment(f'pod traffic for {name} external destinations')} "
                             f"-s {cidr} -j {svc}")
            svc_rules.append(f"-A {ext} {_comment(f'masquerade LOCAL traffic for {name} external destinations')} "
                             f"-m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}")
            svc_rules.append(f"-A {ext} {_comment(f'route LOCAL traffic for {name} external destinations')} "
                             f"-m addrtype --src-type LOCAL -j {svc}")
        if external_filter is None:  # the rest to the policy's chain; else KUBE-EXTERNAL-SERVICES drops it
            svc_rules.append(f"-A {ext} -j {external_policy_chain}")

    dport = f"--dport {sp.port}"
    # ClusterIP
    if internal_filter is None:
        cip = f"{_comment(f'{name} cluster IP')} {match} -d {sp.cluster_ip}/32 {dport}"
        n_rules.append(f"-A {KUBE_SERVICES} {cip} -j {internal_chain}")
        svc_rules.append(f"-A {internal_chain} {cip} ! -s {cidr} -j {KUBE_MARK_MASQ}")
    else:
        target, comment = internal_filter
        f_rules.append(f"-A {KUBE_SERVICES} {_comment(comment)} {match} -d {sp.cluster_ip}/32 {dport} -j {target}")
    # externalIPs and load-balancer IPs: to EXT (or FW) when there are endpoints; what
    # EXT does not short-circuit is then rejected or dropped in the filter table
    uses_fw = has_endpoints and bool(sp.lb_ips) and bool(sp.lb_source_ranges)
    for kind, ips in (("external IP", sp.external_ips), ("loadbalancer IP", sp.lb_ips)):
        for ip in ips:
            if has_endpoints:
                to = fw if kind == "loadbalancer IP" and uses_fw else ext
                n_rules.append(f"-A {KUBE_SERVICES} {_comment(f'{name} {kind}')} {match} -d {ip}/32 {dport} "
                               f"-j {to}")
            if external_filter is not None:
                target, comment = external_filter
                ext_services.append(f"-A {KUBE_EXTERNAL_SERVICES} {_comment(comment)} {match} -d {ip}/32 "
                                    f"{dport} -j {target}")
    if uses_fw:
        chains_here.append(fw)
        allow_from_node = False
        for src in sp.lb_source_ranges:
            svc_rules.append(f"-A {fw} {_comment(f'{name} loadbalancer IP')} -s {src} -j {ext}")
            allow_from_node = allow_from_node or any(contains_any((src,), ip) for ip in ctx.node_ips)
        # a node's own request to the LB IP may come back with the LB IP as its source (a
        # VIP-like load balancer): kube-proxy lets it in when the node may reach it at all
        if allow_from_node:
            for ip in sp.lb_ips:
                svc_rules.append(f"-A {fw} {_comment(f'{name} loadbalancer IP')} -s {ip} -j {ext}")
        svc_rules.append(f"-A {fw} {_comment(f'other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL')}")
        for ip in sp.lb_ips:
            f_rules.append(f"-A {KUBE_PROXY_FIREWALL} {_comment(f'{name} traffic not accepted by {fw}')} "
                           f"{match} -d {ip}/32 {dport} -j DROP")
    # NodePort
    if sp.node_port:
        if has_endpoints:
            nodeports.append(f"-A {KUBE_NODEPORTS} {_comment(name)} {match} --dport {sp.node_port} -j {ext}")
        if external_filter is not None:
            target, comment = external_filter
            ext_services.append(f"-A {KUBE_EXTERNAL_SERVICES} {_comment(comment)} -m addrtype --dst-type LOCAL "
                                f"{match} --dport {sp.node_port} -j {target}")
    # the endpoint jumps, affinity first (kube-proxy's writeServiceToEndpointRules)
    for chain, eps in ((svc, cluster_eps), (svl, local_eps)):
        if chain not in chains_here:
            continue
        if sp.affinity_timeout:
            for ep in eps:
                sep = seps[ep]
                svc_rules.append(f"-A {chain}{ep_comment(f'{name} -> {ep.address}')} -m recent --name {sep} "
                                 f"--rcheck --seconds {sp.affinity_timeout} --reap -j {sep}")
        for i, ep in enumerate(eps):
            stat = f" -m statistic --mode random --probability {probability(len(eps) - i)}" \
                if i < len(eps) - 1 else ""
            svc_rules.append(f"-A {chain}{ep_comment(f'{name} -> {ep.address}')}{stat} -j {seps[ep]}")
    by_chain: dict[str, list[str]] = {c: [] for c in chains_here}
    for r in svc_rules:
        by_chain[r.split(" ", 2)[1]].append(r)
    return (tuple(f_rules), tuple(n_rules), tuple(ext_services), tuple(nodeports),
            (*sep_chains.values(), *((c, tuple(rs)) for c, rs in by_chain.items())))


def _address(ep: Endpoint) -> str:
    return ep.address


@functools.lru_cache(maxsize=1 << 17)
def _sep(name: str, proto: str, ep: Endpoint, affinity: bool, large: bool) -> tuple[str, tuple[str, str]]:
    """An endpoint's KUBE-SEP chain of Service port `name` and its two rules."""
    sep = _sep_name(name, proto, ep.address)
    comment = "" if large else " " + _comment(name)
    recent = f" -m recent --name {sep} --set" if affinity else ""
    return sep, (f"-A {sep}{comment} -s {ep.ip}/32 -j {KUBE_MARK_MASQ}",
                 f"-A {sep}{comment}{recent} -m {proto} -p {proto} -j DNAT --to-destination {ep.address}")


def render(ports: list[ServicePort], ctx: NodeContext, previous: frozenset[str] = frozenset(),
           large: bool = False) -> Ruleset:
    """The node's KUBE-* chains for these Service ports; chains in `previous` that are no
    longer wanted are declared and deleted, so the restore leaves nothing stale. `large`:
    kube-proxy's large-cluster mode, in which the KUBE-SEP rules and the KUBE-SVC/SVL
    jumps to them carry no comment."""
    f_rules, n_rules, ext_services, nodeports = ([] for _ in range(4))
    chains: list[tuple[str, tuple[str, ...]]] = []
    cidr = ctx.cluster_cidr
    f_rules += [
        # localhostNodePorts: the node's route_localnet=1 lets 127.0.0.1:<nodePort> reach a
        # Service; this closes what it opens to others (kubernetes#90259)
        f"-A {KUBE_FIREWALL} {_comment('block incoming localnet connections')} -d 127.0.0.0/8 ! -s 127.0.0.0/8 "
        "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
        f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP",
        f"-A {KUBE_FORWARD} {_comment('kubernetes forwarding rules')} -m mark --mark {MASQ_MARK}/{MASQ_MARK} "
        "-j ACCEPT",
        f"-A {KUBE_FORWARD} {_comment('kubernetes forwarding conntrack rule')} -m conntrack --ctstate "
        "RELATED,ESTABLISHED -j ACCEPT",
    ]
    n_rules += masquerade.rules(cidr)  # the chains every mode shares

    common = NodeContext("", ctx.cluster_cidr)
    for sp in ports:
        # without a Local policy or source ranges a Service's rules are the same on every
        # node: keyed without the node, the nodes share one render of it
        parts = _service(sp, ctx if sp.uses_local or sp.lb_source_ranges else common, large)
        for out, part in zip((f_rules, n_rules, ext_services, nodeports, chains), parts):
            out += part

    n_rules += nodeports_tail(ctx)
    chains.sort(key=lambda c: c[0])
    filter_text = "\n".join(["*filter"] + [f":{c} - [0:0]" for c in FILTER_CHAINS] + f_rules + ext_services
                            + ["COMMIT"])
    nat_rules = [r for r in n_rules if not r.startswith(f"-A {KUBE_SERVICES}")]
    nat_rules += [r for r in n_rules if r.startswith(f"-A {KUBE_SERVICES}")] + nodeports
    declared = frozenset(c for c, _ in chains)
    return Ruleset(filter_text, tuple(nat_rules), tuple(chains), tuple(sorted(previous - declared)))


def nodeports_tail(ctx: NodeContext) -> list[str]:
    """The last rules of KUBE-SERVICES: traffic to this node's own addresses goes to KUBE-NODEPORTS."""
    comment = _comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
    if node_port_cidrs(ctx) is None:  # kube-proxy's NodePortAddresses: every local address
        return [f"-A {KUBE_SERVICES} {comment} -m addrtype --dst-type LOCAL -j {KUBE_NODEPORTS}"]
    return [f"-A {KUBE_SERVICES} {comment} -d {ip}/32 -j {KUBE_NODEPORTS}" for ip in node_port_ips(ctx)]


def missing_jumps(saved: str, jumps: tuple = JUMPS, canary: bool = True) -> str:
    """iptables-restore --noflush input inserting kube-proxy's jumps from the built-in
    chains (`jumps`: this mode's, by default iptables mode's) that `saved` (iptables-save
    output) does not have yet, and its canary chains (`canary`); "" when all are there. A missing filter jump is prepended, as kube-proxy's EnsureRule
    does (so a chain's missing ones go in reverse, to read in order); KUBE-FIREWALL's and
    the nat table's are appended."""
    have = {(t, line) for t, line in _save_lines(saved)}
    existing = {(t, line.split()[0][1:]) for t, line in _save_lines(saved, chains_too=True) if line.startswith(":")}
    out: dict[str, list[str]] = {"mangle": [], "filter": [], "nat": []}
    prepend: list[str] = []
    for table, chain, target, comment, extra in jumps:
        rule = jump_rule(chain, target, comment, extra)
        if (table, _normal(rule)) in have:
            continue
        if table == "filter" and target != KUBE_FIREWALL:
            prepend.append(rule.replace(f"-A {chain}", f"-I {chain}", 1))
        else:
            out[table].append(rule)
    out["filter"] = prepend[::-1] + out["filter"]
    text = []
    for table, rules in out.items():
        chains = {target for t, _, target, _, _ in jumps if t == table} | ({KUBE_PROXY_CANARY} if canary else set())
        missing = sorted(c for c in chains if (table, c) not in existing)
        if rules or missing:
            text += [f"*{table}"] + [f":{c} - [0:0]" for c in missing] + rules + ["COMMIT"]
    return "\n".join(text) + ("\n" if text else "")


def jump_chains(jumps: tuple = JUMPS, canary: bool = True) -> list[tuple[str, str]]:
    """The (table, chain)s missing_jumps looks at: the built-in chains the jumps leave from,
    the chains they go to, and the canaries."""
    out = {(t, c) for t, c, _, _, _ in jumps} | {(t, target) for t, _, target, _, _ in jumps}
    if canary:
        out |= {(t, KUBE_PROXY_CANARY) for t in ("mangle", "filter", "nat")}
    return sorted(out)


def node_missing_jumps(kernel, netns: str, jumps: tuple = JUMPS, canary: bool = True) -> str:
    """missing_jumps of what node `netns` has now, read chain by chain (Kernel.save(chains=))."""
    return missing_jumps(kernel.save(netns, chains=jump_chains(jumps, canary)), jumps, canary)


def _normal(rule: str) -> str:
    return " ".join(rule.replace('"', "").split())


def _save_lines(saved: str, chains_too: bool = False):
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            yield table, _normal(line)
        elif chains_too and line.startswith(":"):
            yield table, line


def cleanup(saved: str) -> str:
    """iptables-restore --noflush input that removes every chain of this mode (KUBE-*, and
    nsk's NSK-IP-MASQ) and the rules of the built-in chains that jump to them, from what
    `iptables-save` shows ("" when there is none)."""
    out, table, rules_, chains = [], None, [], []

    def close() -> None:
        if table and (rules_ or chains):
            out.extend([f"*{table}", *rules_, *(f":{c} - [0:0]" for c in chains), *(f"-X {c}" for c in chains),
                        "COMMIT"])
    for line in saved.splitlines():
        if line.startswith("*"):
            table, rules_, chains = line[1:], [], []
        elif line == "COMMIT":
            close()
            table = None
        elif line.startswith(":"):
            c = line[1:].split()[0]
            if c.startswith(("KUBE-", "NSK-")):
                chains.append(c)
        elif line.startswith("-A "):
            chain, _, rest = line[3:].partition(" ")
            target = rest.rsplit("-j ", 1)[-1].split()[0] if "-j " in rest else ""
            if not chain.startswith(("KUBE-", "NSK-")) and target.startswith(("KUBE-", "NSK-")):
                rules_.append(f"-D {chain} {rest}")
    return "\n".join(out) + ("\n" if out else "")
