"""Health check node ports: kube-proxy's service health server on each node, and the
emulated cloud load balancer that asks it (pkg/proxy/healthcheck).

A LoadBalancer Service with `externalTrafficPolicy: Local` gets a `healthCheckNodePort`.
On every node kube-proxy listens there and answers HTTP: 200 with the number of the
Service's ready endpoints on that node, or 503 when it has none. A cloud load balancer
checks each node that way and sends the Service's traffic only to nodes that answer 200,
so no client is sent to a node that would drop it. Here the "cloud" is the wire
namespace's router: the checks go from there to each node's address, as real packets.

Both sides run in the control plane's loop, on non-blocking sockets in the nodes' and the
router's namespaces: nothing a client sends (or fails to send) can stall or end the loop.
"""

from __future__ import annotations

import json
import selectors
import socket
from dataclasses import dataclass, field
from typing import Callable

from nsk.proxy.model import ServicePort

MAX_REQUEST = 4096  # bytes of a request read before answering
CONNECTION_TIMEOUT = 5.0  # seconds a connection may stay open
CHECK_INTERVAL = 2.0  # seconds between a cloud load balancer's checks of a node
CHECK_TIMEOUT = 1.0


def local_ready(sp: ServicePort, node: str) -> int:
    """kube-proxy's count for a node: the Service's ready endpoints there."""
    return sum(1 for e in sp.endpoints if e.ready and e.node == node)


PROXY_HEALTHZ_PORT = 10256  # kube-proxy's healthzBindAddress, on every node
_PROXY = ("", "")  # a listener's service key: kube-proxy's own /healthz and /livez


def _rfc3339(t: float) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def proxy_healthz(request: bytes, healthy: bool, last_updated: float, now: float) -> bytes:
    """kube-proxy's /healthz and /livez: 200 while its last sync is good, else 503, with
    when it last brought the rules up to date."""
    path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
    path = path.split(b"?")[0]
    if path not in (b"/healthz", b"/livez"):
        body, status = "404 page not found\n", "404 Not Found"
        ctype = "text/plain; charset=utf-8"
    else:
        doc = {"lastUpdated": _rfc3339(last_updated), "currentTime": _rfc3339(now)}
        if path == b"/healthz":
            doc["nodeEligible"] = True
        body, status = json.dumps(doc), "200 OK" if healthy else "503 Service Unavailable"
        ctype = "application/json"
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nX-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()


def response(namespace: str, name: str, count: int) -> bytes:
    """kube-proxy's answer, headers and body as its healthcheck server writes them."""
    body = json.dumps({"service": {"namespace": namespace, "name": name}, "localEndpoints": count,
                       "serviceProxyHealthy": True}, indent="\t")
    status = "200 OK" if count else "503 Service Unavailable"
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
            f"X-Load-Balancing-Endpoint-Weight: {count}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body.encode()


@dataclass
class _Listener:
    sock: socket.socket
    service: tuple[str, str]  # (namespace, name)
    count: int = 0


@dataclass
class _Conn:
    sock: socket.socket
    answer: Callable[[bytes], bytes]  # the request -> the response
    deadline: float
    data: bytes = b""


@dataclass
class HealthServer:
    """Every node's health check listeners; `sync` opens and closes them and updates the
    counts, `expire` drops connections that outstay CONNECTION_TIMEOUT."""

    listen: Callable[[str, int], socket.socket]  # (node netns, port) -> a listening, non-blocking socket
    watch: Callable[[int, Callable[[], None]], None]
    unwatch: Callable[[int], None]
    clock: Callable[[], float]
    # kube-proxy's own state for its /healthz on PROXY_HEALTHZ_PORT: (healthy, last sync, wall time)
    proxy_state: Callable[[], tuple[bool, float]] | None = None
    listeners: dict[tuple[str, int], _Listener] = field(default_factory=dict)  # (netns, port)
    conns: dict[int, _Conn] = field(default_factory=dict)

    def sync(self, ports: list[ServicePort], nodes: dict[str, str]) -> list[str]:
        """`nodes`: node name -> netns. Returns what failed to open (a port in use, say)."""
        want: dict[tuple[str, int], tuple[tuple[str, str], int]] = {}
        for sp in ports:
            if sp.health_check_node_port:
                for node, ns in nodes.items():
                    k = (ns, sp.health_check_node_port)
                    count = want.get(k, ((sp.namespace, sp.name), 0))[1] + local_ready(sp, node)
                    want[k] = ((sp.namespace, sp.name), count)
        if self.proxy_state is not None:
            for ns in nodes.values():
                want.setdefault((ns, PROXY_HEALTHZ_PORT), (_PROXY, 0))
        for k in [k for k in self.listeners if k not in want or self.listeners[k].service != want[k][0]]:
            lst = self.listeners.pop(k)
            self.unwatch(lst.sock.fileno())
            lst.sock.close()
        failed = []
        for k, (service, count) in want.items():
            lst = self.listeners.get(k)
            if lst is None:
                try:
                    sock = self.listen(*k)
                except OSError as e:
                    failed.append(f"health check node port {k[1]} of {service[0]}/{service[1]} in {k[0]}: {e}")
                    continue
                lst = self.listeners[k] = _Listener(sock, service)
                self.watch(sock.fileno(), lambda lst_=lst: self._accept(lst_))
            lst.count = count
        return failed

    def _accept(self, lst: _Listener) -> None:
        for _ in range(64):  # what is waiting, bounded per wake-up
            try:
                conn, _ = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(False)
            c = _Conn(conn, lambda data, lst_=lst: self._answer(lst_, data), self.clock() + CONNECTION_TIMEOUT)
            self.conns[conn.fileno()] = c
            self.watch(conn.fileno(), lambda c_=c: self._read(c_))

    def _answer(self, lst: _Listener, request: bytes) -> bytes:
        if lst.service == _PROXY and self.proxy_state is not None:
            import time
            healthy, last = self.proxy_state()
            return proxy_healthz(request, healthy, last, time.time())
        return response(*lst.service, lst.count)

    def _read(self, c: _Conn) -> None:
        try:
            chunk = c.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        c.data += chunk
        if chunk and b"\r\n\r\n" not in c.data and len(c.data) < MAX_REQUEST:
            return  # more of the request to come
        if chunk:
            try:
                c.sock.send(c.answer(c.data))  # small: it fits the socket's buffer at once
            except OSError:
                pass
        self._close(c)

    def _close(self, c: _Conn) -> None:
        fd = c.sock.fileno()
        if self.conns.pop(fd, None) is not None:
            self.unwatch(fd)
        c.sock.close()

    def expire(self) -> None:
        now = self.clock()
        for c in [c for c in self.conns.values() if c.deadline <= now]:
            self._close(c)

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._close(c)
        self.sync([], {})


@dataclass
class _Check:
    sock: socket.socket
    key: tuple[str, int, str]  # (node IP, port, node)
    deadline: float
    data: bytes = b""


def health_check_ports(ports: list[ServicePort]) -> list[int]:
    return sorted({sp.health_check_node_port for sp in ports if sp.health_check_node_port})


@dataclass
class CloudChecks:
    """The emulated cloud load balancer's health checks: every CHECK_INTERVAL, an HTTP GET
    from the router's namespace to each node's health check node port; `healthy(port)` is
    the nodes whose last answer was 200."""

    connect: Callable[[str, int], socket.socket]  # (address, port) -> a non-blocking socket, connecting
    watch: Callable[..., None]  # (fd, callback, events)
    unwatch: Callable[[int], None]
    clock: Callable[[], float]
    on_change: Callable[[], None] = lambda: None
    results: dict[tuple[str, int], bool] = field(default_factory=dict)  # (node, port) -> last answer was 200
    checks: dict[int, _Check] = field(default_factory=dict)
    next_round: float = 0.0

    def tick(self, hc: list[int], nodes: dict[str, str]) -> float | None:
        """`hc`: the health check node ports (health_check_ports of the ServicePorts, made
        once a services pass: this runs on every turn of the loop); `nodes`: node name -> IP.
        Starts a round when one is due; the next deadline."""
        now = self.clock()
        for c in [c for c in self.checks.values() if c.deadline <= now]:
            self._done(c, False)
        stale = [k for k in self.results if k[1] not in hc or k[0] not in nodes]
        for k in stale:
            del self.results[k]
        if not hc:
            return None
        if now >= self.next_round:
            self.next_round = now + CHECK_INTERVAL
            busy = {c.key for c in self.checks.values()}
            for port in hc:
                for node, ip in nodes.items():
                    if (ip, port, node) in busy:
                        continue
                    try:
                        sock = self.connect(ip, port)
                    except OSError:
                        self._set((node, port), False)
                        continue
                    c = _Check(sock, (ip, port, node), now + CHECK_TIMEOUT)
                    self.checks[sock.fileno()] = c
                    self.watch(sock.fileno(), lambda c_=c: self._step(c_), selectors.EVENT_WRITE)
        return min([self.next_round] + [c.deadline for c in self.checks.values()])

    def _step(self, c: _Check) -> None:
        if not c.data:  # connected (or refused): ask, then wait for the answer
            try:
                c.sock.send(f"GET / HTTP/1.1\r\nHost: {c.key[0]}:{c.key[1]}\r\nConnection: close\r\n\r\n".encode())
            except BlockingIOError:
                return
            except OSError:
                self._done(c, False)
                return
            c.data = b"-"
            self.unwatch(c.sock.fileno())
            self.watch(c.sock.fileno(), lambda c_=c: self._step(c_), selectors.EVENT_READ)
            return
        try:
            chunk = c.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        c.data += chunk
        if chunk and b"\r\n" not in c.data[1:]:
            return
        self._done(c, c.data[1:].startswith(b"HTTP/1.1 200") or c.data[1:].startswith(b"HTTP/1.0 200"))

    def _done(self, c: _Check, ok: bool) -> None:
        fd = c.sock.fileno()
        if self.checks.pop(fd, None) is not None:
            self.unwatch(fd)
        c.sock.close()
        self._set((c.key[2], c.key[1]), ok)

    def _set(self, k: tuple[str, int], ok: bool) -> None:
        if self.results.get(k) != ok:
            self.results[k] = ok
            self.on_change()

    def healthy(self, port: int) -> set[str] | None:
        """The nodes that passed their last check on `port`; None before any answer."""
        got = {node for (node, p), ok in self.results.items() if p == port and ok}
        return got if any(p == port for _, p in self.results) else None

    def close(self) -> None:
        for c in list(self.checks.values()):
            fd = c.sock.fileno()
            self.checks.pop(fd, None)
            self.unwatch(fd)
            c.sock.close()
