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

import collections
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


# Where a reverse name's PTR records come from, best first: a Service's cluster IP; else
# every endpoint with that address, of any Service; else the Pod's own record. Each tier is
# kept under its own key, so one object's change never has to look at another's.
PTR_TIERS = (PTR, "PTR#endpoint", "PTR#pod")
_TYPES = (SOA, NS, A, AAAA, CNAME, PTR, SRV, TXT)


@dataclass(frozen=True)
class Part:
    """What one object gives the zone: records, names that exist without records, and
    namespaces (for `pods insecure` and NODATA)."""

    records: tuple[tuple[str, RR], ...] = ()  # (key type, record): the key type may be a PTR tier
    names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()


@dataclass
class Zone:
    """The cluster zone, kept up to date object by object: `put(owner, part)` replaces what
    `owner` (a Service with its Endpoints, a Pod, a Namespace) gave before, so a change
    costs what that object holds, not what the cluster holds."""

    domain: str  # "cluster.local." (lower case, trailing dot)
    ttl: int
    dns_ip: str
    records: dict[tuple[str, str], dict[RR, int]] = field(default_factory=dict)  # -> how many give it
    names: dict[str, int] = field(default_factory=dict)  # every name that exists (also empty non-terminals)
    namespaces: dict[str, int] = field(default_factory=dict)
    parts: dict[tuple, Part] = field(default_factory=dict)

    def put(self, owner: tuple, part: Part) -> bool:
        """Make `part` what `owner` gives; whether anything changed. Only the difference is
        counted: a Service's 21st endpoint costs one PTR record, not all of them again."""
        old = self.parts.get(owner, _EMPTY)
        if old == part:
            return False
        gone, new = zip(*(_delta(getattr(old, f), getattr(part, f)) for f in ("records", "names", "namespaces")))
        self._count(Part(*gone), -1)
        self._count(Part(*new), 1)
        if part.records or part.names or part.namespaces:
            self.parts[owner] = part
        else:
            self.parts.pop(owner, None)
        return True

    def _count(self, part: Part, step: int) -> None:
        for ktype, rr in part.records:
            rrs = self.records.setdefault((rr.name, ktype), {})
            _bump(rrs, rr, step)
            if not rrs:
                del self.records[(rr.name, ktype)]
            self._name(rr.name, step)
        for n in part.names:
            self._name(n, step)
        for n in part.namespaces:
            _bump(self.namespaces, n, step)

    def _name(self, name: str, step: int) -> None:
        labels = name.split(".")
        for i in range(len(labels) - 1):
            _bump(self.names, ".".join(labels[i:]), step)

    def get(self, name: str, rtype: str) -> list[RR]:
        """The records of one name and type, as served: a PTR from its best tier; SRV
        weights an equal share of 100 for each endpoint, as CoreDNS gives them (two
        endpoints under one hostname make one record, of a half share)."""
        if rtype == PTR:
            for tier in PTR_TIERS:
                if (name, tier) in self.records:
                    return list(self.records[(name, tier)])
            return []
        rrs = self.records.get((name, rtype))
        if not rrs:
            return []
        shares = sum(rrs.values())
        if rtype != SRV or shares <= 1:
            return list(rrs)
        w = str(max(1, 100 // shares))
        return [RR(r.name, r.type, " ".join([r.data.split()[0], w] + r.data.split()[2:]), r.ttl) for r in rrs]

    def soa(self, zone: str | None = None) -> RR:
        """The SOA of the cluster zone, or of another zone served (in-addr.arpa.), as CoreDNS makes them."""
        zone = zone or self.domain
        return RR(zone, SOA, f"ns.dns.{zone} hostmaster.{zone} 1 7200 1800 86400 {self.ttl}", self.ttl)

    def in_zone(self, qname: str) -> bool:
        return qname == self.domain or qname.endswith("." + self.domain) or qname.endswith(".in-addr.arpa.")

    # ---- what each object gives ---------------------------------------------------------

    def rr(self, name: str, rtype: str, data: str, ttl: int | None = None, key: str | None = None) -> tuple[str, RR]:
        return (key or rtype, RR(name.lower(), rtype, data, self.ttl if ttl is None else ttl))

    def base_part(self) -> Part:
        d = self.domain
        return Part((self.rr(d, SOA, self.soa().data), self.rr(d, NS, f"ns.dns.{d}"),
                     self.rr(f"ns.dns.{d}", A, self.dns_ip),
                     self.rr(f"dns-version.{d}", TXT, f'"{SCHEMA_VERSION}"', ttl=28800)),  # CoreDNS's TTL
                    (f"pod.{d}",))

    def namespace_part(self, ns: str) -> Part:
        ns = ns.lower()
        return Part(names=(f"{ns}.svc.{self.domain}", f"{ns}.pod.{self.domain}"), namespaces=(ns,))

    def service_part(self, svc: dict, ep: dict | None) -> Part:
        """A Service's records with its Endpoints'."""
        d = self.domain
        meta, spec = svc["metadata"], svc["spec"]
        ns, name = meta["namespace"], meta["name"]
        base = f"{name}.{ns}.svc.{d}"
        out = []
        if spec.get("type") == "ExternalName":
            return Part((self.rr(base, CNAME, spec["externalName"].rstrip(".").lower() + "."),), (f"{ns}.svc.{d}",))
        typed = Service.of(svc)
        subsets = (ep or {}).get("subsets") or []
        if typed.has_virtual_ip:
            cip = typed.cluster_ip
            out += [self.rr(base, A, cip), self.rr(_reverse(cip), PTR, base)]
            for p in spec.get("ports") or []:
                out.append(self.rr(base, SRV, f"0 100 {p['port']} {base}"))
                if p.get("name"):
                    out.append(self.rr(f"_{p['name']}._{p.get('protocol', 'TCP').lower()}.{base}", SRV,
                                       f"0 100 {p['port']} {base}"))
            # its endpoints' addresses point back to them, as CoreDNS's reverse lookup finds
            # an endpoint of any Service (unless the address is some Service's cluster IP)
            for sub in subsets:
                for a in sub.get("addresses") or []:
                    out.append(self.rr(_reverse(a["ip"]), PTR, f"{a.get('hostname') or _dashed(a['ip'])}.{base}",
                                       key=PTR_TIERS[1]))
            return Part(tuple(out), (f"{ns}.svc.{d}",))
        # headless: the ready endpoints themselves; none ready: no record, and so no name
        # (NXDOMAIN), as CoreDNS answers
        for sub in subsets:
            for a in sub.get("addresses") or []:
                host = f"{a.get('hostname') or _dashed(a['ip'])}.{base}"
                out += [self.rr(base, A, a["ip"]), self.rr(host, A, a["ip"]),
                        self.rr(_reverse(a["ip"]), PTR, host, key=PTR_TIERS[1])]
                for p in sub.get("ports") or []:
                    out.append(self.rr(base, SRV, f"0 100 {p['port']} {host}"))
                    if p.get("name"):
                        out.append(self.rr(f"_{p['name']}._{p.get('protocol', 'TCP').lower()}.{base}", SRV,
                                           f"0 100 {p['port']} {host}"))
        return Part(tuple(out), (f"{ns}.svc.{d}",))

    def pod_part(self, pod: dict) -> Part:
        """A Pod's address points back to its pod record, unless an endpoint name claims it."""
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or pod["spec"].get("hostNetwork"):
            return Part()
        ns = pod["metadata"]["namespace"]
        return Part((self.rr(_reverse(ip), PTR, f"{_dashed(ip)}.{ns}.pod.{self.domain}", key=PTR_TIERS[2]),))


_EMPTY = Part()


def _delta(old: tuple, new: tuple) -> tuple[tuple, tuple]:
    """(what `old` has more of than `new`, what `new` has more of than `old`), as multisets."""
    if not old or not new:
        return old, new
    o, n = collections.Counter(old), collections.Counter(new)
    return tuple((o - n).elements()), tuple((n - o).elements())


def _bump(counts: dict, k, step: int) -> None:
    n = counts.get(k, 0) + step
    if n > 0:
        counts[k] = n
    else:
        counts.pop(k, None)


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
    z = Zone(domain.lower().rstrip(".") + ".", ttl, dns_ip)
    z.put(("",), z.base_part())
    if namespaces is None:
        namespaces = [o["metadata"]["namespace"] for o in [*services, *pods]]
    for n in namespaces:
        z.put(("Namespace", n), z.namespace_part(n))
    eps = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints}
    for svc in services:
        meta = svc["metadata"]
        z.put(("Service", meta["namespace"], meta["name"]), z.service_part(svc, eps.get((meta["namespace"], meta["name"]))))
    for pod in pods:
        z.put(("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"]), z.pod_part(pod))
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
    found = z.get(q, qtype)
    if qtype == ANY:
        found = [rr for t in _TYPES for rr in z.get(q, t)]
    if not found and qtype in (A, ANY):
        found = _pod_record(z, q)
    chase = ""
    if not found and qtype != CNAME and (q, CNAME) in z.records:
        # the CNAME answers every type; and, as CoreDNS, the target's records follow it when
        # the target is the cluster's, or the server asks its upstream for them (chase)
        found = z.get(q, CNAME)
        target = found[0].data
        for _ in range(MAX_CNAMES):
            if not z.in_zone(target) or target.endswith("." + REVERSE):
                chase = target
                break
            more = z.get(target, qtype) or z.get(target, CNAME)
            if not more or more[0] in found:
                break
            found += more
            if more[0].type != CNAME:
                break
            target = more[0].data
    additional: list[RR] = []
    if qtype == SRV:  # each target's address once, however many ports point at it
        for target in dict.fromkeys(rr.data.split()[3] for rr in found if rr.type == SRV):
            additional += z.get(target, A)
    if qtype == NS:  # the name server's address, as glue
        for rr in found:
            additional += z.get(rr.data, A)
    if found:
        return Reply("NOERROR", tuple(found), (), tuple(additional), chase=chase)
    exists = q in z.names or bool(_pod_record(z, q))
    if q.endswith("." + REVERSE) and not exists:
        # not a cluster address: the reverse zone's own SOA, and a server with an upstream
        # asks it (kubeadm's Corefile: `fallthrough in-addr.arpa ip6.arpa`)
        return Reply("NXDOMAIN", (), (z.soa(REVERSE),), fallthrough=True)
    return Reply("NOERROR" if exists else "NXDOMAIN", (), (z.soa(),))
