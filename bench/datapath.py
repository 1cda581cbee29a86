"""Service datapath figures on a live cluster (root):

1. endpoint change latency: from a Pod's deletion in the store (what `nsk delete pod`
   writes) to its endpoint gone from every node's iptables rules, p50 and p95;
   also the whole `nsk delete pod` command, interpreter start included;
2. iperf3 throughput from a Pod on node-1 to a Pod on node-2, through a ClusterIP and
   directly to the Pod IP;
3. the same in each proxy mode of --modes, switched live on the same cluster, direct and
   through the ClusterIP side by side (userspace mode copies every byte through the node's
   kube-proxy process).

Run: `.venv/bin/python bench/datapath.py --changes 20 --modes iptables nftables userspace`
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nsk.api.objects import Key  # noqa: E402
from nsk.kernel import iptables  # noqa: E402
from nsk.store import Store, cluster_dir  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "bench-dp"
TOPOLOGY = f"""
apiVersion: nsk.io/v1alpha1
kind: Cluster
metadata: {{name: {NAME}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 10
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: nginx, ports: [{{containerPort: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: iperf-server, labels: {{app: iperf}}}}
spec:
  nodeName: node-2
  containers: [{{name: s, image: iperf3, command: [iperf3, -s, -p, "5201"], ports: [{{containerPort: 5201}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: iperf-client}}
spec:
  nodeName: node-1
  containers: [{{name: c, image: busybox, command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: iperf}}
spec:
  selector: {{app: iperf}}
  ports: [{{port: 5201}}]
"""


def nsk(*args: str, **kw) -> subprocess.CompletedProcess:
    cluster = ["--cluster", NAME] if args[0] != "up" else []
    return subprocess.run([sys.executable, "-m", "nsk", args[0], *cluster, *args[1:]], cwd=ROOT,
                          capture_output=True, text=True, check=True, **kw)


def gone_everywhere(ip: str, nodes: list[str]) -> bool:
    return all(f"--to-destination {ip}:" not in iptables.save(ns, "nat") for ns in nodes)


def latency(store: Store, nodes: list[str], changes: int, via_cli: bool) -> list[float]:
    out = []
    for _ in range(changes):
        pods = [p for p in store.list("Pod", "default") if p["metadata"]["name"].startswith("web-")
                and (p.get("status") or {}).get("phase") == "Running"]
        pod = pods[0]
        ip = pod["status"]["podIP"]
        t = time.perf_counter()
        if via_cli:
            nsk("delete", "pod", pod["metadata"]["name"])
        else:
            store.delete(Key("Pod", "default", pod["metadata"]["name"]))
        deadline = t + 10
        while not gone_everywhere(ip, nodes):
            if time.perf_counter() > deadline:
                raise SystemExit(f"endpoint {ip} still in the rules after 10 s")
        out.append(time.perf_counter() - t)
        # wait for the replacement, so every round starts from 10 ready endpoints
        while len([p for p in store.list("Pod", "default") if p["metadata"]["name"].startswith("web-")
                   and (p.get("status") or {}).get("phase") == "Running"]) < 10:
            time.sleep(0.05)
        time.sleep(0.2)
    return out


def iperf(target: str) -> float:
    out = nsk("exec", "iperf-client", "--", "iperf3", "-c", target, "-p", "5201", "-t", "3", "-J").stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--modes", nargs="*", default=["iptables", "nftables", "userspace"],
                    help="proxy modes whose ClusterIP throughput is measured (ipvs needs a kernel with IPVS)")
    args = ap.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(TOPOLOGY)
        f.flush()
        nsk("up", f.name)
    try:
        store = Store(cluster_dir(NAME))
        nodes = [f"nsk_{NAME}_node_node-1", f"nsk_{NAME}_node_node-2"]
        direct = latency(store, nodes, args.changes, via_cli=False)
        cli = latency(store, nodes, max(5, args.changes // 4), via_cli=True)
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000  # noqa: E731
        print("| endpoint removal, until gone from both nodes' rules | runs | p50 (ms) | p95 (ms) |")
        print("|---|---:|---:|---:|")
        print(f"| store write (what `nsk delete pod` does) | {len(direct)} | {q(direct, .5):.0f} | {q(direct, .95):.0f} |")
        print(f"| the whole `nsk delete pod` command | {len(cli)} | {q(cli, .5):.0f} | {q(cli, .95):.0f} |")
        svc = json.loads(nsk("get", "svc", "iperf", "-o", "json").stdout)["spec"]["clusterIP"]
        pod = json.loads(nsk("get", "pod", "iperf-server", "-o", "json").stdout)["status"]["podIP"]
        runs = [(iperf(pod), iperf(svc)) for _ in range(3)]
        d, s = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print("\n| iperf3, Pod on node-1 to Pod on node-2 | Gbit/s (median of 3 × 3 s) |")
        print("|---|---:|")
        print(f"| directly to the Pod IP | {d:.2f} |")
        print(f"| through the ClusterIP | {s:.2f} ({s / d:.2f}×) |")
        if args.modes:
            print("\n| proxy mode | to the Pod IP, Gbit/s | through the ClusterIP, Gbit/s | of direct |")
            print("|---|---:|---:|---:|")
        for mode in args.modes:
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                f.write(TOPOLOGY.split("---")[0].replace(f"name: {NAME}}}", f"name: {NAME}}}\nspec: {{proxy: {{mode: {mode}}}}}"))
                f.flush()
                nsk("apply", "-f", f.name)
            deadline = time.monotonic() + 60
            while f"Proxy mode:     {mode}" not in nsk("status").stdout:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the cluster did not switch to {mode} mode")
                time.sleep(0.5)
            time.sleep(2)  # the new mode's first sync
            pairs = [(iperf(pod), iperf(svc)) for _ in range(3)]  # side by side: the machine drifts
            dm, m = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
            print(f"| {mode} | {dm:.2f} | {m:.2f} | {m / dm:.2f}× |", flush=True)
    finally:
        nsk("down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
