"""hostPort, as the CNI portmap plugin does it (pure): DNAT from the node's address and
port to the Pod, and masquerade for the traffic that needs it (from the node itself, or
from the Pod to its own host port).

The chains and marks are portmap's: CNI-HOSTPORT-DNAT, jumped to from PREROUTING and
OUTPUT for local destinations, CNI-HOSTPORT-SETMARK (mark 0x2000) and CNI-HOSTPORT-MASQ
from POSTROUTING. portmap gives each container a CNI-DN-<hash> chain; here the node's
rules are written whole each time into CNI-HOSTPORT-DNAT (one comment per Pod names it),
so a Pod gone leaves no chain behind, whatever happened to the control plane meanwhile.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DNAT_CHAIN, SETMARK_CHAIN, MASQ_CHAIN = "CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"
MARK = "0x2000/0x2000"
JUMPS = (  # (built-in chain, rule): portmap inserts them first in their chains
    ("PREROUTING", f"-m addrtype --dst-type LOCAL -j {DNAT_CHAIN}"),
    ("OUTPUT", f"-m addrtype --dst-type LOCAL -j {DNAT_CHAIN}"),
    ("POSTROUTING", f'-m comment --comment "CNI portfwd requiring masquerade" -j {MASQ_CHAIN}'),
)


@dataclass(frozen=True, order=True)
class HostPort:
    pod: str  # namespace/name
    protocol: str  # tcp, udp, sctp
    host_port: int
    host_ip: str  # "" = every address of the node
    pod_ip: str
    container_port: int


def host_ports(pod: dict, pod_ip: str) -> list[HostPort]:
    """The host ports a Pod asks for (none for a hostNetwork Pod: it has the node's ports)."""
    if pod["spec"].get("hostNetwork"):
        return []
    name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    out = []
    for c in pod["spec"].get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                host_ip = p.get("hostIP") or ""
                host_ip = "" if host_ip in ("0.0.0.0", "::") else str(ipaddress.ip_address(host_ip)) if host_ip else ""
                proto = p.get("protocol", "TCP").lower()
                if proto not in ("tcp", "udp", "sctp"):
                    continue
                out.append(HostPort(name, proto, int(p["hostPort"]), host_ip,
                                    str(ipaddress.ip_address(pod_ip)), int(p["containerPort"])))
    return out


def conflicts(a: tuple[str, str, int], b: tuple[str, str, int]) -> bool:
    """Whether two (hostIP, protocol, hostPort) cannot share a node: the scheduler's NodePorts
    check (the same protocol and port, and the same address or either one every address)."""
    return a[1:] == b[1:] and (a[0] == b[0] or not a[0] or not b[0])


def render(entries: list[HostPort]) -> str:
    """The node's portmap chains whole, as iptables-restore --noflush input."""
    lines = ["*nat", f":{DNAT_CHAIN} - [0:0]", f":{SETMARK_CHAIN} - [0:0]", f":{MASQ_CHAIN} - [0:0]",
             f'-A {SETMARK_CHAIN} -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark {MARK}',
             f"-A {MASQ_CHAIN} -m mark --mark {MARK} -j MASQUERADE"]
    for e in sorted(entries):
        dst = f" -d {e.host_ip}/32" if e.host_ip else ""
        # the names are validated DNS names; anything else is still kept out of the comment
        pod = "".join(c if c.isalnum() or c in "-./" else "?" for c in e.pod)
        match = f'-p {e.protocol} -m comment --comment "hostPort of {pod}"{dst} -m {e.protocol} --dport {e.host_port}'
        lines += [f"-A {DNAT_CHAIN} {match} -s {e.pod_ip}/32 -j {SETMARK_CHAIN}",  # the Pod to itself: hairpin
                  f"-A {DNAT_CHAIN} {match} -s 127.0.0.1/32 -j {SETMARK_CHAIN}",  # the node's localhost
                  f"-A {DNAT_CHAIN} {match} -j DNAT --to-destination {e.pod_ip}:{e.container_port}"]
    return "\n".join(lines + ["COMMIT", ""])


JUMP_CHAINS = [("nat", chain) for chain in sorted({c for c, _ in JUMPS})]  # what missing_jumps reads


def missing_jumps(saved_nat: str) -> str:
    """The jumps from the built-in chains that `iptables-save -t nat` does not show, as
    restore input that inserts them first (empty if none is missing)."""
    have = {" ".join(line.split()) for line in saved_nat.splitlines()}
    rules = [f"-I {chain} 1 {rule}" for chain, rule in JUMPS
             if " ".join(f"-A {chain} {rule}".replace('"', "").split()) not in {h.replace('"', "") for h in have}]
    if not rules:
        return ""
    return "\n".join(["*nat", *rules, "COMMIT", ""])
