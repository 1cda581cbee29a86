"""The masquerade chains every proxy mode shares (pure), as kube-proxy writes them in
iptables and in IPVS mode alike (its nftables mode has its own equivalents):

    KUBE-MARK-MASQ    marks a packet (0x4000) that must leave with the node's address
    KUBE-POSTROUTING  masquerades what was marked, once
    NSK-IP-MASQ       nsk's ip-masq-agent: Pod traffic to outside the cluster leaves with
                      the node's address, as on a cloud node

A mode's renderer declares these chains and adds their rules to its nat table; the
Service rules of the mode jump to KUBE-MARK-MASQ where kube-proxy does.
"""

from __future__ import annotations

MASQ_MARK = "0x4000"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
NSK_IP_MASQ = "NSK-IP-MASQ"
CHAINS = (KUBE_MARK_MASQ, KUBE_POSTROUTING, NSK_IP_MASQ)

# (table, built-in chain, chain, comment, extra match): the jumps into them
JUMPS = (
    ("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules", ""),
    ("nat", "POSTROUTING", NSK_IP_MASQ, "nsk: masquerade Pod traffic leaving the cluster (as ip-masq-agent)", ""),
)


def comment(text: str) -> str:
    """`-m comment --comment TEXT`, quoted when it has a space (as kube-proxy writes it).
    Names are validated before they get here; anything unprintable or a quote is still
    replaced, so no text can end a rule early."""
    text = "".join(c if c.isprintable() and c not in '"\\' else "?" for c in text)
    return f'-m comment --comment "{text}"' if " " in text else f"-m comment --comment {text}"


def rules(cluster_cidr: str) -> list[str]:
    """The nat rules of the shared chains, for a cluster whose Pods are in `cluster_cidr`."""
    return [
        f"-A {KUBE_POSTROUTING} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {MASQ_MARK}",
        f"-A {KUBE_POSTROUTING} {comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully",
        f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {MASQ_MARK}",
        # Pods reach the world outside the cluster (an external host, a selector-less
        # Service's endpoint) with their node's address, as on a cloud node.
        f"-A {NSK_IP_MASQ} -d {cluster_cidr} {comment('nsk: Pod-to-Pod traffic is not masqueraded')} -j RETURN",
        f"-A {NSK_IP_MASQ} -s {cluster_cidr} -m addrtype ! --dst-type LOCAL "
        f"{comment('nsk: masquerade Pod traffic leaving the cluster')} -j MASQUERADE",
    ]
