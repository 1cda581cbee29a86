"""Cases ported from CoreDNS's plugin/kubernetes/handler_test.go (dnsTestCases, the IPv4
ones), against a fixture built like its APIConnServeTest: the answers nsk must give to be
a drop-in for the cluster's CoreDNS. Sections are compared as sets, as its SortAndCheck does."""

from __future__ import annotations

import pytest

from nsk.dns.records import answer, build

SERVICES = [
    {"metadata": {"namespace": "testns", "name": "svc1"},
     "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    {"metadata": {"namespace": "testns", "name": "svcempty"},
     "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    {"metadata": {"namespace": "testns", "name": "hdls1"},
     "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    {"metadata": {"namespace": "testns", "name": "hdlsprtls"}, "spec": {"clusterIP": "None"}},
    {"metadata": {"namespace": "testns", "name": "external"},
     "spec": {"type": "ExternalName", "externalName": "ext.interwebs.test",
              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    {"metadata": {"namespace": "testns", "name": "external-to-service"},
     "spec": {"type": "ExternalName", "externalName": "svc1.testns.svc.cluster.local"}},
]
ENDPOINTS = [
    {"metadata": {"namespace": "testns", "name": "svc1"},
     "subsets": [{"addresses": [{"ip": "172.0.0.1", "hostname": "ep1a"}],
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]},
    {"metadata": {"namespace": "testns", "name": "hdls1"},
     "subsets": [{"addresses": [{"ip": "172.0.0.2"}, {"ip": "172.0.0.3"},
                                {"ip": "172.0.0.4", "hostname": "dup-name"},
                                {"ip": "172.0.0.5", "hostname": "dup-name"}],
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]},
    {"metadata": {"namespace": "testns", "name": "hdlsprtls"},
     "subsets": [{"addresses": [{"ip": "172.0.0.20"}]}]},
]
ZONE = build(SERVICES, ENDPOINTS, "cluster.local", "10.96.0.10", ttl=5, namespaces=["testns"])
SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"

CASES = [  # (qname, qtype, rcode, answer, extra); every NXDOMAIN and NODATA carries the SOA
    ("svc1.testns.svc.cluster.local.", "A", "NOERROR", ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"], []),
    ("svcempty.testns.svc.cluster.local.", "A", "NOERROR",
     ["svcempty.testns.svc.cluster.local. 5 IN A 10.0.0.1"], []),
    ("svc1.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."],
     ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]),
    ("_http._tcp.svc1.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."],
     ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]),
    ("_http._tcp.svcempty.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.svcempty.testns.svc.cluster.local. 5 IN SRV 0 100 80 svcempty.testns.svc.cluster.local."],
     ["svcempty.testns.svc.cluster.local. 5 IN A 10.0.0.1"]),
    ("hdls1.testns.svc.cluster.local.", "A", "NOERROR",
     [f"hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.{i}" for i in (2, 3, 4, 5)], []),
    ("hdlsprtls.testns.svc.cluster.local.", "A", "NOERROR",
     ["hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20"], []),
    ("172-0-0-20.hdlsprtls.testns.svc.cluster.local.", "A", "NOERROR",
     ["172-0-0-20.hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20"], []),
    ("172-0-0-2.hdls1.testns.svc.cluster.local.", "A", "NOERROR",
     ["172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2"], []),
    ("dup-name.hdls1.testns.svc.cluster.local.", "A", "NOERROR",
     ["dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
      "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5"], []),
    # one SRV per name, the weight an equal share per endpoint (4 of them: 25)
    ("_http._tcp.hdls1.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 25 80 172-0-0-2.hdls1.testns.svc.cluster.local.",
      "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 25 80 172-0-0-3.hdls1.testns.svc.cluster.local.",
      "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 25 80 dup-name.hdls1.testns.svc.cluster.local."],
     ["172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2",
      "172-0-0-3.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3",
      "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
      "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5"]),
    ("external.testns.svc.cluster.local.", "CNAME", "NOERROR",
     ["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."], []),
    ("external-to-service.testns.svc.cluster.local.", "A", "NOERROR",
     ["external-to-service.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.",
      "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"], []),
    ("dns-version.cluster.local.", "TXT", "NOERROR", ['dns-version.cluster.local. 28800 IN TXT "1.1.0"'], []),
    # reverse_test.go: a cluster IP (here two Services share it), an endpoint of a ClusterIP Service
    ("1.0.0.10.in-addr.arpa.", "PTR", "NOERROR",
     ["1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local.",
      "1.0.0.10.in-addr.arpa. 5 IN PTR svcempty.testns.svc.cluster.local."], []),
    ("1.0.0.172.in-addr.arpa.", "PTR", "NOERROR", ["1.0.0.172.in-addr.arpa. 5 IN PTR ep1a.svc1.testns.svc.cluster.local."],
     []),
]
NEGATIVE = [
    ("svc1.testns.svc.cluster.local.", "AAAA", "NOERROR"),
    ("svc0.testns.svc.cluster.local.", "AAAA", "NXDOMAIN"),
    ("svc0.testns.svc.cluster.local.", "A", "NXDOMAIN"),
    ("svc0.svc-nons.svc.cluster.local.", "A", "NXDOMAIN"),
    ("bogusendpoint.hdls1.testns.svc.cluster.local.", "A", "NXDOMAIN"),
    ("bogusendpoint.svc0.testns.svc.cluster.local.", "A", "NXDOMAIN"),
    ("svc.cluster.local.", "A", "NOERROR"),
    ("pod.cluster.local.", "A", "NOERROR"),
    ("testns.svc.cluster.local.", "A", "NOERROR"),
    ("svc.cluster.local.", "NS", "NOERROR"),
    ("testns.svc.cluster.local.", "NS", "NOERROR"),
    ("foo.cluster.local.", "NS", "NXDOMAIN"),
    ("foo.svc.cluster.local.", "NS", "NXDOMAIN"),
    ("svc1.testns.svc.cluster.local.", "SOA", "NOERROR"),
    # a name under an ExternalName Service is not the Service
    ("endpoint.external.testns.svc.cluster.local.", "CNAME", "NXDOMAIN"),
]


@pytest.mark.parametrize("qname,qtype,rcode,ans,extra", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_coredns_answers(qname, qtype, rcode, ans, extra):
    r = answer(ZONE, qname, qtype)
    assert r.rcode == rcode
    assert sorted(str(x) for x in r.answer) == sorted(ans)
    assert sorted(str(x) for x in r.additional) == sorted(extra)


@pytest.mark.parametrize("qname,qtype,rcode", NEGATIVE, ids=[f"{c[0]} {c[1]}" for c in NEGATIVE])
def test_coredns_negative_answers(qname, qtype, rcode):
    r = answer(ZONE, qname, qtype)
    assert (r.rcode, r.answer, [str(x) for x in r.authority]) == (rcode, (), [SOA])
