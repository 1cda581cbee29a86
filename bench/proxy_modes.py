"""A full sync of N Services × 2 endpoints in nftables mode beside iptables mode, and a
bare `nft -f` of the same ruleset, in one run (#10); then one endpoint change.

Run as root: `.venv/bin/python bench/proxy_modes.py --services 1000 10000 --repeat 3`.

Each figure is measured in a throw-away network namespace, emptied before each full sync:
- iptables mode: nsk's render (nsk/proxy/iptables.py) + iptables-restore, with the host's
  backend (nf_tables on Debian 12) and with legacy;
- nftables mode: nsk's render (nsk/proxy/nftables.py) + `nft -f`, and `nft -f` of the same
  text alone;
- one endpoint change (an endpoint replaced in one Service): nsk's partial sync, render and
  load, p50 of --changes, in each mode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.proxy_sync import ports  # noqa: E402
from nsk.kernel import iptables, netns  # noqa: E402
from nsk.proxy import iptables as ipt_rules  # noqa: E402
from nsk.proxy import nftables as nft_rules  # noqa: E402
from nsk.proxy.model import Endpoint, NodeContext, ServicePort  # noqa: E402

NS = f"nsk_bench_modes_{os.getpid()}"
CTX = NodeContext("node-1", "10.244.0.0/16", ("172.18.0.2",), service_cidr="10.96.0.0/12")


def run(argv: list[str], text: str) -> float:
    t = time.perf_counter()
    with netns.entered(NS):
        subprocess.run(argv, input=text, text=True, check=True)
    return time.perf_counter() - t


def empty() -> None:
    for which in ("nft", "legacy"):
        iptables.restore(NS, "*filter\nCOMMIT\n*nat\nCOMMIT\n", noflush=False, which=which)
    with netns.entered(NS):
        subprocess.run(["nft", "flush", "ruleset"], check=True)


def changed(sp: list[ServicePort], i: int) -> list[ServicePort]:
    """The same Services, the i-th one's second endpoint replaced."""
    out = list(sp)
    k = i % len(sp)
    old = sp[k]
    out[k] = ServicePort(old.namespace, old.name, old.port_name, old.protocol, old.port, old.cluster_ip,
                         endpoints=(old.endpoints[0], Endpoint(f"10.245.{i // 250 % 250}.{i % 250 + 1}", 8080, "node-2")))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--changes", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/proxy_modes.py needs root", file=sys.stderr)
        return 1
    netns.create(NS)
    rows = []
    try:
        for n in args.services:
            sp = ports(n)
            res: dict[str, list[float]] = {k: [] for k in ("ipt-nft", "ipt-legacy", "nft", "nft-bare")}
            for _ in range(args.repeat):
                for which in ("nft", "legacy"):
                    empty()
                    t = time.perf_counter()
                    text = ipt_rules.render(sp, CTX).text
                    iptables.restore(NS, text, which=which)
                    res[f"ipt-{which}"].append(time.perf_counter() - t)
                empty()
                t = time.perf_counter()
                ruleset = nft_rules.render(sp, CTX, CTX.service_cidr)
                run(["nft", "-f", "-"], ruleset.text)
                res["nft"].append(time.perf_counter() - t)
                empty()
                res["nft-bare"].append(run(["nft", "-f", "-"], ruleset.text))
            # one endpoint change after another, on the full ruleset each mode just wrote
            change = {"ipt": [], "nft": []}
            empty()
            last_ipt = ipt_rules.render(sp, CTX)
            iptables.restore(NS, last_ipt.text, which="legacy")
            last_nft = nft_rules.render(sp, CTX, CTX.service_cidr)
            run(["nft", "-f", "-"], last_nft.text)
            for i in range(args.changes):
                new = changed(sp, i)
                t = time.perf_counter()
                r = ipt_rules.render(new, CTX, last_ipt.nat_chains)
                iptables.restore(NS, r.since(last_ipt), which="legacy")
                change["ipt"].append(time.perf_counter() - t)
                last_ipt = r
                t = time.perf_counter()
                r2 = nft_rules.render(new, CTX, CTX.service_cidr)
                run(["nft", "-f", "-"], r2.since(last_nft))
                change["nft"].append(time.perf_counter() - t)
                last_nft = r2
            med = {k: statistics.median(v) for k, v in res.items()}
            rows.append((n, med, statistics.median(change["ipt"]), statistics.median(change["nft"])))
            print(n, med, file=sys.stderr, flush=True)
    finally:
        netns.remove(NS)
    print(f"\n{os.cpu_count()} cores; kernel {os.uname().release}; median of {args.repeat} full syncs, "
          f"{args.changes} endpoint changes\n")
    print("| Services × 2 endpoints | iptables mode, nft backend | iptables mode, legacy | nftables mode | "
          "bare `nft -f` | iptables (nft) / nftables | endpoint change: iptables (legacy) / nftables |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, m, ci, cn in rows:
        print(f"| {n:,} | {m['ipt-nft']:.2f} s | {m['ipt-legacy']:.2f} s | {m['nft']:.2f} s | {m['nft-bare']:.2f} s | "
              f"{m['ipt-nft'] / m['nft']:.1f}× | {ci * 1000:.0f} ms / {cn * 1000:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
