"""kube-proxy's userspace mode (v1.25, pkg/proxy/userspace): the proxy ports, the
KUBE-PORTALS-* / KUBE-NODEPORT-* rules as kube-proxy's argument lists make them, the round
robin with ClientIP affinity, the provider's hand-over of the table."""

from __future__ import annotations

import json
import random

from nsk.proxy import userspace
from nsk.proxy.model import Endpoint, NodeContext, ServicePort
from nsk.proxy.sync import UserspaceProxier
from nsk.testing.fakes import RecordingKernel

CTX = NodeContext("node-1", "10.244.0.0/16", ("172.18.0.2",))
DNS = ServicePort("kube-system", "kube-dns", "dns", "UDP", 53, "10.96.0.10", node_port=30053,
                  endpoints=(Endpoint("10.244.1.3", 53, "node-1"),))
WEB = ServicePort("default", "web", "", "TCP", 80, "10.96.0.2", external_ips=("192.0.2.99",), lb_ips=("192.0.2.200",),
                  endpoints=(Endpoint("10.244.1.4", 8080, "node-1"), Endpoint("10.244.2.4", 8080, "node-2", ready=False)))


def test_proxy_ports_are_kept_and_given_out_lowest_first():
    ports = userspace.allocate([DNS, WEB], {})
    assert ports == {"kube-system/kube-dns:dns/UDP": 40000, "default/web/TCP": 40001}
    again = userspace.allocate([WEB], ports)
    assert again == {"default/web/TCP": 40001}
    assert userspace.allocate([DNS, WEB], again) == {"default/web/TCP": 40001, "kube-system/kube-dns:dns/UDP": 40000}
    assert userspace.allocate([DNS, WEB], {}, span=(40000, 40000)) == {"kube-system/kube-dns:dns/UDP": 40000}


def test_the_rules_are_kube_proxys_argument_lists():
    text = userspace.render([DNS, WEB], CTX, {"kube-system/kube-dns:dns/UDP": 41234, "default/web/TCP": 40001})
    lines = text.splitlines()
    for rule in (
        "-A KUBE-PORTALS-CONTAINER -d 10.96.0.10/32 -p udp -m comment --comment \"kube-system/kube-dns:dns\" -m udp "
        "--dport 53 -j REDIRECT --to-ports 41234",
        "-A KUBE-PORTALS-HOST -d 10.96.0.10/32 -p udp -m comment --comment \"kube-system/kube-dns:dns\" -m udp "
        "--dport 53 -j DNAT --to-destination 172.18.0.2:41234",
        "-A KUBE-NODEPORT-CONTAINER -p udp -m comment --comment \"kube-system/kube-dns:dns\" -m udp --dport 30053 "
        "-j REDIRECT --to-ports 41234",
        "-A KUBE-NODEPORT-HOST -p udp -m comment --comment \"kube-system/kube-dns:dns\" -m udp --dport 30053 "
        "-j DNAT --to-destination 172.18.0.2:41234",
        # after the NAT: the proxy port, not the NodePort
        "-A KUBE-NODEPORT-NON-LOCAL -p udp -m comment --comment \"kube-system/kube-dns:dns\" -m udp --dport 41234 "
        "-m state --state NEW -j ACCEPT",
        # an LB IP is a portal like the ClusterIP; an external IP gets the physdev and LOCAL variants
        "-A KUBE-PORTALS-CONTAINER -d 192.0.2.200/32 -p tcp -m comment --comment \"default/web\" -m tcp --dport 80 "
        "-j REDIRECT --to-ports 40001",
        "-A KUBE-PORTALS-CONTAINER -d 192.0.2.99/32 -p tcp -m comment --comment \"default/web\" -m tcp --dport 80 "
        "-m physdev ! --physdev-is-in -j REDIRECT --to-ports 40001",
        "-A KUBE-PORTALS-HOST -d 192.0.2.99/32 -p tcp -m comment --comment \"default/web\" -m tcp --dport 80 "
        "-m addrtype --dst-type LOCAL -j DNAT --to-destination 172.18.0.2:40001",
    ):
        assert rule in lines, rule
    assert lines[lines.index("*filter") + 1] == ":KUBE-NODEPORT-NON-LOCAL - [0:0]"
    assert "KUBE-MARK-MASQ" not in text  # userspace mode never marks: the proxy is the source
    from nsk.proxy.iptables import jump_rule
    jumps = {jump_rule(chain, target, comment, extra): t for t, chain, target, comment, extra in userspace.JUMPS}
    assert jumps['-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; NOTE: '
                 'this must be the last rule in the chain" -j KUBE-NODEPORT-CONTAINER'] == "nat"
    assert jumps['-A INPUT -m comment --comment "Ensure that non-local NodePort traffic can flow" '
                 '-j KUBE-NODEPORT-NON-LOCAL'] == "filter"


def test_round_robin_shuffles_once_and_affinity_holds_until_a_dial_fails():
    lb = userspace.RoundRobin(rng=random.Random(1))
    lb.update(["a:1", "b:1", "c:1"], 0)
    order = [lb.next("10.0.0.1") for _ in range(6)]
    assert sorted(order[:3]) == ["a:1", "b:1", "c:1"] and order[3:] == order[:3]
    lb.update(["c:1", "b:1", "a:1"], 0)  # the same set: no reshuffle, the turn goes on
    assert lb.next("10.0.0.1") == order[0]
    sticky = userspace.RoundRobin(rng=random.Random(1))
    sticky.update(["a:1", "b:1"], 10)
    first = sticky.next("10.0.0.1", now=0.0)
    assert [sticky.next("10.0.0.1", now=t) for t in (1.0, 5.0, 14.0)] == [first] * 3
    other = sticky.next("10.0.0.1", reset=True, now=15.0)  # its endpoint refused: the next one, remembered
    assert other != first and sticky.next("10.0.0.1", now=16.0) == other
    assert sticky.next("10.0.0.1", now=40.0) != other  # the affinity ran out (10 s unused)
    sticky.update(["a:1"], 10)
    assert sticky.next("10.0.0.1") == "a:1"
    assert userspace.RoundRobin().next("10.0.0.1") is None  # no endpoints


def test_the_provider_hands_the_table_to_the_node_and_writes_the_portals(tmp_path):
    ctx = NodeContext("node-1", "10.244.0.0/16", ("172.18.0.2",), run_dir=str(tmp_path))
    p = UserspaceProxier("ns-node-1", ctx, RecordingKernel(), fresh=True)
    text = p.plan([DNS, WEB], 0.0)
    assert "-A PREROUTING -m comment --comment \"handle ClusterIPs; NOTE: this must be before the NodePort rules\" " \
           "-j KUBE-PORTALS-CONTAINER" in text
    table, _ = userspace.paths(str(tmp_path), "node-1")
    entries = json.loads(open(table).read())
    assert {e["service"]: (e["port"], e["endpoints"]) for e in entries} == {
        "kube-system/kube-dns:dns": (40000, ["10.244.1.3:53"]),
        "default/web": (40001, ["10.244.1.4:8080"])}  # ready endpoints only
    p.applied([DNS, WEB], 0.0)
    assert p.plan([DNS, WEB], 1.0) is None
    p.cleanup(RecordingKernel(), "ns-node-1")
    assert json.loads(open(table).read()) == []  # the node's proxy closes its sockets
