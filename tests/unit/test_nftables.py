"""kube-proxy's nftables mode (pure): the rule text of kube-proxy's TestOverallNFTablesRules
(pkg/proxy/nftables/proxier_test.go, 1.34 layout) for the same objects, and partial syncs
that leave the kernel as a full one would."""

from __future__ import annotations

from nsk.proxy.model import Endpoint, NodeContext, ServicePort
from nsk.proxy.nftables import hash_and_truncate, render

# the fake proxier's: pod CIDR 10.0.0.0/8, service CIDR 172.30.0.0/16, nodePortAddresses 192.168.0.2
CTX = NodeContext("node-1", "10.0.0.0/8", ("192.168.0.2",))
SVC1 = ServicePort("ns1", "svc1", "p80", "TCP", 80, "172.30.0.41", endpoints=(Endpoint("10.180.0.1", 80, "node-2"),))
SVC2 = ServicePort("ns2", "svc2", "p80", "TCP", 80, "172.30.0.42", node_port=3001, external_ips=("192.168.99.22",),
                   lb_ips=("1.2.3.4",), external_local=True, health_check_node_port=30000,
                   endpoints=(Endpoint("10.180.0.2", 80, "node-2"),))
SVC5 = ServicePort("ns5", "svc5", "p80", "TCP", 80, "172.30.0.45", node_port=3002, lb_ips=("5.6.7.8",),
                   lb_source_ranges=("203.0.113.0/25",), affinity_timeout=10800,
                   endpoints=(Endpoint("10.180.0.3", 80, "node-2"),))
SVC6 = ServicePort("ns6", "svc6", "p80", "TCP", 80, "172.30.0.46")


def lines(ports) -> set[str]:
    return set(render(ports, CTX, "172.30.0.0/16").text.splitlines())


def test_chain_names_are_kube_proxys():
    assert hash_and_truncate("ns1/svc1/tcp/p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert hash_and_truncate("ns1/svc1/tcp/p80__10.180.0.1/80") == "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    assert len(hash_and_truncate("n" * 300)) == 240 and hash_and_truncate("n" * 300).endswith("...")


def test_the_rules_are_kube_proxys_for_the_same_objects():
    got = lines([SVC1, SVC2, SVC5, SVC6])
    expected = """\
add table ip kube-proxy { comment "rules for kube-proxy" ; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add element ip kube-proxy nodeport-ips { 192.168.0.2 }
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }
add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip daddr 172.30.0.45 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80
add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop
add element ip kube-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy cluster-ips { 172.30.0.46 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
""".splitlines()
    missing = [x for x in expected if x not in got]
    assert missing == []


def test_a_partial_sync_touches_only_what_changed_and_deletes_what_went():
    first = render([SVC1, SVC5, SVC6], CTX, "172.30.0.0/16")
    svc1b = ServicePort("ns1", "svc1", "p80", "TCP", 80, "172.30.0.41",
                        endpoints=(Endpoint("10.180.0.1", 80, "node-2"), Endpoint("10.180.0.9", 80, "node-1")))
    second = render([svc1b, SVC6], CTX, "172.30.0.0/16")
    text = second.since(first)
    assert "flush chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80" in text
    assert "svc6" not in text  # unchanged: not a word about it
    assert "delete chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80" in text
    assert "delete set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80" in text
    assert "delete element ip kube-proxy service-nodeports { tcp . 3002 }" in text
    assert second.since(second) == ""


def test_the_iptables_flow_table_through_nftables_mode():
    """tests/unit/test_iptables.py's FLOWS through kube-proxy's nftables table (and nsk's
    ip nsk-ip-masq) for the same Services: the same answers, but for nftables mode's own
    default: a ClusterIP's port that no Service has is rejected (cluster-ips-check), not
    left alone. A renderer change that alters any other flow fails here."""
    from nsk.proxy.nftables import masq_table
    from nsk.testing.tracer import NftTracer, Outcome, Packet
    from tests.unit.test_iptables import CTX as IPT_CTX
    from tests.unit.test_iptables import FLOWS, LOCAL, PORTS
    ctx = NodeContext(IPT_CTX.node, IPT_CTX.cluster_cidr, IPT_CTX.node_ips, service_cidr="10.96.0.0/12")
    tracer = NftTracer(render(PORTS, ctx, "10.96.0.0/12").text + masq_table(ctx.cluster_cidr), LOCAL)
    differs = {"ClusterIP, wrong port: untouched": {Outcome(None, False, "REJECT")}}
    wrong = [f"{what}: {got}" for what, src, dst, port, from_node, expected in FLOWS
             if (got := tracer.trace(Packet(src, dst, port), from_node=from_node)) != differs.get(what, expected)]
    assert wrong == []
    # and a partial sync leaves what a full one would: the flows after an endpoint goes
    one = render(PORTS, ctx, "10.96.0.0/12")
    fewer = [ServicePort(p.namespace, p.name, p.port_name, p.protocol, p.port, p.cluster_ip, p.node_port,
                         p.external_ips, p.lb_ips, p.lb_source_ranges, p.affinity_timeout, p.external_local,
                         p.internal_local, p.health_check_node_port, p.endpoints[:1]) for p in PORTS]
    two = render(fewer, ctx, "10.96.0.0/12")
    partial = NftTracer(one.text + two.since(one) + masq_table(ctx.cluster_cidr), LOCAL)
    full = NftTracer(two.text + masq_table(ctx.cluster_cidr), LOCAL)
    for what, src, dst, port, from_node, _ in FLOWS:
        assert partial.trace(Packet(src, dst, port), from_node) == full.trace(Packet(src, dst, port), from_node), what
