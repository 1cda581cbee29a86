"""`nsk up` + `nsk down` wall time for N Pods on 2 nodes, beside Mininet creating N hosts.

Run as root: `make bench` (or `.venv/bin/python bench/up_down.py --pods 50 200 --repeat 3`).
Mininet 2.3 (Debian) runs `mn --topo single,N --switch lxbr --controller none --test none`
inside a throw-away network namespace (`unshare --net`), so its bridge and veths never
touch the host's root namespace. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPOLOGY = """\
apiVersion: nsk.io/v1alpha1
kind: Cluster
metadata: {{name: bench}}
spec:
  nodes: [{{name: node-1}}, {{name: node-2}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {n}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: nginx, ports: [{{containerPort: 80}}]}}]
"""


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t


def nsk_round(n: int, path: str) -> tuple[float, float]:
    nsk = [sys.executable, "-m", "nsk"]
    up = timed(nsk + ["up", path])
    down = timed(nsk + ["down", "--cluster", "bench"])
    return up, down


def mininet_round(n: int) -> float:
    return timed(["unshare", "--net", "--", "mn", "--topo", f"single,{n}", "--switch", "lxbr",
                  "--controller", "none", "--test", "none"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-mininet", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/up_down.py needs root", file=sys.stderr)
        return 1
    have_mn = shutil.which("mn") is not None and not args.no_mininet
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.pods:
            path = os.path.join(tmp, f"bench-{n}.yaml")
            with open(path, "w") as f:
                f.write(TOPOLOGY.format(n=n))
            ups, downs, mns = [], [], []
            for _ in range(args.repeat):
                up, down = nsk_round(n, path)
                ups.append(up)
                downs.append(down)
                if have_mn:
                    mns.append(mininet_round(n))
            up, down = statistics.median(ups), statistics.median(downs)
            mn = f"{statistics.median(mns):.2f}" if mns else "-"
            rows.append(f"| {n} | {up:.2f} | {up / n * 1000:.1f} | {down:.2f} | {up + down:.2f} | {mn} |")
            print(rows[-1], file=sys.stderr, flush=True)
    print("| Pods (2 nodes) | nsk up (s) | per Pod (ms) | nsk down (s) | nsk up + down (s) | Mininet up + down (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\nmedian of {args.repeat} runs; {os.cpu_count()} cores; kernel {os.uname().release}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
