"""The built-in server's answers (pure) and one real exchange on loopback."""

from __future__ import annotations

import json
import multiprocessing
import socket
import time
import urllib.request

import pytest

from nsk.workload import server

INFO = server.PodInfo("web-abc", "default", "node-1", "10.244.1.2")


def test_text_answer_names_pod_node_and_client():
    status, ctype, body = server.answer(INFO, ("10.244.2.3", 4000), "my-nginx", "/x?y=1")
    assert (status, ctype) == (200, "text/plain")
    assert body == ("pod:       web-abc\nnamespace: default\nnode:      node-1\npod ip:    10.244.1.2\n"
                    "client:    10.244.2.3:4000\nhost:      my-nginx\npath:      /x\n")


def test_agnhost_paths_and_json():
    assert server.answer(INFO, ("1.2.3.4", 5), "h", "/hostname")[2] == "web-abc\n"
    assert server.answer(INFO, ("1.2.3.4", 5), "h", "/clientip")[2] == "1.2.3.4:5\n"
    status, ctype, body = server.answer(INFO, ("1.2.3.4", 5), "h", "/?format=json")
    assert ctype == "application/json" and json.loads(body)["client_ip"] == "1.2.3.4"
    assert json.loads(server.answer(INFO, ("1.2.3.4", 5), "h", "/", "application/json")[2])["pod"] == "web-abc"


def test_health_can_be_failed_and_healed():
    health = server.Health()
    client = ("1.2.3.4", 5)
    assert server.answer(INFO, client, "h", "/healthz", health=health)[:1] == (200,)
    assert server.answer(INFO, client, "h", "/healthz/fail", health=health)[0] == 405  # GET changes nothing
    assert server.answer(INFO, client, "h", "/healthz/fail", method="POST", health=health)[0] == 200
    assert server.answer(INFO, client, "h", "/healthz", health=health)[:3:2] == (503, "failing\n")
    server.answer(INFO, client, "h", "/healthz/ok", method="POST", health=health)
    assert server.answer(INFO, client, "h", "/healthz", health=health)[0] == 200


def _free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def served(monkeypatch):
    """The server in a child process on loopback ports (short timeouts); (tcp, udp) ports."""
    monkeypatch.setattr(server, "IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(server, "CONNECTION_DEADLINE", 2.0)
    tcp, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    proc = multiprocessing.get_context("fork").Process(target=server.serve, args=(INFO, [tcp], [udp], "127.0.0.1"),
                                                       daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                _get(tcp)
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        yield tcp, udp, proc
    finally:
        proc.kill()
        proc.join(5)


def _get(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=2) as r:
        return r.read()


def test_serves_http_and_udp_echo_on_loopback(served):
    tcp, udp, _ = served
    assert _get(tcp) == b"web-abc\n"
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    u.sendto(b"ping 1", ("127.0.0.1", udp))
    assert u.recvfrom(100)[0] == b"ping 1"
    u.close()


def test_idle_slow_half_open_and_garbage_connections_neither_stall_nor_end_it(served):
    """An idle connection held past the timeout once crashed it ('Handler' object has no
    attribute 'requestline') and the container restarted; one idle client held up all."""
    tcp, _, proc = served
    held = []
    for first in (b"", b"GET / HT", b"\x00\xff garbage\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n"):
        c = socket.create_connection(("127.0.0.1", tcp))
        c.sendall(first)
        held.append(c)
    half = socket.create_connection(("127.0.0.1", tcp))
    half.shutdown(socket.SHUT_WR)  # half-open: it will never send
    held.append(half)
    t0 = time.monotonic()
    assert _get(tcp) == b"web-abc\n"  # served beside them, at once
    assert time.monotonic() - t0 < 0.4
    slow = socket.create_connection(("127.0.0.1", tcp))
    for ch in b"GET /hostname HTTP/1.0\r\n":  # a byte at a time, each within the timeout
        slow.sendall(bytes([ch]))
        time.sleep(0.08)
    time.sleep(1.0)  # every held connection is past its timeout now
    assert proc.is_alive()
    assert _get(tcp) == b"web-abc\n"
    for c in held + [slow]:
        c.close()


def test_many_clients_at_once_are_all_served(served):
    tcp, _, _ = served
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(32) as pool:
        assert list(pool.map(lambda _: _get(tcp), range(200))) == [b"web-abc\n"] * 200
