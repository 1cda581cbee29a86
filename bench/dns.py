"""Cluster DNS throughput with dnsperf: nsk's DNS server against dnsmasq serving the same
names, each pinned to one core, in one run; and through the kube-dns ClusterIP (root).

Run: `.venv/bin/python bench/dns.py --services 200 --seconds 10 --rounds 3`

A cluster with N ClusterIP Services; dnsperf (Debian) on node-1, pinned to core 0, asks
for their A records. nsk's server is a coredns Pod on node-2, pinned to core 1; dnsmasq
(Debian) runs in that Pod's network namespace, pinned to core 1, with the same names in a
hosts file.
p99 latency comes from dnsperf's per-query report (-v).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from statistics import median

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "bench-dns"


def nsk(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cluster = ["--cluster", NAME] if args[0] != "up" else []
    return subprocess.run([sys.executable, "-m", "nsk", args[0], *cluster, *args[1:]], cwd=ROOT,
                          capture_output=True, text=True, check=check)


HEADLESS_PODS = 3
HEADLESS = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: hl}}
spec:
  replicas: {HEADLESS_PODS}
  selector: {{matchLabels: {{app: hl}}}}
  template:
    metadata: {{labels: {{app: hl}}}}
    spec:
      containers: [{{name: web, image: nginx, ports: [{{containerPort: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: hl}}
spec:
  clusterIP: None
  selector: {{app: hl}}
  ports: [{{port: 80}}]
"""


def topology(n: int) -> str:
    """The Cluster, n ClusterIP Services named svc-<i>, and a headless Service over 3 Pods."""
    docs = [f"apiVersion: nsk.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {NAME}}}\n", HEADLESS]
    docs += [f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  ports: [{{port: 80}}]\n"
             for i in range(n)]
    return "---\n".join(docs)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def qps_of(out: str, where: str) -> float:
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    if m is None:
        raise SystemExit(f"dnsperf against {where} gave no result:\n{out}")
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    if lost:
        print(f"  ({lost} queries lost against {where})", file=sys.stderr)
    return float(m.group(1))


class Target:
    """A DNS server under test: where dnsperf sends, how, and the server's PIDs (for its CPU time)."""

    def __init__(self, what: str, server: str, port: int, pids: list[int], run):
        self.what, self.server, self.port, self.pids, self.run = what, server, port, pids, run
        self.qps: list[float] = []
        self.cpu_us: list[float] = []  # the server's CPU time per query answered
        self.p99 = float("nan")

    def dnsperf(self, queries: str, seconds: int, *extra: str) -> str:
        return self.run(["dnsperf", "-s", self.server, "-p", str(self.port), "-d", queries, "-l", str(seconds),
                         "-c", "4", "-q", "200", *extra])

    def measure(self, queries: str, seconds: int) -> None:
        """One full-load run of dnsperf: queries per second and the server's CPU per query."""
        cpu = sum(cpu_seconds(p) for p in self.pids)
        qps = qps_of(self.dnsperf(queries, seconds), f"{self.server}:{self.port}")
        self.qps.append(qps)
        self.cpu_us.append((sum(cpu_seconds(p) for p in self.pids) - cpu) / (qps * seconds) * 1e6)

    def latency(self, queries: str, seconds: int) -> None:
        """p99 latency at half the median rate, every query reported (-v): reporting costs
        dnsperf itself, so it runs apart from the throughput runs, where queueing does not
        dominate."""
        out = self.dnsperf(queries, seconds, "-Q", str(int(median(self.qps) / 2)), "-v")
        lat = sorted(float(m.group(1)) for m in re.finditer(r"^> \S+ .* ([\d.]+)$", out, re.M))
        self.p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan")


def rounds(targets: list[Target], queries: str, seconds: int, n: int) -> None:
    """n rounds, each target once a round, the order turned every round: the machine's
    drift (other work, the kernel's own) falls on every server alike."""
    for r in range(n):
        for t in (targets if r % 2 == 0 else targets[::-1]):
            t.measure(queries, seconds)


def in_node1(cmd: list[str]) -> str:
    return nsk("exec", "node/node-1", "--", "taskset", "-c", "0", *cmd).stdout


LOOPBACK_SERVER = """
import sys
from nsk.dns.server import Server
Server(sys.argv[1], "cluster.local", "10.96.0.10", 5, (), "bench-loopback").serve(port=5300)
"""


def dnsmasq_argv(hosts: str, address: str, port: int, pid_file: str) -> list[str]:
    return ["taskset", "-c", "1", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
            f"--addn-hosts={hosts}", f"--listen-address={address}", "--bind-interfaces", f"--port={port}",
            "--cache-size=10000", "--user=root", f"--pid-file={pid_file}"]


def read_pid(path: str, timeout: float = 5) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            with open(path) as f:
                return int(f.read())
        time.sleep(0.05)
    raise SystemExit(f"dnsmasq wrote no pid file {path}")


def loopback(tmp: str, hosts: str, queries: str, seconds: int, n: int) -> list[Target]:
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
        pid_file = os.path.join(tmp, "dnsmasq-loopback.pid")
        with netns.entered(ns):  # children inherit the namespace of the thread that forks them
            procs.append(subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", LOOPBACK_SERVER,
                                           cluster_dir(NAME)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen(dnsmasq_argv(hosts, "127.0.0.1", 5301, pid_file),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.5)

        def run(cmd: list[str]) -> str:
            with netns.entered(ns):
                return subprocess.run(["taskset", "-c", "0", *cmd], capture_output=True, text=True).stdout
        targets = [Target("nsk DNS server", "127.0.0.1", 5300, [procs[0].pid], run),
                   Target("dnsmasq 2.90", "127.0.0.1", 5301, [read_pid(pid_file)], run)]
        rounds(targets, queries, seconds, n)
        return targets
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=5)
        netns.remove(ns)


def freshness(dns_ip: str, rounds: int) -> dict[str, list[float]]:
    """Milliseconds from a change in the store until the DNS server's answer shows it, asked
    every millisecond from node-1 (sorted), for two changes:

    - a Service's creation (what `nsk apply` writes), until its A record is answered;
    - a Pod's deletion (what `nsk delete pod` writes) behind the headless Service `hl`,
      until its IP has left the Service's A records (the endpoints controller's update).

    Each change comes once the control plane has caught up with the one before (its
    `synced` revision): a change that lands while the rules of the last are still being
    restored waits for that restore, and the server shares the two cores with it.
    """
    import socket

    from dnslib import QTYPE, DNSRecord

    from nsk.api.objects import Key
    from nsk.apiserver.admission import admit
    from nsk.apiserver.server import APIServer
    from nsk.kernel import netns
    from nsk.store import Store, cluster_dir
    store = Store(cluster_dir(NAME))
    api = APIServer(store)
    with netns.entered(f"nsk_{NAME}_node_node-1"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.05)

    def until(qname: str, shown, t: float) -> float:
        q = DNSRecord.question(qname, "A").pack()
        while time.perf_counter() - t < 5:
            sock.sendto(q, (dns_ip, 53))
            try:
                reply = DNSRecord.parse(sock.recv(4096))
            except OSError:
                continue
            if shown({str(rr.rdata) for rr in reply.rr if QTYPE[rr.rtype] == "A"}):
                return (time.perf_counter() - t) * 1000
            time.sleep(0.001)
        raise SystemExit(f"{qname}: the change did not show within 5 s")

    def ready_hl() -> list[dict]:
        return [p for p in store.list("Pod", "default") if p["metadata"].get("labels", {}).get("app") == "hl"
                and any(c.get("ready") for c in (p.get("status") or {}).get("containerStatuses", []))]

    def settle() -> None:
        """Until the control plane has caught up with every write (its `synced` revision)."""
        deadline = time.monotonic() + 30
        while store.get_meta("synced") != store.revision():
            if time.monotonic() > deadline:
                raise SystemExit("the control plane did not settle within 30 s")
            time.sleep(0.01)

    out: dict[str, list[float]] = {"service": [], "endpoint": []}
    for i in range(rounds):
        settle()
        svc = admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"fresh-{i}"},
                     "spec": {"ports": [{"port": 80}]}})
        t = time.perf_counter()
        api.put(svc)
        out["service"].append(until(f"fresh-{i}.default.svc.cluster.local", bool, t))
    for _ in range(rounds):
        deadline = time.monotonic() + 30
        while len(ready_hl()) < HEADLESS_PODS:  # every round starts from all endpoints ready
            if time.monotonic() > deadline:
                raise SystemExit("the hl Pods did not come back within 30 s")
            time.sleep(0.05)
        until("hl.default.svc.cluster.local", lambda ips: len(ips) == HEADLESS_PODS, time.perf_counter())
        settle()
        pod = ready_hl()[0]
        ip = pod["status"]["podIP"]
        t = time.perf_counter()
        store.delete(Key("Pod", "default", pod["metadata"]["name"]))
        out["endpoint"].append(until("hl.default.svc.cluster.local", lambda ips: ips and ip not in ips, t))
    sock.close()
    store.close()
    return {k: sorted(v) for k, v in out.items()}


def pid_of(pod: dict) -> int:
    return int(pod["status"]["containerStatuses"][0]["containerID"].split("//")[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="throughput runs of each server, interleaved")
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
            subprocess.run(["taskset", "-a", "-p", "-c", "1", str(pid_of(p))], check=True, capture_output=True)
        target_pod = next(p for p in pods if p["spec"]["nodeName"] == "node-2")
        target = target_pod["status"]["podIP"]
        # dnsmasq in the same Pod's network namespace: its queries and answers cross the
        # same veths, bridge and rules as nsk's (in node-2's own namespace they would skip
        # the Pod's veth and node-2's forwarding, a good part of the datapath's cost)
        pid_file = os.path.join(tmp, "dnsmasq.pid")
        dnsmasq = subprocess.Popen([sys.executable, "-m", "nsk", "exec", "--cluster", NAME, "-n", "kube-system",
                                    target_pod["metadata"]["name"], "--",
                                    *dnsmasq_argv(hosts, target, 5353, pid_file)],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        nsk_pids = {p["metadata"]["name"]: pid_of(p) for p in pods}
        targets = [Target("nsk DNS server, the coredns Pod's IP", target, 53,
                          [nsk_pids[target_pod["metadata"]["name"]]], in_node1),
                   Target("dnsmasq 2.90 in the same Pod, same names", target, 5353, [read_pid(pid_file)], in_node1),
                   Target("nsk DNS through the kube-dns ClusterIP (2 Pods)", "10.96.0.10", 53,
                          list(nsk_pids.values()), in_node1)]
        time.sleep(0.5)
        rounds(targets, queries, args.seconds, args.rounds)
        for t in targets:
            t.latency(queries, max(2, args.seconds // 2))
        fresh = freshness(target, rounds=20)
        loop = loopback(tmp, hosts, queries, args.seconds, args.rounds)
        print(f"dnsperf -c 4 -q 200, {len(svcs)} names, A queries, {args.seconds} s a run, {args.rounds} rounds;"
              " median (lowest-highest); CPU: the server's user + system time per query\n")
        print("| in the cluster | queries/s | CPU µs/query | p99 ms at half load |")
        print("|---|---:|---:|---:|")
        for t in targets:
            print(f"| {t.what} | {median(t.qps):,.0f} ({min(t.qps):,.0f}-{max(t.qps):,.0f}) | "
                  f"{median(t.cpu_us):.1f} | {t.p99:.2f} |")
        print("\n| on loopback in a throw-away namespace, each server on core 1 | queries/s | CPU µs/query |")
        print("|---|---:|---:|")
        for t in loop:
            print(f"| {t.what} | {median(t.qps):,.0f} ({min(t.qps):,.0f}-{max(t.qps):,.0f}) | {median(t.cpu_us):.1f} |")
        print(f"\nnsk / dnsmasq, median queries/s: in the cluster {median(targets[0].qps) / median(targets[1].qps):.2f}×, "
              f"on loopback {median(loop[0].qps) / median(loop[1].qps):.2f}×")
        print("\n| from the store write to the first answer that shows it | runs | p50 (ms) | p95 (ms) |")
        print("|---|---:|---:|---:|")
        for what, key in (("a new Service: its A record", "service"),
                          ("a headless Service's Pod deleted: its IP gone from the A records", "endpoint")):
            xs = fresh[key]
            print(f"| {what} | {len(xs)} | {xs[len(xs) // 2]:.1f} | {xs[int(len(xs) * .95)]:.1f} |")
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=5)
        nsk("down", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
