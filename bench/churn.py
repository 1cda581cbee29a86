"""Traffic while Pods come and go (#16): what a client loses through a Service while its
endpoints are deleted every 0.5 s and the Deployment is scaled between 4 and 9.

Run as root: `.venv/bin/python bench/churn.py --seconds 30`.
One cluster (named nskchurn): the web Pods on node-1 only; client `near` on node-1 (the
same node as every endpoint), client `far` on node-2. Each client, for --seconds, sends TCP
requests to the Service's cluster IP back to back (each a new connection with a 1 s
limit) and a UDP datagram every 10 ms to its echo port. Meanwhile this script deletes a
random web Pod every 0.5 s (`nsk delete --no-wait`: graceful, as kubectl) and scales the
Deployment 4 → 9 → 4 every 5 s. Reported per client: TCP requests and the share that
failed, and the longest time without a UDP reply. Prints a Markdown table for
docs/benchmarks.md. Targets: under 0.5 % of TCP requests lost and no UDP outage over 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "nskchurn"
TOPOLOGY = """\
apiVersion: nsk.io/v1alpha1
kind: Cluster
metadata: {name: nskchurn}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-1}
      containers:
      - name: web
        image: nginx
        ports: [{containerPort: 80}, {containerPort: 5353, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}, {name: echo, port: 5353, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: near}
spec:
  nodeSelector: {kubernetes.io/hostname: node-1}
  containers: [{name: c, image: x}]
---
apiVersion: v1
kind: Pod
metadata: {name: far}
spec:
  nodeSelector: {kubernetes.io/hostname: node-2}
  containers: [{name: c, image: x}]
"""
# What runs in a client Pod: both loops side by side, a JSON line at the end.
CLIENT = r"""
import json, socket, sys, threading, time
ip, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
tcp = {"ok": 0, "failed": 0}
def tcp_loop():
    while time.monotonic() < end:
        try:
            with socket.create_connection((ip, 80), timeout=1) as s:
                s.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
                s.settimeout(1)
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            tcp["ok" if data.startswith(b"HTTP/1.0 200") else "failed"] += 1
        except OSError:
            tcp["failed"] += 1
udp = {"sent": 0, "replies": 0, "gap": 0.0}
def udp_loop():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    last = time.monotonic()
    while time.monotonic() < end:
        s.sendto(b"x", (ip, 5353))
        udp["sent"] += 1
        time.sleep(0.01)
        while True:
            try:
                s.recv(64)
            except BlockingIOError:
                break
            udp["replies"] += 1
            now = time.monotonic()
            udp["gap"] = max(udp["gap"], now - last)
            last = now
    udp["gap"] = max(udp["gap"], time.monotonic() - last)
threads = [threading.Thread(target=tcp_loop), threading.Thread(target=udp_loop)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"tcp": tcp, "udp": udp}))
"""


def nsk(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "nsk"), args[0], "--cluster", NAME, *args[1:]],
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise RuntimeError(f"nsk {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/churn.py needs root", file=sys.stderr)
        return 1
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as d:
        topo, client = os.path.join(d, "churn.yaml"), os.path.join(d, "client.py")
        with open(topo, "w") as f:
            f.write(TOPOLOGY)
        with open(client, "w") as f:
            f.write(CLIENT)
        nsk("up", topo)
        try:
            ip = json.loads(nsk("get", "svc", "web", "-o", "json").stdout)["spec"]["clusterIP"]
            clients = {c: subprocess.Popen([os.path.join(ROOT, ".venv", "bin", "nsk"), "exec", c, "--cluster", NAME,
                                            "--", "python3", client, ip, str(args.seconds)],
                                           stdout=subprocess.PIPE, text=True) for c in ("near", "far")}
            t0, deleted, scaled, replicas = time.monotonic(), 0, 0, 6
            next_scale = t0 + 5
            while time.monotonic() - t0 < args.seconds - 1:
                pods = [p["metadata"]["name"] for p in json.loads(nsk("get", "pods", "-l", "app=web", "-o",
                                                                      "json").stdout)["items"]
                        if not p["metadata"].get("deletionTimestamp")]
                if pods:
                    nsk("delete", "pod", rng.choice(pods), "--no-wait")
                    deleted += 1
                if time.monotonic() >= next_scale:
                    replicas = 9 if replicas != 9 else 4
                    nsk("scale", "deployment", "web", f"--replicas={replicas}")
                    scaled += 1
                    next_scale += 5
                time.sleep(0.5)
            results = {c: json.loads(p.communicate(timeout=args.seconds + 60)[0].strip().splitlines()[-1])
                       for c, p in clients.items()}
        finally:
            nsk("down", check=False)
    print(f"\n{os.cpu_count()} cores; kernel {os.uname().release}; {args.seconds:.0f} s, {deleted} Pods deleted, "
          f"{scaled} scalings\n")
    print("| client | TCP requests | TCP failed | UDP datagrams answered | longest UDP outage |")
    print("|---|---|---|---|---|")
    for c, r in results.items():
        tcp, udp = r["tcp"], r["udp"]
        total = tcp["ok"] + tcp["failed"]
        print(f"| {c} ({'same node as the endpoints' if c == 'near' else 'other node'}) | {total} | "
              f"{100 * tcp['failed'] / max(1, total):.2f} % | {udp['replies']} of {udp['sent']} | {udp['gap']:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
