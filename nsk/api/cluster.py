"""The nsk `Cluster` document (SPEC §1): nodes, networks, proxy mode, external hosts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from nsk.api import names
from nsk.api.schema import ANY, BOOL, INT, STR, STRING_MAP, ListOf, Obj, OBJECT_META, check, normalize
from nsk.errors import InvalidObject, invalid, required, unsupported, duplicate

API_VERSION = "nsk.io/v1alpha1"
PROXY_MODES = ["iptables", "ipvs", "nftables", "userspace"]
# the source's six first, then the rest of the schedulers Debian's kernel has (ip_vs_*)
IPVS_SCHEDULERS = ["rr", "lc", "dh", "sh", "sed", "nq", "wrr", "wlc", "lblc", "lblcr", "fo", "ovf", "mh", "twos"]
IPTABLES_BACKENDS = ["legacy", "nft"]

SCHEMA = Obj("Cluster", {
    "apiVersion": STR, "kind": STR, "metadata": OBJECT_META,
    "spec": Obj("ClusterSpec", {
        "nodes": ListOf(Obj("ClusterNode", {"name": STR, "labels": STRING_MAP})),
        "networking": Obj("ClusterNetworking", {
            "podSubnet": STR, "serviceSubnet": STR, "nodeSubnet": STR, "nodePortRange": STR,
            "nodePortAddresses": ListOf(STR), "clusterDomain": STR}),
        "proxy": Obj("ClusterProxy", {"mode": STR, "ipvs": Obj("ClusterIPVS", {"scheduler": STR}),
                                      "iptables": Obj("ClusterIptables", {"backend": STR})}),
        "dns": Obj("ClusterDNS", {"clusterIP": STR, "upstream": ListOf(STR), "ttl": INT}),
        "external": Obj("ClusterExternal", {
            "subnet": STR, "hosts": ListOf(Obj("ExternalHost", {"name": STR, "ip": STR}))}),
        "loadBalancer": Obj("ClusterLoadBalancer", {"pool": STR}),
        "kubeProxy": ANY, "debug": BOOL,
    }),
})


@dataclass(frozen=True)
class NodeConfig:
    name: str
    labels: dict = field(default_factory=dict)


@dataclass(frozen=True)
class HostConfig:
    name: str
    ip: str


@dataclass(frozen=True)
class ClusterConfig:
    name: str = "nsk"
    nodes: tuple[NodeConfig, ...] = (NodeConfig("node-1"), NodeConfig("node-2"))
    pod_subnet: str = "10.244.0.0/16"
    service_subnet: str = "10.96.0.0/12"
    node_subnet: str = "172.18.0.0/24"
    node_port_range: tuple[int, int] = (30000, 32767)
    node_port_addresses: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    proxy_mode: str = "iptables"
    ipvs_scheduler: str = "rr"
    iptables_backend: str = ""  # 'nft' or 'legacy'; '' = the host's (what its `iptables` is)
    dns_cluster_ip: str = "10.96.0.10"
    dns_upstream: tuple[str, ...] = ()
    dns_ttl: int = 5
    external_subnet: str = "192.0.2.0/24"
    hosts: tuple[HostConfig, ...] = (HostConfig("client", "192.0.2.10"),)
    lb_pool: str = "198.51.100.0/24"

    def to_dict(self) -> dict:
        """The Cluster document with every default filled in (what `nsk get cluster -o yaml` shows)."""
        return {
            "apiVersion": API_VERSION, "kind": "Cluster", "metadata": {"name": self.name},
            "spec": {
                "nodes": [{"name": n.name, **({"labels": dict(n.labels)} if n.labels else {})} for n in self.nodes],
                "networking": {
                    "podSubnet": self.pod_subnet, "serviceSubnet": self.service_subnet,
                    "nodeSubnet": self.node_subnet,
                    "nodePortRange": f"{self.node_port_range[0]}-{self.node_port_range[1]}",
                    "nodePortAddresses": list(self.node_port_addresses), "clusterDomain": self.cluster_domain},
                "proxy": {"mode": self.proxy_mode, "ipvs": {"scheduler": self.ipvs_scheduler},
                          **({"iptables": {"backend": self.iptables_backend}} if self.iptables_backend else {})},
                "dns": {"clusterIP": self.dns_cluster_ip, "upstream": list(self.dns_upstream), "ttl": self.dns_ttl},
                "external": {"subnet": self.external_subnet,
                             "hosts": [{"name": h.name, "ip": h.ip} for h in self.hosts]},
                "loadBalancer": {"pool": self.lb_pool},
            },
        }


def parse_cluster(doc: dict | None, default_name: str = "nsk", source: str = "") -> ClusterConfig:
    """A ClusterConfig from a Cluster document (or the defaults); raises InvalidObject."""
    if doc is None:
        return ClusterConfig(name=default_name)
    doc = normalize(doc, SCHEMA)  # `ttl:` with nothing after it is an absent ttl, as for any manifest
    name = (doc.get("metadata") or {}).get("name", default_name) if isinstance(doc.get("metadata"), dict) else default_name
    errors = check(doc, SCHEMA, "")
    if doc.get("apiVersion") != API_VERSION:
        errors.append(unsupported("apiVersion", doc.get("apiVersion"), [API_VERSION]))
    if errors:
        raise InvalidObject("Cluster", str(name), errors, source)
    spec = doc.get("spec") or {}
    net = spec.get("networking") or {}
    dflt = ClusterConfig()
    errors = []
    for msg in names.dns1123_label(str(name)):
        errors.append(invalid("metadata.name", name, msg))

    nodes = []
    raw_nodes = spec.get("nodes")
    for i, n in enumerate(raw_nodes if raw_nodes is not None else [{"name": n.name} for n in dflt.nodes]):
        path = f"spec.nodes[{i}]"
        if not n.get("name"):
            errors.append(required(f"{path}.name"))
            continue
        for msg in names.dns1123_subdomain(n["name"]):
            errors.append(invalid(f"{path}.name", n["name"], msg))
        if any(o.name == n["name"] for o in nodes):
            errors.append(duplicate(f"{path}.name", n["name"]))
        for k, v in (n.get("labels") or {}).items():
            errors += [invalid(f"{path}.labels", k, m) for m in names.label_key(k)]
            errors += [invalid(f"{path}.labels", v, m) for m in names.label_value(v)]
        nodes.append(NodeConfig(n["name"], dict(n.get("labels") or {})))
    if raw_nodes == []:
        errors.append(required("spec.nodes", "a cluster needs at least one node"))

    def subnet(path: str, value: str | None, default: str):
        value = default if value is None else value
        try:
            return value, ipaddress.IPv4Network(value)
        except ValueError as e:
            errors.append(invalid(path, value, f"must be an IPv4 CIDR with no host bits set ({e})"))
            return value, None

    pod_s, pod_net = subnet("spec.networking.podSubnet", net.get("podSubnet"), dflt.pod_subnet)
    svc_s, svc_net = subnet("spec.networking.serviceSubnet", net.get("serviceSubnet"), dflt.service_subnet)
    node_s, node_net = subnet("spec.networking.nodeSubnet", net.get("nodeSubnet"), dflt.node_subnet)
    ext = spec.get("external") or {}
    ext_s, ext_net = subnet("spec.external.subnet", ext.get("subnet"), dflt.external_subnet)
    lb_s, lb_net = subnet("spec.loadBalancer.pool", (spec.get("loadBalancer") or {}).get("pool"), dflt.lb_pool)

    if pod_net is not None and pod_net.prefixlen > 24:
        errors.append(invalid("spec.networking.podSubnet", pod_s, "must be /24 or larger: every node gets a /24"))
    elif pod_net is not None and 2 ** (24 - pod_net.prefixlen) - 1 < len(nodes):
        errors.append(invalid("spec.networking.podSubnet", pod_s,
                              f"too small for {_nodes(len(nodes))}: each node gets a /24 and the first /24 is not "
                              f"used, so it must be /{24 - (len(nodes)).bit_length()} or larger"))
    if node_net is not None and node_net.num_addresses - 3 < len(nodes):
        # network, router and broadcast addresses, then one per node
        errors.append(invalid("spec.networking.nodeSubnet", node_s,
                              f"too small for {_nodes(len(nodes))} and a router: it must be "
                              f"/{32 - (len(nodes) + 2).bit_length()} or larger"))
    nets = [("spec.networking.podSubnet", pod_net), ("spec.networking.serviceSubnet", svc_net),
            ("spec.networking.nodeSubnet", node_net), ("spec.external.subnet", ext_net),
            ("spec.loadBalancer.pool", lb_net)]
    for i, (path_a, a) in enumerate(nets):
        for path_b, b in nets[i + 1:]:
            if a is not None and b is not None and a.overlaps(b):
                errors.append(invalid(path_b, str(b), f"overlaps {path_a} ({a})"))

    port_range = dflt.node_port_range
    raw = net.get("nodePortRange")
    if raw is not None:
        lo, _, hi = raw.partition("-")
        if not (lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi) <= 65535):
            errors.append(invalid("spec.networking.nodePortRange", raw, "must be FIRST-LAST, e.g. 30000-32767"))
        else:
            port_range = (int(lo), int(hi))
    npa = tuple(net.get("nodePortAddresses") or ())
    for i, cidr in enumerate(npa):
        try:
            ipaddress.ip_network(cidr)  # either family, as kube-proxy's --nodeport-addresses
        except (ValueError, TypeError):
            errors.append(invalid(f"spec.networking.nodePortAddresses[{i}]", cidr, "must be a CIDR"))
    domain = net.get("clusterDomain", dflt.cluster_domain)
    for msg in names.dns1123_subdomain(domain):
        errors.append(invalid("spec.networking.clusterDomain", domain, msg))

    proxy = spec.get("proxy") or {}
    mode = proxy.get("mode", dflt.proxy_mode)
    if mode not in PROXY_MODES:
        errors.append(unsupported("spec.proxy.mode", mode, PROXY_MODES))
    scheduler = (proxy.get("ipvs") or {}).get("scheduler", dflt.ipvs_scheduler)
    if scheduler not in IPVS_SCHEDULERS:
        errors.append(unsupported("spec.proxy.ipvs.scheduler", scheduler, IPVS_SCHEDULERS))
    ipt_backend = (proxy.get("iptables") or {}).get("backend", "")
    if ipt_backend not in ("", *IPTABLES_BACKENDS):
        errors.append(unsupported("spec.proxy.iptables.backend", ipt_backend, IPTABLES_BACKENDS))

    dns = spec.get("dns") or {}
    dns_ip = dns.get("clusterIP")
    if dns_ip is None and svc_net is not None:
        dns_ip = str(svc_net.network_address + 10)
    if dns_ip is not None and svc_net is not None:
        # the subnet's own address, its broadcast address and its first address (the
        # `kubernetes` Service's, as the API server reserves it) cannot be kube-dns's
        if not _ip_in(dns_ip, svc_net) or dns_ip in (str(svc_net.network_address), str(svc_net.network_address + 1),
                                                     str(svc_net.broadcast_address)):
            errors.append(invalid("spec.dns.clusterIP", dns_ip, f"must be an address in serviceSubnet {svc_s} "
                                                                f"other than {svc_net.network_address + 1}, which is "
                                                                "the kubernetes Service's"))
    for i, up in enumerate(dns.get("upstream") or []):
        try:
            addr = ipaddress.IPv4Address(up)
        except ValueError:
            errors.append(invalid(f"spec.dns.upstream[{i}]", up, "must be an IPv4 address"))
            continue
        # the DNS Pods answer on the Service IP and on their own loopback: forwarding there
        # sends a query round and round (what CoreDNS's loop plugin catches at run time)
        if str(addr) == dns_ip or addr.is_loopback:
            errors.append(invalid(f"spec.dns.upstream[{i}]", up, "must not be the cluster DNS itself (a forwarding "
                                                                 "loop)"))
    ttl = dns.get("ttl", dflt.dns_ttl)
    if ttl < 0:
        errors.append(invalid("spec.dns.ttl", ttl, "must be greater than or equal to 0"))

    hosts = []
    raw_hosts = ext.get("hosts")
    if raw_hosts is None:
        raw_hosts = [{"name": h.name, "ip": h.ip} for h in dflt.hosts] if ext.get("subnet") is None else []
    for i, h in enumerate(raw_hosts):
        path = f"spec.external.hosts[{i}]"
        if not h.get("name"):
            errors.append(required(f"{path}.name"))
            continue
        for msg in names.dns1123_label(h["name"]):
            errors.append(invalid(f"{path}.name", h["name"], msg))
        if any(o.name == h["name"] for o in hosts):
            errors.append(duplicate(f"{path}.name", h["name"]))
        ip = h.get("ip")
        if not ip and ext_net is not None:  # the next free address from .10 (as the default client's)
            given = {str(o.get("ip")) for o in raw_hosts if isinstance(o, dict) and o.get("ip")}
            given |= {o.ip for o in hosts}
            ip = next((str(a) for a in _host_candidates(ext_net) if str(a) not in given), None)
            if ip is None:
                errors.append(invalid(f"{path}.ip", "", f"no free address left in {ext_s}: give one"))
                continue
        if not ip:
            errors.append(required(f"{path}.ip"))
            continue
        if ext_net is not None and (not _ip_in(ip, ext_net) or ip in (str(ext_net.network_address + 1),
                                                                      str(ext_net.network_address),
                                                                      str(ext_net.broadcast_address))):
            errors.append(invalid(f"{path}.ip", ip, f"must be a host address in {ext_s} other than the "
                                                     f"router's {ext_net.network_address + 1}"))
        if any(o.ip == ip for o in hosts):
            errors.append(duplicate(f"{path}.ip", ip))
        hosts.append(HostConfig(h["name"], ip))

    if errors:
        raise InvalidObject("Cluster", str(name), errors, source)
    return ClusterConfig(
        name=name, nodes=tuple(nodes), pod_subnet=pod_s, service_subnet=svc_s, node_subnet=node_s,
        node_port_range=port_range, node_port_addresses=npa, cluster_domain=domain, proxy_mode=mode,
        ipvs_scheduler=scheduler, iptables_backend=ipt_backend, dns_cluster_ip=dns_ip, dns_upstream=tuple(dns.get("upstream") or ()),
        dns_ttl=ttl, external_subnet=ext_s, hosts=tuple(hosts), lb_pool=lb_s)


def _host_candidates(net) -> list:
    """An external subnet's addresses for hosts without one: from .10 up, then .2 to .9 (the
    router is .1)."""
    first = net.network_address + 10
    addrs = [a for a in net.hosts() if a != net.network_address + 1]
    return [a for a in addrs if a >= first] + [a for a in addrs if a < first]


def _nodes(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


def _ip_in(ip: str, net: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.IPv4Address(ip) in net
    except ValueError:
        return False
