"""Cluster DNS throughput with dnsperf: nsk's DNS server against dnsmasq serving the same
names, each pinned to one core, in one run; and through the kube-dns ClusterIP (root).

Run: `.venv/bin/python bench/dns.py --services 200 --seconds 10`

A cluster with N ClusterIP Services; dnsperf (Debian) on node-1, pinned to core 0, asks
for their A records. nsk's server is a coredns Pod on node-2, pinned to core 1; dnsmasq
(Debian) runs in that Pod's network namespace, pinned to core 1, with the same names in a
hosts file.
p99 latency comes from dnsperf's per-query report (-v).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "bench-dns"


def nsk(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cluster = ["--cluster", NAME] if args[0] != "up" else []
    return subprocess.run([sys.executable, "-m", "nsk", args[0], *cluster, *args[1:]], cwd=ROOT,
                          capture_output=True, text=True, check=check)


def topology(n: int) -> str:
    docs = [f"apiVersion: nsk.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {NAME}}}\n"]
    docs += [f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  ports: [{{port: 80}}]\n"
             for i in range(n)]
    return "---\n".join(docs)


def _dnsperf(server: str, port: int, queries: str, seconds: int, *extra: str) -> str:
    return nsk("exec", "node/node-1", "--", "taskset", "-c", "0", "dnsperf", "-s", server, "-p", str(port),
               "-d", queries, "-l", str(seconds), "-c", "4", "-q", "200", *extra).stdout


def dnsperf(server: str, port: int, queries: str, seconds: int) -> tuple[float, float]:
    """(queries per second at full load, p99 latency in ms at half that rate) from node-1 on core 0.

    The latency run reports every query (-v), which costs dnsperf itself; so it runs apart,
    at half the measured rate, where queueing does not dominate."""
    out = _dnsperf(server, port, queries, seconds)
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lost = re.search(r"Queries lost:\s+(\d+)", out).group(1)
    if int(lost):
        print(f"  ({lost} queries lost against {server}:{port})", file=sys.stderr)
    out = _dnsperf(server, port, queries, max(2, seconds // 2), "-Q", str(int(qps / 2)), "-v")
    lat = sorted(float(m.group(1)) for m in re.finditer(r"^> \S+ .* ([\d.]+)$", out, re.M))
    return qps, lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan")


LOOPBACK_SERVER = """
import sys
from nsk.dns.server import Server
Server(sys.argv[1], "cluster.local", "10.96.0.10", 5, (), "bench-loopback").serve(port=5300)
"""


def loopback(hosts: str, queries: str, seconds: int) -> list[tuple[str, float, float]]:
    """Both servers on 127.0.0.1 of a throw-away namespace, each pinned to core 1, dnsperf on
    core 0: the servers' own cost, without the cluster's veths and rules in the way."""
    from nsk.kernel import links, netns
    from nsk.store import cluster_dir
    ns = f"nsk_bench_dns_{os.getpid()}"
    netns.create(ns)
    procs = []
    try:
        with links.ipr(ns) as r:
            links.lo_up(r)
        with netns.entered(ns):  # children inherit the namespace of the thread that forks them
            procs.append(subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", LOOPBACK_SERVER,
                                           cluster_dir(NAME)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen(["taskset", "-c", "1", "dnsmasq", "--keep-in-foreground", "--no-resolv",
                                           "--no-hosts", f"--addn-hosts={hosts}", "--listen-address=127.0.0.1",
                                           "--bind-interfaces", "--port=5301", "--cache-size=10000",
                                           "--user=root", "--pid-file="],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.5)
        rows = []
        for what, port in (("nsk DNS server", 5300), ("dnsmasq 2.90", 5301)):
            with netns.entered(ns):
                out = subprocess.run(["taskset", "-c", "0", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
                                      queries, "-l", str(seconds), "-c", "4", "-q", "200"],
                                     capture_output=True, text=True).stdout
            rows.append((what, float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))))
        return rows
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=5)
        netns.remove(ns)


def freshness(dns_ip: str, rounds: int) -> list[float]:
    """Milliseconds from a Service's creation in the store (what `nsk apply` writes) until
    the DNS server answers its A record, asked every millisecond from node-1 (sorted)."""
    import socket

    from dnslib import QTYPE, DNSRecord

    from nsk.api.validation import admit
    from nsk.client import live_config, write
    from nsk.kernel import netns
    from nsk.store import Store, cluster_dir
    store = Store(cluster_dir(NAME))
    cfg = live_config(store)
    with netns.entered(f"nsk_{NAME}_node_node-1"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.05)
    out = []
    for i in range(rounds):
        name = f"fresh-{i}"
        q = DNSRecord.question(f"{name}.default.svc.cluster.local", "A").pack()
        svc = admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                     "spec": {"ports": [{"port": 80}]}})
        t = time.perf_counter()
        with store.tx():
            write(store, svc, cfg)
        while time.perf_counter() - t < 5:
            sock.sendto(q, (dns_ip, 53))
            try:
                reply = DNSRecord.parse(sock.recv(4096))
            except OSError:
                continue
            if any(QTYPE[rr.rtype] == "A" for rr in reply.rr):
                out.append((time.perf_counter() - t) * 1000)
                break
            time.sleep(0.001)
        else:
            raise SystemExit(f"{name} was not answered within 5 s")
    sock.close()
    store.close()
    return sorted(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="nsk-bench-dns-")
    topo, queries, hosts = (os.path.join(tmp, f) for f in ("topology.yaml", "queries.txt", "hosts"))
    with open(topo, "w") as f:
        f.write(topology(args.services))
    nsk("up", topo)
    dnsmasq = None
    try:
        svcs = json.loads(nsk("get", "svc", "-o", "json").stdout)["items"]
        svcs = [s for s in svcs if s["metadata"]["name"].startswith("svc-")]
        with open(queries, "w") as f:
            f.writelines(f"{s['metadata']['name']}.default.svc.cluster.local A\n" for s in svcs)
        with open(hosts, "w") as f:
            f.writelines(f"{s['spec']['clusterIP']} {s['metadata']['name']}.default.svc.cluster.local\n" for s in svcs)
        pods = json.loads(nsk("get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]
        for p in pods:  # both DNS Pods on core 1: the ClusterIP run spreads over them
            pid = p["status"]["containerStatuses"][0]["containerID"].split("//")[1]
            subprocess.run(["taskset", "-a", "-p", "-c", "1", pid], check=True, capture_output=True)
        target_pod = next(p for p in pods if p["spec"]["nodeName"] == "node-2")
        target = target_pod["status"]["podIP"]
        # dnsmasq in the same Pod's network namespace: its queries and answers cross the
        # same veths, bridge and rules as nsk's (in node-2's own namespace they would skip
        # the Pod's veth and node-2's forwarding, a third of the datapath's cost)
        dnsmasq = subprocess.Popen([sys.executable, "-m", "nsk", "exec", "--cluster", NAME, "-n", "kube-system",
                                    target_pod["metadata"]["name"], "--",
                                    "taskset", "-c", "1", "dnsmasq", "--keep-in-foreground", "--no-resolv",
                                    "--no-hosts", f"--addn-hosts={hosts}", f"--listen-address={target}",
                                    "--bind-interfaces", "--port=5353", "--cache-size=10000", "--user=root",
                                    "--pid-file="], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        rows = [("nsk DNS server, the coredns Pod's IP", *dnsperf(target, 53, queries, args.seconds)),
                ("dnsmasq 2.90 in the same Pod, same names", *dnsperf(target, 5353, queries, args.seconds)),
                ("nsk DNS through the kube-dns ClusterIP (2 Pods)", *dnsperf("10.96.0.10", 53, queries, args.seconds))]
        fresh = freshness(target, rounds=20)
        loop = loopback(hosts, queries, args.seconds)
        print(f"| server ({len(svcs)} names, A queries, dnsperf -c 4 -q 200, {args.seconds} s) | queries/s | p99 (ms) |")
        print("|---|---:|---:|")
        for what, qps, p99 in rows:
            print(f"| {what} | {qps:,.0f} | {p99:.2f} |")
        print("\n| on loopback in a throw-away namespace, each server on core 1 | queries/s |")
        print("|---|---:|")
        for what, qps in loop:
            print(f"| {what} | {qps:,.0f} |")
        print("\n| a new Service, from its store write to the first correct A answer | runs | p50 (ms) | p95 (ms) |")
        print("|---|---:|---:|---:|")
        print(f"| nsk DNS server | {len(fresh)} | {fresh[len(fresh) // 2]:.1f} | {fresh[int(len(fresh) * .95)]:.1f} |")
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=5)
        nsk("down", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
