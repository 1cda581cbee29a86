"""kube-proxy's iptables rules, rendered by pure code and traced packet by packet."""

from __future__ import annotations

import pytest

from nsk.proxy.iptables import NodeContext, missing_jumps, nodeports_tail, probability, render, sep_chain, svc_chain
from nsk.controllers.endpoints import mirrored_slices
from nsk.proxy.model import Endpoint, ServicePort, service_ports
from nsk.testing.tracer import Outcome, Packet, Tracer, check_consistency, check_tables, restore

NODE1 = "172.18.0.2"
LOCAL = {NODE1, "10.244.1.1", "127.0.0.1"}
CTX = NodeContext("node-1", "10.244.0.0/16", (NODE1,))
POD_LOCAL, POD_REMOTE = "10.244.1.5", "10.244.2.7"  # clients: a Pod on this node, on the other
EXTERNAL = "192.0.2.10"
E1 = Endpoint("10.244.1.2", 8080, "node-1")
E2 = Endpoint("10.244.2.2", 8080, "node-2")


def sp(name, cip, eps=(E1, E2), **kw):
    return ServicePort("default", name, "http", "TCP", 80, cip, endpoints=tuple(eps), **kw)


PORTS = [
    sp("web", "10.96.0.2"),
    sp("np", "10.96.0.3", node_port=30080),
    sp("np-local", "10.96.0.4", eps=(E2,), node_port=30081, external_local=True),
    sp("np-local-here", "10.96.0.5", eps=(E1, E2), node_port=30082, external_local=True),
    sp("lb", "10.96.0.6", node_port=30083, lb_ips=("198.51.100.1",)),
    sp("ext", "10.96.0.7", external_ips=("80.11.12.10",)),
    sp("empty", "10.96.0.8", eps=(), node_port=30084, external_ips=("80.11.12.11",)),
    sp("itp-local", "10.96.0.9", eps=(E2,), internal_local=True),
    sp("sticky", "10.96.0.10", affinity_timeout=30),
    sp("unready", "10.96.0.11", eps=(Endpoint("10.244.1.9", 80, "node-1", ready=False),)),
]

RULES = render(PORTS, CTX).text
TRACER = Tracer(missing_jumps("") + RULES, LOCAL)

BOTH = {Outcome("10.244.1.2:8080", False, "ACCEPT"), Outcome("10.244.2.2:8080", False, "ACCEPT")}
BOTH_MASQ = {Outcome("10.244.1.2:8080", True, "ACCEPT"), Outcome("10.244.2.2:8080", True, "ACCEPT")}

FLOWS = [
    # (what, source, destination, port, from the node itself, outcomes)
    ("Pod to ClusterIP: either endpoint, client IP kept", POD_LOCAL, "10.96.0.2", 80, False, BOTH),
    ("Pod on another node to ClusterIP", POD_REMOTE, "10.96.0.2", 80, False, BOTH),
    ("node to ClusterIP: masqueraded", NODE1, "10.96.0.2", 80, True, BOTH_MASQ),
    ("hairpin: endpoint to its own Service", "10.244.1.2", "10.96.0.2", 80, False,
     {Outcome("10.244.1.2:8080", True, "ACCEPT"), Outcome("10.244.2.2:8080", False, "ACCEPT")}),
    ("ClusterIP, wrong port: untouched", POD_LOCAL, "10.96.0.2", 81, False, {Outcome(None, True, "ACCEPT")}),
    ("external to NodePort (Cluster): masqueraded", EXTERNAL, NODE1, 30080, False, BOTH_MASQ),
    ("Pod to NodePort on its node (Cluster)", POD_LOCAL, NODE1, 30080, False, BOTH_MASQ),
    ("external to NodePort (Local), no local endpoint: dropped", EXTERNAL, NODE1, 30081, False,
     {Outcome(None, False, "DROP")}),
    ("Pod to NodePort (Local), no local endpoint: short-circuits to the Service", POD_LOCAL, NODE1, 30081, False,
     {Outcome("10.244.2.2:8080", False, "ACCEPT")}),
    ("node to its NodePort (Local), no local endpoint: masqueraded, to the Service", NODE1, NODE1, 30081, True,
     {Outcome("10.244.2.2:8080", True, "ACCEPT")}),
    ("external to NodePort (Local), local endpoint: client IP kept", EXTERNAL, NODE1, 30082, False,
     {Outcome("10.244.1.2:8080", False, "ACCEPT")}),
    ("Pod to NodePort (Local): any endpoint, as from outside", POD_LOCAL, NODE1, 30082, False, BOTH),
    ("node to its own NodePort (Local): masqueraded, any endpoint", NODE1, NODE1, 30082, True, BOTH_MASQ),
    ("external to LoadBalancer IP (Cluster)", EXTERNAL, "198.51.100.1", 80, False, BOTH_MASQ),
    ("external to LoadBalancer's NodePort", EXTERNAL, NODE1, 30083, False, BOTH_MASQ),
    ("external to externalIP", EXTERNAL, "80.11.12.10", 80, False, BOTH_MASQ),
    ("no endpoints: ClusterIP rejected", POD_LOCAL, "10.96.0.8", 80, False, {Outcome(None, False, "REJECT")}),
    ("no endpoints: from the node too", NODE1, "10.96.0.8", 80, True, {Outcome(None, False, "REJECT")}),
    ("no endpoints: NodePort rejected", EXTERNAL, NODE1, 30084, False, {Outcome(None, False, "REJECT")}),
    ("no endpoints: externalIP rejected", EXTERNAL, "80.11.12.11", 80, False, {Outcome(None, False, "REJECT")}),
    ("internalTrafficPolicy Local, none here: dropped", POD_LOCAL, "10.96.0.9", 80, False,
     {Outcome(None, False, "DROP")}),
    ("affinity: either endpoint (recent decides)", POD_LOCAL, "10.96.0.10", 80, False, BOTH),
    ("an unready endpoint is no endpoint", POD_LOCAL, "10.96.0.11", 80, False, {Outcome(None, False, "REJECT")}),
    ("Pod to an external host: masqueraded", POD_LOCAL, "192.0.2.42", 9376, False, {Outcome(None, True, "ACCEPT")}),
    ("Pod to Pod: never masqueraded", POD_LOCAL, "10.244.2.2", 8080, False, {Outcome(None, False, "ACCEPT")}),
]


@pytest.mark.parametrize("what,src,dst,port,from_node,expected", FLOWS, ids=[f[0] for f in FLOWS])
def test_flow(what, src, dst, port, from_node, expected):
    assert TRACER.trace(Packet(src, dst, port), from_node=from_node) == expected


def test_rules_are_consistent():
    assert check_consistency(missing_jumps("") + RULES) == []


def test_chain_names_are_kube_proxys():
    # the values kube-proxy's own tests and a real cluster show
    k8s = ServicePort("default", "kubernetes", "https", "TCP", 443, "10.96.0.1")
    assert svc_chain("KUBE-SVC", k8s) == "KUBE-SVC-NPX46M4PTMTKRN6Y"
    svc1 = ServicePort("ns1", "svc1", "p80", "TCP", 80, "172.30.0.41")
    assert svc_chain("KUBE-SVC", svc1) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert sep_chain(svc1, Endpoint("10.180.0.1", 80, "")) == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    svc2 = ServicePort("ns2", "svc2", "p80", "TCP", 80, "172.30.0.42")
    assert svc_chain("KUBE-EXT", svc2) == "KUBE-EXT-GNZBNJ2PO5MGZ6GT"


def test_rule_text_matches_kube_proxy():
    """Lines as kube-proxy's TestOverallIPTablesRules expects them (its -s/-d carry no /32
    there: iptables-save prints /32, which is what nsk writes)."""
    svc1 = ServicePort("ns1", "svc1", "p80", "TCP", 80, "172.30.0.41", endpoints=(Endpoint("10.180.0.1", 80, "x"),))
    text = render([svc1], NodeContext("node-1", "10.0.0.0/8")).text
    for line in [
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41/32 '
        "--dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O",
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp '
        "-d 172.30.0.41/32 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" '
        "-j KUBE-SEP-SXIVWICOYRO3J4NJ",
        "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1/32 -j KUBE-MARK-MASQ",
        "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT "
        "--to-destination 10.180.0.1:80",
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
        'in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    ]:
        assert line in text.splitlines()
    services = text.split("*nat")[1].splitlines()
    kube_services = [x for x in services if x.startswith("-A KUBE-SERVICES")]
    assert "nodeports" in kube_services[-1]  # the last rule of the chain


def test_probabilities_share_load_evenly():
    assert [probability(n) for n in (4, 3, 2)] == ["0.2500000000", "0.3333333333", "0.5000000000"]
    eps = tuple(Endpoint(f"10.244.1.{i}", 80, "node-1") for i in range(2, 6))
    text = render([sp("four", "10.96.0.20", eps=eps)], CTX).text
    assert [line.split("--probability ")[1].split()[0] for line in text.splitlines() if "--probability" in line] \
        == ["0.2500000000", "0.3333333333", "0.5000000000"]


def test_affinity_rules_come_first_with_the_timeout():
    text = render([sp("sticky", "10.96.0.10", affinity_timeout=30)], CTX).text
    svc = svc_chain("KUBE-SVC", sp("sticky", "10.96.0.10"))
    lines = [x for x in text.splitlines() if x.startswith(f"-A {svc}") and "-> " in x]
    assert ["--rcheck --seconds 30 --reap" in x for x in lines] == [True, True, False, False]
    assert sum("--set" in x for x in text.splitlines()) == 2


def test_gone_chains_are_deleted_and_unchanged_render_is_identical():
    first = render(PORTS, CTX)
    assert render(PORTS, CTX).text == first.text
    second = render(PORTS[:1], CTX, first.nat_chains)
    gone = first.nat_chains - second.nat_chains
    assert gone and all(f"-X {c}" in second.text.splitlines() for c in gone)
    assert check_consistency(missing_jumps("") + second.text) == []


def transactions(text: str) -> list[str]:
    """An iptables-restore input's transactions (each table block up to its COMMIT)."""
    blocks, cur = [], []
    for line in text.splitlines():
        cur.append(line)
        if line == "COMMIT":
            blocks.append("\n".join(cur) + "\n")
            cur = []
    return blocks


def test_a_big_sync_in_transactions_leaves_every_service_whole_at_every_step():
    """On the nft backend a sync over its budget writes the per-Service chains in
    transactions of their own before the last: after each one, every jump has its target
    and every flow goes where it went before the sync or where it goes after it, never
    nowhere or elsewhere; at the end the node has what one transaction gives. (A Service
    whose endpoints and policy both change may show its new endpoints under its old policy
    for a step, as when kube-proxy takes the two changes in two syncs: here each Service
    changes one thing.)"""
    e3 = Endpoint("10.244.2.3", 8080, "node-2")
    fw = sp("fw", "10.96.0.12", node_port=30085, lb_ips=("198.51.100.2",), lb_source_ranges=("192.0.2.0/24",))
    before = render(PORTS + [fw], CTX)
    gone = svc_chain("KUBE-EXT", PORTS[5])  # "ext": deleted with its Service
    changed = [sp("web", "10.96.0.2", eps=(E1, E2, e3)),  # one endpoint more
               sp("np-local", "10.96.0.4", eps=(E2,), node_port=30081),  # policy Local -> Cluster
               sp("fw", "10.96.0.12", node_port=30085, lb_ips=("198.51.100.2",),
                  lb_source_ranges=("192.0.2.0/25",))]  # other source ranges
    after = render(changed[:1] + PORTS[1:2] + changed[1:2] + PORTS[3:5] + PORTS[6:] + changed[2:], CTX,
                   before.nat_chains)
    assert len(transactions(after.since(before, budget=4))) > 3 and len(transactions(after.since(before))) == 2
    flows = [(Packet(src, dst, port), node) for _, src, dst, port, node, _ in FLOWS] + [
        (Packet("192.0.2.10", "198.51.100.2", 80), False), (Packet("192.0.2.200", "198.51.100.2", 80), False),
        (Packet(EXTERNAL, NODE1, 30085), False), (Packet(POD_LOCAL, "10.96.0.12", 80), False)]

    def outcomes(state):
        tracer = Tracer("", LOCAL)
        tracer.tables = state
        return [frozenset(tracer.trace(pkt, from_node=node)) for pkt, node in flows]

    for full, budget in ((before.full(4), 4), (before.full(), 0)):
        state = restore({}, missing_jumps(""))
        for block in transactions(full):
            state = restore(state, block)  # raises on a jump to a missing chain, as iptables-restore
        assert check_tables(state) == [], budget
    old = outcomes(state)
    one = restore(state, after.since(before))
    new = outcomes(one)
    assert sum(o != n for o, n in zip(old, new)) >= 5  # the flows this sync changes
    for block in transactions(after.since(before, budget=4)):
        state = restore(state, block)
        assert all(now in (o, n) for now, o, n in zip(outcomes(state), old, new))
        assert [p for p in check_tables(state) if "missing" in p] == []
    assert state == one and outcomes(state) == new
    assert gone in before.nat_chains and gone not in state["nat"].chains


def test_node_port_addresses_limit_the_nodeport_addresses():
    ctx = NodeContext("node-1", "10.244.0.0/16", (NODE1,), ("172.18.0.0/24",))
    tracer = Tracer(missing_jumps("") + render(PORTS, ctx).text, LOCAL)
    assert tracer.trace(Packet(EXTERNAL, NODE1, 30080)) == BOTH_MASQ
    assert tracer.trace(Packet(POD_LOCAL, "10.244.1.1", 30080)) == {Outcome(None, False, "ACCEPT")}


def test_jumps_are_added_once():
    # iptables-save lists the chains (":NAME") and every rule as appended ("-A")
    saved_with_jumps = "\n".join(line.replace("-I ", "-A ", 1) for line in missing_jumps("").splitlines())
    assert missing_jumps(saved_with_jumps) == ""


def test_service_ports_from_api_objects():
    svc = {"metadata": {"namespace": "default", "name": "web"},
           "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.2", "externalTrafficPolicy": "Local",
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30001},
                              {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30002}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}
    ep = {"metadata": {"namespace": "default", "name": "web"},
          "subsets": [{"addresses": [{"ip": "10.244.1.2", "nodeName": "node-1"}],
                       "notReadyAddresses": [{"ip": "10.244.2.2", "nodeName": "node-2"}],
                       "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                                 {"name": "dns", "port": 5353, "protocol": "UDP"}]}]}
    headless = {"metadata": {"namespace": "default", "name": "h"}, "spec": {"clusterIP": "None", "ports": []}}
    got = service_ports([svc, headless], mirrored_slices(svc, ep))
    assert [(p.port_name, p.protocol, p.node_port, p.lb_ips, p.external_local) for p in got] == [
        ("dns", "UDP", 30002, ("198.51.100.1",), True), ("http", "TCP", 30001, ("198.51.100.1",), True)]
    assert got[1].endpoints == (Endpoint("10.244.1.2", 8080, "node-1", True, True),
                                Endpoint("10.244.2.2", 8080, "node-2", False, False))


def test_no_string_that_slipped_past_validation_becomes_a_rule():
    """Defence in depth behind validation (#16): the rules are built from parsed addresses
    and numbers, so a source range, an external IP or a name with a newline adds no line."""
    svc = {"metadata": {"namespace": "default", "name": "web\n-A KUBE-SERVICES -j RETURN"},
           "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.2",
                    "externalIPs": ["80.11.12.10\n-A KUBE-SERVICES -j RETURN", "80.11.12.11"],
                    "loadBalancerSourceRanges": ["10.0.0.0/8\n-A KUBE-SERVICES -j RETURN", " 192.0.2.0/24 ",
                                                 "not-a-cidr"],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30001}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}
    ep = {"metadata": {"namespace": "default", "name": "web\n-A KUBE-SERVICES -j RETURN"},
          "subsets": [{"addresses": [{"ip": "10.244.1.2\n-A X", "nodeName": "node-1"}, {"ip": "10.244.1.3"}],
                       "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}
    (port,) = service_ports([svc], mirrored_slices(svc, ep))
    assert port.external_ips == ("80.11.12.11",)
    assert port.lb_source_ranges == ("192.0.2.0/24",)
    assert [e.ip for e in port.endpoints] == ["10.244.1.3"]
    text = render([port], CTX).text
    assert "\n-A KUBE-SERVICES -j RETURN" not in text and "-A X" not in text and "10.244.1.2" not in text
    assert all(line.startswith(("*", ":", "-A ", "-X ", "COMMIT")) for line in text.splitlines() if line)


def test_both_policies_local_with_a_node_port_still_has_the_cluster_chain():
    """kube-proxy's UsesClusterEndpoints: a Pod's traffic to the node port short-circuits
    to every endpoint, so KUBE-SVC exists even when both policies are Local (without it
    the EXT chain jumped to a missing chain, and the node's whole restore failed)."""
    both = sp("both-local", "10.96.0.30", eps=(E2,), node_port=30090, internal_local=True, external_local=True)
    text = render([both], CTX).text
    assert check_consistency(missing_jumps("") + text) == []
    tracer = Tracer(missing_jumps("") + text, LOCAL)
    assert tracer.trace(Packet(POD_LOCAL, NODE1, 30090)) == {Outcome("10.244.2.2:8080", False, "ACCEPT")}
    assert tracer.trace(Packet(EXTERNAL, NODE1, 30090)) == {Outcome(None, False, "DROP")}  # no local endpoint


def changed(ports: list[ServicePort], rng) -> list[ServicePort]:
    """A random change such as a cluster makes: an endpoint gone, added or unready, a
    Service gone, added, or another policy, affinity or node port."""
    import dataclasses
    out = list(ports)
    i = rng.randrange(len(out)) if out else 0
    what = rng.choice(["drop-ep", "add-ep", "unready", "drop-svc", "add-svc", "local", "affinity", "nodeport"])
    if what == "add-svc" or not out:
        n = rng.randrange(1000)
        out.append(sp(f"new-{n}", f"10.96.1.{n % 250}", eps=(Endpoint(f"10.244.2.{n % 250}", 80, "node-2"),)))
    elif what == "drop-svc":
        out.pop(i)
    elif what == "drop-ep":
        out[i] = dataclasses.replace(out[i], endpoints=out[i].endpoints[1:])
    elif what == "add-ep":
        ep = Endpoint(f"10.244.{rng.choice([1, 2])}.{rng.randrange(2, 250)}", 8080, rng.choice(["node-1", "node-2"]))
        out[i] = dataclasses.replace(out[i], endpoints=out[i].endpoints + (ep,))
    elif what == "unready":
        out[i] = dataclasses.replace(out[i], endpoints=tuple(dataclasses.replace(e, ready=False)
                                                             for e in out[i].endpoints[:1]) + out[i].endpoints[1:])
    elif what == "local":
        out[i] = dataclasses.replace(out[i], internal_local=not out[i].internal_local,
                                     external_local=not out[i].external_local)
    elif what == "affinity":
        out[i] = dataclasses.replace(out[i], affinity_timeout=0 if out[i].affinity_timeout else 30)
    else:
        out[i] = dataclasses.replace(out[i], node_port=0 if out[i].node_port else 31000 + i)
    return out


def test_a_partial_sync_leaves_the_kernel_as_a_full_one_would():
    """kube-proxy's partial restore: only changed Service chains are written, and the
    tables come out the same as after writing every chain."""
    import random

    from nsk.testing.tracer import check_tables, restore
    rng = random.Random(3)
    ports, old = list(PORTS), render(PORTS, CTX)
    kernel = restore({}, missing_jumps("") + old.text)
    partial_lines = []
    for _ in range(300):
        ports = changed(ports, rng)
        new = render(ports, CTX, old.nat_chains)
        after_partial = restore(kernel, new.since(old))
        assert after_partial == restore(kernel, new.text)
        assert check_tables(after_partial) == []
        partial_lines.append((new.since(old).count("\n"), new.text.count("\n")))
        kernel, old = after_partial, new
    # and it is smaller: most changes touch one Service's chains
    assert sum(p for p, _ in partial_lines) < 0.8 * sum(f for _, f in partial_lines)


def test_a_partial_sync_of_one_endpoint_writes_that_services_chains_only():
    first = render(PORTS, CTX)
    ports = [p if p.name != "web" else sp("web", "10.96.0.2", eps=(E1,)) for p in PORTS]
    text = render(ports, CTX, first.nat_chains).since(first)
    declared = {line[1:].split()[0] for line in text.splitlines() if line.startswith(":KUBE-S")}
    web = sp("web", "10.96.0.2")
    assert declared == {"KUBE-SERVICES", svc_chain("KUBE-SVC", web), sep_chain(web, E2)}
    assert f"-X {sep_chain(web, E2)}" in text.splitlines()


def test_the_proxier_syncs_fully_first_then_partially_and_fully_again_each_sync_period():
    from nsk.proxy import iptables as rules
    from nsk.proxy.sync import FULL_SYNC_PERIOD, IptablesProxier
    from nsk.testing.fakes import RecordingKernel
    jumps = missing_jumps("").replace("-I ", "-A ")  # iptables-save shows them as appended rules
    saved = jumps.replace(next(x for x in jumps.splitlines() if "-A PREROUTING" in x) + "\n", "")
    kernel = RecordingKernel(saved={"nsk_test_node": saved})  # PREROUTING's jump deleted
    proxier = IptablesProxier("nsk_test_node", CTX, kernel, fresh=True)
    ruleset = rules.render(PORTS, CTX)
    text = proxier.plan(PORTS, now=100.0)
    assert text == missing_jumps("") + ruleset.text  # the first sync writes every chain, and the jumps
    proxier.applied(PORTS, 100.0)
    assert proxier.plan(PORTS, now=101.0) is None  # nothing changed, nothing to write
    fewer = [p for p in PORTS if p.name != "web"]
    ruleset2 = rules.render(fewer, CTX, ruleset.nat_chains)
    text2 = proxier.plan(fewer, now=102.0)
    assert text2 == ruleset2.since(ruleset) and len(text2) < len(ruleset2.text) / 2
    proxier.applied(fewer, 102.0)
    # kube-proxy's sync period: every chain again, which undoes what a person changed by hand
    assert proxier.plan(fewer, now=100.0 + FULL_SYNC_PERIOD - 1) is None
    text3 = proxier.plan(fewer, now=100.0 + FULL_SYNC_PERIOD)
    assert text3.endswith(rules.render(fewer, CTX, ruleset2.nat_chains).text)
    # and the jumps from the built-in chains are ensured then, as kube-proxy does each sync
    assert [x for x in proxier.pending_jumps.splitlines() if x.startswith("-")] == \
        [x for x in missing_jumps("").splitlines() if x.startswith("-A PREROUTING")]
    proxier.failed()  # a restore the kernel refused: the next sync writes every chain again
    assert proxier.plan(fewer, now=100.0 + FULL_SYNC_PERIOD + 1).endswith(
        rules.render(fewer, CTX, ruleset2.nat_chains).text)


def test_chains_a_failed_staged_restore_may_have_made_are_deleted_when_no_longer_wanted():
    """A restore in several transactions that fails partway leaves its first blocks made:
    the next sync (a full one) deletes those chains if their Service is gone meanwhile."""
    from nsk.proxy.sync import IptablesProxier
    from nsk.testing.fakes import RecordingKernel
    proxier = IptablesProxier("nsk_test_node", CTX, RecordingKernel(iptables_backend="nft"), fresh=True)
    assert proxier.budget and IptablesProxier("n", CTX, RecordingKernel(iptables_backend="legacy")).budget == 0
    proxier.budget = 4  # (a small budget: these few Services already go in several transactions)
    proxier.plan(PORTS, now=0.0)
    proxier.applied(PORTS, 0.0)
    extra = sp("extra", "10.96.0.40", eps=(E1, E2, Endpoint("10.244.2.9", 8080, "node-2")))
    staged = proxier.plan(PORTS + [extra], now=1.0)
    assert staged.count("COMMIT") > 4
    proxier.failed()  # the kernel refused a later block: the first ones may be in
    again = proxier.plan(PORTS, now=2.0).splitlines()
    made = [svc_chain("KUBE-SVC", extra)] + [sep_chain(extra, e) for e in extra.endpoints]
    assert all(f"-X {c}" in again for c in made)


def _many(n_services: int, n_eps: int) -> list[ServicePort]:
    return [ServicePort("default", f"s{i}", "", "TCP", 80, f"10.96.{i // 250}.{i % 250 + 2}",
                        endpoints=tuple(Endpoint(f"10.244.1.{j + 2}", 8080, "node-1") for j in range(n_eps)))
            for i in range(n_services)]


def test_large_cluster_mode_drops_the_endpoint_comments_as_kube_proxy_does():
    """Above 1,000 endpoints (per Service port, ready or not) the KUBE-SEP rules and the
    jumps to them carry no comment; every other rule keeps its own (TestSyncProxyRulesLargeClusterMode)."""
    from nsk.proxy.iptables import large_cluster
    assert not large_cluster(_many(50, 20)) and large_cluster(_many(50, 20) + _many(1, 1)[:1])
    web = sp("web", "10.96.0.2", eps=(E1, Endpoint("10.244.2.2", 8080, "node-2", False)))
    normal, large = render([web], CTX).text.splitlines(), render([web], CTX, large=True).text.splitlines()
    sep = sep_chain(web, E1)
    assert f"-A {sep} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination " \
           "10.244.1.2:8080" in normal
    assert f"-A {sep} -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080" in large
    assert f"-A {sep} -s 10.244.1.2/32 -j KUBE-MARK-MASQ" in large
    svc = svc_chain("KUBE-SVC", web)
    assert f"-A {svc} -j {sep}" in large  # its only ready endpoint: no probability, no comment
    assert [x for x in normal if "-A KUBE-SERVICES" in x] == [x for x in large if "-A KUBE-SERVICES" in x]
    assert any(f"-A {svc} -m comment --comment \"default/web:http cluster IP\"" in x for x in large)


def test_no_periodic_full_sync_in_large_cluster_mode_but_a_gone_canary_brings_one():
    from nsk.proxy.sync import FULL_SYNC_PERIOD, SYNC_PERIOD, IptablesProxier
    from nsk.testing.fakes import RecordingKernel
    kernel = RecordingKernel(saved={"nsk_test_node": "*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n"})
    proxier = IptablesProxier("nsk_test_node", CTX, kernel, fresh=True)
    big = _many(60, 20)  # 1,200 endpoints
    first = proxier.plan(big, now=0.0)
    assert "--comment default/s0 " not in first and "--comment \"default/s0 cluster IP\"" in first
    proxier.applied(big, 0.0)
    assert proxier.plan(big, now=FULL_SYNC_PERIOD + 1) is None  # kubernetes#138571
    kernel.saved["nsk_test_node"] = ""  # someone flushed the tables: the canary is gone
    again = proxier.plan(big, now=FULL_SYNC_PERIOD + 1 + SYNC_PERIOD)
    assert again.startswith(missing_jumps("")) and len(again) > len(first) * 0.9  # every chain, and the jumps


def test_the_built_in_chains_jump_in_kube_proxys_order():
    """As `iptables -L` shows them on a kube-proxy node: prepended, so the list reads in
    kube-proxy's order; KUBE-FIREWALL last, where the kubelet's jump sits."""
    from nsk.testing.tracer import restore as model
    tables = model({}, missing_jumps(""))
    order = {c: [r.target for r in tables["filter"].chains[c]] for c in ("INPUT", "FORWARD", "OUTPUT")}
    assert order == {
        "INPUT": ["KUBE-PROXY-FIREWALL", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL"],
        "FORWARD": ["KUBE-PROXY-FIREWALL", "KUBE-FORWARD", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"],
        "OUTPUT": ["KUBE-PROXY-FIREWALL", "KUBE-SERVICES", "KUBE-FIREWALL"],
    }
    # kube-proxy's canaries, by which it sees its tables flushed, in each table it uses
    assert all("KUBE-PROXY-CANARY" in tables[t].chains for t in ("mangle", "nat", "filter"))


def test_localhost_node_ports_are_reachable_only_from_the_node():
    """kube-proxy's localhostNodePorts: route_localnet lets 127.0.0.1:<nodePort> work on the
    node; KUBE-FIREWALL drops what would reach 127/8 from outside (the martian hole)."""
    text = missing_jumps("") + RULES
    assert '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ' \
           '! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP' in text.splitlines()
    assert check_consistency(text) == []


def test_an_ipv6_cidr_in_node_port_addresses_is_not_for_the_ipv4_rules():
    only_v6 = NodeContext("node-1", "10.244.0.0/16", (NODE1,), ("fd00::/64",))
    assert nodeports_tail(only_v6) == nodeports_tail(NodeContext("node-1", "10.244.0.0/16", (NODE1,)))
    both = NodeContext("node-1", "10.244.0.0/16", (NODE1,), ("fd00::/64", "172.18.0.0/24"))
    assert [r.split()[-3] for r in nodeports_tail(both)] == [f"{NODE1}/32"]


def test_endpoints_are_in_kube_proxys_order_the_ip_port_string():
    eps = (Endpoint("10.244.1.9", 80, "node-1"), Endpoint("10.244.1.10", 80, "node-1"),
           Endpoint("10.244.1.9", 100, "node-1"))
    sp = ServicePort("default", "web", "", "TCP", 80, "10.96.0.2", endpoints=eps)
    seps = [line.split()[-1] for line in render([sp], CTX).text.splitlines()
            if line.startswith(f"-A {svc_chain('KUBE-SVC', sp)}") and "KUBE-SEP-" in line]
    assert seps == [sep_chain(sp, e) for e in sorted(eps, key=lambda e: f"{e.ip}:{e.port}")]


def test_the_node_may_reach_a_load_balancer_ip_its_source_ranges_allow():
    sp = ServicePort("default", "lb", "", "TCP", 80, "10.96.0.3", lb_ips=("198.51.100.1",),
                     lb_source_ranges=("172.18.0.0/24",), endpoints=(Endpoint("10.244.2.3", 80, "node-2"),))
    fw = svc_chain("KUBE-FW", sp)
    rules = [line for line in render([sp], CTX).text.splitlines() if line.startswith(f"-A {fw} ")]
    assert f'-A {fw} -m comment --comment "default/lb loadbalancer IP" -s 198.51.100.1 -j {svc_chain("KUBE-EXT", sp)}' \
        in rules
    far = ServicePort("default", "lb", "", "TCP", 80, "10.96.0.3", lb_ips=("198.51.100.1",),
                      lb_source_ranges=("203.0.113.0/24",), endpoints=sp.endpoints)
    assert not [line for line in render([far], CTX).text.splitlines() if "-s 198.51.100.1" in line]


# kube-proxy's TestTerminatingEndpoints* (pkg/proxy/iptables/proxier_test.go), as cases of
# which endpoints a node sends traffic to: (endpoints, policy Local?) -> (cluster, local).
R, T, S = "ready", "terminating", "serving-terminating"


def _ep(i: int, kind: str, node: str = "node-1") -> Endpoint:
    return Endpoint(f"10.244.{1 if node == 'node-1' else 2}.{i}", 80, node, kind == R, kind in (R, S), kind != R)


@pytest.mark.parametrize("eps, local_policy, cluster, local", [
    # ready endpoints win; the terminating ones are left out even when serving
    ([(1, R), (2, R), (3, S), (4, T)], False, [1, 2], []),
    # none ready: every serving terminating endpoint, never one that stopped serving
    ([(1, S), (2, S), (3, T)], False, [1, 2], []),
    # none ready, none serving: no endpoint at all (the Service REJECTs)
    ([(1, T), (2, T)], False, [], []),
    # Local: this node's ready ones; failing those, this node's serving terminating ones
    ([(1, R), (2, S), (3, R, "node-2")], True, [], [1]),
    ([(1, S), (2, T), (3, R, "node-2")], True, [], [1]),
    ([(1, T), (3, R, "node-2")], True, [], []),
])
def test_terminating_endpoints_are_a_fallback_as_in_kube_proxy(eps, local_policy, cluster, local):
    port = ServicePort("default", "web", "", "TCP", 80, "10.96.0.2", internal_local=local_policy,
                       endpoints=tuple(_ep(*e) for e in eps))
    from nsk.proxy.model import categorize
    got_cluster, got_local, has_any = categorize(port, "node-1")
    assert [int(e.ip.split(".")[-1]) for e in got_cluster] == cluster
    assert [int(e.ip.split(".")[-1]) for e in got_local] == local
    text = render([port], CTX).text
    for e in port.endpoints:  # the rules say the same: a DNAT exactly to what was chosen
        assert (f"--to-destination {e.address}" in text) == (e in got_cluster or e in got_local)
    assert ("has no endpoints" in text and "-j REJECT" in text) == (not has_any)


def test_cleanup_removes_every_chain_and_jump_of_the_mode_and_nothing_else():
    """A switch to another mode (kube-proxy --cleanup): from what iptables-save shows, the
    jumps from the built-in chains go, then the KUBE-/NSK- chains; a user's rule stays."""
    from nsk.proxy.iptables import cleanup
    from nsk.testing.tracer import restore as model
    first = render(PORTS, CTX)
    kernel = model({}, missing_jumps("") + first.text + "*nat\n:MINE - [0:0]\n-A PREROUTING -j MINE\nCOMMIT\n")
    saved = "\n".join(
        line for table, t in kernel.items() for line in
        [f"*{table}", *(f":{c} - [0:0]" for c in t.chains),
         *(" ".join(f'"{a}"' if " " in a else a for a in ("-A", r.chain, *r.args, "-j", r.target, *r.target_args))
           for rs in t.chains.values() for r in rs), "COMMIT"])  # quoted as iptables-save quotes
    after = model(kernel, cleanup(saved))
    left = {c for t in after.values() for c in t.chains}
    assert not any(c.startswith(("KUBE-", "NSK-")) for c in left)
    assert "MINE" in left and [r.target for r in after["nat"].chains["PREROUTING"]] == ["MINE"]
    assert cleanup("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n") == ""


def test_nodes_share_the_render_of_a_service_without_a_local_policy():
    """#17: a Service's rules are rendered once for every node unless they depend on the node
    (a Local policy: the node's own endpoints; source ranges: the node's addresses)."""
    from nsk.proxy.iptables import _service
    shared = ServicePort("ns", "shared", "", "TCP", 80, "10.96.7.7", endpoints=(Endpoint("10.244.1.9", 80, "node-1"),))
    local = ServicePort("ns", "loc", "", "TCP", 80, "10.96.7.8", node_port=30123, external_local=True,
                        endpoints=(Endpoint("10.244.1.9", 80, "node-1"),))
    _service.cache_clear()
    one = render([shared, local], NodeContext("node-1", "10.244.0.0/16", ("172.18.0.2",))).text
    two = render([shared, local], NodeContext("node-2", "10.244.0.0/16", ("172.18.0.3",))).text
    info = _service.cache_info()
    assert (info.misses, info.hits) == (3, 1)  # `shared` once for both; `loc` for each node
    assert "ns/loc has no local endpoints" in two and "ns/loc has no local endpoints" not in one
