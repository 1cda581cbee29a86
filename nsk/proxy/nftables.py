"""kube-proxy's nftables mode for one node, rendered as `nft -f` input (pure).

The layout is kube-proxy's own (pkg/proxy/nftables, 1.34 and later; its
TestOverallNFTablesRules): table `ip kube-proxy`; the sets `cluster-ips` and
`nodeport-ips`; the verdict maps `service-ips`, `service-nodeports`,
`no-endpoint-services`, `no-endpoint-nodeports`, `firewall-ips`; base chains hooked into
prerouting, input, forward, output and postrouting; per Service port `service-<hash>-<ns>/
<name>/<proto>/<port>` (and `local-`, `external-`, `firewall-`), per endpoint
`endpoint-<hash>-...__<ip>/<port>`, and `affinity-` sets with timeouts for ClientIP
affinity. Load balancing is `numgen random mod N vmap`. nftables mode's own defaults:
NodePorts only on the node's addresses (`nodeport-ips`), none on localhost, and a
ClusterIP's unknown ports rejected (`cluster-ips-check`).

A full sync rebuilds the table in one transaction; a partial one adds, flushes and fills
only the chains that changed, adds and deletes only the elements that changed, and deletes
the chains and sets that are gone, in the same transaction (kube-proxy waits a second
before deleting chains, for kernels before 6.2).

nsk's own egress masquerade (what ip-masq-agent does on a cloud node) is its own table,
`ip nsk-ip-masq`, so the kube-proxy table holds only kube-proxy's rules.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass

from nsk.proxy.model import NodeContext, ServicePort, categorize

TABLE = "ip kube-proxy"
MASQ_TABLE = "ip nsk-ip-masq"
MASQ_MARK = "0x4000"
NAME_MAX = 256 - 16  # knftables' NameLengthMax less the longest prefix
MAPS = {  # name -> (type, comment)
    "firewall-ips": ("ipv4_addr . inet_proto . inet_service : verdict",
                     "destinations that are subject to LoadBalancerSourceRanges"),
    "no-endpoint-nodeports": ("inet_proto . inet_service : verdict",
                              "vmap to drop or reject packets to service nodeports with no endpoints"),
    "no-endpoint-services": ("ipv4_addr . inet_proto . inet_service : verdict",
                             "vmap to drop or reject packets to services with no endpoints"),
    "service-ips": ("ipv4_addr . inet_proto . inet_service : verdict",
                    "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
    "service-nodeports": ("inet_proto . inet_service : verdict", "NodePort traffic"),
}
SETS = {"cluster-ips": "Active ClusterIPs", "nodeport-ips": "IPs that accept NodePort traffic"}
ELEMENT_SETS = ("cluster-ips", *MAPS)  # what the Services fill (nodeport-ips is the node's)


def hash_and_truncate(name: str) -> str:
    """kube-proxy's hashAndTruncate: 8 base32 characters of the name's SHA-256, then the name."""
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    name = digest[:8] + "-" + name
    return name if len(name) <= NAME_MAX else name[:NAME_MAX - 3] + "..."


def _base(sp: ServicePort) -> str:
    return f"{sp.namespace}/{sp.name}/{sp.proto}/{sp.port_name}"


def _ep_base(sp: ServicePort, ip: str, port: int) -> str:
    return f"{_base(sp)}__{ip.replace(':', '.')}/{port}"


def _q(text: str) -> str:
    """A comment: names are validated DNS names; anything else is still kept out."""
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else "?" for c in text) + '"'


@dataclass(frozen=True)
class NftRuleset:
    base: str  # the table, its sets, maps, base and helper chains, the node's nodeport-ips
    chains: tuple[tuple[str, tuple[str, ...]], ...]  # per-Service chains and their rules
    sets: tuple[tuple[str, int], ...]  # affinity sets and their timeouts
    elements: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # set/map -> ((key, value), ...)

    @property
    def rule_count(self) -> int:
        return sum(len(rs) for _, rs in self.chains)

    @property
    def text(self) -> str:
        """A full sync: the table made anew, whole, in one transaction."""
        lines = [f"add table {TABLE}", f"delete table {TABLE}", self.base]
        lines += [f"add set {TABLE} {s} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {t}s ; }}"
                  for s, t in self.sets]
        lines += [f"add chain {TABLE} {c}" for c, _ in self.chains]
        lines += [f"add rule {TABLE} {r}" for _, rs in self.chains for r in rs]
        for name, elems in self.elements:
            lines += [_add_element(name, k, v) for k, v in elems]
        return "\n".join(lines) + "\n"

    def since(self, old: "NftRuleset") -> str:
        """A partial sync: from a kernel holding `old` to this, touching only what changed."""
        lines: list[str] = []
        have_sets, want_sets = dict(old.sets), dict(self.sets)
        lines += [f"add set {TABLE} {s} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {t}s ; }}"
                  for s, t in self.sets if s not in have_sets]
        have, want = dict(old.chains), dict(self.chains)
        changed = [c for c, rs in self.chains if have.get(c) != rs]
        lines += [f"add chain {TABLE} {c}" for c in changed if c not in have]
        for c in changed:
            if c in have:
                lines.append(f"flush chain {TABLE} {c}")
            lines += [f"add rule {TABLE} {r}" for r in want[c]]
        old_elems, new_elems = dict(old.elements), dict(self.elements)
        for name in ELEMENT_SETS:
            before, after = dict(old_elems.get(name, ())), dict(new_elems.get(name, ()))
            for k, v in before.items():
                if after.get(k) != v:
                    lines.append(f"delete element {TABLE} {name} {{ {k} }}")
            for k, v in after.items():
                if before.get(k) != v:
                    lines.append(_add_element(name, k, v))
        gone = [c for c in have if c not in want]
        lines += [f"flush chain {TABLE} {c}" for c in gone]  # nothing jumps to them once flushed
        lines += [f"delete chain {TABLE} {c}" for c in gone]
        lines += [f"delete set {TABLE} {s}" for s in have_sets if s not in want_sets]
        return "\n".join(lines) + "\n" if lines else ""


def _add_element(name: str, k: str, v: str) -> str:
    """`v`: the element's value, with its comment first when it has one (nft's order)."""
    return f"add element {TABLE} {name} {{ {k}{v} }}"


def _value(verdict: str, comment: str = "") -> str:
    return (f" comment {_q(comment)}" if comment else "") + (f" : {verdict}" if verdict else "")


def _base_text(ctx: NodeContext, service_cidr: str) -> str:
    t = TABLE
    lines = [f'add table {t} {{ comment "rules for kube-proxy" ; }}']
    lines += [f'add set {t} {name} {{ type ipv4_addr ; comment "{c}" ; }}' for name, c in SETS.items()]
    lines += [f'add map {t} {name} {{ type {typ} ; comment "{c}" ; }}' for name, (typ, c) in MAPS.items()]
    chains = [
        ("cluster-ips-check", ""), ("filter-prerouting-pre-dnat", "type filter hook prerouting priority -110"),
        ("filter-output-pre-dnat", "type filter hook output priority -110"),
        ("filter-forward", "type filter hook forward priority 0"), ("filter-input", "type filter hook input priority 0"),
        ("filter-output", "type filter hook output priority 0"), ("firewall-check", ""),
        ("mark-for-masquerade", ""), ("masquerading", ""), ("nat-output", "type nat hook output priority -100"),
        ("nat-postrouting", "type nat hook postrouting priority 100"),
        ("nat-prerouting", "type nat hook prerouting priority -100"), ("nodeport-endpoints-check", ""),
        ("reject-chain", 'comment "helper for @no-endpoint-services / @no-endpoint-nodeports"'),
        ("services", ""), ("service-endpoints-check", ""),
    ]
    lines += [f"add chain {t} {c}" + (f" {{ {spec} ; }}" if spec else "") for c, spec in chains]
    rules = [
        'cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
        f'cluster-ips-check ip daddr {{ {service_cidr} }} drop comment "Drop traffic to unallocated ClusterIPs"',
        "filter-prerouting-pre-dnat ct state new jump firewall-check",
        "filter-forward ct state new jump service-endpoints-check",
        "filter-forward ct state new jump cluster-ips-check",
        "filter-input ct state new jump nodeport-endpoints-check",
        "filter-input ct state new jump service-endpoints-check",
        "filter-output ct state new jump service-endpoints-check",
        "filter-output-pre-dnat ct state new jump firewall-check",
        "filter-output ct state new jump cluster-ips-check",
        "firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips",
        f"mark-for-masquerade mark set mark or {MASQ_MARK}",
        f"masquerading mark and {MASQ_MARK} == 0 return",
        f"masquerading mark set mark xor {MASQ_MARK}",
        "masquerading masquerade fully-random",
        "nat-output jump services", "nat-postrouting jump masquerading", "nat-prerouting jump services",
        "nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        "reject-chain reject",
        "services ip daddr . meta l4proto . th dport vmap @service-ips",
        "services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        "service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
    ]
    lines += [f"add rule {t} {r}" for r in rules]
    if ctx.node_ips:
        lines.append(f"add element {t} nodeport-ips {{ {', '.join(ctx.node_ips)} }}")
    return "\n".join(lines)


def masq_table(cluster_cidr: str) -> str:
    """nsk's egress masquerade (ip-masq-agent's part on a cloud node), whole, as `nft -f` input."""
    t = MASQ_TABLE
    return "\n".join([
        f'add table {t} {{ comment "nsk: Pods reach the outside with their node\'s address" ; }}',
        f"delete table {t}",
        f'add table {t} {{ comment "nsk: Pods reach the outside with their node\'s address" ; }}',
        f"add chain {t} postrouting {{ type nat hook postrouting priority 110 ; }}",
        f'add rule {t} postrouting ip daddr {cluster_cidr} return comment "Pod-to-Pod traffic is not masqueraded"',
        f"add rule {t} postrouting ip saddr {cluster_cidr} fib daddr type != local masquerade "
        'comment "masquerade Pod traffic leaving the cluster"',
    ]) + "\n"


@functools.lru_cache(maxsize=65536)
def _service(sp: ServicePort, ctx: NodeContext) -> tuple:
    """One Service port's chains, affinity sets and elements (cached, as the iptables renderer)."""
    base = hash_and_truncate(_base(sp))
    svc, local, ext, fw = f"service-{base}", f"local-{base}", f"external-{base}", f"firewall-{base}"
    name, proto = sp.name_string, sp.proto
    cluster_eps, local_eps, has_endpoints = categorize(sp, ctx.node)
    uses_cluster_chain = bool(cluster_eps) and sp.uses_cluster
    uses_local_chain = bool(local_eps) and sp.uses_local
    uses_external_chain = has_endpoints and sp.externally_accessible
    internal_chain = local if sp.internal_local else svc
    has_internal = bool(local_eps if sp.internal_local else cluster_eps)
    has_external = bool(local_eps if sp.external_local else cluster_eps)
    no_ep = "goto reject-chain" if not has_endpoints else "drop"

    chains: list[tuple[str, tuple[str, ...]]] = []
    sets: list[tuple[str, int]] = []
    elems: dict[str, list[tuple[str, str]]] = {n: [] for n in ELEMENT_SETS}
    elems["cluster-ips"].append((sp.cluster_ip, ""))

    def to_endpoints(chain: str, eps) -> list[str]:
        out = [f"{chain} ip daddr {sp.cluster_ip} ip saddr != {ctx.cluster_cidr} jump mark-for-masquerade"] \
            if chain == internal_chain else []
        if sp.affinity_timeout:
            for ep in eps:
                eb = hash_and_truncate(_ep_base(sp, ep.ip, ep.port))
                out.append(f"{chain} ip saddr @affinity-{eb} goto endpoint-{eb}")
        arms = " , ".join(f"{i} : goto endpoint-{hash_and_truncate(_ep_base(sp, ep.ip, ep.port))}"
                          for i, ep in enumerate(eps))
        out.append(f"{chain} numgen random mod {len(eps)} vmap {{ {arms} }}")
        return out

    if uses_cluster_chain:
        chains.append((svc, tuple(to_endpoints(svc, cluster_eps))))
    if uses_local_chain:
        chains.append((local, tuple(to_endpoints(local, local_eps))))
    if uses_external_chain:
        if sp.external_local:
            rules = [f'{ext} ip saddr {ctx.cluster_cidr} goto {svc} comment "short-circuit pod traffic"',
                     f'{ext} fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
                     f'{ext} fib saddr type local goto {svc} comment "short-circuit local traffic"']
            if uses_local_chain:
                rules.append(f"{ext} goto {local}")
        else:
            rules = [f"{ext} jump mark-for-masquerade", f"{ext} goto {svc}"]
        chains.append((ext, tuple(rules)))
    for ep in sorted(set(cluster_eps if uses_cluster_chain else []) | set(local_eps if uses_local_chain else []),
                     key=lambda e: e.address):
        eb = hash_and_truncate(_ep_base(sp, ep.ip, ep.port))
        chain = f"endpoint-{eb}"
        rules = [f"{chain} ip saddr {ep.ip} jump mark-for-masquerade"]
        if sp.affinity_timeout:
            sets.append((f"affinity-{eb}", sp.affinity_timeout))
            rules.append(f"{chain} update @affinity-{eb} {{ ip saddr }}")
        rules.append(f"{chain} meta l4proto {proto} dnat to {ep.ip}:{ep.port}")
        chains.append((chain, tuple(rules)))

    key = f"{sp.cluster_ip} . {proto} . {sp.port}"
    if has_internal:
        elems["service-ips"].append((key, _value(f"goto {internal_chain}")))
    else:
        elems["no-endpoint-services"].append((key, _value(no_ep, name)))
    for ip in sp.external_ips + sp.lb_ips:
        k = f"{ip} . {proto} . {sp.port}"
        if uses_external_chain:
            elems["service-ips"].append((k, _value(f"goto {ext}")))
        if not has_external:
            elems["no-endpoint-services"].append((k, _value(no_ep, name)))
    if sp.lb_ips and sp.lb_source_ranges and uses_external_chain:
        allowed = list(sp.lb_source_ranges)
        chains.append((fw, (f"{fw} ip saddr != {{ {', '.join(allowed)} }} drop",)))
        for ip in sp.lb_ips:
            elems["firewall-ips"].append((f"{ip} . {proto} . {sp.port}", _value(f"goto {fw}")))
    if sp.node_port:
        k = f"{proto} . {sp.node_port}"
        if uses_external_chain:
            elems["service-nodeports"].append((k, _value(f"goto {ext}")))
        if not has_external:
            elems["no-endpoint-nodeports"].append((k, _value(no_ep, name)))
    return tuple(chains), tuple(sets), tuple((n, tuple(v)) for n, v in elems.items())


def render(ports: list[ServicePort], ctx: NodeContext, service_cidr: str) -> NftRuleset:
    """The node's kube-proxy table for these Service ports."""
    common = NodeContext("", ctx.cluster_cidr)
    chains: list[tuple[str, tuple[str, ...]]] = []
    sets: list[tuple[str, int]] = []
    elems: dict[str, list[tuple[str, str]]] = {n: [] for n in ELEMENT_SETS}
    for sp in ports:
        c, s, e = _service(sp, ctx if sp.uses_local else common)  # shared by the nodes, as in iptables mode
        chains += c
        sets += s
        for n, items in e:
            elems[n] += items
    return NftRuleset(_base_text(ctx, service_cidr), tuple(sorted(dict(chains).items())),
                      tuple(sorted(dict(sets).items())),
                      tuple((n, tuple(sorted(dict(items).items()))) for n, items in elems.items()))
