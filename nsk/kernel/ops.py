"""The kernel operations the control plane's parts need, as one object passed in.

Controllers, kubelets and proxy backends get a `Kernel` instead of calling kernel modules
directly, so they run against `nsk.testing.fakes.RecordingKernel` in unit tests, without
root. Every failure comes out as one error type, KernelError: the object it was for, the
operation, the errno name and what to do next.
"""

from __future__ import annotations

import errno as errno_mod
import os
import shutil
import socket
import subprocess
from typing import Callable

from nsk.errors import KernelError, NskError
from nsk.kernel import iptables, netns, network, process
from nsk.kernel.process import ProcRef, Sandbox


def _nft() -> str:
    exe = shutil.which("nft")
    if exe is None:
        raise NskError("nft is not installed (apt-get install nftables; `make install` does it)")
    return exe


def _errno_name(e: BaseException) -> str:
    code = getattr(e, "errno", None) or getattr(e, "code", None)
    if isinstance(code, int) and code in errno_mod.errorcode:
        return errno_mod.errorcode[code]
    return type(e).__name__


class Kernel:
    """The real kernel (root)."""

    etc_root = netns.ETC_DIR  # where a Pod's resolv.conf and hosts live, as `ip netns exec` expects

    def __init__(self, iptables_backend: str = "", run_dir: str = ""):
        """`iptables_backend`: 'nft' or 'legacy' for every iptables tool of the cluster; '' the host's.
        `run_dir`: the cluster's run directory, which holds each node's own xtables lock ('': the
        host's lock)."""
        self._nodes: dict[str, tuple[object, int]] = {}  # node netns -> (rtnetlink socket, cbr0's index)
        self.iptables_backend = iptables_backend or iptables.backend()
        self.run_dir = run_dir
        if run_dir:
            os.makedirs(os.path.join(run_dir, iptables.LOCK_DIR), exist_ok=True)

    def close(self) -> None:
        for route, _ in self._nodes.values():
            route.close()
        self._nodes.clear()

    # ---- Pod sandboxes --------------------------------------------------------------------

    def pod_sandbox(self, node_netns: str, pod_netns: str, veth: str, ip: str, gateway: str) -> None:
        """The Pod's network namespace wired to its node's bridge (network.pod_sandbox)."""
        try:
            if node_netns not in self._nodes:
                self._nodes[node_netns] = network.node_socket(node_netns)
            node, bridge = self._nodes[node_netns]
            network.pod_sandbox(node, bridge, pod_netns, veth, ip, gateway)
        except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError is not an OSError
            raise KernelError(pod_netns, "create the Pod sandbox", _errno_name(e), str(e),
                              "the kubelet removes what was made and tries again on its next sync") from e

    def remove_sandbox(self, pod_netns: str) -> None:
        """Stop whatever still runs in the Pod's namespace (a command's children) and remove it."""
        ino = netns.inode(pod_netns)
        if ino is not None:
            for pid in process.in_netns(ino):
                st = process.start_time(pid)
                if st is not None:
                    process.kill(ProcRef(pid, st))
        try:
            netns.remove(pod_netns)
        except OSError as e:
            raise KernelError(pod_netns, "remove the network namespace", _errno_name(e), str(e),
                              "`nsk down` removes it with the cluster") from e

    # ---- processes ------------------------------------------------------------------------

    def spawn(self, box: Sandbox, log_path: str, argv: list[str] | None = None, cwd: str | None = None,
              target: Callable[[], None] | None = None, comm: str = "") -> ProcRef:
        return process.spawn(box, log_path, argv=argv, cwd=cwd, target=target, comm=comm)

    def pidfd(self, ref: ProcRef) -> int | None:
        return process.pidfd(ref.pid)

    def alive(self, ref: ProcRef) -> bool:
        return process.alive(ref)

    def exit_status(self, ref: ProcRef) -> int | None:
        return process.exit_status(ref.pid)

    def stop(self, ref: ProcRef, grace: float) -> None:
        process.stop(ref, grace)

    def terminate(self, ref: ProcRef) -> None:
        process.terminate(ref)

    def kill(self, ref: ProcRef) -> None:
        process.kill(ref)

    def kill_group(self, ref: ProcRef) -> None:
        process.kill_group(ref)

    def probe_socket(self, ns: str, host: str) -> socket.socket:
        """A non-blocking TCP socket of the namespace `ns` for `host`'s family (kubelet probes from the node)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with netns.entered(ns):
            sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock

    def listen_socket(self, ns: str, port: int) -> socket.socket:
        """A non-blocking TCP socket listening on every address of namespace `ns` (kube-proxy's health server)."""
        with netns.entered(ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def etc_dir(self, pod_netns: str) -> str:
        return os.path.join(self.etc_root, pod_netns)

    # ---- rules and routes -----------------------------------------------------------------

    def restore_start(self, jobs: list[tuple[str, str]], tool: str = "iptables-restore") -> "Job":
        """Each (namespace, text) loaded in the background, side by side: by `iptables-restore
        --noflush`, with tool "nft" by `nft -f -` (one transaction a namespace), with tool
        "sh" by `sh -e` (a script of several tools, stopping at the first that fails)."""
        where = ", ".join(ns for ns, _ in jobs)
        try:
            if tool == "nft":
                return Job(iptables.RestoreJob(jobs, argv=[_nft(), "-f", "-"], name="nft"), where, tool)
            if tool == "sh":  # IPVS mode: ip, ipset, ipvsadm and iptables-restore, in that order
                return Job(iptables.RestoreJob(jobs, argv=["/bin/sh", "-e"], name="sh", run_dir=self.run_dir),
                           where, tool)
            return Job(iptables.RestoreJob(jobs, which=self.iptables_backend, run_dir=self.run_dir), where, tool)
        except (NskError, OSError) as e:
            raise KernelError(where, tool, _errno_name(e), str(e)) from e

    def nft(self, ns: str, text: str) -> None:
        """`nft -f -` of a small transaction inside namespace `ns`, waited for."""
        self.output(ns, [_nft(), "-f", "-"], text)

    def restore(self, ns: str, text: str) -> None:
        """`iptables-restore --noflush` of a small text inside namespace `ns`, waited for."""
        try:
            iptables.restore(ns, text, which=self.iptables_backend, run_dir=self.run_dir)
        except (NskError, OSError) as e:
            raise KernelError(ns, "iptables-restore", _errno_name(e), str(e)) from e

    def nft_list(self, ns: str, table: str) -> str:
        """`nft list table <table>` inside namespace `ns` ("" when there is no such table)."""
        try:
            return self.output(ns, [_nft(), "list", "table", *table.split()])
        except KernelError as e:
            if "No such file or directory" in e.detail:
                return ""
            raise

    def output(self, ns: str, argv: list[str], stdin: str | None = None) -> str:
        """What a command run inside namespace `ns` prints (a tool reading the kernel's
        state: `ipvsadm -S -n`, `ipset save`; `nft -f -` with `stdin`); KernelError when it fails."""
        name = " ".join([os.path.basename(argv[0]), *argv[1:2]])
        try:
            with netns.entered(ns):
                proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            raise KernelError(ns, name, _errno_name(e), str(e)) from e
        if proc.returncode != 0:
            raise KernelError(ns, name, "EINVAL", proc.stderr.strip())
        return proc.stdout

    def proc(self, ns: str, name: str) -> str:
        """A file of /proc as namespace `ns` shows it (`net/ip_vs`), read in this thread: no
        process is started, nothing waits."""
        try:
            with netns.entered(ns):
                with open(f"/proc/thread-self/{name}") as f:
                    return f.read()
        except OSError as e:
            raise KernelError(ns, f"read /proc/{name}", _errno_name(e), str(e)) from e

    def save(self, ns: str, table: str | None = None, chains: list[tuple[str, str]] | None = None) -> str:
        """What iptables-save prints in namespace `ns` (of `table`); with `chains`, of those
        (table, chain)s alone, each that exists (a few milliseconds, where a whole save of
        the nf_tables backend reads every rule)."""
        try:
            if chains is not None:
                return iptables.save_chains(ns, chains, self.iptables_backend, self.run_dir)
            return iptables.save(ns, table, self.iptables_backend)
        except (NskError, OSError) as e:
            raise KernelError(ns, "iptables-save", _errno_name(e), str(e)) from e

    def conntrack_delete(self, ns: str, args: tuple[str, ...]) -> None:
        try:
            iptables.conntrack_delete(ns, *args)
        except (OSError, subprocess.SubprocessError) as e:
            raise KernelError(ns, "conntrack -D", _errno_name(e), str(e)) from e

    def router_routes(self, wire_netns: str, want: dict, have: dict) -> None:
        try:
            network.router_routes(wire_netns, want, have)
        except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError is not an OSError
            raise KernelError(wire_netns, "route replace", _errno_name(e), str(e),
                              "the routes are made again on the next sync") from e


class Job:
    """Kernel work in the background: `fds` become readable as it ends; `done()` says
    whether it has; `result()` raises KernelError if it failed."""

    def __init__(self, job: iptables.RestoreJob, obj: str, tool: str = "iptables-restore"):
        self._job, self.obj, self.tool = job, obj, tool
        self.fds = list(job.pidfds)

    def done(self) -> bool:
        return self._job.poll()

    def result(self) -> None:
        errors = self._job.errors()
        self._job.close()
        if errors:
            raise KernelError(self.obj, self.tool, "EINVAL", "; ".join(errors),
                              "every chain is written again on the next sync")
