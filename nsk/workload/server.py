"""nsk's built-in server: what runs in a container that has no `command` (any `image:`).

HTTP on each TCP containerPort, echo on each UDP port. The HTTP answer names the Pod,
its namespace, node and IP, and the client address as the Pod saw it, plus the request's
host and path: enough to watch load balancing, session affinity and source-IP
preservation with plain curl. Paths as Kubernetes' test server (agnhost netexec) has
them: /hostname, /clientip, /healthz; `?format=json` or `Accept: application/json`
answers JSON. `POST /healthz/fail` makes /healthz answer 503 (a readinessProbe on it
then takes the Pod out of its Services' endpoints); `POST /healthz/ok` heals it.

It serves in whatever network namespace it is started in; the kubelet forks it into
the Pod's. One selector accepts and echoes; each HTTP connection gets a thread of its own
(at most MAX_CONNECTIONS, each with a deadline), so an idle, slow or garbage connection
holds up no other client and nothing a client sends ends the server.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import threading
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class PodInfo:
    pod: str
    namespace: str
    node: str
    pod_ip: str


@dataclass
class Health:
    """What /healthz answers; a lab fails it with `curl -X POST POD-IP/healthz/fail`."""

    ok: bool = True


def answer(info: PodInfo, client: tuple[str, int], host: str, path: str, accept: str = "",
           method: str = "GET", health: Health | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of the answer to a request: pure, tested without sockets."""
    url = urlsplit(path)
    health = health if health is not None else Health()
    if url.path in ("/healthz/fail", "/healthz/ok"):
        if method != "POST":
            return 405, "text/plain", "POST to change the health\n"
        health.ok = url.path == "/healthz/ok"
        return 200, "text/plain", f"healthz now {'ok' if health.ok else 'failing'}\n"
    if url.path == "/healthz":
        return (200, "text/plain", "ok\n") if health.ok else (503, "text/plain", "failing\n")
    fields = {**asdict(info), "client": f"{client[0]}:{client[1]}", "client_ip": client[0],
              "host": host, "path": url.path}
    if url.path == "/hostname":
        return 200, "text/plain", info.pod + "\n"
    if url.path == "/clientip":
        return 200, "text/plain", f"{client[0]}:{client[1]}\n"
    if "json" in parse_qs(url.query).get("format", []) or "application/json" in accept:
        return 200, "application/json", json.dumps(fields) + "\n"
    width = max(len(k) for k in fields) + 1
    lines = [f"{(k.replace('_', ' ') + ':'):<{width + 1}}{v}" for k, v in fields.items() if k != "client_ip"]
    return 200, "text/plain", "\n".join(lines) + "\n"


# Connections served at once; how long a read may wait; how long one connection may take
# in all (a slow client sending a byte a second ends there).
MAX_CONNECTIONS = 128
IDLE_TIMEOUT = 5.0
CONNECTION_DEADLINE = 30.0


def _handler(info: PodInfo, health: Health):
    class Handler(BaseHTTPRequestHandler):
        server_version = "nsk"
        sys_version = ""
        protocol_version = "HTTP/1.0"
        timeout = IDLE_TIMEOUT  # for each read: an idle or stalled client is dropped

        def do_GET(self):  # noqa: N802 - http.server's naming
            status, ctype, body = answer(info, self.client_address, self.headers.get("Host", ""), self.path,
                                         self.headers.get("Accept", ""), self.command, health)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

        def log_message(self, fmt, *args):
            # also called before a request line was read (a timeout, a garbage first line)
            line = getattr(self, "requestline", "") or (fmt % args)
            sys.stderr.write(f"{self.client_address[0]} - \"{line}\" {args[1] if len(args) > 1 else ''}\n")
            sys.stderr.flush()

    return Handler


def serve(info: PodInfo, tcp_ports: list[int], udp_ports: list[int], address: str = "0.0.0.0") -> None:
    """Serve forever on the given ports of every address of the current namespace (or of `address`)."""
    sel = selectors.DefaultSelector()
    for kind, ports in (("tcp", tcp_ports), ("udp", udp_ports)):
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
            try:
                if kind == "tcp":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((address, port))
                if kind == "tcp":
                    s.listen(512)
            except OSError as e:  # a server that cannot listen says where, and exits 1 (nginx's way)
                print(f"nsk built-in server: cannot listen on {address}:{port}/{kind}: {e.strerror}",
                      file=sys.stderr, flush=True)
                sys.exit(1)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, kind)
    print(f"nsk built-in server: pod {info.namespace}/{info.pod} on {info.pod_ip}, "
          f"http on {tcp_ports or 'no'} tcp ports, echo on {udp_ports or 'no'} udp ports", flush=True)
    handler = _handler(info, Health())
    slots = threading.Semaphore(MAX_CONNECTIONS)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if key.data == "udp":
                try:
                    data, addr = sock.recvfrom(65535)
                    sock.sendto(data, addr)
                except OSError:
                    pass
                continue
            try:
                conn, addr = sock.accept()
            except OSError:
                continue
            if not slots.acquire(blocking=False):
                conn.close()  # full: shed the newcomer rather than stall everyone
                continue
            threading.Thread(target=_one, args=(handler, conn, addr, slots), daemon=True).start()




def _one(handler, conn: socket.socket, addr, slots: threading.Semaphore) -> None:
    try:
        conn.setblocking(True)
        conn.settimeout(handler.timeout)
        timer = threading.Timer(CONNECTION_DEADLINE, _shut, (conn,))
        timer.start()
        try:
            handler(conn, addr, None)
        finally:
            timer.cancel()
    except Exception as e:  # noqa: BLE001 - one client's trouble is not the server's
        print(f"{addr[0]} - connection ended: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    finally:
        conn.close()
        slots.release()


def _shut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
