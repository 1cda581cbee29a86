"""IPVS mode on a kernel that has IPVS (the VM-kernel tier: tests/vm/run boots Debian's own
kernel in QEMU and runs this file there, as root).

One cluster for the whole module (`nsk up` takes about 30 s under emulation): two nodes, an
external host, three web Pods and a client Pod, kube-proxy in IPVS mode with rr. Traffic is
real: curl from a Pod and from the external host, through the nodes' virtual servers.
"""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Cluster, run_nsk, wait_for

TOPOLOGY = """
apiVersion: nsk.io/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  proxy: {{mode: ipvs}}
  external:
    subnet: 192.0.2.0/24
    hosts: [{{name: client, ip: 192.0.2.10}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: nginx, ports: [{{containerPort: 80}}, {{containerPort: 5353, protocol: UDP}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: node-1
  containers: [{{name: c, image: busybox}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-np}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, nodePort: 30080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-local}}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {{app: web}}
  ports: [{{port: 80, nodePort: 30081}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  selector: {{app: web}}
  ports: [{{port: 53, targetPort: 5353, protocol: UDP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-sticky}}
spec:
  selector: {{app: web}}
  sessionAffinity: ClientIP
  ports: [{{port: 80}}]
"""


@pytest.fixture(scope="module")
def ipvs(tmp_path_factory):
    c = Cluster("v" + uuid.uuid4().hex[:8], tmp_path_factory.mktemp("ipvs"))
    try:
        r = c.up(TOPOLOGY.format(name=c.name), "--timeout", "300")
        assert "proxy mode ipvs" not in r.stderr, r.stderr  # no fallback line: IPVS mode runs
        yield c
    finally:
        run_nsk("down", "--cluster", c.name, check=False, timeout=300)


def answers(c: Cluster, target: str, url: str, n: int) -> list[str]:
    """`n` curls of url/hostname from `target` (a Pod, node/X or host/X), in one exec."""
    out = c.exec(target, "sh", "-c", f"for i in $(seq {n}); do curl -s --max-time 2 {url}/hostname; echo; done").stdout
    return [line for line in out.splitlines() if line]


def web_pods(c: Cluster) -> dict[str, str]:
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in c.pods("app=web")}


def test_services_are_virtual_servers_on_kube_ipvs0_with_kube_proxys_ipsets_and_rules(ipvs):
    assert "Proxy mode:     ipvs" in ipvs.nsk("status").stdout
    cip = ipvs.get("svc", "web")["spec"]["clusterIP"]
    rules = ipvs.nsk("rules", "--node", "node-1").stdout
    assert f"TCP  {cip}:80 rr" in rules
    for ip in web_pods(ipvs).values():
        assert f"-> {ip}:80" in rules and "Masq    1" in rules
    assert f"add KUBE-CLUSTER-IP {cip},tcp:80" in rules
    assert "add KUBE-NODE-PORT-TCP 30080" in rules
    assert "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT" in rules
    assert "TCP  172.18.0.2:30080 rr" in rules
    assert "TCP  10.244.1.1:30080 rr" in rules  # every local address: cbr0's too, as kube-proxy does
    dev = ipvs.exec("node/node-1", "ip", "-o", "-4", "address", "show", "dev", "kube-ipvs0").stdout
    assert f"inet {cip}/32" in dev
    assert "state DOWN" in ipvs.exec("node/node-1", "ip", "link", "show", "kube-ipvs0").stdout


def test_the_control_plane_reads_connection_counts_without_a_process(ipvs):
    """While real servers drain, the control plane's loop counts their connections from the
    node's /proc/net/ip_vs (hex addresses), not by running ipvsadm: the same servers."""
    from nsk.kernel.ops import Kernel
    from nsk.proxy.ipvs import parse_proc_ip_vs
    cip = ipvs.get("svc", "web")["spec"]["clusterIP"]
    conns = parse_proc_ip_vs(Kernel().proc(f"nsk_{ipvs.name}_node_node-1", "net/ip_vs"))
    assert {rs for vs, rs in conns if vs == f"{cip}:80/TCP"} == {f"{ip}:80" for ip in web_pods(ipvs).values()}


def test_round_robin_from_a_pod_and_client_ip_affinity(ipvs):
    pods = web_pods(ipvs)
    got = answers(ipvs, "client", "web", 9)
    assert len(got) == 9 and set(got) == set(pods)
    assert got[:3] * 3 == got  # rr: each in turn
    sticky = answers(ipvs, "client", "web-sticky", 6)
    assert len(sticky) == 6 and len(set(sticky)) == 1  # persistence: one real server for this client


def test_node_port_from_the_external_host_and_the_service_from_a_node(ipvs):
    pods = set(web_pods(ipvs))
    assert set(answers(ipvs, "host/client", "172.18.0.3:30080", 6)) == pods
    assert set(answers(ipvs, "node/node-1", "10.244.1.1:30080", 6)) == pods  # the NodePort on cbr0's address
    cip = ipvs.get("svc", "web")["spec"]["clusterIP"]
    assert set(answers(ipvs, "node/node-2", cip, 6)) == pods


def test_external_traffic_policy_local_keeps_the_client_address(ipvs):
    node_ip = {"node-1": "172.18.0.2", "node-2": "172.18.0.3"}
    here = node_ip[ipvs.pods("app=web")[0]["spec"]["nodeName"]]
    out = ipvs.exec("host/client", "curl", "-s", "--max-time", "3", f"{here}:30081/clientip").stdout
    assert out.rpartition(":")[0] == "192.0.2.10", out  # not masqueraded: KUBE-NODE-PORT-LOCAL-TCP returns first
    rules = ipvs.nsk("rules", "--node", "node-1").stdout
    assert "add KUBE-NODE-PORT-LOCAL-TCP 30081" in rules


def test_a_deleted_pod_leaves_the_virtual_server_and_traffic_never_reaches_it(ipvs):
    pods = web_pods(ipvs)
    gone = sorted(pods)[0]
    ipvs.nsk("delete", "pod", gone)
    assert gone not in answers(ipvs, "client", "web", 6)

    def out_of_rules():
        rules = ipvs.nsk("rules", "--node", "node-1").stdout
        line = [x for x in rules.splitlines() if f"-> {pods[gone]}:80" in x]
        return not line or all(x.split()[3] == "0" for x in line)  # gone, or draining at weight 0
    wait_for(out_of_rules, 30, "the deleted Pod's real server to go")
    wait_for(lambda: len(web_pods(ipvs)) == 3, 60, "the Deployment's new Pod")


def test_hairpin_and_a_service_without_endpoints(ipvs):
    """A Pod reaching itself through its Service comes back masqueraded (KUBE-LOOP-BACK), as
    kube-proxy's IPVS mode does it; a Service without endpoints has a virtual server without
    real servers, and a connection to it fails at once (no REJECT rule: the kernel answers)."""
    me = sorted(web_pods(ipvs))[0]
    got = answers(ipvs, me, "web", 12)
    assert me in got  # rr over the three: it reached itself too
    ipvs.apply("apiVersion: v1\nkind: Service\nmetadata: {name: nobody}\n"
               "spec: {selector: {app: none}, ports: [{port: 80}]}\n")
    cip = ipvs.get("svc", "nobody")["spec"]["clusterIP"]
    wait_for(lambda: f"TCP  {cip}:80 rr" in ipvs.nsk("rules", "--node", "node-1").stdout, 60, "its virtual server")
    r = ipvs.exec("client", "sh", "-c", f"time -p curl -s --max-time 5 http://{cip}/; echo rc=$?", check=False)
    assert "rc=7" in r.stdout, r.stdout + r.stderr  # curl: could not connect (refused), not a time-out
    assert float(r.stderr.split("real")[1].split()[0]) < 2


def test_lc_sends_new_connections_to_the_pod_without_held_ones(ipvs):
    """lc (least connections): with two connections held open to two of the three Pods, every
    new connection goes to the third (an active connection weighs 256 inactive ones)."""
    doc = TOPOLOGY.format(name=ipvs.name).split("---")[0].replace("proxy: {mode: ipvs}",
                                                                  "proxy: {mode: ipvs, ipvs: {scheduler: lc}}")
    ipvs.apply(doc)
    cip = ipvs.get("svc", "web")["spec"]["clusterIP"]
    wait_for(lambda: f"TCP  {cip}:80 lc" in ipvs.nsk("rules", "--node", "node-1").stdout, 60, "the lc scheduler")
    # a connection the Pod's server keeps: a request whose headers trickle in, one every 2 s
    # (its server drops a connection idle for 5 s), for a minute, in the background
    hold = ("((printf 'GET / HTTP/1.0\\r\\n'; for i in $(seq 30); do printf 'X-Hold: %s\\r\\n' $i; sleep 2; done) "
            "| nc web 80) >/dev/null 2>&1 & ")
    # one after the other: two SYNs scheduled at once on the guest's two CPUs can both read the
    # counts before either is added, and go to the same Pod (lc's choice is not serialized)
    ipvs.exec("client", "sh", "-c", hold + "sleep 1; " + hold)
    node = ipvs.get("pod", "client")["spec"]["nodeName"]

    def held() -> bool:
        out = ipvs.exec(f"node/{node}", "ipvsadm", "-L", "-n", "-t", f"{cip}:80").stdout
        servers = [line.split() for line in out.splitlines() if line.split()[:1] == ["->"]][1:]  # (a header first)
        return sum(1 for words in servers if words[4] != "0") == 2
    wait_for(held, 60, "two Pods each with a held connection")
    got = ipvs.exec("client", "sh", "-c", "for i in 1 2 3 4 5; do curl -s --max-time 2 web/hostname; echo; "
                    "done").stdout.split()
    # (under rr they would take turns; under lc without the held ones too: a closed connection
    # still counts as an inactive one for a while)
    assert len(got) == 5 and len(set(got)) == 1, got


def test_the_scheduler_changes_live_and_sh_keeps_a_client_on_one_pod(ipvs):
    doc = TOPOLOGY.format(name=ipvs.name).split("---")[0].replace("proxy: {mode: ipvs}",
                                                                  "proxy: {mode: ipvs, ipvs: {scheduler: sh}}")
    ipvs.apply(doc)
    cip = ipvs.get("svc", "web")["spec"]["clusterIP"]
    wait_for(lambda: f"TCP  {cip}:80 sh" in ipvs.nsk("rules", "--node", "node-1").stdout, 60, "the sh scheduler")
    got = answers(ipvs, "client", "web", 6)
    assert len(got) == 6 and len(set(got)) == 1  # source hashing: the same client, the same Pod


def test_switching_to_iptables_and_back_leaves_nothing_of_the_other_mode(ipvs):
    doc = TOPOLOGY.format(name=ipvs.name).split("---")[0]
    ipvs.apply(doc.replace("proxy: {mode: ipvs}", "proxy: {mode: iptables}"))
    wait_for(lambda: "Proxy mode:     iptables" in ipvs.nsk("status").stdout, 60, "iptables mode")
    for node in ("node-1", "node-2"):
        left = ipvs.exec(f"node/{node}", "sh", "-c", "ipvsadm -S -n; ipset list -n; ip -o link show kube-ipvs0; "
                         "iptables-save | grep -c 'KUBE-SERVICES -m set' ; true").stdout
        assert left.split() == ["0"], left
    pods = set(web_pods(ipvs))
    assert set(answers(ipvs, "client", "web", 12)) == pods
    ipvs.apply(doc)
    wait_for(lambda: "Proxy mode:     ipvs" in ipvs.nsk("status").stdout, 60, "IPVS mode")
    saved = ipvs.exec("node/node-1", "iptables-save").stdout
    assert "KUBE-SVC-" not in saved and "KUBE-SEP-" not in saved  # iptables mode's chains are gone
    assert set(answers(ipvs, "client", "web", 6)) == pods
    for node in ("node-1", "node-2"):  # no sync was refused on the way
        assert "FailedSync" not in ipvs.nsk("describe", "node", node).stdout


def test_udp_survives_an_endpoint_change(ipvs):
    """One client socket to a UDP Service; its only endpoint replaced: the same socket gets
    its answers from the new one (the real server goes at once, the stale conntrack entries
    with it, expire_nodest_conn drops IPVS's own)."""
    ipvs.nsk("scale", "deployment", "web", "--replicas=1")
    wait_for(lambda: len([p for p in ipvs.pods("app=web") if not p["metadata"].get("deletionTimestamp")]) == 1
             and len(ipvs.pods("app=web")) == 1, 60, "one web Pod")
    cip = ipvs.get("svc", "echo")["spec"]["clusterIP"]
    script = ("import socket,sys,time\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',40999)); s.settimeout(1)\n"
              "for i in range(int(sys.argv[2])):\n"
              "    s.sendto(b'ping',(sys.argv[1],53))\n"
              "    try: print(s.recvfrom(100)[0].decode()); sys.exit(0)\n"
              "    except socket.timeout: time.sleep(0.5)\n"
              "sys.exit(1)\n")
    assert ipvs.exec("client", "python3", "-c", script, cip, "5").stdout.strip() == "ping"
    old = ipvs.pods("app=web")[0]["metadata"]["name"]
    ipvs.nsk("delete", "pod", old)
    wait_for(lambda: [p for p in ipvs.pods("app=web") if p["metadata"]["name"] != old
                      and (p.get("status") or {}).get("phase") == "Running"], 60, "the new web Pod")
    assert ipvs.exec("client", "python3", "-c", script, cip, "30").stdout.strip() == "ping"
