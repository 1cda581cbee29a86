"""Cluster DNS from inside Pods, through the kube-dns ClusterIP (root)."""

from __future__ import annotations

import sys
import time

import pytest

from tests.conftest import WEB, running, wait_for

pytestmark = pytest.mark.root

SVC = """
---
apiVersion: v1
kind: Service
metadata: {name: my-nginx}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, protocol: TCP}]
"""


def test_pods_resolve_services_like_kubernetes_pods(cluster):
    cluster.up(WEB.format(replicas=2) + SVC)
    assert [p["status"]["phase"] for p in cluster.pods("k8s-app=kube-dns", namespace="kube-system")] == ["Running", "Running"]
    line = cluster.nsk("get", "svc", "-n", "kube-system").stdout.splitlines()[1].split()
    assert line[:5] == ["kube-dns", "ClusterIP", "10.96.0.10", "<none>", "53/UDP,53/TCP"]
    pod = cluster.pods("app=web")[0]["metadata"]["name"]
    ip = cluster.get("svc", "my-nginx")["spec"]["clusterIP"]
    # the source's words: curl by the Service's name, nslookup, SRV for the named port
    out = cluster.exec(pod, "curl", "-s", "--max-time", "3", "my-nginx/hostname").stdout.strip()
    assert out in {p["metadata"]["name"] for p in cluster.pods("app=web")}
    assert f"Address: {ip}" in cluster.exec(pod, "nslookup", "my-nginx").stdout
    srv = cluster.exec(pod, "dig", "+short", "SRV", "_http._tcp.my-nginx.default.svc.cluster.local").stdout
    assert srv.strip() == "0 100 80 my-nginx.default.svc.cluster.local."
    srv = cluster.exec(pod, "dig", "+short", "SRV", "my-nginx.default.svc.cluster.local").stdout  # CoreDNS's too
    assert srv.strip() == "0 100 80 my-nginx.default.svc.cluster.local."
    assert cluster.exec(pod, "dig", "+tcp", "+short", "my-nginx.default.svc.cluster.local").stdout.strip() == ip
    assert cluster.exec(pod, "getent", "hosts", "my-nginx.default").stdout.split()[0] == ip
    assert cluster.exec(pod, "dig", "+short", "-x", ip).stdout.strip() == "my-nginx.default.svc.cluster.local."
    pod_ip = cluster.pods("app=web")[0]["status"]["podIP"]
    # a Pod behind a Service: its address points back to the endpoint, as CoreDNS answers
    assert cluster.exec(pod, "dig", "+short", "-x", pod_ip).stdout.strip() == \
        f"{pod_ip.replace('.', '-')}.my-nginx.default.svc.cluster.local."
    r = cluster.exec(pod, "dig", "nothing.default.svc.cluster.local")
    assert "status: NXDOMAIN" in r.stdout
    # a Python resolver sees the same
    py = cluster.exec(pod, "python3", "-c", "import socket; print(socket.gethostbyname('my-nginx'))").stdout
    assert py.strip() == ip


def test_records_follow_the_cluster(cluster):
    cluster.up(WEB.format(replicas=1) + SVC)
    pod = cluster.pods("app=web")[0]["metadata"]["name"]
    cluster.apply("""
apiVersion: v1
kind: Service
metadata: {name: late, namespace: default}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
""")
    pod_ip = cluster.pods("app=web")[0]["status"]["podIP"]
    wait_for(lambda: cluster.exec(pod, "dig", "+short", "late.default.svc.cluster.local").stdout.strip() == pod_ip,
             what="the headless Service's A record")
    cluster.nsk("scale", "deployment/web", "--replicas", "2")
    wait_for(lambda: len(cluster.exec(pod, "dig", "+short", "late.default.svc.cluster.local").stdout.split()) == 2,
             what="two A records")
    # no ready endpoint: the name is gone (asked from the node: the Pods are gone too)
    cluster.nsk("scale", "deployment/web", "--replicas", "0")
    late = ("dig", "@10.96.0.10", "late.default.svc.cluster.local")
    wait_for(lambda: "NXDOMAIN" in cluster.exec("node/node-1", *late).stdout,
             what="NXDOMAIN for a headless Service without endpoints")
    cluster.nsk("scale", "deployment/web", "--replicas", "1")
    wait_for(lambda: len(cluster.exec("node/node-1", *late, "+short").stdout.split()) == 1,
             what="the headless Service back with one A record")
    pod = wait_for(lambda: running(cluster.pods()), what="a running Pod")[0]["metadata"]["name"]
    cluster.nsk("delete", "svc", "late")
    wait_for(lambda: "NXDOMAIN" in cluster.exec(pod, "dig", "late.default.svc.cluster.local").stdout,
             what="NXDOMAIN after the delete")


GARBAGE = r"""
import random, socket, struct, sys
from dnslib import DNSRecord
dns = sys.argv[1]
rng = random.Random(1)
good = DNSRecord.question("my-nginx.default.svc.cluster.local", "A").pack()
loop = good[:12] + b"\xc0\x0c" + good[-4:]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
answered = 0
for i in range(3000):
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600))), loop, good[:7],
            good + b"\xff" * 40, good + b"\x00" * 6000][i % 5]
    u.sendto(junk, (dns, 53))
    if i % 100 == 0:
        t = socket.create_connection((dns, 53), 2)  # a TCP client that sends half a message and leaves
        t.sendall(struct.pack("!H", 500) + good[:10])
        t.close()
        u.sendto(good, (dns, 53))
        while True:  # skip replies to junk (FORMERR) until the good one
            r = DNSRecord.parse(u.recv(4096))
            if r.header.id == DNSRecord.parse(good).header.id and r.rr:
                answered += 1
                break
print(answered)
"""

BURST = r"""
import select, socket, sys, time
from dnslib import DNSRecord
dns, names = sys.argv[1], sys.argv[2:]
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
asked = {}  # (socket, id) -> the name asked
for i in range(1000):  # sent back to back: the server takes them in batches
    s, name = socks[i % 4], names[i % len(names)]
    q = DNSRecord.question(name, "A")
    q.header.id = i
    s.sendto(q.pack(), (dns, 53))
    asked[(s.fileno(), i)] = name
wrong = 0
deadline = time.monotonic() + 10
while asked and time.monotonic() < deadline:
    for s in select.select(socks, [], [], 1)[0]:
        r = DNSRecord.parse(s.recv(4096))
        name = asked.pop((s.fileno(), r.header.id), None)  # a reply to another socket would be unknown
        wrong += name is None or str(r.q.qname).rstrip(".") != name or not r.rr
print(len(asked), wrong)
"""


def test_the_server_survives_garbage_and_keeps_answering(cluster):
    cluster.up(WEB.format(replicas=1) + SVC)
    dns = [p for p in cluster.pods("k8s-app=kube-dns", namespace="kube-system") if p["spec"]["nodeName"] == "node-1"][0]
    # nsk's own interpreter: it has dnslib, which the host's python3 may lack
    out = cluster.exec("node/node-1", sys.executable, "-c", GARBAGE, dns["status"]["podIP"]).stdout
    assert out.strip() == "30"  # every good query among 3,000 bad packets was answered
    # a burst of 1,000 queries from 4 clients: each gets its own answer, to its own socket
    out = cluster.exec("node/node-1", sys.executable, "-c", BURST, dns["status"]["podIP"],
                       "my-nginx.default.svc.cluster.local", "kube-dns.kube-system.svc.cluster.local").stdout
    assert out.split() == ["0", "0"]  # none unanswered, none wrong
    after = cluster.get("pod", dns["metadata"]["name"], namespace="kube-system")
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0


HOG = r"""
import socket, struct, sys, time
from dnslib import DNSRecord
dns = sys.argv[1]
q = DNSRecord.question("my-nginx.default.svc.cluster.local", "A").pack()
hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that takes answers slowly...
hog.connect((dns, 53))
hog.settimeout(5)
try:  # ...asks 20,000 questions (1.4 MB of answers) and reads none
    hog.sendall((struct.pack("!H", len(q)) + q) * 20000)
except OSError:
    pass  # dropped before it had sent them all
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(1)  # a resolver's patience
answered = 0
for i in range(20):
    u.sendto(q, (dns, 53))
    try:
        answered += bool(DNSRecord.parse(u.recv(4096)).rr)
    except socket.timeout:
        pass
got = 0
try:
    while chunk := hog.recv(65536):
        got += len(chunk)
except OSError:
    pass
print(answered, got < 20000 * (2 + len(q) + 16))  # everyone else answered; the hog cut off
"""


def test_a_client_that_does_not_read_stalls_nobody_and_is_dropped(cluster):
    cluster.up(WEB.format(replicas=1) + SVC)
    dns = [p for p in cluster.pods("k8s-app=kube-dns", namespace="kube-system") if p["spec"]["nodeName"] == "node-1"][0]
    out = cluster.exec("node/node-1", sys.executable, "-c", HOG, dns["status"]["podIP"]).stdout
    assert out.split() == ["20", "True"]


UPSTREAM = r"""
import socket, sys
from dnslib import A, QTYPE, RR, DNSRecord
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    data, addr = s.recvfrom(4096)
    q = DNSRecord.parse(data)
    r = q.reply()
    r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(sys.argv[2] if len(sys.argv) > 2 else "203.0.113.7"), ttl=60))
    s.sendto(r.pack(), addr)
"""


def test_names_outside_the_cluster_go_upstream_or_are_refused(cluster):
    import subprocess

    from tests.conftest import ROOT
    cluster.up("""
apiVersion: nsk.io/v1alpha1
kind: Cluster
metadata: {name: x}
spec:
  dns: {upstream: [192.0.2.54, 192.0.2.53]}
  external:
    hosts: [{name: client, ip: 192.0.2.10}, {name: silent, ip: 192.0.2.54}, {name: resolver, ip: 192.0.2.53}]
""" + "---\n" + WEB.format(replicas=1))
    pod = cluster.pods("app=web")[0]["metadata"]["name"]
    # no upstream answers yet: SERVFAIL once both had their 2 s, not a hang
    r = cluster.exec(pod, "dig", "+tries=1", "+time=8", "example.org")
    assert "status: SERVFAIL" in r.stdout
    upstream = subprocess.Popen([sys.executable, "-m", "nsk", "exec", "--cluster", cluster.name, "host/resolver",
                                 "--", sys.executable, "-c", UPSTREAM, "192.0.2.53"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the first upstream stays silent: the second one's answer, after the first's 2 s
        wait_for(lambda: cluster.exec(pod, "dig", "+short", "+tries=1", "+time=5", "example.org").stdout.strip()
                 == "203.0.113.7", timeout=20, what="the second upstream's answer")
        # and from then on each DNS Pod asks the upstream that answered it first: no 2 s wait
        for dns in cluster.pods("k8s-app=kube-dns", namespace="kube-system"):
            at = "@" + dns["status"]["podIP"]
            assert cluster.exec(pod, "dig", at, "+short", "+tries=1", "+time=5", "example.org").stdout.strip() == \
                "203.0.113.7"
            assert cluster.exec(pod, "dig", at, "+short", "+tries=1", "+time=1", "example.net").stdout.strip() == \
                "203.0.113.7"
        # the cluster's own names are still answered by the cluster
        assert cluster.exec(pod, "dig", "+short", "kube-dns.kube-system.svc.cluster.local").stdout.strip() == \
            "10.96.0.10"
    finally:
        upstream.terminate()
        upstream.wait(timeout=5)


def test_without_an_upstream_outside_names_are_refused(cluster):
    cluster.up(WEB.format(replicas=1))
    pod = cluster.pods("app=web")[0]["metadata"]["name"]
    assert "status: REFUSED" in cluster.exec(pod, "dig", "+tries=1", "+time=3", "example.org").stdout


def test_large_answers_use_edns0_or_fall_back_to_tcp(cluster):
    cluster.up(WEB.format(replicas=40) + """
---
apiVersion: v1
kind: Service
metadata: {name: many}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
""")
    pod = cluster.pods("app=web")[0]["metadata"]["name"]
    name = "many.default.svc.cluster.local"
    wait_for(lambda: len(cluster.exec(pod, "dig", "+short", name).stdout.split()) == 40, what="40 A records")
    plain = cluster.exec(pod, "dig", "+noedns", "+ignore", name).stdout  # 40 records do not fit 512 bytes
    assert "flags: qr aa tc" in plain.replace(" rd", "").replace(" ra", "")
    assert len(cluster.exec(pod, "dig", "+short", "+noedns", name).stdout.split()) == 40  # dig retried over TCP


HOSTILE = r"""
import socket, struct, sys, time
from dnslib import DNSRecord
dns = sys.argv[1]
good = DNSRecord.question("my-nginx.default.svc.cluster.local", "A")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(0.5)
# a compression-pointer chain hidden in a record's rdata, named by the next record (2.4 KB)
evil = bytearray(good.pack()); evil[0:2] = b"\xee\xee"; evil[11] = 2
at = len(evil) + 11
hidden = bytearray(b"\x00") + b"".join(struct.pack("!H", 0xC000 | (at if i == 0 else at + 1 + 2 * (i - 1)))
                                       for i in range(1200))
evil += b"\x00\xff\x00\x00\x01" + b"\x00" * 4 + struct.pack("!H", len(hidden)) + hidden
evil += struct.pack("!H", 0xC000 | (at + 1 + 2 * 1199)) + b"\x00\x10\x00\x01" + b"\x00" * 6
for _ in range(20):
    u.sendto(bytes(evil), (dns, 53))
# a spoofed response: a server that answered it would start a ping-pong with another
u.sendto(good.reply().pack(), (dns, 53))
replies_to_response = 0
try:
    while True:
        r = DNSRecord.parse(u.recv(4096))
        replies_to_response += r.header.id == good.header.id
except socket.timeout:
    pass
u.sendto(good.pack(), (dns, 53))
print(str(DNSRecord.parse(u.recv(4096)).rr[0].rdata), replies_to_response)
"""


def test_no_packet_stops_the_server_or_starts_a_ping_pong(cluster):
    cluster.up(WEB.format(replicas=1) + SVC)
    dns = [p for p in cluster.pods("k8s-app=kube-dns", namespace="kube-system") if p["spec"]["nodeName"] == "node-1"][0]
    ip = cluster.get("svc", "my-nginx")["spec"]["clusterIP"]
    out = cluster.exec("node/node-1", sys.executable, "-c", HOSTILE, dns["status"]["podIP"]).stdout.split()
    assert out == [ip, "0"]
    again = {p["metadata"]["name"]: p for p in cluster.pods("k8s-app=kube-dns", namespace="kube-system")}[dns["metadata"]["name"]]
    assert again["status"]["containerStatuses"][0]["restartCount"] == 0


def test_an_external_name_service_reaches_its_target_by_name(cluster):
    """The DNS specification's ExternalName example: foo.default -> www.example.com and its
    address from the upstream, so a Pod's curl to the Service's name reaches the target."""
    import subprocess

    from tests.conftest import ROOT
    cluster.up("""
apiVersion: nsk.io/v1alpha1
kind: Cluster
metadata: {name: x}
spec:
  dns: {upstream: [192.0.2.53]}
  external:
    hosts: [{name: client, ip: 192.0.2.10}, {name: resolver, ip: 192.0.2.53}]
---
apiVersion: v1
kind: Service
metadata: {name: foo}
spec: {type: ExternalName, externalName: www.example.com}
""" + "---\n" + WEB.format(replicas=1))
    pod = cluster.pods("app=web")[0]["metadata"]["name"]
    started = []
    try:
        for host, argv in (("host/resolver", [sys.executable, "-c", UPSTREAM, "192.0.2.53", "192.0.2.10"]),
                           ("host/client", [sys.executable, "-m", "http.server", "8080", "--bind", "192.0.2.10"])):
            started.append(subprocess.Popen([sys.executable, "-m", "nsk", "exec", "--cluster", cluster.name, host,
                                             "--", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        dig = ("dig", "+short", "foo.default.svc.cluster.local")
        # (the upstream may still be starting: until it answers, the CNAME comes alone)
        wait_for(lambda: cluster.exec(pod, *dig).stdout.split() == ["www.example.com.", "192.0.2.10"], timeout=15,
                 what="the ExternalName's CNAME and its target's address")
        out = wait_for(lambda: cluster.exec(pod, "curl", "-s", "--max-time", "3", "foo:8080/", check=False).stdout,
                       timeout=15, what="curl to the ExternalName Service")
        assert "Directory listing" in out
    finally:
        for p in started:
            p.terminate()
            p.wait(timeout=5)


FLOOD = r"""
import socket, sys, time
dns, seconds = sys.argv[1], float(sys.argv[2])
from dnslib import DNSRecord
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
for s in socks:
    s.setblocking(False)
i, end = 0, time.monotonic() + seconds
while time.monotonic() < end:  # names nobody asked before, as fast as one client can send
    try:
        socks[i % 4].sendto(DNSRecord.question(f"n{i}.nothing.svc.cluster.local", "A").pack(), (dns, 53))
    except BlockingIOError:
        pass
    i += 1
print(i)
"""

ASK = r"""
import socket, sys, time
from dnslib import DNSRecord
dns = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(1.0)
answered = 0
for i in range(20):
    q = DNSRecord.question(f"quiet{i}.default.svc.cluster.local", "A")
    u.sendto(q.pack(), (dns, 53))
    try:
        while DNSRecord.parse(u.recv(4096)).header.id != q.header.id:
            pass
        answered += 1
    except socket.timeout:
        pass
    time.sleep(0.05)
print(answered)
"""


def test_a_flood_of_new_names_from_one_pod_starves_no_other(cluster):
    import subprocess

    from tests.conftest import ROOT
    cluster.up(WEB.format(replicas=2))
    a, b = [p["metadata"]["name"] for p in cluster.pods("app=web")]
    dns = cluster.pods("k8s-app=kube-dns", namespace="kube-system")[0]["status"]["podIP"]
    flood = subprocess.Popen([sys.executable, "-m", "nsk", "exec", "--cluster", cluster.name, a, "--",
                              sys.executable, "-c", FLOOD, dns, "6"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1)  # the flood is on
        answered = int(cluster.exec(b, sys.executable, "-c", ASK, dns).stdout)
        sent = int(flood.communicate(timeout=30)[0])
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    assert sent > 10000  # a real flood
    assert answered == 20  # every lookup of the quiet Pod, each a miss too
