"""kube-proxy's IPVS mode for one node, rendered and compared (pure).

As kube-proxy's IPVS proxier builds it (pkg/proxy/ipvs, 1.34):

    kube-ipvs0 (dummy, down)  every ClusterIP, externalIP and LB IP as a /32, so that the
                              node's stack takes the packet in; IPVS's LOCAL_IN hook then
                              sends it to a real server (Masq: DNAT), with the chosen scheduler
    virtual servers           ClusterIP:port, externalIP:port, LB IP:port, and nodeIP:nodePort
                              for every node address; ClientIP affinity = persistence (-p)
    ipsets                    KUBE-CLUSTER-IP, KUBE-LOOP-BACK, KUBE-NODE-PORT-TCP, ...: what the
                              few fixed iptables rules match on, instead of a chain a Service
    iptables                  KUBE-SERVICES, KUBE-NODE-PORT, KUBE-LOAD-BALANCER, KUBE-MARK-MASQ,
                              KUBE-POSTROUTING (nat); KUBE-FORWARD, KUBE-IPVS-FILTER, ... (filter)

A node's wanted state is an `IpvsState`; `changes(have, want)` is the work that takes the
kernel from one to the other, for the tools that do it: `ip -batch` (the addresses),
`ipset restore`, `ipvsadm -R` and `iptables-restore --noflush`. Real servers of a TCP
virtual server that are gone are not deleted at once: their weight goes to 0 and they are
deleted once their connections have ended (kube-proxy's graceful termination); UDP and SCTP
ones go at once. IPVS mode's own behaviour, where it differs from iptables mode: no REJECT
for a Service without endpoints (the kernel answers ICMP port unreachable), and with
externalTrafficPolicy Local but no endpoint on the node, every endpoint is used.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from nsk.proxy import masquerade
from nsk.proxy.masquerade import comment as _comment
from nsk.proxy.masquerade import KUBE_MARK_MASQ, KUBE_POSTROUTING, MASQ_MARK, NSK_IP_MASQ
from nsk.proxy.model import NodeContext, ServicePort, categorize, contains_any, node_port_ips

DEVICE = "kube-ipvs0"
MARK = f"0x{int(MASQ_MARK, 16):08x}"  # kube-proxy's IPVS mode prints the mark as %#08x

# name -> (type, comment): kube-proxy's ipsetInfo, in its order
SETS = {
    "KUBE-LOOP-BACK": ("hash:ip,port,ip", "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"),
    "KUBE-CLUSTER-IP": ("hash:ip,port", "Kubernetes service cluster ip + port for masquerade purpose"),
    "KUBE-EXTERNAL-IP": ("hash:ip,port", "Kubernetes service external ip + port for masquerade and filter purpose"),
    "KUBE-EXTERNAL-IP-LOCAL": ("hash:ip,port", "Kubernetes service external ip + port with externalTrafficPolicy=local"),
    "KUBE-LOAD-BALANCER": ("hash:ip,port", "Kubernetes service lb portal"),
    "KUBE-LOAD-BALANCER-LOCAL": ("hash:ip,port",
                                 "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"),
    "KUBE-LOAD-BALANCER-FW": ("hash:ip,port",
                              "Kubernetes service load balancer ip + port for load balancer with sourceRange"),
    "KUBE-LOAD-BALANCER-SOURCE-IP": ("hash:ip,port,ip",
                                     "Kubernetes service load balancer ip + port + source IP for packet filter purpose"),
    "KUBE-LOAD-BALANCER-SOURCE-CIDR": ("hash:ip,port,net",
                                       "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"),
    "KUBE-NODE-PORT-TCP": ("bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose"),
    "KUBE-NODE-PORT-LOCAL-TCP": ("bitmap:port", "Kubernetes nodeport TCP port with externalTrafficPolicy=local"),
    "KUBE-NODE-PORT-UDP": ("bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose"),
    "KUBE-NODE-PORT-LOCAL-UDP": ("bitmap:port", "Kubernetes nodeport UDP port with externalTrafficPolicy=local"),
    "KUBE-NODE-PORT-SCTP-HASH": ("hash:ip,port",
                                 "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"),
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH": ("hash:ip,port", "Kubernetes nodeport SCTP port with externalTrafficPolicy=local "
                                                       "with type 'hash ip:port'"),
    "KUBE-HEALTH-CHECK-NODE-PORT": ("bitmap:port", "Kubernetes health check node port"),
    "KUBE-IPVS-IPS": ("hash:ip", "Addresses on the ipvs interface"),
}
NAT_CHAINS = ("KUBE-SERVICES", KUBE_POSTROUTING, "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER", KUBE_MARK_MASQ, NSK_IP_MASQ)
FILTER_CHAINS = ("KUBE-FORWARD", "KUBE-NODE-PORT", "KUBE-PROXY-FIREWALL", "KUBE-SOURCE-RANGES-FIREWALL",
                 "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER")
# kube-proxy's createAndLinkKubeChain: the jumps from the built-in chains (no ctstate match,
# unlike iptables mode), and nsk's egress masquerade
JUMPS = (
    ("nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", ""),
    ("nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals", ""),
    *masquerade.JUMPS,
    ("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules", ""),
    ("filter", "INPUT", "KUBE-NODE-PORT", "kubernetes health check rules", ""),
    ("filter", "INPUT", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules", ""),
    ("filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules", ""),
    ("filter", "INPUT", "KUBE-IPVS-FILTER", "kubernetes ipvs access filter", ""),
    ("filter", "OUTPUT", "KUBE-IPVS-OUT-FILTER", "kubernetes ipvs access filter", ""),
)
# what kube-proxy sets in the node's namespace (EnsureSysctl); conn_reuse_mode only before 5.9
SYSCTLS = (("net.ipv4.vs.conntrack", "1"), ("net.ipv4.vs.expire_nodest_conn", "1"),
           ("net.ipv4.vs.expire_quiescent_template", "1"), ("net.ipv4.ip_forward", "1"))
_OPT = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}


@dataclass(frozen=True)
class VirtualServer:
    proto: str  # TCP, UDP, SCTP
    addr: str
    port: int
    scheduler: str = "rr"
    timeout: int = 0  # persistence (ClientIP affinity) in seconds; 0: none

    @property
    def key(self) -> str:
        """kube-proxy's VirtualServer.String(): `ip:port/PROTO`."""
        return f"{self.addr}:{self.port}/{self.proto}"

    @property
    def service(self) -> str:
        """ipvsadm's service address option."""
        return f"{_OPT[self.proto]} {self.addr}:{self.port}"

    def add(self, verb: str = "-A") -> str:
        return (f"{verb} {self.service} -s {self.scheduler}" + (f" -p {self.timeout}" if self.timeout else "")
                + (" -b mh-port" if self.scheduler == "mh" else ""))  # kube-proxy's FlagSourceHash for mh


@dataclass(frozen=True)
class IpvsState:
    """What IPVS mode puts in a node's kernel (the iptables rules apart)."""
    addrs: frozenset[str] = frozenset()  # on kube-ipvs0
    services: dict[str, tuple[VirtualServer, dict[str, int]]] = field(default_factory=dict)  # key -> (vs, rs -> weight)
    sets: dict[str, frozenset[str]] = field(default_factory=dict)  # ipset -> entries

    def draining(self) -> set[tuple[str, str]]:
        """(virtual server key, real server) of the weight-0 real servers: those wait for
        their connections to end."""
        return {(k, rs) for k, (_, real) in self.services.items() for rs, w in real.items() if w == 0}


@dataclass(frozen=True)
class IpvsRuleset:
    state: IpvsState
    iptables: str  # iptables-restore --noflush input: every IPVS-mode chain, whole

    @property
    def counts(self) -> tuple[int, int]:
        """(virtual servers, real servers)."""
        return len(self.state.services), sum(len(r) for _, r in self.state.services.values())


def render(ports: list[ServicePort], ctx: NodeContext, scheduler: str = "rr") -> IpvsRuleset:
    """The node's IPVS state and iptables rules for these Service ports."""
    sets: dict[str, set[str]] = {name: set() for name in SETS}
    services: dict[str, tuple[VirtualServer, dict[str, int]]] = {}
    bind: set[str] = set()
    out_filter: list[str] = []
    node_ips = set(ctx.addresses)  # an external IP that is one of these is not bound to kube-ipvs0
    node_port_addrs = node_port_ips(ctx)  # every local address (kube-ipvs0's aside), as nodePortAddresses allows

    def virtual(addr: str, port: int, sp: ServicePort, eps) -> None:
        vs = VirtualServer(sp.protocol, addr, port, scheduler, sp.affinity_timeout)
        services[vs.key] = (vs, {e.address: 1 for e in eps})

    for sp in ports:
        proto = sp.proto
        cluster, local, _ = categorize(sp, ctx.node)
        # kube-proxy's IPVS mode (#97081): a Local policy without a local endpoint uses the
        # cluster's, so that local Pods still reach the Service
        external = (local or cluster) if sp.external_local else cluster
        internal = (local or cluster) if sp.internal_local else cluster
        for e in sp.endpoints:
            if e.node == ctx.node:
                sets["KUBE-LOOP-BACK"].add(f"{e.ip},{proto}:{e.port},{e.ip}")
        sets["KUBE-CLUSTER-IP"].add(f"{sp.cluster_ip},{proto}:{sp.port}")
        virtual(sp.cluster_ip, sp.port, sp, internal)
        bind.add(sp.cluster_ip)
        for ip in sp.external_ips:
            sets["KUBE-EXTERNAL-IP-LOCAL" if sp.external_local else "KUBE-EXTERNAL-IP"].add(f"{ip},{proto}:{sp.port}")
            virtual(ip, sp.port, sp, external)
            if ip not in node_ips:
                bind.add(ip)
        for ip in sp.lb_ips:
            entry = f"{ip},{proto}:{sp.port}"
            sets["KUBE-LOAD-BALANCER"].add(entry)
            if sp.external_local:
                sets["KUBE-LOAD-BALANCER-LOCAL"].add(entry)
            if sp.lb_source_ranges:
                sets["KUBE-LOAD-BALANCER-FW"].add(entry)
                # (ipset prints a /32 as the bare address)
                sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"].update(f"{entry},{c.removesuffix('/32')}"
                                                              for c in sp.lb_source_ranges)
                if any(contains_any(sp.lb_source_ranges, ip_) for ip_ in ctx.node_ips):
                    sets["KUBE-LOAD-BALANCER-SOURCE-IP"].add(f"{entry},{ip}")
                else:
                    out_filter.append(f"-A KUBE-IPVS-OUT-FILTER -s {ip} -m ipvs --vaddr {ip} --vproto {proto} "
                                      f"--vport {sp.port} -j DROP")
            virtual(ip, sp.port, sp, external)
            if ip not in node_ips:
                bind.add(ip)
        if sp.node_port and node_port_addrs:
            if proto == "sctp":
                for ip in node_port_addrs:
                    sets["KUBE-NODE-PORT-SCTP-HASH"].add(f"{ip},sctp:{sp.node_port}")
                    if sp.external_local:
                        sets["KUBE-NODE-PORT-LOCAL-SCTP-HASH"].add(f"{ip},sctp:{sp.node_port}")
            else:
                sets[f"KUBE-NODE-PORT-{sp.protocol}"].add(str(sp.node_port))
                if sp.external_local:
                    sets[f"KUBE-NODE-PORT-LOCAL-{sp.protocol}"].add(str(sp.node_port))
            for ip in node_port_addrs:
                virtual(ip, sp.node_port, sp, external)
            if sp.health_check_node_port:
                sets["KUBE-HEALTH-CHECK-NODE-PORT"].add(str(sp.health_check_node_port))
    sets["KUBE-IPVS-IPS"] = bind
    state = IpvsState(frozenset(bind), services, {k: frozenset(v) for k, v in sets.items()})
    return IpvsRuleset(state, _iptables(state, ctx.cluster_cidr, out_filter))


def _iptables(state: IpvsState, cluster_cidr: str, out_filter: list[str]) -> str:
    """kube-proxy's writeIptablesRules: every chain whole; a rule that matches a set is
    written only when the set has entries."""
    has = {k for k, v in state.sets.items() if v}
    mark = f"{MARK}/{MARK}"
    nat = ["-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN"]

    def match(name: str, flags: str) -> str:
        return f"{_comment(SETS[name][1])} -m set --match-set {name} {flags}"
    if "KUBE-LOOP-BACK" in has:
        nat.append(f"-A {KUBE_POSTROUTING} {match('KUBE-LOOP-BACK', 'dst,dst,src')} -j MASQUERADE")
    if "KUBE-LOAD-BALANCER" in has:
        nat.append(f"-A KUBE-SERVICES {match('KUBE-LOAD-BALANCER', 'dst,dst')} -j KUBE-LOAD-BALANCER")
    if "KUBE-LOAD-BALANCER-LOCAL" in has:
        nat.append(f"-A KUBE-LOAD-BALANCER {match('KUBE-LOAD-BALANCER-LOCAL', 'dst,dst')} -j RETURN")
    for proto in ("TCP", "UDP"):
        for name, target in ((f"KUBE-NODE-PORT-LOCAL-{proto}", "RETURN"), (f"KUBE-NODE-PORT-{proto}", KUBE_MARK_MASQ)):
            if name in has:
                nat.append(f"-A KUBE-NODE-PORT -p {proto.lower()} {match(name, 'dst')} -j {target}")
    for name, target in (("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "RETURN"), ("KUBE-NODE-PORT-SCTP-HASH", KUBE_MARK_MASQ)):
        if name in has:
            nat.append(f"-A KUBE-NODE-PORT -p sctp {match(name, 'dst,dst')} -j {target}")
    if "KUBE-CLUSTER-IP" in has:
        nat.append(f"-A KUBE-SERVICES {match('KUBE-CLUSTER-IP', 'dst,dst')} ! -s {cluster_cidr} -j {KUBE_MARK_MASQ}")
    for name in ("KUBE-EXTERNAL-IP", "KUBE-EXTERNAL-IP-LOCAL"):
        if name in has:
            if name == "KUBE-EXTERNAL-IP":
                nat.append(f"-A KUBE-SERVICES {match(name, 'dst,dst')} -j {KUBE_MARK_MASQ}")
            nat.append(f"-A KUBE-SERVICES {match(name, 'dst,dst')} -m physdev ! --physdev-is-in "
                       "-m addrtype ! --src-type LOCAL -j ACCEPT")
            nat.append(f"-A KUBE-SERVICES {match(name, 'dst,dst')} -m addrtype --dst-type LOCAL -j ACCEPT")
    nat.append("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT")
    nat.append(f"-A KUBE-LOAD-BALANCER -j {KUBE_MARK_MASQ}")
    for name in ("KUBE-CLUSTER-IP", "KUBE-LOAD-BALANCER"):
        if name in has:
            nat.append(f"-A KUBE-SERVICES -m set --match-set {name} dst,dst -j ACCEPT")
    shared = [r.replace(MASQ_MARK, MARK) for r in masquerade.rules(cluster_cidr)]
    nat += shared
    flt = []
    if "KUBE-LOAD-BALANCER-FW" in has:
        flt.append(f"-A KUBE-PROXY-FIREWALL {match('KUBE-LOAD-BALANCER-FW', 'dst,dst')} -j KUBE-SOURCE-RANGES-FIREWALL")
    for name in ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "KUBE-LOAD-BALANCER-SOURCE-IP"):
        if name in has:
            flt.append(f"-A KUBE-SOURCE-RANGES-FIREWALL {match(name, 'dst,dst,src')} -j RETURN")
    flt.append("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP")
    flt += out_filter
    flt += [f'-A KUBE-FORWARD {_comment("kubernetes forwarding rules")} -m mark --mark {mark} -j ACCEPT',
            f'-A KUBE-FORWARD {_comment("kubernetes forwarding conntrack rule")} '
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A KUBE-NODE-PORT {match('KUBE-HEALTH-CHECK-NODE-PORT', 'dst')} -j ACCEPT"]
    flt += [f"-A KUBE-IPVS-FILTER -m set --match-set {name} {flags} -j RETURN"
            for name, flags in (("KUBE-LOAD-BALANCER", "dst,dst"), ("KUBE-CLUSTER-IP", "dst,dst"),
                                ("KUBE-EXTERNAL-IP", "dst,dst"), ("KUBE-EXTERNAL-IP-LOCAL", "dst,dst"),
                                ("KUBE-HEALTH-CHECK-NODE-PORT", "dst"))]
    flt.append("-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT")
    lines = ["*nat", *(f":{c} - [0:0]" for c in NAT_CHAINS), *nat, "COMMIT",
             "*filter", *(f":{c} - [0:0]" for c in FILTER_CHAINS), *flt, "COMMIT"]
    return "\n".join(lines) + "\n"


# ---- from one state to another ------------------------------------------------------------

@dataclass(frozen=True)
class Changes:
    bind: tuple[str, ...]  # addresses to add to kube-ipvs0
    unbind: tuple[str, ...]  # to remove from it, once the rest is done
    ipset: tuple[str, ...]  # `ipset restore` lines
    ipvsadm: tuple[str, ...]  # `ipvsadm -R` lines
    after: IpvsState  # the kernel's state once they are made (draining real servers included)

    def __bool__(self) -> bool:
        return bool(self.bind or self.unbind or self.ipset or self.ipvsadm)


def changes(have: IpvsState, want: IpvsState, drained: frozenset[tuple[str, str]] = frozenset(),
            create_sets: bool = False) -> Changes:
    """What takes a kernel holding `have` to `want`. A TCP real server that is gone goes to
    weight 0 and stays until it is in `drained` (its connections have ended); one that comes
    back is deleted and added again, as kube-proxy does. `create_sets`: the ipsets are created first (-exist)."""
    ipset: list[str] = []
    if create_sets:
        for name, (typ, _) in SETS.items():
            opts = "range 0-65535" if typ.startswith("bitmap") else "family inet hashsize 1024 maxelem 65536"
            ipset.append(f"create {name} {typ} {opts}")
    for name in SETS:
        before, after = have.sets.get(name, frozenset()), want.sets.get(name, frozenset())
        ipset += [f"del {name} {e}" for e in sorted(before - after)]
        ipset += [f"add {name} {e}" for e in sorted(after - before)]
    cmds: list[str] = []
    result: dict[str, tuple[VirtualServer, dict[str, int]]] = {}
    for key, (vs, real) in have.services.items():
        if key not in want.services:
            cmds.append(f"-D {vs.service}")
    for key, (vs, real) in want.services.items():
        old = have.services.get(key)
        if old is None:
            cmds.append(vs.add())
            current: dict[str, int] = {}
        else:
            if old[0] != vs:
                cmds.append(vs.add("-E"))
            current = old[1]
        kept = dict(real)
        for rs, w in real.items():
            if rs not in current:
                cmds.append(f"-a {vs.service} -r {rs} -m -w {w}")
            elif current[rs] == 0:  # draining, and back: out of the drain, added anew (kube-proxy's
                # MoveRSOutofGracefulDeleteList), so its old connections end
                cmds += [f"-d {vs.service} -r {rs}", f"-a {vs.service} -r {rs} -m -w {w}"]
            elif current[rs] != w:
                cmds.append(f"-e {vs.service} -r {rs} -m -w {w}")
        for rs, w in current.items():
            if rs in real:
                continue
            if vs.proto != "TCP" or (key, rs) in drained:
                cmds.append(f"-d {vs.service} -r {rs}")
            else:
                if w != 0:
                    cmds.append(f"-e {vs.service} -r {rs} -m -w 0")
                kept[rs] = 0
        result[key] = (vs, kept)
    bind = tuple(sorted(want.addrs - have.addrs))
    unbind = tuple(sorted(have.addrs - want.addrs))
    return Changes(bind, unbind, tuple(ipset), tuple(cmds), IpvsState(want.addrs, result, want.sets))


# ---- reading the kernel's state back -------------------------------------------------------

def parse_ipvsadm_save(text: str) -> dict[str, tuple[VirtualServer, dict[str, int]]]:
    """`ipvsadm -S -n` output as virtual servers and their real servers' weights."""
    out: dict[str, tuple[VirtualServer, dict[str, int]]] = {}
    proto_of = {v: k for k, v in _OPT.items()}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[1] not in proto_of:
            continue
        addr, _, port = words[2].rpartition(":")
        opts = dict(zip(words[3::2], words[4::2]))
        if words[0] == "-A":
            timeout = int(opts.get("-p", 0))
            vs = VirtualServer(proto_of[words[1]], addr, int(port), opts.get("-s", "wlc"), timeout)
            out[vs.key] = (vs, {})
        elif words[0] == "-a":
            key = f"{addr}:{port}/{proto_of[words[1]]}"
            if key in out and "-r" in words:
                rs = words[words.index("-r") + 1]
                out[key][1][rs] = int(words[words.index("-w") + 1]) if "-w" in words[:-1] else 1
    return out


def parse_proc_ip_vs(text: str) -> dict[tuple[str, str], int]:
    """/proc/net/ip_vs (what `ipvsadm -L -n` prints, the addresses and ports in hex, read
    without starting a process): (virtual server key, real server) -> its connections
    (active + inactive). IPv4 only, as the rest of this mode."""
    def addr(text: str) -> str | None:
        ip, _, port = text.partition(":")
        return f"{ipaddress.IPv4Address(int(ip, 16))}:{int(port, 16)}" if len(ip) == 8 and port else None
    out: dict[tuple[str, str], int] = {}
    vs = None
    for line in text.splitlines():
        words = line.split()
        if words and words[0] in ("TCP", "UDP", "SCTP") and len(words) >= 2:
            vs = addr(words[1])
            vs = vs and f"{vs}/{words[0]}"
        elif words[:1] == ["->"] and len(words) >= 6 and vs and (rs := addr(words[1])):
            out[(vs, rs)] = int(words[4]) + int(words[5])
    return out


def parse_ipset_save(text: str) -> dict[str, frozenset[str]]:
    """`ipset save` output: kube-proxy's sets and their entries."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[1] in SETS:
            if words[0] == "create":
                out.setdefault(words[1], set())
            elif words[0] == "add" and len(words) >= 3:
                out.setdefault(words[1], set()).add(words[2])
    return {k: frozenset(v) for k, v in out.items()}
