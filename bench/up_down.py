"""`nsk up` + `nsk down` wall time for N Pods on 2 nodes, beside Mininet creating N hosts and
beside the kernel floor.

Run as root: `make bench` (or `.venv/bin/python bench/up_down.py --pods 50 200 --repeat 3`).
Mininet 2.3 (Debian) runs `mn --topo single,N --switch lxbr --controller none --test none`
inside a throw-away network namespace (`unshare --net`), so its bridge and veths never
touch the host's root namespace. The kernel floor (SPEC §11) is the same node and Pod
namespaces, a bridge a node and a veth pair a Pod (the node end on the bridge, up; the
other end in the Pod's namespace), made by `ip -batch`: one call for the namespaces, one
per node for its bridge and veths; its namespaces are named nskperf_floor_* and removed
after each run. `--nodes` spreads the Pods over more nodes (a node's Pod range is a /24,
253 Pods: 1,000 Pods need at least 4). Prints a Markdown table for docs/benchmarks.md.

`--netlink` measures instead why a Pod's sandbox takes the raw rtnetlink path
(nsk/kernel/rtnl.py) rather than pyroute2: the time of one request both ways, and of a
whole sandbox both ways (pyroute2's request by request, as before, against
network.pod_sandbox), in throw-away namespaces named nskperf_nl_*, all removed at the end.
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
  nodes: [{nodes}]
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
    proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        raise subprocess.CalledProcessError(proc.returncode, args)
    return time.perf_counter() - t


def nsk_round(n: int, path: str) -> tuple[float, float]:
    nsk = [sys.executable, "-m", "nsk"]
    try:
        up = timed(nsk + ["up", path])
    except subprocess.CalledProcessError:
        # leave nothing behind for the next round (and the rest of the machine)
        subprocess.run(nsk + ["down", "--cluster", "bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=ROOT)
        raise
    down = timed(nsk + ["down", "--cluster", "bench"])
    return up, down


def mininet_round(n: int) -> float:
    return timed(["unshare", "--net", "--", "mn", "--topo", f"single,{n}", "--switch", "lxbr",
                  "--controller", "none", "--test", "none"])


def ip_batch(lines: list[str], *opts: str) -> None:
    subprocess.run(["ip", *opts, "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def floor_round(n: int, nodes: int) -> float:
    """The kernel floor for n Pods on `nodes` nodes: the wall time of the `ip -batch` calls."""
    node_ns = [f"nskperf_floor_node-{k + 1}" for k in range(nodes)]
    pod_ns = [f"nskperf_floor_pod_{i}" for i in range(n)]
    try:
        t = time.perf_counter()
        ip_batch([f"netns add {ns}" for ns in node_ns + pod_ns])
        for k, node in enumerate(node_ns):
            ip_batch(["link add cbr0 type bridge", "link set cbr0 up"]
                     + [f"link add veth{i:011x} master cbr0 up type veth peer name eth0 netns {pod_ns[i]}"
                        for i in range(k, n, nodes)], "-n", node)
        return time.perf_counter() - t
    finally:
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {ns}\n" for ns in node_ns + pod_ns),
                       text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def netlink_bench(pods: int, nodes: int, requests: int = 2000) -> None:
    """Per request and per sandbox: pyroute2 against nsk/kernel/rtnl.py (root; nskperf_nl_* only)."""
    sys.path.insert(0, ROOT)
    from pyroute2 import IPRoute

    from nsk.kernel import links, netns, network, rtnl

    def pyroute2_sandbox(node_route, bridge_index, pod_netns, veth, ip, gateway):
        """What network.pod_sandbox did before rtnl.py: seven pyroute2 requests."""
        netns.create(pod_netns)
        fd = os.open(netns.path(pod_netns), os.O_RDONLY)
        try:
            node_route.link("add", ifname=veth, kind="veth", master=bridge_index, state="up",
                            peer={"ifname": "eth0", "net_ns_fd": fd})
        finally:
            os.close(fd)
        with links.ipr(pod_netns) as r:
            r.link("set", index=1, state="up")
            idx = r.link("get", ifname="eth0")[0]["index"]
            r.link("set", index=idx, state="up")
            r.addr("add", index=idx, address=ip, prefixlen=32)
            links.route_add(r, f"{gateway}/32", oif=idx, scope=rtnl.RT_SCOPE_LINK)
            links.route_add(r, "0.0.0.0/0", gateway=gateway)

    made: list[str] = []
    rows = []
    try:
        ns = "nskperf_nl_req"
        made.append(ns)
        netns.create(ns)
        with netns.entered(ns):
            t = time.perf_counter()
            for _ in range(100):
                IPRoute(groups=0).close()
            open_p = (time.perf_counter() - t) / 100
            t = time.perf_counter()
            for _ in range(100):
                rtnl.Socket().close()
            open_r = (time.perf_counter() - t) / 100
            ipr, raw = IPRoute(groups=0), rtnl.Socket(ns)
        try:
            up = rtnl.link_up(1, "lo")
            t = time.perf_counter()
            for _ in range(requests):
                ipr.link("set", index=1, state="up")
            one_p = (time.perf_counter() - t) / requests
            t = time.perf_counter()
            for _ in range(requests):
                raw.transact([up])
            one_r = (time.perf_counter() - t) / requests
            t = time.perf_counter()
            for _ in range(requests // 6):
                raw.transact([up] * 6)
            batch_r = (time.perf_counter() - t) / (requests // 6 * 6)
        finally:
            ipr.close()
            raw.close()
        rows.append(f"| one request (`link set lo up`, {requests}×) | {one_p * 1e6:.0f} µs | {one_r * 1e6:.1f} µs "
                    f"(in batches of 6: {batch_r * 1e6:.1f} µs) |")
        rows.append(f"| open + close a socket | {open_p * 1e6:.0f} µs | {open_r * 1e6:.1f} µs |")
        per_pod = {}
        def pyroute2_node(node: str):
            route = links.open_route(node)
            return route, links.index(route, "cbr0")

        for label, fn, open_node in (("pyroute2", pyroute2_sandbox, pyroute2_node),
                                     ("rtnl", network.pod_sandbox, network.node_socket)):
            routes = []
            try:
                for k in range(nodes):
                    node = f"nskperf_nl_{label}_node{k}"
                    made.append(node)
                    netns.create(node)
                    with links.ipr(node) as r:
                        links.lo_up(r)
                        links.bridge(r, "cbr0", f"10.244.{k + 1}.1", 24)
                    routes.append(open_node(node))  # each path's own handle on the node
                times = []
                for i in range(pods):
                    k = i % nodes
                    pod = f"nskperf_nl_{label}_pod{i}"
                    made.append(pod)
                    t = time.perf_counter()
                    fn(routes[k][0], routes[k][1], pod, f"vnl{i:05d}", f"10.244.{k + 1}.{i // nodes + 2}",
                       f"10.244.{k + 1}.1")
                    times.append(time.perf_counter() - t)
            finally:
                for route, _ in routes:
                    route.close()
            per_pod[label] = statistics.median(times)
        rows.append(f"| a Pod's sandbox ({pods} Pods on {nodes} nodes, median) | {per_pod['pyroute2'] * 1e3:.2f} ms "
                    f"| {per_pod['rtnl'] * 1e3:.2f} ms |")
    finally:
        for name in reversed(made):
            netns.remove(name)
    print("| netlink | pyroute2 | nsk/kernel/rtnl.py |")
    print("|---|---:|---:|")
    print("\n".join(rows))
    print(f"\n{os.cpu_count()} cores; kernel {os.uname().release}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-mininet", action="store_true")
    ap.add_argument("--netlink", action="store_true", help="pyroute2 against the raw rtnetlink path, instead")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/up_down.py needs root", file=sys.stderr)
        return 1
    if args.netlink:
        netlink_bench(args.pods[-1], args.nodes)
        return 0
    have_mn = shutil.which("mn") is not None and not args.no_mininet
    nodes = ", ".join(f"{{name: node-{k + 1}}}" for k in range(args.nodes))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.pods:
            path = os.path.join(tmp, f"bench-{n}.yaml")
            with open(path, "w") as f:
                f.write(TOPOLOGY.format(n=n, nodes=nodes))
            ups, downs, mns, floors = [], [], [], []
            for _ in range(args.repeat):
                up, down = nsk_round(n, path)
                ups.append(up)
                downs.append(down)
                floors.append(floor_round(n, args.nodes))
                if have_mn:
                    mns.append(mininet_round(n))
            up, down, floor = statistics.median(ups), statistics.median(downs), statistics.median(floors)
            mn = f"{statistics.median(mns):.2f}" if mns else "-"
            rows.append(f"| {n} | {up:.2f} | {up / n * 1000:.1f} | {down:.2f} | {up + down:.2f} | {mn} "
                        f"| {floor:.2f} | {up / floor:.1f}× |")
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"| Pods ({args.nodes} nodes) | nsk up (s) | per Pod (ms) | nsk down (s) | nsk up + down (s) "
          "| Mininet up + down (s) | kernel floor up (s) | nsk up / floor |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\nmedian of {args.repeat} runs; {os.cpu_count()} cores; kernel {os.uname().release}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
