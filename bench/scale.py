"""A big lab: S ClusterIP Services × E endpoints on 2 nodes (#17), and how nsk holds it.

Run as root: `.venv/bin/python bench/scale.py --services 100 1000 --endpoints 20`.
For each size, one cluster (named nskscale) is brought up and measured, then removed:

- `nsk up` wall time;
- idle: the CPU time every process of the cluster used (the control plane and everything
  it started: cluster DNS, the Pods' servers) over --idle seconds with nothing changing,
  as % of one core;
- a new Service live: from just before `nsk apply` of one more Service to the first
  successful `curl` of its name from a Pod (the Pod's own loop stamps the time), p50/p99
  of --samples, each a second after the last (kube-proxy's minSyncPeriod);
- a new endpoint everywhere: from `nsk scale` by one replica to the new Pod's address being
  in the rules of every Service on every node: the time of the last change of each node's
  rules (seen without reading them: the legacy table's entry count, or the nftables netlink
  group's messages) once a count of the Services' jumps to endpoints (in nftables mode: of
  the endpoint chains) finds them complete;
  --endpoint-samples scale-ups one after the other, their median.

Each size runs in each proxy mode (--modes): iptables with the nft backend a Debian host
has by default, iptables with legacy (spec.proxy.iptables.backend), and nftables. Prints a Markdown table for
docs/benchmarks.md, with the machine.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from nsk.proxy.provider import MIN_SYNC_PERIOD  # noqa: E402
NAME = "nskscale"
DEPLOY = """\
apiVersion: nsk.io/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec: {{proxy: {proxy}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {eps}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: nginx, ports: [{{containerPort: 80}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers: [{{name: c, image: x}}]
"""
SERVICE = """---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
"""


def nsk(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "nsk"), args[0], "--cluster", NAME, *args[1:]],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"nsk {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def tree_cpu(root: int) -> tuple[float, int]:
    """CPU seconds (user + system) of `root` and every process below it, now; how many."""
    parents, cpu = {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, procs = 0.0, 0
    for pid in cpu:
        p = pid
        while p and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += cpu[pid]
            procs += 1
    return total, procs


def control_plane_pid() -> int:
    from nsk.lifecycle import control_plane_pid as find
    from nsk.store import Store, cluster_dir
    store = Store(cluster_dir(NAME))
    try:
        ref, _ = find(store)
    finally:
        store.close()
    return ref.pid


def new_service_live(i: int) -> float:
    """Seconds from `nsk apply` of Service svc-new-<i> to a successful curl of its name."""
    name = f"svc-new-{i}"
    loop = ("while ! curl -s -o /dev/null --max-time 0.2 http://" + name + "/; do sleep 0.02; done; "
            "date +%s.%N")
    poller = subprocess.Popen([os.path.join(ROOT, ".venv", "bin", "nsk"), "exec", "client", "--cluster", NAME,
                               "--", "timeout", "60", "sh", "-c", loop], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)  # the loop runs (and fails) before the Service exists
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(SERVICE.format(name=name))
        f.flush()
        t0 = time.time()
        nsk("apply", "-f", f.name)
    out, _ = poller.communicate(timeout=90)
    return float(out.strip().splitlines()[-1]) - t0


class RulesWatch:
    """When a node's rules last changed, seen without reading them: iptables-restore on the
    legacy backend replaces the whole table, so a change shows in the table's entry count and
    size (IPT_SO_GET_INFO, a few bytes, polled every 2 ms); on nftables (and iptables-nft)
    every object a transaction changes is a message to the nftables netlink group, which is
    taken as a change and not decoded (`nft monitor` decodes each into text, and at 1,000
    Services fell minutes behind a sync of 30,000 rules). Reading the rules themselves while
    a restore runs would slow it: at 1,000 Services an iptables-save copies 80,000 entries
    under the lock the restore needs, and takes a core's worth on this 2-core machine."""

    def __init__(self, node: str, legacy: bool):
        import ctypes
        import threading
        from nsk.kernel import netns
        self.last = 0.0
        self.error: OSError | None = None
        self.netns = f"nsk_{NAME}_node_{node}"
        self._stop = False
        if legacy:
            with netns.entered(self.netns):
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self._libc = ctypes.CDLL(None, use_errno=True)
            self._buf = ctypes.create_string_buffer(b"nat", 84)  # struct ipt_getinfo, its name set
            target = self._poll
        else:
            with netns.entered(self.netns):
                self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
            self._sock.setsockopt(socket.SOL_SOCKET, 33, 1 << 22)  # SO_RCVBUFFORCE (root): past rmem_max
            self._sock.bind((0, 1 << (7 - 1)))  # the group NFNLGRP_NFTABLES
            self._sock.settimeout(0.2)
            target = self._read
        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def _info(self) -> bytes:
        import ctypes
        size = ctypes.c_uint(84)
        if self._libc.getsockopt(self._sock.fileno(), socket.IPPROTO_IP, 64, self._buf, ctypes.byref(size)):
            raise OSError(ctypes.get_errno(), "IPT_SO_GET_INFO")
        return self._buf.raw[76:84]  # num_entries, size

    def _poll(self) -> None:
        seen = self._info()
        while not self._stop:
            now = self._info()
            if now != seen:
                seen, self.last = now, time.time()
            time.sleep(0.002)

    def _read(self) -> None:
        while not self._stop:
            try:
                self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    self.error = e  # the waiting loop raises it
                    return
                # messages lost, which were changes too
            self.last = time.time()

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self._sock.close()


def new_endpoint_everywhere(services: int, replicas: int, mode: str) -> float:
    """Seconds from `nsk scale` by one to the new Pod's address in every Service's rules on both
    nodes: each Service that selects the Deployment has one endpoint more, so the node's count
    of KUBE-SVC jumps to KUBE-SEP chains (in nftables mode: of endpoint chains) grows by
    `services`. The time is that
    of the last change of the node's rules (RulesWatch) once they have settled (a second
    without change) and a count finds the rules complete."""
    if mode == "nftables":
        count = "nft list chains ip | grep -c 'chain endpoint-'"
    else:
        count = f"iptables-{mode.split('/')[1]}-save -t nat | grep -c -- '-j KUBE-SEP-'"  # the Services' jumps
    nodes = ("node-1", "node-2")
    want = {n: int(nsk("exec", f"node/{n}", "--", "sh", "-c", count).stdout.strip()) + services for n in nodes}
    watches = {n: RulesWatch(n, mode == "iptables/legacy") for n in nodes}
    done: dict[str, float] = {}
    try:
        t0 = time.time()
        nsk("scale", "deployment", "web", f"--replicas={replicas + 1}")
        while len(done) < len(nodes):
            time.sleep(0.2)
            if time.time() - t0 > 300:
                raise RuntimeError(f"the new endpoint is not in every rule on {sorted(set(nodes) - set(done))}")
            for n, w in watches.items():
                if w.error is not None:
                    raise w.error
                last = w.last
                if n in done or last < t0 or time.time() - last < 1.0:
                    continue
                if int(nsk("exec", f"node/{n}", "--", "sh", "-c", count).stdout.strip()) >= want[n] \
                        and w.last == last:
                    done[n] = last
    finally:
        for w in watches.values():
            w.close()
    return max(done.values()) - t0


def one_size(services: int, eps: int, idle: float, samples: int, mode: str, endpoint_samples: int) -> dict:
    proxy = "{mode: nftables}" if mode == "nftables" else f"{{iptables: {{backend: {mode.split('/')[1]}}}}}"
    text = DEPLOY.format(name=NAME, eps=eps, proxy=proxy) + "".join(SERVICE.format(name=f"svc-{i}") for i in range(services))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        t = time.perf_counter()
        nsk("up", f.name, "--timeout", "1200", timeout=1500)
        up = time.perf_counter() - t
    try:
        time.sleep(5)  # the first full syncs and DNS settle
        root = control_plane_pid()
        (c0, procs), t0 = tree_cpu(root), time.monotonic()
        time.sleep(idle)
        idle_cpu = 100 * (tree_cpu(root)[0] - c0) / (time.monotonic() - t0)
        live = []
        for i in range(samples):
            # each one a change after a quiet spell, as the target means it: a second apart,
            # kube-proxy's minSyncPeriod (back to back, they would measure its rate limit)
            time.sleep(MIN_SYNC_PERIOD)
            live.append(new_service_live(i))
        live.sort()
        # each scale-up by one: the Services, and the rules, have one endpoint more than before
        endpoint = [new_endpoint_everywhere(services + samples, eps + i, mode) for i in range(endpoint_samples)]
    finally:
        nsk("down", check=False)
    p99 = live[min(len(live) - 1, round(0.99 * (len(live) - 1)))]
    return {"mode": mode, "services": services, "eps": eps, "up": up, "idle": idle_cpu, "procs": procs, "live50": statistics.median(live),
            "live99": p99, "endpoint": endpoint}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--endpoints", type=int, default=20)
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle measured")
    ap.add_argument("--samples", type=int, default=20, help="new Services timed")
    ap.add_argument("--endpoint-samples", type=int, default=3, help="scale-ups by one timed, one after the other")
    ap.add_argument("--modes", nargs="+", default=["iptables/nft", "iptables/legacy", "nftables"],
                    choices=["iptables/nft", "iptables/legacy", "nftables"],
                    help="proxy modes compared (iptables with each backend: spec.proxy.iptables.backend)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/scale.py needs root", file=sys.stderr)
        return 1
    rows = [one_size(s, args.endpoints, args.idle, args.samples, m, args.endpoint_samples)
            for s in args.services for m in args.modes]
    print(f"\n{os.cpu_count()} cores; kernel {os.uname().release}\n")
    print("| Services × endpoints | proxy mode | `nsk up` | idle CPU (% of a core, processes) | new Service live p50 / p99 | "
          "new endpoint in every rule: median (each) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['services']} × {r['eps']} | {r['mode']} | {r['up']:.1f} s | {r['idle']:.2f} % ({r['procs']}) | "
              f"{r['live50']:.2f} s / {r['live99']:.2f} s | {statistics.median(r['endpoint']):.2f} s "
              f"({', '.join(f'{e:.2f}' for e in r['endpoint'])}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
