"""Full iptables sync of N Services (2 endpoints each): nsk's render + apply against a
bare iptables-restore of the same text, in one run, in a throw-away network namespace.

Run as root: `.venv/bin/python bench/proxy_sync.py --services 1000 10000 --repeat 3`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nsk.kernel import iptables, netns  # noqa: E402
from nsk.proxy import iptables as rules  # noqa: E402
from nsk.proxy.model import Endpoint, ServicePort  # noqa: E402

NS = f"nsk_bench_{os.getpid()}"


def ports(n: int) -> list[ServicePort]:
    out = []
    for i in range(n):
        cip = f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
        eps = (Endpoint(f"10.244.{1 + i % 200}.{2 + i % 250}", 8080, "node-1"),
               Endpoint(f"10.244.{201 - i % 200}.{3 + i % 250}", 8080, "node-2"))
        out.append(ServicePort("default", f"svc-{i}", "http", "TCP", 80, cip, endpoints=eps))
    return out


def flush() -> None:
    """Back to an empty namespace: the next round is a full sync again."""
    iptables.restore(NS, "*filter\nCOMMIT\n*nat\nCOMMIT\n", noflush=False)
    iptables.restore(NS, "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n",
                     noflush=False)


def bare_restore(text: str) -> float:
    tool = f"iptables-{iptables.backend()}-restore"
    t = time.perf_counter()
    with netns.entered(NS):
        subprocess.run([tool, "-w", "5", "--noflush"], input=text, text=True, check=True)
    return time.perf_counter() - t


def nsk_sync(sp: list[ServicePort], ctx) -> tuple[float, float]:
    t = time.perf_counter()
    text = rules.render(sp, ctx).text
    rendered = time.perf_counter()
    iptables.restore(NS, text)
    return rendered - t, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    netns.create(NS)
    try:
        ctx = rules.NodeContext("node-1", "10.244.0.0/16")
        print(f"iptables backend: {iptables.backend()}", file=sys.stderr)
        print("| Services (2 endpoints each) | rules | render (s) | nsk render + apply (s) | bare iptables-restore (s) "
              "| ratio |")
        print("|---:|---:|---:|---:|---:|---:|")
        for n in args.services:
            sp = ports(n)
            text = rules.render(sp, ctx).text
            n_rules = sum(1 for line in text.splitlines() if line.startswith("-A"))
            renders, totals, bares = [], [], []
            for _ in range(args.repeat):
                flush()
                bares.append(bare_restore(text))
                flush()
                r, total = nsk_sync(sp, ctx)
                renders.append(r)
                totals.append(total)
            r, total, bare = (statistics.median(x) for x in (renders, totals, bares))
            print(f"| {n:,} | {n_rules:,} | {r:.2f} | {total:.2f} | {bare:.2f} | {total / bare:.2f}× |", flush=True)
    finally:
        netns.remove(NS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
