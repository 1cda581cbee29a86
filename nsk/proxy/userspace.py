"""kube-proxy's userspace mode, the historical one (removed in Kubernetes 1.26), as v1.25
built it (pkg/proxy/userspace).

Every Service port gets a proxy socket on each node: a port of the node's kube-proxy
process, listening on all the node's addresses. The node's nat table sends a Service's
traffic there:

    PREROUTING -> KUBE-PORTALS-CONTAINER   ClusterIP/externalIP/LB IP:port  REDIRECT --to-ports P
    OUTPUT     -> KUBE-PORTALS-HOST        the same, from the node itself   DNAT --to-destination nodeIP:P
    PREROUTING -> KUBE-NODEPORT-CONTAINER  dst LOCAL, nodePort              REDIRECT --to-ports P
    OUTPUT     -> KUBE-NODEPORT-HOST       dst LOCAL, nodePort              DNAT --to-destination nodeIP:P
    INPUT      -> KUBE-NODEPORT-NON-LOCAL  (filter) NEW to P                ACCEPT

and the process picks an endpoint (round robin over a shuffled list, ClientIP affinity)
and copies the bytes: the endpoint sees the node as the source. When an endpoint refuses,
the next is tried (4 tries, 250 ms, 500 ms, 1 s, 2 s), so a client never sees a dead Pod.
UDP: one backend socket per client, closed after 250 ms idle.

Here the control plane owns the rules and the proxy ports (this module's `render` and
`allocate`, pure); the node's kube-proxy Pod is the data plane (`serve`), which reads its
table from a file the control plane writes and wakes it for.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import selectors
import socket
import threading
import time
from dataclasses import dataclass

from nsk.proxy.masquerade import JUMPS as MASQ_JUMPS
from nsk.proxy.masquerade import NSK_IP_MASQ
from nsk.proxy.masquerade import rules as masq_rules
from nsk.proxy.model import NodeContext, ServicePort

log = logging.getLogger("nsk.kube-proxy")
PORT_RANGE = (40000, 44999)  # the proxy ports, reserved in the node's namespace (ip_local_reserved_ports)
DIAL_TIMEOUTS = (0.25, 0.5, 1.0, 2.0)  # kube-proxy's EndpointDialTimeouts
UDP_IDLE = 0.25  # its udpIdleTimeout default
UDP_BUFFER = 4096
MAX_CONNECTIONS = 1024  # nsk's bound: a connection beyond it is closed at once
MAX_UDP_SESSIONS = 4096  # and a datagram from a client beyond it is dropped (each session holds a socket)
PORTALS_CONTAINER, PORTALS_HOST = "KUBE-PORTALS-CONTAINER", "KUBE-PORTALS-HOST"
NODEPORT_CONTAINER, NODEPORT_HOST, NODEPORT_NON_LOCAL = \
    "KUBE-NODEPORT-CONTAINER", "KUBE-NODEPORT-HOST", "KUBE-NODEPORT-NON-LOCAL"
_PORTALS = "handle ClusterIPs; NOTE: this must be before the NodePort rules"
_NODEPORTS = "handle service NodePorts; NOTE: this must be the last rule in the chain"
JUMPS = (
    ("nat", "PREROUTING", PORTALS_CONTAINER, _PORTALS, ""),
    ("nat", "OUTPUT", PORTALS_HOST, _PORTALS, ""),
    ("nat", "PREROUTING", NODEPORT_CONTAINER, _NODEPORTS, "-m addrtype --dst-type LOCAL"),
    ("nat", "OUTPUT", NODEPORT_HOST, _NODEPORTS, "-m addrtype --dst-type LOCAL"),
    ("filter", "INPUT", NODEPORT_NON_LOCAL, "Ensure that non-local NodePort traffic can flow", ""),
    *(j for j in MASQ_JUMPS if j[2] == NSK_IP_MASQ),
)


def key_of(sp: ServicePort) -> str:
    """The proxy's name for a Service port: ServicePortName.String() and the protocol."""
    return f"{sp.name_string}/{sp.protocol}"


def allocate(ports: list[ServicePort], previous: dict[str, int], span: tuple[int, int] = PORT_RANGE) -> dict[str, int]:
    """A proxy port for every Service port (not SCTP: userspace mode has none): the one it
    had, else the lowest free one in `span`. A port beyond the span gets none."""
    keys = [key_of(sp) for sp in ports if sp.protocol != "SCTP"]
    out = {k: previous[k] for k in keys if k in previous}
    used = set(out.values())
    free = (p for p in range(span[0], span[1] + 1) if p not in used)
    for k in keys:
        if k not in out:
            port = next(free, None)
            if port is None:
                log.error("userspace proxy: no proxy port left in %d-%d for %s", *span, k)
                continue
            out[k] = port
    return out


def _q(text: str) -> str:
    """A comment as iptables-save prints it: quoted unless it is letters, digits, - _ . only."""
    return text if text and all(c.isalnum() or c in "-_." for c in text) else f'"{text}"'


def render(ports: list[ServicePort], ctx: NodeContext, proxy_ports: dict[str, int]) -> str:
    """iptables-restore --noflush input: the five chains whole (kube-proxy's argument lists,
    in the order iptables-save prints them), and nsk's egress masquerade."""
    host_ip = ctx.node_ips[0] if ctx.node_ips else "127.0.0.1"
    rules: dict[str, list[str]] = {c: [] for c in (PORTALS_CONTAINER, PORTALS_HOST, NODEPORT_CONTAINER, NODEPORT_HOST,
                                                   NODEPORT_NON_LOCAL)}
    for sp in ports:
        port = proxy_ports.get(key_of(sp))
        if port is None:
            continue
        p, c = sp.proto, f"-m comment --comment {_q(sp.name_string)}"
        redirect, dnat = f"-j REDIRECT --to-ports {port}", f"-j DNAT --to-destination {host_ip}:{port}"
        for ip in (sp.cluster_ip, *sp.lb_ips):
            rules[PORTALS_CONTAINER].append(f"-A {PORTALS_CONTAINER} -d {ip}/32 -p {p} {c} -m {p} --dport {sp.port} {redirect}")
            rules[PORTALS_HOST].append(f"-A {PORTALS_HOST} -d {ip}/32 -p {p} {c} -m {p} --dport {sp.port} {dnat}")
        for ip in sp.external_ips:
            rules[PORTALS_CONTAINER] += [
                f"-A {PORTALS_CONTAINER} -d {ip}/32 -p {p} {c} -m {p} --dport {sp.port} -m physdev ! --physdev-is-in "
                f"{redirect}",
                f"-A {PORTALS_CONTAINER} -d {ip}/32 -p {p} {c} -m {p} --dport {sp.port} -m addrtype --dst-type LOCAL "
                f"{redirect}"]
            rules[PORTALS_HOST].append(f"-A {PORTALS_HOST} -d {ip}/32 -p {p} {c} -m {p} --dport {sp.port} "
                                       f"-m addrtype --dst-type LOCAL {dnat}")
        if sp.node_port:
            rules[NODEPORT_CONTAINER].append(f"-A {NODEPORT_CONTAINER} -p {p} {c} -m {p} --dport {sp.node_port} {redirect}")
            rules[NODEPORT_HOST].append(f"-A {NODEPORT_HOST} -p {p} {c} -m {p} --dport {sp.node_port} {dnat}")
            rules[NODEPORT_NON_LOCAL].append(f"-A {NODEPORT_NON_LOCAL} -p {p} {c} -m {p} --dport {port} "
                                             "-m state --state NEW -j ACCEPT")
    masq = [r for r in masq_rules(ctx.cluster_cidr) if r.startswith(f"-A {NSK_IP_MASQ} ")]
    nat = [PORTALS_CONTAINER, PORTALS_HOST, NODEPORT_CONTAINER, NODEPORT_HOST, NSK_IP_MASQ]
    lines = ["*nat", *(f":{ch} - [0:0]" for ch in nat), *(r for ch in nat[:4] for r in rules[ch]), *masq, "COMMIT",
             "*filter", f":{NODEPORT_NON_LOCAL} - [0:0]", *rules[NODEPORT_NON_LOCAL], "COMMIT"]
    return "\n".join(lines) + "\n"


def table(ports: list[ServicePort], proxy_ports: dict[str, int]) -> list[dict]:
    """What the node's proxy process serves: each Service port's proxy port and endpoints
    (ready ones; userspace mode knows no terminating or Local policies), and its affinity."""
    out = []
    for sp in ports:
        port = proxy_ports.get(key_of(sp))
        if port is not None:
            out.append({"service": sp.name_string, "protocol": sp.protocol, "port": port,
                        "endpoints": sorted(e.address for e in sp.endpoints if e.ready),
                        "affinity": sp.affinity_timeout})
    return out


# ---- the data plane: the node's kube-proxy process --------------------------------------

@dataclass
class _Affinity:
    endpoint: str
    last: float


class RoundRobin:
    """kube-proxy's LoadBalancerRR for one Service port: the endpoints shuffled (again only
    when the set changes), each in turn; with ClientIP affinity a client keeps its endpoint
    for `ttl` seconds after it last used it, unless a dial to it failed."""

    def __init__(self, ttl: int = 0, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self.endpoints: list[str] = []
        self.index = 0
        self.ttl = ttl
        self.affinity: dict[str, _Affinity] = {}

    def update(self, endpoints: list[str], ttl: int) -> None:
        self.ttl = ttl
        if sorted(endpoints) != sorted(self.endpoints):
            self.endpoints = list(endpoints)
            self.rng.shuffle(self.endpoints)
            self.index = 0
            self.affinity = {ip: a for ip, a in self.affinity.items() if a.endpoint in endpoints}

    def next(self, client_ip: str, reset: bool = False, now: float | None = None) -> str | None:
        if not self.endpoints:
            return None
        now = time.monotonic() if now is None else now
        if self.ttl and not reset:
            a = self.affinity.get(client_ip)
            if a is not None and now - a.last < self.ttl:
                a.last = now
                return a.endpoint
        ep = self.endpoints[self.index % len(self.endpoints)]
        self.index = (self.index + 1) % len(self.endpoints)
        if self.ttl:
            self.affinity[client_ip] = _Affinity(ep, now)
        return ep


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class _Service:
    def __init__(self, entry: dict, sock: socket.socket):
        self.name, self.protocol, self.port = entry["service"], entry["protocol"], entry["port"]
        self.sock = sock
        self.lb = RoundRobin(entry.get("affinity") or 0)
        self.lb.update(entry["endpoints"], entry.get("affinity") or 0)
        self.clients: dict[tuple, tuple[socket.socket, float]] = {}  # UDP: client address -> (backend, deadline)


class UserspaceProxy:
    """One node's proxy sockets (run inside the node's namespace): TCP connections each get
    a thread (bounded); UDP, accepts and reloads are served by one selector loop."""

    def __init__(self, config_path: str, wake_path: str):
        self.config_path, self.wake_path = config_path, wake_path
        self.sel = selectors.DefaultSelector()
        self.services: dict[str, _Service] = {}
        self.lock = threading.Lock()  # the round-robin state, shared with the TCP threads
        self.active = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.reserved = False  # the proxy ports, reserved once there is a table (userspace mode)
        self.stopping = False

    def run(self) -> None:
        os.makedirs(os.path.dirname(self.wake_path), exist_ok=True)  # made by whichever comes first
        try:
            os.unlink(self.wake_path)
        except FileNotFoundError:
            pass
        wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        wake.bind(self.wake_path)
        wake.setblocking(False)
        self.sel.register(wake, selectors.EVENT_READ, ("wake", wake))
        self.reload()
        while not self.stopping:
            busy = any(svc.clients for svc in self.services.values())
            for sk, _ in self.sel.select(timeout=UDP_IDLE / 2 if busy else None):
                kind, obj = sk.data
                try:
                    if kind == "wake":
                        while True:
                            try:
                                wake.recv(64)
                            except BlockingIOError:
                                break
                        self.reload()
                    elif kind == "tcp":
                        self._accept(obj)
                    elif kind == "udp":
                        self._udp_in(obj)
                    elif kind == "backend":
                        self._udp_back(*obj)
                except OSError as e:  # one socket's trouble is never the end of the others
                    log.warning("%s", e)
            self._expire()

    # -- configuration

    def reload(self) -> None:
        try:
            with open(self.config_path) as f:
                entries = json.load(f)
        except (OSError, ValueError):
            entries = []
        want = {f'{e["service"]}/{e["protocol"]}': e for e in entries}
        if want and not self.reserved:
            self.reserved = True
            try:
                reserve_ports()
            except OSError as e:
                print(f"cannot reserve the proxy ports: {e}", flush=True)
        for key in list(self.services):
            svc = self.services[key]
            e = want.get(key)
            if e is None or e["port"] != svc.port:
                self._close(key)
        for key, e in want.items():
            svc = self.services.get(key)
            if svc is None:
                try:
                    self._open(key, e)
                except OSError as err:
                    print(f"cannot listen for {e['service']} on port {e['port']}/{e['protocol']}: {err}", flush=True)
                continue
            with self.lock:
                svc.lb.update(e["endpoints"], e.get("affinity") or 0)

    def _open(self, key: str, e: dict) -> None:
        udp = e["protocol"] == "UDP"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", e["port"]))
        if not udp:
            sock.listen(128)
        sock.setblocking(False)
        svc = _Service(e, sock)
        self.services[key] = svc
        self.sel.register(sock, selectors.EVENT_READ, ("udp" if udp else "tcp", svc))
        print(f"Opened proxy port {e['port']}/{e['protocol']} for {e['service']}", flush=True)

    def _close(self, key: str) -> None:
        svc = self.services.pop(key)
        self.sel.unregister(svc.sock)
        svc.sock.close()
        for backend, _ in svc.clients.values():
            self.sel.unregister(backend)
            backend.close()
        print(f"Closed proxy port {svc.port}/{svc.protocol} of {svc.name}", flush=True)

    # -- TCP

    def _accept(self, svc: _Service) -> None:
        try:
            conn, addr = svc.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        if not self.active.acquire(blocking=False):
            conn.close()
            return
        threading.Thread(target=self._serve_tcp, args=(svc, conn, addr[0]), daemon=True).start()

    def _serve_tcp(self, svc: _Service, conn: socket.socket, client_ip: str) -> None:
        try:
            conn.setblocking(True)
            backend = self.dial(svc, client_ip, socket.SOCK_STREAM)
            if backend is None:
                return
            with backend:
                _relay(conn, backend)
        finally:
            conn.close()
            self.active.release()

    def dial(self, svc: _Service, client_ip: str, kind: int) -> socket.socket | None:
        """kube-proxy's TryConnectEndpoints: up to 4 endpoints, each with a longer time-out;
        after a failure the client's affinity is set aside."""
        reset = False
        for timeout in DIAL_TIMEOUTS:
            with self.lock:
                ep = svc.lb.next(client_ip, reset)
            if ep is None:
                print(f"Couldn't find an endpoint for {svc.name}: missing endpoints", flush=True)
                return None
            s = socket.socket(socket.AF_INET, kind)
            s.settimeout(timeout)
            try:
                s.connect(_split(ep))
            except OSError as e:
                s.close()
                print(f"Dial failed: {ep}: {e.strerror or e}", flush=True)
                reset = True
                continue
            s.settimeout(None)
            return s
        print(f"Failed to connect to balancer: failed to connect to an endpoint ({svc.name})", flush=True)
        return None

    # -- UDP

    def _udp_in(self, svc: _Service) -> None:
        try:
            data, client = svc.sock.recvfrom(UDP_BUFFER)
        except (BlockingIOError, InterruptedError):
            return
        got = svc.clients.get(client)
        if got is None:
            if sum(len(s.clients) for s in self.services.values()) >= MAX_UDP_SESSIONS:
                return
            backend = self.dial(svc, client[0], socket.SOCK_DGRAM)
            if backend is None:
                return  # no endpoint: the datagram is dropped
            backend.setblocking(False)
            self.sel.register(backend, selectors.EVENT_READ, ("backend", (svc, client, backend)))
        else:
            backend = got[0]
        svc.clients[client] = (backend, time.monotonic() + UDP_IDLE)
        try:
            backend.send(data)
        except OSError:
            pass  # an endpoint gone: the session ends when it is idle

    def _udp_back(self, svc: _Service, client: tuple, backend: socket.socket) -> None:
        try:
            data = backend.recv(UDP_BUFFER)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._end_udp(svc, client)
            return
        svc.clients[client] = (backend, time.monotonic() + UDP_IDLE)
        svc.sock.sendto(data, client)

    def _expire(self) -> None:
        now = time.monotonic()
        for svc in self.services.values():
            for client, (_, deadline) in list(svc.clients.items()):
                if deadline < now:
                    self._end_udp(svc, client)

    def _end_udp(self, svc: _Service, client: tuple) -> None:
        backend, _ = svc.clients.pop(client)
        self.sel.unregister(backend)
        backend.close()


def _relay(a: socket.socket, b: socket.socket, idle: float = 3600.0) -> None:
    """Copy both ways until either side ends; then both are closed (as kube-proxy's
    ProxyTCP: a half-close is not passed on)."""
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            ready = sel.select(timeout=idle)
            if not ready:
                return
            for sk, _ in ready:
                try:
                    data = sk.fileobj.recv(65536)
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EINTR):
                        continue
                    return
                if not data:
                    return
                sk.data.sendall(data)
    except OSError:
        return
    finally:
        sel.close()


def reserve_ports() -> None:
    """Inside the node's namespace: the proxy ports are never a connection's source port."""
    with open("/proc/sys/net/ipv4/ip_local_reserved_ports", "w") as f:
        f.write(f"{PORT_RANGE[0]}-{PORT_RANGE[1]}")


def paths(run_dir: str, node: str) -> tuple[str, str]:
    """(the table the control plane writes, the socket that wakes the node's proxy)."""
    d = os.path.join(run_dir, "kube-proxy")
    return os.path.join(d, f"{node}.json"), os.path.join(d, f"{node}.sock")


def publish(run_dir: str, node: str, entries: list[dict]) -> None:
    """Write a node's table (atomically) and wake its proxy process, if it runs."""
    config, wake = paths(run_dir, node)
    os.makedirs(os.path.dirname(config), exist_ok=True)
    tmp = config + ".tmp"
    with open(tmp, "w") as f:
        json.dump(entries, f)
    os.replace(tmp, config)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"sync", wake)
        except OSError:
            pass  # not running (yet): it reads the table when it starts
