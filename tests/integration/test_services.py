"""Services with real packets: kube-proxy's iptables rules in the nodes' namespaces (root)."""

from __future__ import annotations

import fcntl
import json
import time

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.root

CLUSTER = """
apiVersion: nsk.io/v1alpha1
kind: Cluster
metadata: {{name: x}}
spec:
  external:
    subnet: 192.0.2.0/24
    hosts: [{{name: client, ip: 192.0.2.10}}, {{name: db, ip: 192.0.2.42}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: MyApp}}}}
  template:
    metadata: {{labels: {{app: MyApp}}}}
    spec:
      containers:
      - name: app
        image: myapp
        ports: [{{name: http, containerPort: 9376}}, {{name: echo, containerPort: 5353, protocol: UDP}}]
"""


def service(name: str, **spec) -> str:
    """A Service manifest selecting the test's Pods; a field given as None is left out."""
    full = {"selector": {"app": "MyApp"}, "ports": [{"port": 80, "targetPort": 9376}], **spec}
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {k: v for k, v in full.items() if v is not None}}
    return "---\n" + json.dumps(body) + "\n"


def hits(cluster, target: str, url: str, n: int) -> list[str]:
    """`n` curls of url/hostname from `target`, in one exec; the answering Pods' names."""
    out = cluster.exec(target, "sh", "-c", f"for i in $(seq {n}); do curl -s --max-time 2 {url}/hostname; "
                                           "echo; done").stdout
    return [line for line in out.splitlines() if line]


def pod_names(cluster) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods("app=MyApp")}


def test_cluster_ip_reaches_every_endpoint_from_pods_and_nodes(cluster):
    cluster.up(CLUSTER.format(replicas=3) + service("web"))
    svc = cluster.get("svc", "web")
    cip = svc["spec"]["clusterIP"]
    assert cip == "10.96.0.2"
    ep = cluster.get("endpoints", "web")
    assert sorted(a["ip"] for a in ep["subsets"][0]["addresses"]) == \
        sorted(p["status"]["podIP"] for p in cluster.pods("app=MyApp"))
    assert ep["subsets"][0]["ports"] == [{"port": 9376, "protocol": "TCP"}]
    client = cluster.pods("app=MyApp")[0]["metadata"]["name"]
    # every endpoint answers within a bounded number of requests (3 Pods, 40 tries)
    assert set(hits(cluster, client, f"{cip}:80", 40)) == pod_names(cluster)
    assert set(hits(cluster, "node/node-2", f"{cip}:80", 40)) == pod_names(cluster)
    line = cluster.nsk("get", "svc", "web", "-o", "wide").stdout.splitlines()[1].split()
    assert line[:5] == ["web", "ClusterIP", "10.96.0.2", "<none>", "80/TCP"] and line[-1] == "app=MyApp"


def test_pod_to_service_keeps_the_pod_ip_and_hairpin_works(cluster):
    cluster.up(CLUSTER.format(replicas=1) + service("web"))
    pod = cluster.pods("app=MyApp")[0]
    out = cluster.exec(pod["metadata"]["name"], "curl", "-s", "--max-time", "3", "10.96.0.2/clientip").stdout
    # the Pod reached itself through its Service: the reply came back (masqueraded to its node's gateway)
    assert out.split(":")[0] == "10.244.1.1"
    cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node-2
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
""")
    wait_for(lambda: (cluster.get("pod", "client").get("status") or {}).get("phase") == "Running", what="client")
    out = cluster.exec("client", "curl", "-s", "--max-time", "3", "10.96.0.2/clientip").stdout
    assert out.split(":")[0] == cluster.get("pod", "client")["status"]["podIP"]


def connect(cluster, target: str, ip: str, port: int) -> str:
    """What a TCP connect from `target` ends with: "connected", or the error's name."""
    script = ("import socket,sys\n"
              "try: socket.create_connection((sys.argv[1], int(sys.argv[2])), 3); print('connected')\n"
              "except OSError as e: print(type(e).__name__)\n")
    return cluster.exec(target, "python3", "-c", script, ip, str(port)).stdout.strip()


def test_no_endpoints_rejects_at_once(cluster):
    cluster.up(CLUSTER.format(replicas=1) + service("nobody", selector={"app": "none"}, type="NodePort"))
    # REJECT: refused at once, not a time-out
    assert connect(cluster, "node/node-1", "10.96.0.2", 80) == "ConnectionRefusedError"
    pod = cluster.pods("app=MyApp")[0]["metadata"]["name"]
    assert connect(cluster, pod, "10.96.0.2", 80) == "ConnectionRefusedError"
    np = cluster.get("svc", "nobody")["spec"]["ports"][0]["nodePort"]
    assert connect(cluster, "host/client", "172.18.0.2", np) == "ConnectionRefusedError"


def test_node_port_from_outside_on_every_node(cluster):
    cluster.up(CLUSTER.format(replicas=2) + service("np", type="NodePort",
                                                    ports=[{"port": 80, "targetPort": 9376, "nodePort": 30007}]))
    line = cluster.nsk("get", "svc", "np").stdout.splitlines()[1].split()
    assert line[1] == "NodePort" and line[4] == "80:30007/TCP"
    for node_ip in ("172.18.0.2", "172.18.0.3"):
        got = hits(cluster, "host/client", f"{node_ip}:30007", 30)
        assert set(got) == pod_names(cluster)
        # externalTrafficPolicy Cluster: the Pod sees the node, not the client
        out = cluster.exec("host/client", "curl", "-s", "--max-time", "3", f"{node_ip}:30007/clientip").stdout
        assert out.split(":")[0] in ("172.18.0.2", "172.18.0.3", "10.244.1.1", "10.244.2.1")
    # on the node itself, localhost too (kube-proxy's localhostNodePorts)
    assert set(hits(cluster, "node/node-1", "127.0.0.1:30007", 20)) == pod_names(cluster)
    assert "route_localnet = 1" in cluster.exec("node/node-1", "sysctl", "net.ipv4.conf.all.route_localnet").stdout


def test_external_traffic_policy_local_keeps_the_client_ip_and_drops_elsewhere(cluster):
    cluster.up(CLUSTER.format(replicas=1) + service(
        "local", type="NodePort", externalTrafficPolicy="Local",
        ports=[{"port": 80, "targetPort": 9376, "nodePort": 30008}]))
    pod = cluster.pods("app=MyApp")[0]
    here = {"node-1": "172.18.0.2", "node-2": "172.18.0.3"}[pod["spec"]["nodeName"]]
    there = ({"172.18.0.2", "172.18.0.3"} - {here}).pop()
    out = cluster.exec("host/client", "curl", "-s", "--max-time", "3", f"{here}:30008/clientip").stdout
    assert out.split(":")[0] == "192.0.2.10"
    # dropped: no answer at all on a node without a local endpoint
    assert connect(cluster, "host/client", there, 30008) in ("TimeoutError", "timeout")


def test_load_balancer_gets_an_address_the_outside_reaches(cluster):
    cluster.up(CLUSTER.format(replicas=2) + service("lb", type="LoadBalancer")
               + service("lb-chosen", type="LoadBalancer", loadBalancerIP="198.51.100.77"))
    lb = wait_for(lambda: (cluster.get("svc", "lb").get("status") or {}).get("loadBalancer"), what="an LB IP")
    ip = lb["ingress"][0]["ip"]
    assert ip == "198.51.100.1"
    assert cluster.get("svc", "lb-chosen")["status"]["loadBalancer"]["ingress"][0]["ip"] == "198.51.100.77"
    assert set(hits(cluster, "host/client", ip, 30)) == pod_names(cluster)
    assert set(hits(cluster, "host/client", "198.51.100.77", 5)) <= pod_names(cluster)
    line = cluster.nsk("get", "svc", "lb").stdout.splitlines()[1].split()
    assert line[1:4] == ["LoadBalancer", "10.96.0.2", "198.51.100.1"]
    # a type change on a live Service: back to ClusterIP, the address and the route go
    cluster.apply(service("lb"))
    wait_for(lambda: not (cluster.get("svc", "lb").get("status") or {}).get("loadBalancer"), what="LB IP gone")
    r = cluster.exec("host/client", "curl", "-s", "--max-time", "2", ip, check=False)
    assert r.returncode != 0


def test_external_ips_reach_the_service(cluster):
    cluster.up(CLUSTER.format(replicas=1) + service("ext", externalIPs=["80.11.12.10"]))
    assert hits(cluster, "host/client", "80.11.12.10", 3) == [cluster.pods("app=MyApp")[0]["metadata"]["name"]] * 3


def test_session_affinity_sticks(cluster):
    cluster.up(CLUSTER.format(replicas=3) + service("sticky", sessionAffinity="ClientIP"))
    client = cluster.pods("app=MyApp")[0]["metadata"]["name"]
    got = hits(cluster, client, "10.96.0.2", 20)
    assert len(got) == 20 and len(set(got)) == 1


def test_session_affinity_expires(cluster):
    cluster.up(CLUSTER.format(replicas=3) + service("sticky", sessionAffinity="ClientIP",
                                                    sessionAffinityConfig={"clientIP": {"timeoutSeconds": 1}}))
    out = cluster.exec("node/node-1", "sh", "-c", "for i in $(seq 10); do curl -s --max-time 2 10.96.0.2/hostname; "
                                                  "echo; sleep 1.2; done").stdout
    assert len(set(out.split())) >= 2  # each request after the timeout chooses afresh


def test_endpoints_follow_scale_and_deleted_pods(cluster):
    cluster.up(CLUSTER.format(replicas=2) + service("web"))
    cluster.nsk("scale", "deployment/app", "--replicas", "4")
    wait_for(lambda: len((cluster.get("endpoints", "web").get("subsets") or [{}])[0].get("addresses", [])) == 4,
             what="4 endpoints")
    # the rules follow within kube-proxy's minSyncPeriod (1 s)
    wait_for(lambda: set(hits(cluster, "node/node-1", "10.96.0.2", 40)) == pod_names(cluster), timeout=10,
             what="every endpoint to answer")
    victim = sorted(pod_names(cluster))[0]
    cluster.nsk("delete", "pod", victim)
    wait_for(lambda: victim not in hits(cluster, "node/node-1", "10.96.0.2", 20) and
             len(cluster.get("endpoints", "web")["subsets"][0]["addresses"]) == 4, what="the endpoint to go")


def test_selectorless_service_reaches_the_external_endpoint(cluster):
    cluster.up(CLUSTER.format(replicas=1) + """
---
apiVersion: v1
kind: Service
metadata: {name: my-service}
spec:
  ports: [{protocol: TCP, port: 80, targetPort: 9376}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: my-service}
subsets:
  - addresses: [{ip: 192.0.2.42}]
    ports: [{port: 9376}]
""")
    import subprocess
    import sys
    from tests.conftest import ROOT
    server = subprocess.Popen([sys.executable, "-m", "nsk", "exec", "--cluster", cluster.name, "host/db", "--",
                               sys.executable, "-m", "http.server", "9376", "--bind", "192.0.2.42"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pod = cluster.pods("app=MyApp")[0]["metadata"]["name"]
        code = wait_for(lambda: cluster.exec(pod, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                             "--max-time", "2", "10.96.0.2", check=False).stdout == "200",
                        timeout=20, what="the external endpoint")
        assert code
    finally:
        server.terminate()
        server.wait(timeout=5)


def test_udp_service_survives_an_endpoint_change(cluster):
    cluster.up(CLUSTER.format(replicas=1) + service(
        "echo", ports=[{"name": "echo", "port": 53, "targetPort": "echo", "protocol": "UDP"}]))
    first = cluster.pods("app=MyApp")[0]["metadata"]["name"]
    # one client socket, the same source port before and after the endpoint changes
    script = ("import socket,sys,time\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',40000)); s.settimeout(1)\n"
              "for i in range(int(sys.argv[1])):\n"
              "    s.sendto(b'ping',('10.96.0.2',53))\n"
              "    try: print(s.recvfrom(100)[0].decode()); sys.exit(0)\n"
              "    except socket.timeout: time.sleep(0.2)\n"
              "sys.exit(1)\n")
    assert cluster.exec("node/node-1", "python3", "-c", script, "3").stdout.strip() == "ping"
    cluster.nsk("delete", "pod", first)
    wait_for(lambda: [p for p in cluster.pods("app=MyApp") if p["metadata"]["name"] != first and
                      (p.get("status") or {}).get("podIP")], what="the replacement")
    wait_for(lambda: cluster.exec("node/node-1", "python3", "-c", script, "3", check=False).stdout.strip() == "ping",
             timeout=20, what="the UDP echo through the new endpoint")


def test_bad_services_change_nothing(cluster):
    cluster.up(CLUSTER.format(replicas=1) + service("web", type="NodePort",
                                                    ports=[{"port": 80, "targetPort": 9376, "nodePort": 30007}]))
    before = cluster.nsk("get", "svc", "-o", "json").stdout
    for spec, message in [
        ({"clusterIP": "10.0.0.5"}, 'spec.clusterIP: Invalid value: "10.0.0.5": provided IP is not in the valid '
                                    "range. The range of valid IPs is 10.96.0.0/12"),
        ({"clusterIP": "10.96.0.2"}, 'spec.clusterIP: Invalid value: "10.96.0.2": provided IP is already allocated'),
        ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30007}]},
         "spec.ports[0].nodePort: Invalid value: 30007: provided port is already allocated"),
        ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]},
         "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. "
         "The range of valid ports is 30000-32767"),
        ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name: Required value"),
        ({"ports": [{"port": 80, "name": "123_abc"}]}, 'spec.ports[0].name: Invalid value: "123_abc"'),
    ]:
        path = cluster.tmp / "bad.yaml"
        path.write_text(service("other", **spec) + service("web2"))
        r = cluster.nsk("apply", "-f", str(path), check=False)
        assert r.returncode == 1 and message in r.stderr, r.stderr
        assert 'Service "default/other" is invalid' in r.stderr
    assert cluster.nsk("get", "svc", "-o", "json").stdout == before  # web2 was not half-applied


PROBED = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 3
  selector: {matchLabels: {app: MyApp}}
  template:
    metadata: {labels: {app: MyApp}}
    spec:
      containers:
      - name: app
        image: myapp
        ports: [{name: http, containerPort: 9376}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
          failureThreshold: 1
"""


def test_readiness_moves_a_pod_out_of_and_back_into_the_endpoints(cluster):
    cluster.up(PROBED + service("web"))
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in cluster.pods("app=MyApp")}
    victim = sorted(pods)[0]
    ip = pods[victim]
    assert cluster.exec("node/node-1", "curl", "-s", "-X", "POST", f"{ip}:9376/healthz/fail").stdout == \
        "healthz now failing\n"

    def addresses(field):
        subsets = cluster.get("endpoints", "web").get("subsets") or []
        return {a["ip"] for s in subsets for a in s.get(field) or []}
    wait_for(lambda: ip in addresses("notReadyAddresses") and ip not in addresses("addresses"),
             what="the unready Pod to leave the endpoints")
    line = [x for x in cluster.nsk("get", "pods").stdout.splitlines() if x.startswith(victim)][0].split()
    assert line[1:3] == ["0/1", "Running"]
    # the rules follow within kube-proxy's minSyncPeriod (1 s), then it gets nothing more
    wait_for(lambda: victim not in hits(cluster, "node/node-2", "10.96.0.2", 5), timeout=5,
             what="the unready Pod to leave the rules")
    assert victim not in hits(cluster, "node/node-2", "10.96.0.2", 30)
    cluster.exec("node/node-1", "curl", "-s", "-X", "POST", f"{ip}:9376/healthz/ok")
    wait_for(lambda: ip in addresses("addresses"), what="the Pod to come back")
    assert "Readiness probe failed" in cluster.nsk("describe", "pod", victim).stdout


def test_tcp_exec_and_liveness_probes(cluster):
    cluster.up("""
apiVersion: v1
kind: Pod
metadata: {name: probed, labels: {app: p}}
spec:
  containers:
  - name: web
    image: x
    ports: [{containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
  - name: sidecar
    image: busybox
    command: [sh, -c, "touch /tmp/nsk-probe-$(hostname); sleep 3600"]
    readinessProbe: {exec: {command: [sh, -c, "test -e /tmp/nsk-probe-$(hostname)"]}, periodSeconds: 1}
    livenessProbe: {exec: {command: [sh, -c, "test -e /tmp/nsk-probe-$(hostname)"]}, periodSeconds: 1,
                    failureThreshold: 2, initialDelaySeconds: 2}
""")
    import os
    marker = "/tmp/nsk-probe-probed"
    try:
        pod = cluster.get("pod", "probed")
        assert [c["ready"] for c in pod["status"]["containerStatuses"]] == [True, True]
        os.unlink(marker)  # the exec probes now fail: unready, then restarted by liveness
        restarted = wait_for(lambda: [c for c in cluster.get("pod", "probed")["status"]["containerStatuses"]
                                      if c["name"] == "sidecar" and c["restartCount"] >= 1],
                             timeout=30, what="a restart")
        assert restarted
        wait_for(lambda: all(c["ready"] for c in cluster.get("pod", "probed")["status"]["containerStatuses"]),
                 timeout=30, what="ready again after the restart recreated the file")
    finally:
        if os.path.exists(marker):
            os.unlink(marker)


def test_expose_headless_and_type_changes(cluster):
    cluster.up(CLUSTER.format(replicas=2))
    assert cluster.nsk("expose", "deployment/app", "--port", "80", "--target-port", "http").stdout == \
        "service/app exposed\n"
    svc = cluster.get("svc", "app")
    assert svc["spec"]["selector"] == {"app": "MyApp"} and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert set(hits(cluster, "node/node-1", svc["spec"]["clusterIP"], 30)) == pod_names(cluster)
    text = cluster.nsk("describe", "svc", "app").stdout
    assert "Endpoints:" in text and ":9376" in text
    # headless: no virtual IP, no rules
    cluster.apply(service("headless", clusterIP="None"))
    assert cluster.get("svc", "headless")["spec"]["clusterIP"] == "None"
    wait_for(lambda: len(cluster.get("endpoints", "headless").get("subsets", [{}])[0].get("addresses", [])) == 2,
             what="headless endpoints")
    assert "default/headless" not in cluster.nsk("rules", "--node", "node-1").stdout
    # ExternalName -> ClusterIP -> ExternalName on a live Service
    cluster.apply(service("db", type="ExternalName", externalName="my.database.example.com", selector=None,
                          ports=None))
    assert "clusterIP" not in cluster.get("svc", "db")["spec"]
    cluster.apply(service("db"))
    cip = cluster.get("svc", "db")["spec"]["clusterIP"]
    wait_for(lambda: set(hits(cluster, "node/node-1", cip, 20)) == pod_names(cluster), what="db's rules")
    cluster.apply(service("db", type="ExternalName", externalName="my.database.example.com", selector=None,
                          ports=None))
    wait_for(lambda: "default/db" not in cluster.nsk("rules", "--node", "node-1").stdout, what="db's rules to go")


def test_a_restore_the_kernel_refuses_is_an_event_and_a_retry_not_a_dead_control_plane(cluster):
    """A person's own rule that jumps to a Service's chain keeps kube-proxy from deleting it
    (iptables-restore fails: the chain is in use). kube-proxy logs and retries; nsk says it
    on the node and retries, and everything else keeps working."""
    cluster.up(CLUSTER.format(replicas=1) + service("web") + service("other"))
    web_chains = [line.split()[-1] for line in cluster.nsk("rules", "--node", "node-1", "-t", "nat").stdout.splitlines()
                  if line.startswith("-A KUBE-SERVICES") and "default/web cluster IP" in line]
    chain = web_chains[0]
    cluster.exec("node/node-1", "iptables", "-t", "nat", "-I", "OUTPUT", "-d", "192.0.2.99", "-j", chain)
    cluster.nsk("delete", "svc", "web")
    wait_for(lambda: "FailedSync" in cluster.nsk("describe", "node", "node-1").stdout, timeout=10,
             what="the refused restore to show on the node")
    assert "running (pid" in cluster.nsk("status").stdout
    # the control plane goes on: a new Service is served on node-2 at once, and on node-1
    # once the person's rule is gone and a retry has written every chain
    cluster.apply(service("new"))
    new_ip = cluster.get("svc", "new")["spec"]["clusterIP"]
    cluster.exec("node/node-1", "iptables", "-t", "nat", "-D", "OUTPUT", "-d", "192.0.2.99", "-j", chain)
    wait_for(lambda: chain not in cluster.nsk("rules", "--node", "node-1", "-t", "nat").stdout, timeout=40,
             what="the retry to delete the chain")
    assert hits(cluster, "node/node-1", new_ip, 3) == [next(iter(pod_names(cluster)))] * 3


HOST_PORT_POD = """
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: hp}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: node-1}}
  containers:
  - {{name: c, image: x, ports: [{{containerPort: 9376, hostPort: 8080}}]}}
"""


def test_host_port_reaches_the_pod_from_outside_the_node_and_the_pod_itself(cluster):
    """hostPort as the CNI portmap plugin does it: the node's address and port DNAT to the
    Pod (the client's address kept), from the node's localhost too; a second Pod asking for
    the same port on that node is a scheduling conflict, said in the scheduler's words."""
    cluster.up(CLUSTER.format(replicas=1) + HOST_PORT_POD.format(name="hp"))
    out = cluster.exec("host/client", "curl", "-s", "--max-time", "3", "172.18.0.2:8080/clientip").stdout
    assert out.split(":")[0] == "192.0.2.10"
    assert cluster.exec("node/node-1", "curl", "-s", "--max-time", "3", "127.0.0.1:8080/hostname").stdout == "hp\n"
    assert cluster.exec("hp", "curl", "-s", "--max-time", "3", "172.18.0.2:8080/hostname").stdout == "hp\n"
    assert connect(cluster, "host/client", "172.18.0.3", 8080) == "ConnectionRefusedError"  # only its node
    cluster.apply(HOST_PORT_POD.format(name="hp2"))
    wait_for(lambda: cluster.get("pod", "hp2").get("status", {}).get("conditions"), 10)
    cond = cluster.get("pod", "hp2")["status"]["conditions"][0]
    assert (cond["reason"], cond["message"]) == ("Unschedulable", "0/2 nodes are available: 1 node(s) didn't have "
                                                 "free ports for the requested pod ports, 1 node(s) didn't match "
                                                 "Pod's node affinity/selector.")
    cluster.nsk("delete", "pod", "hp")  # the port is free again: the other Pod gets it
    wait_for(lambda: cluster.exec("host/client", "curl", "-s", "--max-time", "1", "172.18.0.2:8080/hostname",
                                  check=False).stdout == "hp2\n", 15)


def test_the_legacy_backend_holds_every_rule_and_the_nft_one_none(cluster):
    """spec.proxy.iptables.backend: legacy (iptables-legacy-restore loads a 1,000-Service
    rule set ~15x faster than the nft backend here: docs/benchmarks.md). Never mixed: the
    proxy's and the host ports' rules are all in the legacy tables."""
    cluster.up(CLUSTER.format(replicas=2).replace("spec:\n  external:", "spec:\n  proxy: {iptables: {backend: legacy}}\n"
                                                                         "  external:", 1)
               + service("web") + HOST_PORT_POD.format(name="hp"))
    assert set(hits(cluster, "host/client", "172.18.0.2:8080", 1)) == {"hp"}
    pod = cluster.pods("app=MyApp")[0]["metadata"]["name"]
    assert set(hits(cluster, pod, "10.96.0.2:80", 30)) == pod_names(cluster)
    legacy = cluster.exec("node/node-1", "iptables-legacy-save", "-t", "nat").stdout
    assert "-A KUBE-SERVICES" in legacy and "CNI-HOSTPORT-DNAT" in legacy
    nft = cluster.exec("node/node-1", "iptables-nft-save", "-t", "nat").stdout
    assert "KUBE-" not in nft and "CNI-" not in nft
    rules = cluster.nsk("rules", "--node", "node-1", "-t", "nat").stdout
    assert "-A KUBE-SERVICES" in rules
    assert "iptables legacy" in cluster.nsk("rules", "-t", "nat").stdout.splitlines()[0]
    # each node has its own xtables lock, the one its kube-proxy takes and `nsk exec node/...` gives
    lock = cluster.exec("node/node-1", "sh", "-c", "echo $XTABLES_LOCKFILE").stdout.strip()
    assert lock != cluster.exec("node/node-2", "sh", "-c", "echo $XTABLES_LOCKFILE").stdout.strip()
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        busy = cluster.exec("node/node-1", "iptables-legacy", "-w", "1", "-N", "NSK-LOCKED", check=False)
        free = cluster.exec("node/node-2", "iptables-legacy", "-w", "1", "-N", "NSK-FREE", check=False)
    assert busy.returncode != 0 and "xtables lock" in busy.stderr, busy.stderr
    assert free.returncode == 0, free.stderr


STUBBORN = """
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn, labels: {app: last}}
spec:
  terminationGracePeriodSeconds: 8
  containers:
  - name: c
    image: x
    # the shell ignores SIGTERM; its server, in the same group, goes on until SIGKILL
    command: ["sh", "-c", "trap '' TERM; python3 -m http.server 9376 & wait; wait"]
"""


def test_a_terminating_pod_serves_as_the_last_endpoint_until_it_ends(cluster):
    """Graceful deletion (#9): `nsk delete --no-wait` leaves the Pod Terminating for its
    grace period; the Endpoints drop it, its EndpointSlice marks it terminating, and as the
    Service has no ready endpoint left kube-proxy's fallback still sends traffic to it.
    After the grace period it is killed, gone from the API and from the rules."""
    cluster.up(CLUSTER.format(replicas=1) + service("last", selector={"app": "last"}) + STUBBORN)
    client = cluster.pods("app=MyApp")[0]["metadata"]["name"]
    assert cluster.exec(client, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                        "10.96.0.2/").stdout == "200"
    t0 = time.monotonic()
    cluster.nsk("delete", "pod", "stubborn", "--no-wait")
    row = cluster.nsk("get", "pods", "stubborn").stdout.splitlines()[1].split()
    assert row[2] == "Terminating"
    ep = cluster.get("endpoints", "last")
    assert not ep.get("subsets")
    sl = next(s for s in json.loads(cluster.nsk("get", "endpointslices", "-o", "json").stdout)["items"]
              if s["metadata"]["labels"]["kubernetes.io/service-name"] == "last")
    assert sl["endpoints"][0]["conditions"] == {"ready": False, "serving": True, "terminating": True}
    assert cluster.exec(client, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                        "10.96.0.2/").stdout == "200"  # the fallback: still served
    wait_for(lambda: cluster.nsk("get", "pods", "stubborn", check=False).returncode == 1, 20)
    assert 7 < time.monotonic() - t0 < 20  # the whole grace period, then SIGKILL
    assert connect(cluster, client, "10.96.0.2", 80) == "ConnectionRefusedError"  # no endpoint: REJECT


def test_health_check_node_port_answers_per_node_and_the_cloud_follows_it(cluster):
    """externalTrafficPolicy Local on a LoadBalancer: a healthCheckNodePort is allocated;
    each node's kube-proxy answers it (200 with its local endpoints, else 503), filter's
    KUBE-NODEPORTS accepts it, and the emulated cloud load balancer, asking every node,
    sends the Service's address only to the node that passes."""
    cluster.up(CLUSTER.format(replicas=1) + service("lb", type="LoadBalancer", externalTrafficPolicy="Local"))
    svc = cluster.get("svc", "lb")
    hc = svc["spec"]["healthCheckNodePort"]
    assert 30000 <= hc <= 32767 and hc != svc["spec"]["ports"][0]["nodePort"]
    lb_ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    here = {"node-1": "172.18.0.2", "node-2": "172.18.0.3"}[cluster.pods("app=MyApp")[0]["spec"]["nodeName"]]
    there = ({"172.18.0.2", "172.18.0.3"} - {here}).pop()
    got = cluster.exec("host/client", "curl", "-s", "-w", " %{http_code}", f"{here}:{hc}/").stdout
    body, code = got.rsplit(" ", 1)
    assert code == "200" and json.loads(body) == {"service": {"namespace": "default", "name": "lb"},
                                                  "localEndpoints": 1, "serviceProxyHealthy": True}
    assert cluster.exec("host/client", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        f"{there}:{hc}/").stdout == "503"
    assert f"--dport {hc} -j ACCEPT" in cluster.nsk("rules", "--node", "node-1", "-t", "filter").stdout
    # and kube-proxy's own health on every node, as its healthz server answers on 10256
    got = cluster.exec("host/client", "curl", "-s", "-w", " %{http_code}", f"{there}:10256/healthz").stdout
    body, code = got.rsplit(" ", 1)
    assert code == "200" and set(json.loads(body)) == {"lastUpdated", "currentTime", "nodeEligible"}
    # the router's route for the LB address: only the node that passed its check
    wait_for(lambda: here in (r := _router_route(cluster, lb_ip)) and there not in r, 10)
    assert len(hits(cluster, "host/client", lb_ip, 10)) == 10  # every request answered


def _router_route(cluster, ip: str) -> str:
    import subprocess
    return subprocess.run(["ip", "-n", f"nsk_{cluster.name}_net", "route", "show", ip], capture_output=True,
                          text=True).stdout


def test_nftables_mode_is_kube_proxys_table_and_carries_the_traffic(cluster):
    """spec.proxy.mode: nftables: kube-proxy's `ip kube-proxy` table on every node, no
    KUBE- chain in iptables, and the same Services working: ClusterIP over every endpoint,
    NodePort from outside (on the node's address, not localhost: nftables mode's default),
    REJECT without endpoints, session affinity, the client's address kept under Local, and
    Pods reaching the outside (nsk's own masquerade table)."""
    cluster.up(CLUSTER.format(replicas=3).replace("spec:\n  external:", "spec:\n  proxy: {mode: nftables}\n"
                                                                         "  external:", 1)
               + service("web", type="NodePort", ports=[{"port": 80, "targetPort": 9376, "nodePort": 30010}])
               + service("sticky", sessionAffinity="ClientIP")
               + service("local", type="NodePort", externalTrafficPolicy="Local",
                         ports=[{"port": 80, "targetPort": 9376, "nodePort": 30011}])
               + service("nobody", selector={"app": "none"}))
    assert "Proxy mode:     nftables" in cluster.nsk("status").stdout
    rules = cluster.nsk("rules", "--node", "node-1").stdout
    assert "table ip kube-proxy {" in rules and "map service-ips {" in rules
    assert "chain service-" in rules and "-default/web/tcp/" in rules and "numgen random mod 3 vmap" in rules
    assert "KUBE-" not in cluster.exec("node/node-1", "iptables-save").stdout  # never mixed
    web = cluster.get("svc", "web")["spec"]["clusterIP"]
    pod = cluster.pods("app=MyApp")[0]["metadata"]["name"]
    assert set(hits(cluster, pod, f"{web}:80", 40)) == pod_names(cluster)
    assert set(hits(cluster, "host/client", "172.18.0.3:30010", 30)) == pod_names(cluster)
    assert connect(cluster, "node/node-1", "127.0.0.1", 30010) != "connected"  # no localhost NodePorts
    assert connect(cluster, pod, cluster.get("svc", "nobody")["spec"]["clusterIP"], 80) == "ConnectionRefusedError"
    sticky = cluster.get("svc", "sticky")["spec"]["clusterIP"]
    assert len(set(hits(cluster, pod, f"{sticky}:80", 10))) == 1
    here = {"node-1": "172.18.0.2", "node-2": "172.18.0.3"}[cluster.pods("app=MyApp")[0]["spec"]["nodeName"]]
    out = cluster.exec("host/client", "curl", "-s", "--max-time", "3", f"{here}:30011/clientip").stdout
    assert out.split(":")[0] == "192.0.2.10"
    # a change is one small transaction: scale down, and the chains follow
    cluster.nsk("scale", "deployment", "app", "--replicas=1")
    wait_for(lambda: "numgen random mod 1 vmap" in cluster.nsk("rules", "--node", "node-1").stdout
             and "numgen random mod 3" not in cluster.nsk("rules", "--node", "node-1").stdout, 20)
    # the outside, masqueraded (nsk's own table): a Pod reaches the external host
    pod = next(p["metadata"]["name"] for p in cluster.pods("app=MyApp") if not p["metadata"].get("deletionTimestamp"))
    import subprocess
    import sys
    from tests.conftest import ROOT
    server = subprocess.Popen([sys.executable, "-m", "nsk", "exec", "--cluster", cluster.name, "host/db", "--",
                               sys.executable, "-m", "http.server", "9376", "--bind", "192.0.2.42"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: cluster.exec(pod, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
                                      "192.0.2.42:9376/", check=False).stdout == "200", 10)
    finally:
        server.terminate()
        server.wait(5)


def test_the_proxy_mode_switches_on_a_running_cluster_and_leaves_nothing_of_the_old_one(cluster):
    """#10: `nsk apply` of the Cluster document with another spec.proxy.mode switches every
    node: the old mode's chains, jumps and tables go, the new mode carries the traffic; any
    other change of the Cluster document is refused, naming the field."""
    doc = CLUSTER.format(replicas=2).split("---")[0].replace("metadata: {name: x}", f"metadata: {{name: {cluster.name}}}")
    cluster.up(CLUSTER.format(replicas=2) + service("web"))
    pod = cluster.pods("app=MyApp")[0]["metadata"]["name"]
    nft_doc = doc.replace("spec:\n  external:", "spec:\n  proxy: {mode: nftables}\n  external:", 1)
    assert cluster.apply(nft_doc).stdout.strip() == f"cluster.nsk.io/{cluster.name} configured"
    wait_for(lambda: "Proxy mode:     nftables" in cluster.nsk("status").stdout, 15)
    wait_for(lambda: "table ip kube-proxy" in cluster.exec("node/node-2", "nft", "list", "tables").stdout, 15)
    for node in ("node-1", "node-2"):
        saved = cluster.exec(f"node/{node}", "iptables-save").stdout
        assert "KUBE-" not in saved and "NSK-" not in saved, saved
    assert set(hits(cluster, pod, "10.96.0.2:80", 30)) == pod_names(cluster)
    assert cluster.apply(doc).stdout.strip() == f"cluster.nsk.io/{cluster.name} configured"  # back to iptables
    wait_for(lambda: "Proxy mode:     iptables" in cluster.nsk("status").stdout, 15)
    wait_for(lambda: "-A KUBE-SERVICES" in cluster.exec("node/node-1", "iptables-save").stdout, 15)
    for node in ("node-1", "node-2"):
        assert "kube-proxy" not in cluster.exec(f"node/{node}", "nft", "list", "tables").stdout
    assert set(hits(cluster, pod, "10.96.0.2:80", 30)) == pod_names(cluster)
    r = cluster.apply(doc.replace("spec:\n  external:", "spec:\n  dns: {ttl: 9}\n  external:", 1), check=False)
    assert r.returncode == 1 and "spec.dns.ttl: Forbidden: may not change on a running cluster" in r.stderr
    # each node's kube-proxy, as kubeadm's DaemonSet shows it: a hostNetwork Pod on every node
    proxies = cluster.pods("k8s-app=kube-proxy", namespace="kube-system")
    assert sorted((p["spec"]["nodeName"], p["status"]["podIP"], p["status"]["phase"]) for p in proxies) == [
        ("node-1", "172.18.0.2", "Running"), ("node-2", "172.18.0.3", "Running")]
    assert "its rules are written by the nsk control plane" in cluster.nsk(
        "logs", proxies[0]["metadata"]["name"], "-n", "kube-system").stdout
    # where a kubeadm cluster keeps it: kube-system/kube-proxy's config.conf; changing it switches too
    cm = cluster.get("configmap", "kube-proxy", namespace="kube-system")
    assert "mode: ''" in cm["data"]["config.conf"] and "kind: KubeProxyConfiguration" in cm["data"]["config.conf"]
    cm["data"]["config.conf"] = cm["data"]["config.conf"].replace("mode: ''", "mode: nftables")
    del cm["metadata"]["resourceVersion"]
    cluster.apply(json.dumps(cm))
    wait_for(lambda: "Proxy mode:     nftables" in cluster.nsk("status").stdout, 15)
    assert set(hits(cluster, pod, "10.96.0.2:80", 20)) == pod_names(cluster)
    cm["data"]["config.conf"] = cm["data"]["config.conf"].replace("mode: nftables", "mode: warp")
    cluster.apply(json.dumps(cm))
    wait_for(lambda: "FailedProxyConfig" in cluster.nsk("describe", "configmap", "kube-proxy", "-n",
                                                          "kube-system").stdout, 15)
    assert "Proxy mode:     nftables" in cluster.nsk("status").stdout  # the running mode stays


def test_userspace_mode_proxies_through_the_nodes_kube_proxy_and_retries_past_a_refusing_endpoint(cluster):
    """#10: the historical mode, as the source teaches it: the node's kube-proxy listens on a
    proxy port a Service port (KUBE-PORTALS-* redirect there), the endpoint sees the node as
    the client, and an endpoint that refuses is passed over, so the client never sees it."""
    text = CLUSTER.format(replicas=2).replace("spec:\n  external:", "spec:\n  proxy: {mode: userspace}\n  external:", 1)
    cluster.up(text + service("web", type="NodePort", ports=[{"port": 80, "targetPort": 9376, "nodePort": 30080}])
               + service("echo", ports=[{"name": "echo", "port": 53, "targetPort": "echo", "protocol": "UDP"}])
               + service("lb", type="LoadBalancer") + service("sticky", sessionAffinity="ClientIP")
               + service("nobody", selector={"app": "none"}))
    assert "Proxy mode:     userspace (removed in Kubernetes 1.26)" in cluster.nsk("status").stdout
    rules = cluster.nsk("rules", "--node", "node-1").stdout
    assert "-A KUBE-PORTALS-CONTAINER -d 10.96.0.2/32 -p tcp -m comment --comment \"default/web\" -m tcp --dport 80 " \
           "-j REDIRECT --to-ports 4000" in rules
    assert "-A KUBE-NODEPORT-HOST -p tcp -m comment --comment \"default/web\" -m tcp --dport 30080 " \
           "-j DNAT --to-destination 172.18.0.2:4000" in rules
    assert "KUBE-SVC-" not in rules and "0.0.0.0:4000" in rules  # the proxy ports, held by the node's kube-proxy
    pods = cluster.pods("app=MyApp")
    client = pods[0]["metadata"]["name"]
    assert set(hits(cluster, client, "10.96.0.2:80", 8)) == pod_names(cluster)
    # the endpoint sees the proxy (a node), not the Pod
    seen = [a.rpartition(":")[0] for a in cluster.exec(
        client, "sh", "-c", "for i in 1 2 3 4; do curl -s --max-time 2 10.96.0.2/clientip; echo; done").stdout.split()]
    assert set(seen) <= {"172.18.0.2", "172.18.0.3", "10.244.1.1", "10.244.2.1"} and seen, seen
    assert set(hits(cluster, "host/client", "172.18.0.3:30080", 4)) == pod_names(cluster)  # a NodePort from outside
    script = ("import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2); "
              "s.sendto(b'ping',('10.96.0.3',53)); print(s.recvfrom(100)[0].decode())")
    assert cluster.exec(client, "python3", "-c", script).stdout.strip() == "ping"  # UDP, one session a client
    lb = wait_for(lambda: (cluster.get("svc", "lb").get("status") or {}).get("loadBalancer"), what="an LB IP")
    assert set(hits(cluster, "host/client", lb["ingress"][0]["ip"], 6)) == pod_names(cluster)  # an LB IP is a portal
    sticky = cluster.get("svc", "sticky")["spec"]["clusterIP"]
    assert len(set(hits(cluster, client, sticky, 6))) == 1  # ClientIP affinity in the proxy's round robin
    # no endpoints: the proxy accepts, finds none, and closes (no REJECT rule in this mode)
    nobody = cluster.get("svc", "nobody")["spec"]["clusterIP"]
    # (curl: 52 empty reply, or 56 reset: the request was unread when the proxy closed)
    r = cluster.exec(client, "sh", "-c", f"time -p curl -s --max-time 3 {nobody}; echo rc=$?", check=False)
    assert ("rc=52" in r.stdout or "rc=56" in r.stdout) and float(r.stderr.split("real")[1].split()[0]) < 1, r
    # a Service whose endpoints are one Pod that answers and one port that refuses
    live = pods[1]["status"]["podIP"]
    cluster.apply(f"""
apiVersion: v1
kind: Service
metadata: {{name: mixed}}
spec:
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: mixed}}
subsets:
  - addresses: [{{ip: {live}}}]
    ports: [{{port: 9376}}]
  - addresses: [{{ip: {pods[0]["status"]["podIP"]}}}]
    ports: [{{port: 9}}]
""")
    wait_for(lambda: "default/mixed" in cluster.nsk("rules", "--node", "node-1", "-t", "nat").stdout, 15, "its portal")
    got = hits(cluster, client, cluster.get("svc", "mixed")["spec"]["clusterIP"] + ":80", 10)
    assert got == [pods[1]["metadata"]["name"]] * 10, got  # every try answered; the refusing one passed over
    proxy = next(p["metadata"]["name"] for p in cluster.pods("k8s-app=kube-proxy", namespace="kube-system")
                 if p["spec"]["nodeName"] == pods[0]["spec"]["nodeName"])
    assert "Dial failed" in cluster.nsk("logs", proxy, "-n", "kube-system").stdout
    # the node's proxy Pod deleted: as its DaemonSet would, a new one comes, and serves again
    cluster.nsk("delete", "pod", proxy, "-n", "kube-system")
    wait_for(lambda: [p for p in cluster.pods("k8s-app=kube-proxy", namespace="kube-system")
                      if p["spec"]["nodeName"] == pods[0]["spec"]["nodeName"] and not p["metadata"].get(
                          "deletionTimestamp") and (p.get("status") or {}).get("phase") == "Running"], 30,
             "the node's kube-proxy Pod again")
    wait_for(lambda: set(hits(cluster, client, "10.96.0.2:80", 8)) == pod_names(cluster), 10,
             "the Service through the new proxy")
    # and back to iptables mode: nothing of userspace mode is left
    doc = text.split("---")[0].replace("metadata: {name: x}", f"metadata: {{name: {cluster.name}}}")
    cluster.apply(doc.replace("proxy: {mode: userspace}", "proxy: {mode: iptables}"))
    wait_for(lambda: "Proxy mode:     iptables" in cluster.nsk("status").stdout, 15, "iptables mode")
    for node in ("node-1", "node-2"):
        saved = cluster.exec(f"node/{node}", "iptables-save").stdout
        assert "KUBE-PORTALS" not in saved and "KUBE-NODEPORT-" not in saved
        wait_for(lambda: cluster.exec(f"node/{node}", "ss", "-H", "-ltun", "sport >= :40000 and sport <= :44999")
                 .stdout.strip() == "", 10, "the proxy sockets to close")
    assert set(hits(cluster, client, "10.96.0.2:80", 8)) == pod_names(cluster)
