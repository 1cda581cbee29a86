"""kube-proxy's health check node ports and the cloud load balancer that asks them, over
real loopback sockets (no root): the answers, the counts, the cloud's choice of nodes."""

from __future__ import annotations

import json
import selectors
import socket
import time
import urllib.error
import urllib.request

from nsk.controllers.loadbalancer import router_routes
from nsk.proxy.healthcheck import CloudChecks, HealthServer, health_check_ports, response
from nsk.proxy.model import Endpoint, ServicePort
from nsk.testing.fakes import RecordingKernel


class Loop:
    def __init__(self):
        self.sel = selectors.DefaultSelector()

    def watch(self, fd, cb, events=selectors.EVENT_READ):
        self.sel.register(fd, events, cb)

    def unwatch(self, fd):
        try:
            self.sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def run(self, seconds: float, until=lambda: False):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            for key, _ in self.sel.select(0.05):
                key.data()


def lb(hc: int, *nodes_with_endpoints: str) -> ServicePort:
    eps = tuple(Endpoint(f"10.244.{i + 1}.5", 80, n) for i, n in enumerate(nodes_with_endpoints))
    return ServicePort("default", "web", "", "TCP", 80, "10.96.0.2", node_port=30001, lb_ips=("198.51.100.1",),
                       external_local=True, health_check_node_port=hc, endpoints=eps)


def test_kube_proxys_answer():
    head, body = response("default", "web", 2).split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Load-Balancing-Endpoint-Weight: 2" in head
    assert json.loads(body) == {"service": {"namespace": "default", "name": "web"}, "localEndpoints": 2,
                                "serviceProxyHealthy": True}
    assert response("default", "web", 0).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


def test_each_node_answers_for_its_own_endpoints_and_the_cloud_sends_only_to_those_that_pass():
    kernel, loop = RecordingKernel(), Loop()
    server = HealthServer(kernel.listen_socket, loop.watch, loop.unwatch, time.monotonic)
    nodes = {"node-1": "ns1", "node-2": "ns2"}
    assert server.sync([lb(32000, "node-1")], nodes) == []
    port = {ns: kernel.listeners[(ns, 32000)] for ns in nodes.values()}

    def get(ns):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port[ns]}/", timeout=2) as r:
                return r.status, json.loads(r.read())["localEndpoints"]
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())["localEndpoints"]
    import threading
    got = {}
    t = threading.Thread(target=lambda: got.update({ns: get(ns) for ns in nodes.values()}))
    t.start()
    loop.run(3, until=lambda: not t.is_alive())
    t.join()
    assert got == {"ns1": (200, 1), "ns2": (503, 0)}
    # a silent client and a garbage one neither stall it nor end it
    idle = socket.create_connection(("127.0.0.1", port["ns1"]))
    junk = socket.create_connection(("127.0.0.1", port["ns1"]))
    junk.sendall(b"\x00" * 5000)
    loop.run(0.2)
    # the cloud's checks, from "the router": a node that passes gets the traffic
    ips = {"node-1": "127.0.0.1", "node-2": "127.0.0.1"}

    def connect(ip, p):  # each node's listener is its own loopback port here
        node = next(n for n, i in ips.items() if i == ip and p == 32000 and n not in busy)
        busy.add(node)
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port[nodes[node]]))
        return s
    busy: set[str] = set()
    cloud = CloudChecks(connect, loop.watch, loop.unwatch, time.monotonic)
    cloud.tick(health_check_ports([lb(32000, "node-1")]), ips)
    loop.run(3, until=lambda: len(cloud.results) == 2)
    assert cloud.results == {("node-1", 32000): True, ("node-2", 32000): False}
    assert cloud.healthy(32000) == {"node-1"}
    routes = router_routes([lb(32000, "node-1")], {"node-1": "172.18.0.2", "node-2": "172.18.0.3"}, cloud.healthy)
    assert routes == {"198.51.100.1": ("172.18.0.2",)}
    idle.close()
    junk.close()
    server.close()
    assert not loop.sel.get_map()


def test_kube_proxys_own_healthz():
    from nsk.proxy.healthcheck import proxy_healthz
    head, body = proxy_healthz(b"GET /healthz HTTP/1.1\r\n\r\n", True, 0.0, 1.5).split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and json.loads(body) == {
        "lastUpdated": "1970-01-01T00:00:00Z", "currentTime": "1970-01-01T00:00:01.500000Z", "nodeEligible": True}
    assert proxy_healthz(b"GET /livez HTTP/1.1\r\n\r\n", False, 0.0, 1.0).startswith(b"HTTP/1.1 503")
    assert proxy_healthz(b"GET /metrics HTTP/1.1\r\n\r\n", True, 0.0, 1.0).startswith(b"HTTP/1.1 404")
    assert proxy_healthz(b"\x00garbage", True, 0.0, 1.0).startswith(b"HTTP/1.1 404")
