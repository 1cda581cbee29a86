"""kube-proxy's IPVS mode (pure): the virtual and real servers, ipsets and iptables rules of
kube-proxy's IPVS proxier (pkg/proxy/ipvs/proxier_test.go's expectations) for the same
objects; the changes from one state to the next, with graceful termination; the kernel's
state read back from ipvsadm and ipset; one node's provider over a recording kernel."""

from __future__ import annotations

from nsk.proxy import ipvs
from nsk.proxy.ipvs import IpvsState, VirtualServer, changes, render
from nsk.proxy.model import Endpoint, NodeContext, ServicePort
from nsk.proxy.sync import IpvsProxier
from nsk.testing.fakes import RecordingKernel
from nsk.testing.tracer import Outcome

CTX = NodeContext("node-1", "10.0.0.0/8", ("100.101.102.103",))
LOCAL, REMOTE = Endpoint("10.180.0.1", 80, "node-1"), Endpoint("10.180.1.1", 80, "node-2")


def test_a_cluster_ip_is_a_virtual_server_bound_to_kube_ipvs0_with_its_endpoints():
    sp = ServicePort("ns1", "svc1", "p80", "TCP", 80, "10.20.30.41", endpoints=(LOCAL, REMOTE))
    r = render([sp], CTX, "rr")
    vs, real = r.state.services["10.20.30.41:80/TCP"]
    assert vs == VirtualServer("TCP", "10.20.30.41", 80, "rr", 0)
    assert real == {"10.180.0.1:80": 1, "10.180.1.1:80": 1}
    assert r.state.addrs == {"10.20.30.41"}
    assert r.state.sets["KUBE-CLUSTER-IP"] == {"10.20.30.41,tcp:80"}
    assert r.state.sets["KUBE-IPVS-IPS"] == {"10.20.30.41"}
    # only the local endpoint can hairpin through this node
    assert r.state.sets["KUBE-LOOP-BACK"] == {"10.180.0.1,tcp:80,10.180.0.1"}
    nat = r.iptables.split("*filter")[0]
    assert ('-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" '
            "-m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ") in nat
    assert ('-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving '
            'hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE') in nat
    assert "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT" in nat
    assert "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN" in nat
    # with no NodePort, no LB: those rules are not written
    assert "KUBE-NODE-PORT-TCP" not in nat and "--match-set KUBE-LOAD-BALANCER " not in nat


def test_node_ports_as_in_kube_proxys_TestNodePortIPv4_and_TestOnlyLocalNodePorts():
    udp = ServicePort("ns1", "svc1", "p80", "UDP", 80, "10.20.30.41", node_port=3001, endpoints=(LOCAL,))
    r = render([udp], CTX)
    assert set(r.state.services) == {"10.20.30.41:80/UDP", "100.101.102.103:3001/UDP"}
    assert r.state.sets["KUBE-NODE-PORT-UDP"] == {"3001"}
    # KUBE-NODE-PORT: KUBE-MARK-MASQ for KUBE-NODE-PORT-UDP (nat), ACCEPT for the health checks (filter)
    assert ('-A KUBE-NODE-PORT -p udp -m comment --comment "Kubernetes nodeport UDP port for masquerade purpose" '
            "-m set --match-set KUBE-NODE-PORT-UDP dst -j KUBE-MARK-MASQ") in r.iptables
    assert ('-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" '
            "-m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT") in r.iptables
    assert "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT" in r.iptables
    assert r.state.addrs == {"10.20.30.41"}  # node IPs are never bound to kube-ipvs0

    local = ServicePort("ns1", "svc1", "p80", "TCP", 80, "10.20.30.41", node_port=3001, external_local=True,
                        endpoints=(LOCAL, REMOTE))
    r = render([local], CTX)
    assert r.state.services["100.101.102.103:3001/TCP"][1] == {"10.180.0.1:80": 1}  # only the local one
    assert r.state.services["10.20.30.41:80/TCP"][1] == {"10.180.0.1:80": 1, "10.180.1.1:80": 1}
    assert r.state.sets["KUBE-NODE-PORT-TCP"] == r.state.sets["KUBE-NODE-PORT-LOCAL-TCP"] == {"3001"}
    assert ('-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port with '
            'externalTrafficPolicy=local" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN') in r.iptables
    # IPVS mode's own rule (kubernetes#97081): no local endpoint, Local policy: every endpoint
    r = render([local], NodeContext("node-3", "10.0.0.0/8", ("100.101.102.104",)))
    assert r.state.services["100.101.102.104:3001/TCP"][1] == {"10.180.0.1:80": 1, "10.180.1.1:80": 1}


def test_a_node_port_is_a_virtual_server_on_every_local_address_that_node_port_addresses_allows():
    """kube-proxy's IPVS mode puts a NodePort on every address of the node (its IP and cbr0's,
    never loopback or kube-ipvs0's): `ipvsadm -Ln` on a node lists both; nodePortAddresses
    narrows them to the CIDRs it names, in iptables mode too."""
    from nsk.proxy.iptables import nodeports_tail
    sp = ServicePort("ns1", "svc1", "", "TCP", 80, "10.96.0.5", node_port=30080, endpoints=(LOCAL,))
    node = NodeContext("node-1", "10.244.0.0/16", ("172.18.0.2",), local_ips=("172.18.0.2", "10.244.1.1"))
    r = render([sp], node)
    assert set(r.state.services) == {"10.96.0.5:80/TCP", "172.18.0.2:30080/TCP", "10.244.1.1:30080/TCP"}
    assert r.state.addrs == {"10.96.0.5"}
    narrow = NodeContext("node-1", "10.244.0.0/16", ("172.18.0.2",), ("10.244.0.0/16",),
                         local_ips=("172.18.0.2", "10.244.1.1"))
    assert set(render([sp], narrow).state.services) == {"10.96.0.5:80/TCP", "10.244.1.1:30080/TCP"}
    assert [r.split(" -j")[0].split()[-2:] for r in nodeports_tail(narrow)] == [["-d", "10.244.1.1/32"]]


def test_load_balancer_source_ranges_affinity_external_ips_and_no_endpoints():
    sp = ServicePort("ns1", "svc1", "p80", "TCP", 80, "10.20.30.41", lb_ips=("1.2.3.4",), external_ips=("5.6.7.8",),
                     lb_source_ranges=("10.0.0.0/8",), affinity_timeout=10800, external_local=True,
                     health_check_node_port=30000, node_port=3001, endpoints=(REMOTE,))
    r = render([sp], CTX, "sh")
    s = r.state.sets
    assert s["KUBE-LOAD-BALANCER"] == s["KUBE-LOAD-BALANCER-FW"] == s["KUBE-LOAD-BALANCER-LOCAL"] == {"1.2.3.4,tcp:80"}
    assert s["KUBE-LOAD-BALANCER-SOURCE-CIDR"] == {"1.2.3.4,tcp:80,10.0.0.0/8"}
    assert s["KUBE-EXTERNAL-IP-LOCAL"] == {"5.6.7.8,tcp:80"} and not s["KUBE-EXTERNAL-IP"]
    assert s["KUBE-HEALTH-CHECK-NODE-PORT"] == {"30000"}
    assert r.state.addrs == {"10.20.30.41", "1.2.3.4", "5.6.7.8"}
    vs = r.state.services["1.2.3.4:80/TCP"][0]
    assert (vs.scheduler, vs.timeout) == ("sh", 10800) and vs.add() == "-A -t 1.2.3.4:80 -s sh -p 10800"
    assert ('-A KUBE-PROXY-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port for load '
            'balancer with sourceRange" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst '
            "-j KUBE-SOURCE-RANGES-FIREWALL") in r.iptables
    assert "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP" in r.iptables
    # the node's own address is not in the ranges: the node may not reach the LB IP either
    assert "-A KUBE-IPVS-OUT-FILTER -s 1.2.3.4 -m ipvs --vaddr 1.2.3.4 --vproto tcp --vport 80 -j DROP" in r.iptables
    # no endpoints: the virtual servers stay, without real servers (no REJECT rule in IPVS mode)
    empty = render([ServicePort("ns1", "svc1", "", "TCP", 80, "10.20.30.41")], CTX)
    assert empty.state.services["10.20.30.41:80/TCP"][1] == {} and "REJECT" not in empty.iptables.split("*filter")[0]


def test_changes_edit_what_changed_and_drain_tcp_real_servers():
    one = render([ServicePort("ns", "a", "", "TCP", 80, "10.96.0.5", endpoints=(LOCAL, REMOTE)),
                  ServicePort("ns", "u", "", "UDP", 53, "10.96.0.6", endpoints=(LOCAL, REMOTE))], CTX).state
    first = changes(IpvsState(), one, create_sets=True)
    assert first.bind == ("10.96.0.5", "10.96.0.6") and not first.unbind
    assert "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536" in first.ipset
    assert "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535" in first.ipset
    assert first.ipvsadm[:3] == ("-A -t 10.96.0.5:80 -s rr", "-a -t 10.96.0.5:80 -r 10.180.0.1:80 -m -w 1",
                                 "-a -t 10.96.0.5:80 -r 10.180.1.1:80 -m -w 1")
    assert not changes(first.after, one)  # nothing changed: nothing to do
    # an endpoint goes: TCP's real server drains at weight 0, UDP's goes at once
    two = render([ServicePort("ns", "a", "", "TCP", 80, "10.96.0.5", endpoints=(LOCAL,)),
                  ServicePort("ns", "u", "", "UDP", 53, "10.96.0.6", endpoints=(LOCAL,))], CTX).state
    ch = changes(first.after, two)
    assert ch.ipvsadm == ("-e -t 10.96.0.5:80 -r 10.180.1.1:80 -m -w 0", "-d -u 10.96.0.6:53 -r 10.180.1.1:80")
    assert ch.after.draining() == {("10.96.0.5:80/TCP", "10.180.1.1:80")}
    assert not changes(ch.after, two)  # still draining: left alone
    done = changes(ch.after, two, drained=frozenset(ch.after.draining()))
    assert done.ipvsadm == ("-d -t 10.96.0.5:80 -r 10.180.1.1:80",) and not done.after.draining()
    # it comes back before it has drained: taken out of the drain and added anew, as kube-proxy's
    # MoveRSOutofGracefulDeleteList does (its old connections end: expire_nodest_conn)
    assert changes(ch.after, one).ipvsadm == ("-d -t 10.96.0.5:80 -r 10.180.1.1:80",
                                              "-a -t 10.96.0.5:80 -r 10.180.1.1:80 -m -w 1",
                                              "-a -u 10.96.0.6:53 -r 10.180.1.1:80 -m -w 1")
    assert not changes(ch.after, one).after.draining()
    # a Service goes: its virtual server at once, its address after the rest
    gone = changes(first.after, render([], CTX).state)
    assert set(gone.ipvsadm) == {"-D -t 10.96.0.5:80", "-D -u 10.96.0.6:53"} and gone.unbind == ("10.96.0.5", "10.96.0.6")
    assert "del KUBE-CLUSTER-IP 10.96.0.5,tcp:80" in gone.ipset
    # another scheduler: the virtual servers are edited
    lc = render([ServicePort("ns", "a", "", "TCP", 80, "10.96.0.5", endpoints=(LOCAL, REMOTE))], CTX, "lc").state
    assert changes(render([ServicePort("ns", "a", "", "TCP", 80, "10.96.0.5", endpoints=(LOCAL, REMOTE))],
                          CTX).state, lc).ipvsadm == ("-E -t 10.96.0.5:80 -s lc",)


def test_the_kernels_state_is_read_back_from_ipvsadm_and_ipset():
    saved = """-A -t 10.96.0.1:443 -s rr
-a -t 10.96.0.1:443 -r 172.18.0.2:6443 -m -w 1
-A -u 10.96.0.10:53 -s sh -p 10800
-a -u 10.96.0.10:53 -r 10.244.1.3:53 -m -w 0
"""
    got = ipvs.parse_ipvsadm_save(saved)
    assert got["10.96.0.1:443/TCP"] == (VirtualServer("TCP", "10.96.0.1", 443, "rr"), {"172.18.0.2:6443": 1})
    assert got["10.96.0.10:53/UDP"] == (VirtualServer("UDP", "10.96.0.10", 53, "sh", 10800), {"10.244.1.3:53": 0})
    # /proc/net/ip_vs, as the kernel prints it (what `ipvsadm -L -n` shows: 10.96.0.1:443 rr,
    # -> 172.18.0.2:6443 Masq 0 1 2; 10.96.0.10:53 sh persistent, -> 10.244.1.3:53 Masq 1 0 0)
    listed = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A600001:01BB rr 
  -> AC120002:192B      Masq    0      1          2         
UDP  0A60000A:0035 sh persistent 10800 
  -> 0AF40103:0035      Masq    1      0          0         
TCP  [fd00:0000:0000:0000:0000:0000:0000:0001]:0050 rr 
  -> [fd00:0000:0000:0000:0000:0000:0000:0002]:0050      Masq    1      4          0         
"""
    assert ipvs.parse_proc_ip_vs(listed) == {("10.96.0.1:443/TCP", "172.18.0.2:6443"): 3,
                                             ("10.96.0.10:53/UDP", "10.244.1.3:53"): 0}
    sets = ipvs.parse_ipset_save("create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n"
                                 "add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\ncreate OTHER hash:ip\nadd OTHER 1.1.1.1\n")
    assert sets == {"KUBE-CLUSTER-IP": frozenset({"10.96.0.1,tcp:443"})}


def test_the_provider_writes_one_script_a_sync_in_kube_proxys_order():
    k = RecordingKernel(iptables_backend="legacy")
    p = IpvsProxier("ns-node-1", CTX, k, fresh=True)
    sp = ServicePort("ns", "a", "", "TCP", 80, "10.96.0.5", endpoints=(LOCAL,))
    script = p.plan([sp], 0.0)
    order = [script.index(x) for x in ("/proc/sys/net/ipv4/vs/conntrack", "ip link add kube-ipvs0 type dummy",
                                       "address replace 10.96.0.5/32 dev kube-ipvs0", "ipset -exist restore",
                                       "ipvsadm -R", "iptables-legacy-restore -w 5 --noflush")]
    assert order == sorted(order)
    assert '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in script
    assert "-I INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER" in script
    p.applied([sp], 0.0)
    assert p.plan([sp], 1.0) is None  # nothing changed
    sp2 = ServicePort("ns", "a", "", "TCP", 80, "10.96.0.5", endpoints=(LOCAL, REMOTE))
    again = p.plan([sp2], 2.0)
    assert "ipvsadm -R <<'NSK_EOF'\n-a -t 10.96.0.5:80 -r 10.180.1.1:80 -m -w 1\nNSK_EOF" in again
    assert "kube-ipvs0 type dummy" not in again and "iptables-legacy-restore" not in again  # same rules
    p.failed()
    # after a failure the kernel is read again: what ipvsadm shows is what the next sync starts from
    k.outputs[("ns-node-1", "ipvsadm")] = "-A -t 10.96.0.5:80 -s rr\n-a -t 10.96.0.5:80 -r 10.180.0.1:80 -m -w 1\n"
    after = p.plan([sp2], 3.0)
    assert ("output", "ns-node-1", ("ipvsadm", "-S", "-n")) in k.calls
    assert "-a -t 10.96.0.5:80 -r 10.180.1.1:80 -m -w 1" in after and "-A -t 10.96.0.5:80" not in after
    p.applied([sp2], 3.0)
    # an endpoint goes: it drains at weight 0 while the kernel counts its connections, which
    # the loop reads from /proc/net/ip_vs (no process started); once none is left, it goes
    drain = p.plan([sp], 4.0)
    assert "-e -t 10.96.0.5:80 -r 10.180.1.1:80 -m -w 0" in drain
    p.applied([sp], 4.0)
    k.procs[("ns-node-1", "net/ip_vs")] = ("TCP  0A600005:0050 rr \n  -> 0AB40001:0050      Masq    1      0          0\n"
                                           "  -> 0AB40101:0050      Masq    0      1          3\n")
    assert p.plan([sp], 4.0 + p.DRAIN_CHECK) is None  # its connections go on
    k.procs[("ns-node-1", "net/ip_vs")] = "TCP  0A600005:0050 rr \n  -> 0AB40101:0050      Masq    0      0          0\n"
    assert "-d -t 10.96.0.5:80 -r 10.180.1.1:80" in p.plan([sp], 4.0 + 2 * p.DRAIN_CHECK)
    assert ("proc", "ns-node-1", "net/ip_vs") in k.calls
    assert not [c for c in k.calls if c[0] == "output" and c[2][:2] == ("ipvsadm", "-L")]


# ---- the iptables mode's flow table, through IPVS mode -------------------------------------

def _flows():
    from tests.unit.test_iptables import CTX as IPT_CTX
    from tests.unit.test_iptables import FLOWS, LOCAL, PORTS
    return IPT_CTX, FLOWS, LOCAL, PORTS


# where kube-proxy's IPVS mode answers otherwise than its iptables mode, and why
IPVS_DIFFERS = {
    "ClusterIP, wrong port: untouched":
        # the ClusterIP is an address of the node here (kube-ipvs0): KUBE-IPVS-FILTER refuses
        # a new connection to a port no Service has
        {Outcome(None, False, "REJECT")},
    "external to NodePort (Local), no local endpoint: dropped":
        # kubernetes#97081: without a local endpoint, every endpoint (the client's address kept)
        {Outcome("10.244.2.2:8080", False, "ACCEPT")},
    "node to its NodePort (Local), no local endpoint: masqueraded, to the Service":
        # KUBE-NODE-PORT returns before marking a Local NodePort; the node's own address is the source anyway
        {Outcome("10.244.2.2:8080", False, "ACCEPT")},
    "Pod to NodePort (Local): any endpoint, as from outside":
        # no short-circuit in IPVS mode: a NodePort's real servers are the local ones, from anywhere
        {Outcome("10.244.1.2:8080", False, "ACCEPT")},
    "node to its own NodePort (Local): masqueraded, any endpoint":
        {Outcome("10.244.1.2:8080", False, "ACCEPT")},
    "internalTrafficPolicy Local, none here: dropped":
        # a ClusterIP-only Service with iTP Local and no local endpoint: a virtual server
        # without real servers, which the kernel refuses
        {Outcome(None, False, "REJECT")},
}


def test_the_iptables_flow_table_through_ipvs_mode():
    """The same flows as tests/unit/test_iptables.py's FLOWS, through kube-proxy's IPVS mode
    for the same Services: the same answers, except where the modes really differ
    (IPVS_DIFFERS, each with its reason)."""
    from nsk.testing.tracer import IpvsTracer, Packet
    ctx, flows, local, ports = _flows()
    tracer = IpvsTracer(render(ports, ctx), local)
    wrong = []
    for what, src, dst, port, from_node, expected in flows:
        got = tracer.trace(Packet(src, dst, port), from_node=from_node)
        if got != IPVS_DIFFERS.get(what, expected):
            wrong.append(f"{what}: {got}")
    assert wrong == []
    assert set(IPVS_DIFFERS) <= {f[0] for f in flows}
