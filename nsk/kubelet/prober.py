"""Readiness and liveness probes (httpGet, tcpSocket, exec), run the way kubelet runs
them: from the node, every periodSeconds, counting successThreshold/failureThreshold.

Nothing blocks the control plane's loop: a TCP or HTTP probe is a non-blocking socket
opened in the node's namespace and watched by the selector; an exec probe is a process
forked into the Pod and watched by its pidfd. A probe that outlives timeoutSeconds fails.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from nsk.kernel.process import ProcRef, Sandbox

FIRST_PROBE = 0.3  # seconds after a start at the earliest: the container needs a moment to listen


@dataclass
class ProbeState:
    kind: str  # "readiness" or "liveness"
    spec: dict
    container: str
    next_at: float
    successes: int = 0
    failures: int = 0
    ok: bool = False
    deadline: float = 0.0
    sock: socket.socket | None = None
    proc: ProcRef | None = None
    pidfd: int | None = None
    buf: bytes = b""
    last_message: str = ""
    pending: dict = field(default_factory=dict)


def _delay(spec: dict) -> float:
    return max(FIRST_PROBE, spec.get("initialDelaySeconds", 0))


def resolve_port(port: int | str, container: dict) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    return int(port) if str(port).isdigit() else None


class Prober:
    """The probes of one Pod's containers."""

    def __init__(self, node_netns: str, pod_ip: str, containers: list[dict], sandbox: Sandbox, kernel,
                 watch: Callable, unwatch: Callable, on_change: Callable[[str, str, bool], None]):
        self.node_netns, self.pod_ip, self.sandbox, self.kernel = node_netns, pod_ip, sandbox, kernel
        self.watch, self.unwatch, self.on_change = watch, unwatch, on_change
        self.containers = {c["name"]: c for c in containers}
        self.states: list[ProbeState] = []
        now = time.monotonic()
        for c in containers:
            for kind in ("readiness", "liveness"):
                spec = c.get(f"{kind}Probe")
                if spec:
                    self.states.append(ProbeState(kind, spec, c["name"], now + _delay(spec), ok=kind == "liveness"))

    def ready(self, container: str) -> bool:
        return all(s.ok for s in self.states if s.kind == "readiness" and s.container == container)

    def reset(self, container: str) -> None:
        """A restarted container starts unready and probes again after its initial delay."""
        now = time.monotonic()
        for s in self.states:
            if s.container == container:
                self._finish(s)
                s.successes = s.failures = 0
                s.ok = s.kind == "liveness"
                s.next_at = now + _delay(s.spec)

    def close(self) -> None:
        for s in self.states:
            self._finish(s)

    # ---- scheduling -------------------------------------------------------------------

    def tick(self, now: float, running: Callable[[str], bool]) -> float | None:
        """Start due probes, time out late ones; the next time to be called."""
        nxt = None
        for s in self.states:
            if s.deadline and now >= s.deadline:
                self._result(s, False, f"probe timed out after {s.spec['timeoutSeconds']}s")
            if not s.deadline and now >= s.next_at and running(s.container):
                self._start(s, now)
            t = s.deadline or s.next_at
            nxt = t if nxt is None else min(nxt, t)
        return nxt

    def stalled(self, seconds: float) -> None:
        """The control loop was busy for `seconds` (a pass of Pod starts): the probes under
        way get that much more time, as kubelet's, each in a goroutine of its own, would
        not have lost it. A probe is judged on how the container answered, not on when the
        loop could look."""
        for s in self.states:
            if s.deadline:
                s.deadline += seconds

    def _start(self, s: ProbeState, now: float) -> None:
        s.deadline = now + s.spec["timeoutSeconds"]
        s.next_at = now + s.spec["periodSeconds"]
        c = self.containers[s.container]
        if s.spec.get("exec"):
            s.proc = self.kernel.spawn(self.sandbox, "/dev/null", argv=list(s.spec["exec"]["command"]))
            s.pidfd = self.kernel.pidfd(s.proc)
            if s.pidfd is None:
                self._result(s, False, "probe process vanished")
                return
            self.watch(s.pidfd, lambda: self._exec_done(s))
            return
        action = s.spec.get("httpGet") or s.spec.get("tcpSocket")
        port = resolve_port(action["port"], c)
        if port is None:
            self._result(s, False, f"port {action['port']} is not a port of container {s.container}")
            return
        host = action.get("host") or self.pod_ip
        sock = self.kernel.probe_socket(self.node_netns, host)  # kubelet probes from the node
        err = sock.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._result(s, False, f"dial tcp {host}:{port}: {os.strerror(err)}")
            return
        s.sock, s.buf = sock, b""
        s.pending = {"host": host, "port": port}
        self.watch(sock.fileno(), lambda: self._connected(s), selectors.EVENT_WRITE)

    def _connected(self, s: ProbeState) -> None:
        sock = s.sock
        if sock is None:
            return
        self.unwatch(sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        where = f"{s.pending['host']}:{s.pending['port']}"
        if err:
            self._result(s, False, f"dial tcp {where}: {os.strerror(err)}")
            return
        if not s.spec.get("httpGet"):
            self._result(s, True, "")
            return
        path = s.spec["httpGet"].get("path", "/")
        try:
            sock.send(f"GET {path} HTTP/1.0\r\nHost: {where}\r\nUser-Agent: kube-probe/nsk\r\n\r\n".encode())
        except OSError as e:
            self._result(s, False, f"Get http://{where}{path}: {e.strerror}")
            return
        self.watch(sock.fileno(), lambda: self._http_read(s))

    def _http_read(self, s: ProbeState) -> None:
        if s.sock is None:
            return
        try:
            chunk = s.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as e:
            self._result(s, False, f"HTTP probe failed: {e.strerror}")
            return
        s.buf += chunk
        if b"\r\n" not in s.buf and chunk:
            return
        line = s.buf.split(b"\r\n", 1)[0].decode(errors="replace").split()
        code = int(line[1]) if len(line) > 1 and line[1].isdigit() else 0
        self._result(s, 200 <= code < 400, f"HTTP probe failed with statuscode: {code}")

    def _exec_done(self, s: ProbeState) -> None:
        if s.proc is None:
            return
        code = self.kernel.exit_status(s.proc)
        self._result(s, code == 0, f"command {s.spec['exec']['command']} exited with {code}")

    # ---- results ----------------------------------------------------------------------

    def _finish(self, s: ProbeState) -> None:
        if s.sock is not None:
            self.unwatch(s.sock.fileno())
            s.sock.close()
            s.sock = None
        if s.pidfd is not None:
            self.unwatch(s.pidfd)
            os.close(s.pidfd)
            s.pidfd = None
        if s.proc is not None:
            self.kernel.kill(s.proc)
            self.kernel.exit_status(s.proc)
            s.proc = None
        s.deadline = 0.0

    def _result(self, s: ProbeState, ok: bool, message: str) -> None:
        self._finish(s)
        s.last_message = "" if ok else message
        if ok:
            s.successes, s.failures = s.successes + 1, 0
            if not s.ok and s.successes >= s.spec["successThreshold"]:
                s.ok = True
                self.on_change(s.kind, s.container, True)
        else:
            s.failures, s.successes = s.failures + 1, 0
            if s.failures == s.spec["failureThreshold"] and not s.ok and s.kind == "readiness":
                self.on_change(s.kind, s.container, False)  # never ready yet: say so once a streak
            elif s.failures >= s.spec["failureThreshold"] and s.ok:
                s.ok = s.kind == "liveness"  # a failed liveness probe restarts; reset() follows
                s.failures = 0 if s.kind == "liveness" else s.failures
                self.on_change(s.kind, s.container, False)
