"""Cluster DNS answers, written as zone-file lines (pure), and the server's robustness."""

from __future__ import annotations

import random

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from nsk.dns.records import answer, build
from nsk.dns.server import respond

SERVICES = [
    {"metadata": {"namespace": "default", "name": "my-nginx"},
     "spec": {"clusterIP": "10.96.0.2", "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                                  {"name": "dns", "port": 53, "protocol": "UDP"}]}},
    {"metadata": {"namespace": "default", "name": "db"},
     "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}},
    {"metadata": {"namespace": "default", "name": "empty"}, "spec": {"clusterIP": "None", "ports": []}},
    {"metadata": {"namespace": "prod", "name": "my-service"},
     "spec": {"type": "ExternalName", "externalName": "my.database.example.com"}},
    {"metadata": {"namespace": "prod", "name": "by-ip"}, "spec": {"type": "ExternalName", "externalName": "1.2.3.4"}},
    {"metadata": {"namespace": "default", "name": "other"}, "spec": {"clusterIP": "10.96.0.3", "ports": [{"port": 80}]}},
    {"metadata": {"namespace": "default", "name": "twins"},
     "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
]
ENDPOINTS = [
    {"metadata": {"namespace": "default", "name": "db"},
     "subsets": [{"addresses": [{"ip": "10.244.1.5", "hostname": "db-0"}, {"ip": "10.244.2.6"}],
                  "notReadyAddresses": [{"ip": "10.244.2.9"}],
                  "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]},
    {"metadata": {"namespace": "default", "name": "my-nginx"},
     "subsets": [{"addresses": [{"ip": "10.244.1.8"}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]},
    # an address two Services' endpoints share
    {"metadata": {"namespace": "default", "name": "other"},
     "subsets": [{"addresses": [{"ip": "10.244.2.6"}], "ports": [{"port": 80, "protocol": "TCP"}]}]},
    # two endpoints under one hostname (two subsets): one SRV, not two
    {"metadata": {"namespace": "default", "name": "twins"},
     "subsets": [{"addresses": [{"ip": "10.244.1.20", "hostname": "twin"}],
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
                 {"addresses": [{"ip": "10.244.1.20", "hostname": "twin"}],
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]},
]
PODS = [{"metadata": {"namespace": "default", "name": "web-1"}, "spec": {}, "status": {"podIP": "10.244.1.7"}},
        {"metadata": {"namespace": "default", "name": "db-0"}, "spec": {}, "status": {"podIP": "10.244.1.5"}},
        {"metadata": {"namespace": "kube-system", "name": "agent"}, "spec": {"hostNetwork": True},
         "status": {"podIP": "172.18.0.2"}}]
NAMESPACES = ["default", "kube-system", "prod", "quiet"]
ZONE = build(SERVICES, ENDPOINTS, "cluster.local", "10.96.0.10", ttl=5, pods=PODS, namespaces=NAMESPACES)
SOA = ("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5",)

CASES = [
    # (qname, qtype, rcode, answer, additional)
    ("my-nginx.default.svc.cluster.local.", "A", "NOERROR",
     ["my-nginx.default.svc.cluster.local. 5 IN A 10.96.0.2"], []),
    ("My-Nginx.DEFAULT.svc.cluster.local.", "A", "NOERROR",
     ["my-nginx.default.svc.cluster.local. 5 IN A 10.96.0.2"], []),
    ("_http._tcp.my-nginx.default.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.my-nginx.default.svc.cluster.local. 5 IN SRV 0 100 80 my-nginx.default.svc.cluster.local."],
     ["my-nginx.default.svc.cluster.local. 5 IN A 10.96.0.2"]),
    ("_dns._udp.my-nginx.default.svc.cluster.local.", "SRV", "NOERROR",
     ["_dns._udp.my-nginx.default.svc.cluster.local. 5 IN SRV 0 100 53 my-nginx.default.svc.cluster.local."],
     ["my-nginx.default.svc.cluster.local. 5 IN A 10.96.0.2"]),
    ("db.default.svc.cluster.local.", "A", "NOERROR",
     ["db.default.svc.cluster.local. 5 IN A 10.244.1.5", "db.default.svc.cluster.local. 5 IN A 10.244.2.6"], []),
    ("db-0.db.default.svc.cluster.local.", "A", "NOERROR", ["db-0.db.default.svc.cluster.local. 5 IN A 10.244.1.5"],
     []),
    ("10-244-2-6.db.default.svc.cluster.local.", "A", "NOERROR",
     ["10-244-2-6.db.default.svc.cluster.local. 5 IN A 10.244.2.6"], []),
    ("_pg._tcp.db.default.svc.cluster.local.", "SRV", "NOERROR",
     ["_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.default.svc.cluster.local.",
      "_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 50 5432 10-244-2-6.db.default.svc.cluster.local."],
     ["db-0.db.default.svc.cluster.local. 5 IN A 10.244.1.5",
      "10-244-2-6.db.default.svc.cluster.local. 5 IN A 10.244.2.6"]),
    # SRV at a Service's own name, as CoreDNS answers it: one per port, named or not
    ("my-nginx.default.svc.cluster.local.", "SRV", "NOERROR",
     ["my-nginx.default.svc.cluster.local. 5 IN SRV 0 50 80 my-nginx.default.svc.cluster.local.",
      "my-nginx.default.svc.cluster.local. 5 IN SRV 0 50 53 my-nginx.default.svc.cluster.local."],
     ["my-nginx.default.svc.cluster.local. 5 IN A 10.96.0.2"]),
    ("db.default.svc.cluster.local.", "SRV", "NOERROR",
     ["db.default.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.default.svc.cluster.local.",
      "db.default.svc.cluster.local. 5 IN SRV 0 50 5432 10-244-2-6.db.default.svc.cluster.local."],
     ["db-0.db.default.svc.cluster.local. 5 IN A 10.244.1.5",
      "10-244-2-6.db.default.svc.cluster.local. 5 IN A 10.244.2.6"]),
    ("my-service.prod.svc.cluster.local.", "A", "NOERROR",
     ["my-service.prod.svc.cluster.local. 5 IN CNAME my.database.example.com."], []),
    ("by-ip.prod.svc.cluster.local.", "A", "NOERROR", ["by-ip.prod.svc.cluster.local. 5 IN CNAME 1.2.3.4."], []),
    ("my-service.prod.svc.cluster.local.", "SRV", "NOERROR",  # the CNAME answers every type
     ["my-service.prod.svc.cluster.local. 5 IN CNAME my.database.example.com."], []),
    ("2.0.96.10.in-addr.arpa.", "PTR", "NOERROR",
     ["2.0.96.10.in-addr.arpa. 5 IN PTR my-nginx.default.svc.cluster.local."], []),
    ("5.1.244.10.in-addr.arpa.", "PTR", "NOERROR",
     ["5.1.244.10.in-addr.arpa. 5 IN PTR db-0.db.default.svc.cluster.local."], []),
    ("7.1.244.10.in-addr.arpa.", "PTR", "NOERROR",
     ["7.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-7.default.pod.cluster.local."], []),
    ("10-244-1-7.default.pod.cluster.local.", "A", "NOERROR",
     ["10-244-1-7.default.pod.cluster.local. 5 IN A 10.244.1.7"], []),
    ("dns-version.cluster.local.", "TXT", "NOERROR", ['dns-version.cluster.local. 28800 IN TXT "1.1.0"'], []),
    ("cluster.local.", "NS", "NOERROR", ["cluster.local. 5 IN NS ns.dns.cluster.local."],
     ["ns.dns.cluster.local. 5 IN A 10.96.0.10"]),  # with its glue
    # an endpoint of a ClusterIP Service points back to it, as CoreDNS's reverse lookup finds it
    ("8.1.244.10.in-addr.arpa.", "PTR", "NOERROR",
     ["8.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-8.my-nginx.default.svc.cluster.local."], []),
    # an address two Services' endpoints share: both
    ("6.2.244.10.in-addr.arpa.", "PTR", "NOERROR",
     ["6.2.244.10.in-addr.arpa. 5 IN PTR 10-244-2-6.db.default.svc.cluster.local.",
      "6.2.244.10.in-addr.arpa. 5 IN PTR 10-244-2-6.other.default.svc.cluster.local."], []),
    ("_http._tcp.twins.default.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.twins.default.svc.cluster.local. 5 IN SRV 0 50 80 twin.twins.default.svc.cluster.local."],
     ["twin.twins.default.svc.cluster.local. 5 IN A 10.244.1.20"]),
]
NEGATIVE = [
    ("nothing.default.svc.cluster.local.", "A", "NXDOMAIN"),
    ("my-nginx.nowhere.svc.cluster.local.", "A", "NXDOMAIN"),
    ("my-nginx.default.svc.cluster.local.", "AAAA", "NOERROR"),  # NODATA: the name exists
    ("my-nginx.default.svc.cluster.local.", "TXT", "NOERROR"),
    ("_nope._tcp.my-nginx.default.svc.cluster.local.", "SRV", "NXDOMAIN"),
    # headless without a ready endpoint: no records, so no name (CoreDNS's errNoItems)
    ("empty.default.svc.cluster.local.", "A", "NXDOMAIN"),
    ("empty.default.svc.cluster.local.", "SRV", "NXDOMAIN"),
    ("db.default.svc.cluster.local.", "AAAA", "NOERROR"),  # NODATA: the endpoints' name exists
    ("default.svc.cluster.local.", "A", "NOERROR"),  # an empty non-terminal
    ("svc.cluster.local.", "A", "NOERROR"),
    ("10-244-1-999.default.pod.cluster.local.", "A", "NXDOMAIN"),
    # names that exist without records of their own are NODATA (RFC 8020), for a namespace
    # that exists; a Pod record in a namespace that does not is NXDOMAIN (`pods insecure`)
    ("pod.cluster.local.", "A", "NOERROR"),
    ("default.pod.cluster.local.", "A", "NOERROR"),
    ("quiet.svc.cluster.local.", "A", "NOERROR"),
    ("quiet.pod.cluster.local.", "A", "NOERROR"),
    ("nowhere.svc.cluster.local.", "A", "NXDOMAIN"),
    ("nowhere.pod.cluster.local.", "A", "NXDOMAIN"),
    ("10-244-1-7.nowhere.pod.cluster.local.", "A", "NXDOMAIN"),
]
REVERSE_SOA = ("in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. 1 7200 1800 86400 5",)


@pytest.mark.parametrize("qname,qtype,rcode,ans,additional", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_answers(qname, qtype, rcode, ans, additional):
    r = answer(ZONE, qname, qtype)
    assert (r.rcode, [str(x) for x in r.answer], [str(x) for x in r.additional]) == (rcode, ans, additional)
    assert r.authority == ()


@pytest.mark.parametrize("qname,qtype,rcode", NEGATIVE, ids=[f"{c[0]} {c[1]}" for c in NEGATIVE])
def test_nxdomain_and_nodata_carry_the_soa(qname, qtype, rcode):
    r = answer(ZONE, qname, qtype)
    assert (r.rcode, r.answer, tuple(str(x) for x in r.authority)) == (rcode, (), SOA)


def test_an_address_not_the_clusters_is_nxdomain_of_the_reverse_zone_and_falls_through():
    r = answer(ZONE, "2.0.18.172.in-addr.arpa.", "PTR")  # a hostNetwork Pod's IP is its node's
    assert (r.rcode, r.answer, tuple(str(x) for x in r.authority), r.fallthrough) == \
        ("NXDOMAIN", (), REVERSE_SOA, True)
    from nsk.dns.server import FORWARD
    assert respond(ZONE, DNSRecord.question("8.8.8.8.in-addr.arpa", "PTR").pack(), forward=True) is FORWARD


def test_outside_the_zone_is_refused_not_answered():
    assert answer(ZONE, "example.com.", "A").rcode == "REFUSED"


def wire(qname: str, qtype: str) -> DNSRecord:
    return DNSRecord.parse(respond(ZONE, DNSRecord.question(qname, qtype).pack()))


def test_wire_replies():
    r = wire("my-nginx.default.svc.cluster.local", "A")
    assert r.header.aa == 1 and r.header.rcode == RCODE.NOERROR and str(r.rr[0].rdata) == "10.96.0.2"
    r = wire("nothing.default.svc.cluster.local", "A")
    assert r.header.rcode == RCODE.NXDOMAIN and QTYPE[r.auth[0].rtype] == "SOA"
    r = wire("example.com", "A")
    assert r.header.rcode == RCODE.REFUSED and r.header.aa == 0


def test_answers_keep_the_askers_spelling_of_the_name():
    r = wire("My-Nginx.DEFAULT.svc.cluster.local", "A")
    assert [(str(x.rname), str(x.rdata)) for x in r.rr] == [("My-Nginx.DEFAULT.svc.cluster.local.", "10.96.0.2")]
    r = wire("nothing.default.svc.CLUSTER.Local", "A")
    assert r.header.rcode == RCODE.NXDOMAIN and str(r.auth[0].rname) == "CLUSTER.Local."
    r = wire("_HTTP._tcp.my-nginx.default.svc.cluster.local", "SRV")  # the additional A is another name
    assert str(r.rr[0].rname) == "_HTTP._tcp.my-nginx.default.svc.cluster.local."
    assert str(r.ar[0].rname) == "my-nginx.default.svc.cluster.local."


def test_a_failing_answer_is_servfail_not_a_dead_server(monkeypatch, capsys):
    from nsk.dns import records

    def broken(*_):
        raise IndexError("a bug")
    monkeypatch.setattr(records, "answer", broken)
    r = wire("my-nginx.default.svc.cluster.local", "SRV")
    assert r.header.rcode == RCODE.SERVFAIL and not r.rr
    assert "error answering my-nginx.default.svc.cluster.local. SRV: IndexError('a bug')" in capsys.readouterr().err


def test_garbage_never_crashes_the_server():
    rng = random.Random(7)
    good = DNSRecord.question("my-nginx.default.svc.cluster.local", "A").pack()
    loop = good[:12] + b"\xc0\x0c" + good[-4:]  # a name that points at itself
    samples = [b"", b"\x00", good[:5], good[:-1], good + b"\xff" * 10, loop, b"\xff" * 600]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(500)]
    samples += [bytearray(good) for _ in range(200)]
    for i, s in enumerate(samples[-200:]):
        s[rng.randrange(len(s))] = rng.randrange(256)
    for s in samples:
        out = respond(ZONE, bytes(s))
        assert out is None or isinstance(out, (bytes, bytearray))
    assert str(wire("my-nginx.default.svc.cluster.local", "A").rr[0].rdata) == "10.96.0.2"


def test_edns0_and_truncation():
    from dnslib import EDNS0

    from nsk.dns.server import UDP_PLAIN, udp_limit
    big = build([{"metadata": {"namespace": "default", "name": "many"},
                  "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}}],
                [{"metadata": {"namespace": "default", "name": "many"},
                  "subsets": [{"addresses": [{"ip": f"10.244.1.{i}"} for i in range(2, 52)],
                               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]}],
                "cluster.local", "10.96.0.10")
    plain = DNSRecord.question("many.default.svc.cluster.local", "A")
    edns = DNSRecord.question("many.default.svc.cluster.local", "A")
    edns.add_ar(EDNS0(udp_len=4096))
    assert udp_limit(plain.pack()) == UDP_PLAIN and udp_limit(edns.pack()) == 1232
    reply = DNSRecord.parse(respond(big, edns.pack()))
    assert len(reply.rr) == 50 and any(QTYPE[rr.rtype] == "OPT" for rr in reply.ar)
    assert len(respond(big, plain.pack())) > UDP_PLAIN  # the server truncates it when it goes out over UDP
    assert not any(QTYPE[rr.rtype] == "OPT" for rr in DNSRecord.parse(respond(big, plain.pack())).ar)


# ---- what no packet may do (hardening) ------------------------------------------------------

def _header(flags: int, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, qid: int = 0x1234) -> bytes:
    import struct
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def test_a_long_chain_of_compression_pointers_is_refused_quickly_not_a_crash():
    import time
    # the question's name is a pointer to the last of 1,200 pointers, each to the one before
    # (dnslib's parser recursed through all of them, and the server died of RecursionError)
    n, start = 1200, 12 + 2 + 4  # after the question's pointer, QTYPE and QCLASS
    last = start + 1 + 2 * (n - 1)
    chain = bytearray(_header(0x0100) + bytes([0xC0 | (last >> 8), last & 0xFF]) + b"\x00\x01\x00\x01")
    chain += b"\x00"  # the root, at `start`
    for i in range(n):
        target = start if i == 0 else start + 1 + 2 * (i - 1)
        chain += bytes([0xC0 | (target >> 8), target & 0xFF])
    chain = bytes(chain)
    t = time.perf_counter()
    out = respond(ZONE, chain)
    assert time.perf_counter() - t < 0.05
    assert out is None or DNSRecord.parse(out).header.rcode == RCODE.FORMERR
    # the same chain as the name of an additional record, the chain itself hidden in the
    # rdata of an earlier one (of an unknown type, so taken as raw bytes)
    good = DNSRecord.question("my-nginx.default.svc.cluster.local", "A").pack()
    evil = bytearray(good)
    evil[11] = 2
    rdata_at = len(evil) + 1 + 10  # after the first record's root name and fixed fields
    hidden = bytearray(b"\x00")
    for i in range(n):
        target = rdata_at if i == 0 else rdata_at + 1 + 2 * (i - 1)
        hidden += bytes([0xC0 | (target >> 8), target & 0xFF])
    evil += b"\x00" + (65280).to_bytes(2, "big") + b"\x00\x01" + b"\x00\x00\x00\x00" + len(hidden).to_bytes(2, "big")
    evil += hidden
    last = rdata_at + 1 + 2 * (n - 1)
    evil += bytes([0xC0 | (last >> 8), last & 0xFF]) + b"\x00\x10\x00\x01\x00\x00\x00\x00\x00\x00"
    out = respond(ZONE, bytes(evil))
    assert out is None or DNSRecord.parse(out).header.rcode == RCODE.FORMERR


def test_a_response_is_never_answered_and_a_runt_gets_nothing():
    reply = respond(ZONE, DNSRecord.question("my-nginx.default.svc.cluster.local", "A").pack())
    assert respond(ZONE, reply) is None  # no ping-pong between two servers, no reflection
    garbage_response = _header(0x8180) + b"\xff" * 40
    assert respond(ZONE, garbage_response) is None
    for runt in (b"", b"\x12", b"\x12\x34\x01\x00\x00"):
        assert respond(ZONE, runt) is None


def test_opcodes_other_than_query_are_not_implemented():
    q = DNSRecord.question("my-nginx.default.svc.cluster.local", "A")
    q.header.opcode = 4  # NOTIFY
    r = DNSRecord.parse(respond(ZONE, q.pack()))
    assert r.header.rcode == RCODE.NOTIMP and r.header.opcode == 4 and r.header.id == q.header.id and not r.rr


def test_an_edns_version_above_0_is_badvers():
    from dnslib import EDNS0
    q = DNSRecord.question("my-nginx.default.svc.cluster.local", "A")
    q.add_ar(EDNS0(udp_len=4096, version=1))
    r = DNSRecord.parse(respond(ZONE, q.pack()))
    (opt,) = [rr for rr in r.ar if rr.rtype == QTYPE.OPT]
    assert not r.rr and (opt.ttl >> 24) == 1 and r.header.rcode == 0  # BADVERS = 16: ext-rcode 1, rcode 0
    assert (opt.ttl >> 16) & 0xFF == 0  # we speak version 0


def test_a_reply_copies_rd_and_cd_but_not_tc_or_ad():
    q = DNSRecord.question("my-nginx.default.svc.cluster.local", "A")
    q.header.tc, q.header.ad, q.header.cd, q.header.rd = 1, 1, 1, 1
    r = DNSRecord.parse(respond(ZONE, q.pack()))
    assert (r.header.tc, r.header.ad, r.header.cd, r.header.rd, r.header.qr) == (0, 0, 1, 1, 1)
    assert str(r.rr[0].rdata) == "10.96.0.2"
    q.header.rd = 0
    assert DNSRecord.parse(respond(ZONE, q.pack())).header.rd == 0


def test_a_query_with_answers_in_it_is_formerr():
    bad = bytearray(DNSRecord.question("my-nginx.default.svc.cluster.local", "A").pack())
    bad[7] = 1  # ANCOUNT 1 with nothing there
    r = DNSRecord.parse(respond(ZONE, bytes(bad)))
    assert r.header.rcode == RCODE.FORMERR and r.header.qr == 1


def test_an_external_name_in_the_cluster_is_followed():
    """CoreDNS follows an ExternalName's CNAME: to a name of the cluster, it adds its records."""
    z = build([*SERVICES, {"metadata": {"namespace": "prod", "name": "alias"},
                           "spec": {"type": "ExternalName", "externalName": "my-nginx.default.svc.cluster.local"}}],
              ENDPOINTS, "cluster.local", "10.96.0.10", ttl=5, pods=PODS, namespaces=NAMESPACES)
    r = answer(z, "alias.prod.svc.cluster.local.", "A")
    assert [str(x) for x in r.answer] == [
        "alias.prod.svc.cluster.local. 5 IN CNAME my-nginx.default.svc.cluster.local.",
        "my-nginx.default.svc.cluster.local. 5 IN A 10.96.0.2"] and r.chase == ""
    # to a name outside: the CNAME, and the server asks the upstream for the target
    r = answer(ZONE, "my-service.prod.svc.cluster.local.", "A")
    assert [str(x) for x in r.answer] == ["my-service.prod.svc.cluster.local. 5 IN CNAME my.database.example.com."]
    assert r.chase == "my.database.example.com."
    assert answer(ZONE, "my-service.prod.svc.cluster.local.", "CNAME").chase == ""


def test_a_cname_loop_in_the_cluster_ends():
    loop = [{"metadata": {"namespace": "default", "name": "a"},
             "spec": {"type": "ExternalName", "externalName": "b.default.svc.cluster.local"}},
            {"metadata": {"namespace": "default", "name": "b"},
             "spec": {"type": "ExternalName", "externalName": "a.default.svc.cluster.local"}}]
    r = answer(build(loop, [], "cluster.local", "10.96.0.10", namespaces=["default"]), "a.default.svc.cluster.local.", "A")
    assert r.rcode == "NOERROR" and 2 <= len(r.answer) <= 9


def test_the_server_adds_the_upstreams_records_for_an_outside_target():
    from dnslib import A as ARecord
    from dnslib import RR as WireRR

    from nsk.dns.server import Chase, _with_upstream
    q = DNSRecord.question("my-service.prod.svc.cluster.local", "A")
    out = respond(ZONE, q.pack(), forward=True)
    assert isinstance(out, Chase) and out.target == "my.database.example.com." and out.qtype == QTYPE.A
    up = DNSRecord.question("my.database.example.com", "A").reply()
    up.add_answer(WireRR("my.database.example.com", QTYPE.A, rdata=ARecord("192.0.2.10"), ttl=60))
    merged = DNSRecord.parse(_with_upstream(out.reply, up.pack()))
    assert merged.header.id == q.header.id
    assert [(QTYPE[r.rtype], str(r.rdata)) for r in merged.rr] == [("CNAME", "my.database.example.com."),
                                                                  ("A", "192.0.2.10")]
    up.header.tc = 1  # a truncated upstream answer makes a truncated reply (CoreDNS's "CNAME External Truncated")
    assert DNSRecord.parse(_with_upstream(out.reply, up.pack())).header.tc == 1
    failed = up.reply()
    failed.header.rcode = RCODE.SERVFAIL
    assert _with_upstream(out.reply, failed.pack()) == out.reply  # the CNAME alone, as before
    assert respond(ZONE, q.pack(), forward=False) == out.reply  # no upstream: the CNAME alone


def test_the_zone_kept_object_by_object_is_the_zone_built_whole():
    """The server applies each change to its zone (#17: a write that changes no record costs
    DNS nothing, one Pod's cost does not grow with the Pods). Objects put, changed and
    deleted in any order leave the same zone as one built from the end state."""
    rng = random.Random(7)
    pods = [{"metadata": {"namespace": "default", "name": f"p{i}"}, "spec": {},
             "status": {"podIP": f"10.244.{1 + i % 2}.{5 + i}"}} for i in range(8)]
    svcs = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in SERVICES}
    eps = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in ENDPOINTS}
    final = build(SERVICES, ENDPOINTS, "cluster.local", "10.96.0.10", pods=pods, namespaces=["default", "prod"])
    z = build([], [], "cluster.local", "10.96.0.10", namespaces=[])
    owners = [("Service", *k) for k in svcs] + [("Pod", "default", p["metadata"]["name"]) for p in pods] + \
        [("Namespace", "default"), ("Namespace", "prod"), ("Namespace", "gone")]
    for _ in range(3):  # each owner given something, taken away, given again, in random orders
        rng.shuffle(owners)
        for o in owners:
            if o[0] == "Service":
                part = z.service_part(svcs[o[1:]], rng.choice([eps.get(o[1:]), None]))
            elif o[0] == "Pod":
                part = z.pod_part(rng.choice(pods))
            else:
                part = z.namespace_part(o[1])
            z.put(o, part)
        for o in rng.sample(owners, len(owners) // 2):
            z.put(o, type(part)())
    for o in owners:
        if o[0] == "Service":
            z.put(o, z.service_part(svcs[o[1:]], eps.get(o[1:])))
        elif o[0] == "Pod":
            z.put(o, z.pod_part(next(p for p in pods if p["metadata"]["name"] == o[2])))
        else:
            z.put(o, z.namespace_part(o[1]) if o[1] != "gone" else type(part)())
    assert (z.records, z.names, z.namespaces) == (final.records, final.names, final.namespaces)
    assert not z.put(("Pod", "default", "p1"), z.pod_part(pods[1]))  # the same again: no change
