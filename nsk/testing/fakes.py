"""Recording fakes of the kernel adapter, for unit tests without root."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from nsk.errors import KernelError
from nsk.kernel import iptables
from nsk.kernel.process import ProcRef


@dataclass
class FakeProcess:
    ref: ProcRef
    box: object
    argv: list[str] | None
    target: object
    log_path: str
    read_fd: int
    write_fd: int
    code: int | None = None  # set when it ended


@dataclass
class FakeJob:
    error: KernelError | None
    fds: tuple = ()

    def done(self) -> bool:
        return True

    def result(self) -> None:
        if self.error is not None:
            raise self.error


@dataclass
class RecordingKernel:
    """Records every call; `fail` names operations that raise KernelError (once each, or
    always when the count is negative)."""

    calls: list[tuple] = field(default_factory=list)
    saved: dict[str, str] = field(default_factory=dict)  # namespace -> what iptables-save prints
    listeners: dict[tuple[str, int], int] = field(default_factory=dict)  # (netns, port) -> the loopback port
    fail: dict[str, int] = field(default_factory=dict)
    outputs: dict[tuple[str, str], str] = field(default_factory=dict)  # (netns, tool) -> what `output` returns
    procs: dict[tuple[str, str], str] = field(default_factory=dict)  # (netns, /proc name) -> what `proc` returns
    iptables_backend: str = "nft"
    etc_root: str = ""  # a test's tmp directory
    processes: dict[int, FakeProcess] = field(default_factory=dict)
    sandboxes: set[str] = field(default_factory=set)
    ignore_term: set[int] = field(default_factory=set)  # pids that outlive a SIGTERM
    _next_pid: int = 1000

    def close(self) -> None:
        for p in self.processes.values():
            for fd in (p.read_fd, p.write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass

    # ---- sandboxes and processes: a process is a pipe that becomes readable when it "ends"

    def pod_sandbox(self, node_netns: str, pod_netns: str, veth: str, ip: str, gateway: str) -> None:
        self.calls.append(("sandbox", node_netns, pod_netns, veth, ip, gateway))
        self._maybe_fail("create the Pod sandbox", pod_netns)
        self.sandboxes.add(pod_netns)

    def remove_sandbox(self, pod_netns: str) -> None:
        self.calls.append(("remove-sandbox", pod_netns))
        self.sandboxes.discard(pod_netns)

    def spawn(self, box, log_path, argv=None, cwd=None, target=None, comm="") -> ProcRef:
        self._maybe_fail("spawn", getattr(box, "netns", ""))
        self._next_pid += 1
        r, w = os.pipe()
        ref = ProcRef(self._next_pid, 1)
        self.processes[ref.pid] = FakeProcess(ref, box, argv, target, log_path, r, w)
        self.calls.append(("spawn", ref.pid, getattr(box, "netns", ""), tuple(argv) if argv else None))
        return ref

    def exit(self, pid: int, code: int) -> None:
        """The test's process ends with `code`: its pidfd becomes readable."""
        p = self.processes[pid]
        if p.code is None:
            p.code = code
            os.write(p.write_fd, b"x")

    def pidfd(self, ref: ProcRef) -> int | None:
        p = self.processes.get(ref.pid)
        return os.dup(p.read_fd) if p else None

    def alive(self, ref: ProcRef) -> bool:
        p = self.processes.get(ref.pid)
        return p is not None and p.code is None

    def exit_status(self, ref: ProcRef) -> int | None:
        p = self.processes.get(ref.pid)
        return None if p is None else p.code

    def stop(self, ref: ProcRef, grace: float) -> None:
        self.calls.append(("stop", ref.pid, grace))
        if ref.pid in self.processes:
            self.exit(ref.pid, 143)

    def terminate(self, ref: ProcRef) -> None:
        """SIGTERM: the process ends (143) unless the test made it ignore SIGTERM."""
        self.calls.append(("terminate", ref.pid))
        if ref.pid in self.processes and ref.pid not in self.ignore_term:
            self.exit(ref.pid, 143)

    def kill(self, ref: ProcRef) -> None:
        self.calls.append(("kill", ref.pid))
        if ref.pid in self.processes:
            self.exit(ref.pid, 137)

    def listen_socket(self, ns: str, port: int) -> socket.socket:
        """A real listener, on loopback and a free port (recorded with the one asked for)."""
        self.calls.append(("listen", ns, port))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        self.listeners[(ns, port)] = sock.getsockname()[1]
        return sock

    def kill_group(self, ref: ProcRef) -> None:
        self.calls.append(("kill-group", ref.pid))

    def running(self) -> list[FakeProcess]:
        return [p for p in self.processes.values() if p.code is None]

    def probe_socket(self, ns: str, host: str) -> socket.socket:
        """A socket of the test's own namespace: probes reach a server the test runs on 127.0.0.1."""
        self.calls.append(("probe-socket", ns))
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock

    def etc_dir(self, pod_netns: str) -> str:
        return os.path.join(self.etc_root, pod_netns)

    # ---- rules and routes

    def _maybe_fail(self, op: str, obj: str) -> None:
        left = self.fail.get(op, 0)
        if left:
            if left > 0:
                self.fail[op] = left - 1
            raise KernelError(obj, op, "EPERM", "injected by the test")

    def restore_start(self, jobs: list[tuple[str, str]], tool: str = "iptables-restore") -> "FakeJob":
        """A restore that has ended by the time it is returned (or fails then, if asked)."""
        self.calls.append(("restore", tuple(jobs)) if tool == "iptables-restore" else (tool, tuple(jobs)))
        self.restore_hook()
        try:
            self._maybe_fail(tool, ", ".join(ns for ns, _ in jobs))
        except KernelError as e:
            return FakeJob(e)
        return FakeJob(None)

    def restore_hook(self) -> None:
        """Called while a restore runs: a test's moment to make another write land."""

    def output(self, ns: str, argv: list[str]) -> str:
        self._maybe_fail("output", ns)
        self.calls.append(("output", ns, tuple(argv)))
        return self.outputs.get((ns, argv[0]), "")

    def proc(self, ns: str, name: str) -> str:
        self.calls.append(("proc", ns, name))
        return self.procs.get((ns, name), "")

    def save(self, ns: str, table: str | None = None, chains: list[tuple[str, str]] | None = None) -> str:
        self.calls.append(("save", ns, table) if chains is None else ("save-chains", ns, tuple(chains)))
        self._maybe_fail("iptables-save", ns)
        text = self.saved.get(ns, "")
        return text if chains is None else only_chains(text, chains)

    def nft(self, ns: str, text: str) -> None:
        self.calls.append(("nft", ns, text))

    def restore(self, ns: str, text: str) -> None:
        self.calls.append(("restore-now", ns, text))

    def nft_list(self, ns: str, table: str) -> str:
        self.calls.append(("nft-list", ns, table))
        return self.saved.get(ns, "")

    def conntrack_delete(self, ns: str, args: tuple[str, ...]) -> None:
        self.calls.append(("conntrack", ns, tuple(args)))
        self._maybe_fail("conntrack -D", ns)

    def router_routes(self, wire_netns: str, want: dict, have: dict) -> None:
        self.calls.append(("routes", wire_netns, dict(want)))
        self._maybe_fail("route replace", wire_netns)

    def ops(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]


def only_chains(saved: str, chains: list[tuple[str, str]]) -> str:
    """iptables-save text cut down to these (table, chain)s, as Kernel.save(chains=) reads them."""
    want, table, out = set(chains), "", {}
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and (table, line[1:].split()[0]) in want:
            out.setdefault(table, ([], []))[0].append(f"{line.split()[0]} - [0:0]")
        elif line.startswith("-A ") and (table, line.split()[1]) in want:
            out.setdefault(table, ([], []))[1].append(line)
    return iptables.save_text(out)
