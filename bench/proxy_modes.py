"""A full sync of N Services × 2 endpoints in nftables mode beside iptables mode, and a
bare `nft -f` of the same ruleset, in one run (#10); then one endpoint change.

Run as root: `.venv/bin/python bench/proxy_modes.py --services 1000 10000 --repeat 3`.

Each figure is measured in a throw-away network namespace, emptied before each full sync:
- iptables mode: nsk's render (nsk/proxy/iptables.py) + iptables-restore, with the host's
  backend (nf_tables on Debian 12) and with legacy;
- nftables mode: nsk's render (nsk/proxy/nftables.py) + `nft -f`, and `nft -f` of the same
  text alone;
- one endpoint change (an endpoint replaced in one Service): nsk's partial sync, render and
  load, p50 of --changes, in each mode;
- with --latency: the cost a packet pays as Services grow, the source's claim that iptables
  slows down at 10,000 Services: the time of a TCP connect to the *last* Service's ClusterIP
  (its endpoint a server in a second namespace, over a veth), median of --connects, with each
  mode's full ruleset loaded, beside a connect straight to the server.
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


SERVER_NS = f"nsk_bench_srv_{os.getpid()}"
SERVER = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('10.250.0.2', 8080)); s.listen(1024)\nwhile True: s.accept()[0].close()\n")


def connect_times(ip: str, port: int, n: int) -> float:
    """Median seconds of a TCP connect (SYN to SYN-ACK) from the rules' namespace, each a new
    connection (so each goes through the NAT rules once)."""
    import socket
    out = []
    with netns.entered(NS):
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            t = time.perf_counter()
            s.connect((ip, port))
            out.append(time.perf_counter() - t)
            s.close()  # with linger 0: a RST, no TIME_WAIT piling up
    return statistics.median(out)


def latency(sizes: list[int], connects: int) -> list[tuple]:
    """(Services, direct, iptables (legacy), iptables (nft), nftables) connect medians."""
    from nsk.kernel import links
    netns.create(SERVER_NS)
    server = None
    try:
        with links.ipr(NS) as r:
            links.veth_into(r, "srv0", "eth0", SERVER_NS)
            links.address(r, "srv0", "10.250.0.1", 30)
            links.lo_up(r)
            links.route_add(r, "0.0.0.0/0", gateway="10.250.0.2")  # a ClusterIP needs a route before its DNAT
        with links.ipr(SERVER_NS) as r:
            links.address(r, "eth0", "10.250.0.2", 30)
            links.lo_up(r)
        with netns.entered(SERVER_NS):
            server = subprocess.Popen([sys.executable, "-c", SERVER])
        time.sleep(0.5)
        rows = []
        for n in sizes:
            sp = ports(n)
            last = sp[-1]
            sp[-1] = ServicePort(last.namespace, last.name, last.port_name, last.protocol, last.port, last.cluster_ip,
                                 endpoints=(Endpoint("10.250.0.2", 8080, "node-2"),))
            row = [n]
            empty()
            row.append(connect_times("10.250.0.2", 8080, connects))
            for which in ("legacy", "nft"):
                empty()
                iptables.restore(NS, ipt_rules.missing_jumps("") + ipt_rules.render(sp, CTX).text, which=which)
                row.append(connect_times(last.cluster_ip, 80, connects))
            empty()
            run(["nft", "-f", "-"], nft_rules.render(sp, CTX, CTX.service_cidr).text)
            row.append(connect_times(last.cluster_ip, 80, connects))
            rows.append(tuple(row))
            print(row, file=sys.stderr, flush=True)
        return rows
    finally:
        if server is not None:
            server.kill()
            server.wait()
        netns.remove(SERVER_NS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--latency", type=int, nargs="*", default=[], metavar="SERVICES",
                    help="measure a connect to the last of this many Services in each mode (e.g. 100 1000 10000)")
    ap.add_argument("--connects", type=int, default=2000)
    ap.add_argument("--no-sync", action="store_true", help="only the --latency part")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/proxy_modes.py needs root", file=sys.stderr)
        return 1
    netns.create(NS)
    rows, lat = [], []
    try:
        if args.latency:
            lat = latency(args.latency, args.connects)
        for n in [] if args.no_sync else args.services:
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
    print(f"\n{os.cpu_count()} cores; kernel {os.uname().release}")
    if lat:
        print(f"\nA TCP connect to the last Service, median of {args.connects}:\n")
        print("| Services | straight to the endpoint | iptables mode, legacy | iptables mode, nft backend | nftables mode |")
        print("|---:|---:|---:|---:|---:|")
        for n, d, leg, ipn, nf in lat:
            print(f"| {n:,} | {d * 1e6:.0f} µs | {leg * 1e6:.0f} µs | {ipn * 1e6:.0f} µs | {nf * 1e6:.0f} µs |")
    if not rows:
        return 0
    print(f"\nMedian of {args.repeat} full syncs, {args.changes} endpoint changes:\n")
    print("| Services × 2 endpoints | iptables mode, nft backend | iptables mode, legacy | nftables mode | "
          "bare `nft -f` | iptables (nft) / nftables | endpoint change: iptables (legacy) / nftables |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, m, ci, cn in rows:
        print(f"| {n:,} | {m['ipt-nft']:.2f} s | {m['ipt-legacy']:.2f} s | {m['nft']:.2f} s | {m['nft-bare']:.2f} s | "
              f"{m['ipt-nft'] / m['nft']:.1f}× | {ci * 1000:.0f} ms / {cn * 1000:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
