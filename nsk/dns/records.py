"""The cluster zone as data, after the Kubernetes DNS specification (kubernetes/dns
docs/specification.md) and CoreDNS's `kubernetes` plugin (pure).

Names in the zone (<zone> = cluster domain, e.g. cluster.local):

    <svc>.<ns>.svc.<zone>                A  clusterIP | A per ready endpoint (headless) | CNAME (ExternalName)
    <ep>.<svc>.<ns>.svc.<zone>           A  a headless Service's endpoint; <ep> = hostname or a-b-c-d
    <svc>.<ns>.svc.<zone>                SRV per port, named or not (per endpoint × port when headless)
    _<port>._<proto>.<svc>.<ns>.svc.<zone>  SRV per named port (per endpoint when headless)
    a-b-c-d.<ns>.pod.<zone>              A  a.b.c.d
    d.c.b.a.in-addr.arpa                 PTR a Service's cluster IP; else every endpoint with that
                                         address, of any Service (<ep>.<svc>.<ns>.svc.<zone>); else
                                         the Pod's record
    dns-version.<zone>                   TXT "1.1.0"
    <zone>                               SOA, NS (with ns.dns.<zone>'s address as glue)
    pod.<zone>, <ns>.pod.<zone>, <ns>.svc.<zone>   exist for every namespace (NODATA, RFC 8020)

`answer()` picks the reply code in one place: NOERROR with records, NOERROR without
(NODATA: the name exists, not that type; SOA in authority), or NXDOMAIN.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from nsk.api.types import Service


A, NS, CNAME, SOA, PTR, TXT, SRV, AAAA, ANY = "A", "NS", "CNAME", "SOA", "PTR", "TXT", "SRV", "AAAA", "ANY"
SCHEMA_VERSION = "1.1.0"


@dataclass(frozen=True)
class RR:
    name: str  # lower case, with the trailing dot
    type: str
    data: str  # zone-file rdata: "10.96.0.2", "0 100 80 web.default.svc.cluster.local."
    ttl: int

    def __str__(self) -> str:
        return f"{self.name} {self.ttl} IN {self.type} {self.data}"


@dataclass(frozen=True)
class Reply:
    rcode: str  # NOERROR, NXDOMAIN, REFUSED
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    authoritative: bool = True
    fallthrough: bool = False  # not the cluster's to say: a server with an upstream asks it
    chase: str = ""  # the answer ends in a CNAME to this name outside the cluster: ask the upstream


@dataclass
class Zone:
    domain: str  # "cluster.local." (lower case, trailing dot)
    ttl: int
    dns_ip: str
    records: dict[tuple[str, str], list[RR]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # every name that exists (also empty non-terminals)
    namespaces: set[str] = field(default_factory=set)
    srv_shares: dict[str, int] = field(default_factory=dict)  # SRV name -> endpoints it was made for

    def add(self, name: str, rtype: str, data: str, ttl: int | None = None) -> None:
        name = name.lower()
        rrs = self.records.setdefault((name, rtype), [])
        rr = RR(name, rtype, data, self.ttl if ttl is None else ttl)
        if rtype == SRV:  # CoreDNS shares the weight among endpoints, before it drops duplicates
            self.srv_shares[name] = self.srv_shares.get(name, 0) + 1
        if rr in rrs:
            return  # one record however many endpoints share a hostname
        rrs.append(rr)
        labels = name.split(".")
        for i in range(len(labels) - 1):
            self.names.add(".".join(labels[i:]))

    def soa(self, zone: str | None = None) -> RR:
        """The SOA of the cluster zone, or of another zone served (in-addr.arpa.), as CoreDNS makes them."""
        zone = zone or self.domain
        return RR(zone, SOA, f"ns.dns.{zone} hostmaster.{zone} 1 7200 1800 86400 {self.ttl}", self.ttl)

    def in_zone(self, qname: str) -> bool:
        return qname == self.domain or qname.endswith("." + self.domain) or qname.endswith(".in-addr.arpa.")


def _dashed(ip: str) -> str:
    return ip.replace(".", "-")


def _reverse(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


REVERSE = "in-addr.arpa."
MAX_CNAMES = 8  # CNAMEs followed inside the cluster before the answer stops (a loop ends)


def build(services: list[dict], endpoints: list[dict], domain: str, dns_ip: str, ttl: int = 5,
          pods: list[dict] = (), namespaces: list[str] | None = None) -> Zone:
    """Every record of the cluster zone for these objects. `namespaces`: the names of the
    Namespaces that exist (by default those the objects are in)."""
    d = domain.lower().rstrip(".") + "."
    z = Zone(d, ttl, dns_ip)
    if namespaces is None:
        namespaces = [o["metadata"]["namespace"] for o in [*services, *pods]]
    z.namespaces = {n.lower() for n in namespaces}
    z.names.add(f"pod.{d}")
    for n in z.namespaces:
        z.names.update((f"{n}.svc.{d}", f"{n}.pod.{d}"))
    z.add(d, SOA, z.soa().data)
    z.add(d, NS, f"ns.dns.{d}")
    z.add(f"ns.dns.{d}", A, dns_ip)
    z.add(f"dns-version.{d}", TXT, f'"{SCHEMA_VERSION}"', ttl=28800)  # CoreDNS's TTL for it
    eps = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints}
    cluster_ips = {ip for svc in services for ip in Service.of(svc).cluster_ips}
    for svc in services:
        meta, spec = svc["metadata"], svc["spec"]
        ns, name = meta["namespace"], meta["name"]
        base = f"{name}.{ns}.svc.{d}"
        z.names.add(f"{ns}.svc.{d}")
        if spec.get("type") == "ExternalName":
            z.add(base, CNAME, spec["externalName"].rstrip(".").lower() + ".")
            continue
        typed = Service.of(svc)
        if typed.has_virtual_ip:
            cip = typed.cluster_ip
            z.add(base, A, cip)
            z.add(_reverse(cip), PTR, base)
            for p in spec.get("ports") or []:
                z.add(base, SRV, f"0 100 {p['port']} {base}")
                if p.get("name"):
                    z.add(f"_{p['name']}._{p.get('protocol', 'TCP').lower()}.{base}", SRV, f"0 100 {p['port']} {base}")
            # its endpoints' addresses point back to them, as CoreDNS's reverse lookup finds
            # an endpoint of any Service (unless the address is some Service's cluster IP)
            for sub in (eps.get((ns, name)) or {}).get("subsets") or []:
                for a in sub.get("addresses") or []:
                    if a["ip"] not in cluster_ips:
                        z.add(_reverse(a["ip"]), PTR, f"{a.get('hostname') or _dashed(a['ip'])}.{base}")
            continue
        # headless: the ready endpoints themselves
        ep = eps.get((ns, name)) or {}
        for sub in ep.get("subsets") or []:
            for a in sub.get("addresses") or []:
                host = f"{a.get('hostname') or _dashed(a['ip'])}.{base}"
                z.add(base, A, a["ip"])
                z.add(host, A, a["ip"])
                if a["ip"] not in cluster_ips:
                    z.add(_reverse(a["ip"]), PTR, host)
                for p in sub.get("ports") or []:
                    z.add(base, SRV, f"0 100 {p['port']} {host}")
                    if p.get("name"):
                        z.add(f"_{p['name']}._{p.get('protocol', 'TCP').lower()}.{base}", SRV,
                              f"0 100 {p['port']} {host}")
        # no ready endpoint: no record, and so no name (NXDOMAIN), as CoreDNS answers
    # a Pod's address points back to its pod record, unless an endpoint name claims it
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if ip and not pod["spec"].get("hostNetwork") and (_reverse(ip), PTR) not in z.records:
            z.add(_reverse(ip), PTR, f"{_dashed(ip)}.{pod['metadata']['namespace']}.pod.{d}")
    # SRV weights: an equal share of 100 for each endpoint, as CoreDNS gives them (two
    # endpoints under one hostname make one record, of a half share)
    for (n, t), rrs in z.records.items():
        if t == SRV and z.srv_shares.get(n, 1) > 1:
            w = max(1, 100 // z.srv_shares[n])
            z.records[(n, t)] = [RR(r.name, r.type, " ".join([r.data.split()[0], str(w)] + r.data.split()[2:]),
                                    r.ttl) for r in rrs]
    return z


def _pod_record(z: Zone, qname: str) -> list[RR]:
    """a-b-c-d.<ns>.pod.<zone>: CoreDNS's `pods insecure` answers with the address in the name."""
    rest = qname[: -len(z.domain) - 1]
    labels = rest.split(".")
    if len(labels) != 3 or labels[2] != "pod" or labels[1] not in z.namespaces:
        return []  # CoreDNS's `pods insecure` still asks that the namespace exist
    try:
        ip = str(ipaddress.IPv4Address(labels[0].replace("-", ".")))
    except ValueError:
        return []
    return [RR(qname, A, ip, z.ttl)]


def answer(z: Zone, qname: str, qtype: str) -> Reply:
    """The reply to one question; REFUSED outside the zone (the server forwards those if it can)."""
    q = qname.lower()
    if not q.endswith("."):
        q += "."
    if not z.in_zone(q):
        return Reply("REFUSED", authoritative=False)
    found = z.records.get((q, qtype), [])
    if qtype == ANY:
        found = [rr for (n, _), rrs in z.records.items() if n == q for rr in rrs]
    if not found and qtype in (A, ANY):
        found = _pod_record(z, q)
    chase = ""
    if not found and qtype != CNAME and (q, CNAME) in z.records:
        # the CNAME answers every type; and, as CoreDNS, the target's records follow it when
        # the target is the cluster's, or the server asks its upstream for them (chase)
        found, target = list(z.records[(q, CNAME)]), z.records[(q, CNAME)][0].data
        for _ in range(MAX_CNAMES):
            if not z.in_zone(target) or target.endswith("." + REVERSE):
                chase = target
                break
            more = z.records.get((target, qtype)) or z.records.get((target, CNAME))
            if not more or more[0] in found:
                break
            found += more
            if more[0].type != CNAME:
                break
            target = more[0].data
    additional: list[RR] = []
    if qtype == SRV:  # each target's address once, however many ports point at it
        for target in dict.fromkeys(rr.data.split()[3] for rr in found if rr.type == SRV):
            additional += z.records.get((target, A), [])
    if qtype == NS:  # the name server's address, as glue
        for rr in found:
            additional += z.records.get((rr.data, A), [])
    if found:
        return Reply("NOERROR", tuple(found), (), tuple(additional), chase=chase)
    exists = q in z.names or any(n == q for n, _ in z.records) or bool(_pod_record(z, q))
    if q.endswith("." + REVERSE) and not exists:
        # not a cluster address: the reverse zone's own SOA, and a server with an upstream
        # asks it (kubeadm's Corefile: `fallthrough in-addr.arpa ip6.arpa`)
        return Reply("NXDOMAIN", (), (z.soa(REVERSE),), fallthrough=True)
    return Reply("NOERROR" if exists else "NXDOMAIN", (), (z.soa(),))
