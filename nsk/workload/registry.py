"""What a container without a `command` runs: an image name maps to a typed entry point
(the kubelet knows none of them by name). A container *with* a command runs that program.

An entry point is built in the control plane from a WorkloadContext and returns either
the function the forked Pod process runs, or a command line to exec. A workload that
opens the store (cluster DNS, later the ingress controller) must be exec'd: a fork would
carry the control plane's SQLite state into it. Adding a workload (the ingress controller,
a node agent) is one `register` call.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from nsk.api.cluster import ClusterConfig


@dataclass(frozen=True)
class WorkloadContext:
    """What a built-in workload may know of where it runs."""

    cluster: ClusterConfig
    run_dir: str  # the cluster's /run/nsk/<cluster> (its store, watch sockets)
    namespace: str
    pod: str
    node: str
    pod_ip: str
    container: dict  # the container's spec

    def ports(self, protocol: str) -> list[int]:
        return [p["containerPort"] for p in self.container.get("ports") or [] if p.get("protocol") == protocol]


EntryPoint = Callable[[WorkloadContext], "Callable[[], None] | list[str]"]
_IMAGES: dict[str, EntryPoint] = {}


def register(image: str, entry: EntryPoint) -> None:
    _IMAGES[image] = entry


def entry_point(image: str) -> EntryPoint:
    """The entry point of an image (its name without tag or digest); any other image runs
    the built-in server, as SPEC §3 says."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return _IMAGES.get(name, _builtin_server)


def _builtin_server(ctx: WorkloadContext) -> Callable[[], None]:
    from nsk.workload import server
    tcp, udp = ctx.ports("TCP"), ctx.ports("UDP")
    if not tcp and not udp:
        tcp = [80]
    info = server.PodInfo(ctx.pod, ctx.namespace, ctx.node, ctx.pod_ip)
    return lambda: server.serve(info, tcp, udp)


def _cluster_dns(ctx: WorkloadContext) -> list[str]:
    cfg = ctx.cluster
    return [sys.executable, "-m", "nsk.dns.server", "--run-dir", ctx.run_dir, "--domain", cfg.cluster_domain,
            "--dns-ip", cfg.dns_cluster_ip, "--ttl", str(cfg.dns_ttl), "--upstream", ",".join(cfg.dns_upstream),
            "--name", f"{ctx.namespace}_{ctx.pod}"]


def _kube_proxy(ctx: WorkloadContext) -> Callable[[], None]:
    """A node's kube-proxy Pod, as on a kubeadm cluster (hostNetwork: in the node's
    namespace). The node's rules are written by the control plane, which is this node's
    kube-proxy for them; in userspace mode this process is the proxy itself: it listens on
    the proxy ports of the table the control plane hands it (nsk/proxy/userspace.py)."""
    def run() -> None:
        import signal
        from nsk.proxy import userspace
        print(f"kube-proxy of node {ctx.node}: its rules are written by the nsk control plane in the mode of "
              f"kube-system/kube-proxy's config.conf; `nsk rules --node {ctx.node}` shows them; in userspace "
              "mode this process is the proxy", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        userspace.UserspaceProxy(*userspace.paths(ctx.run_dir, ctx.node)).run()
    return run


register("nsk/dns", _cluster_dns)
register("registry.k8s.io/kube-proxy", _kube_proxy)
