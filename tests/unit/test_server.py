"""The built-in server's answers (pure) and one real exchange on loopback."""

from __future__ import annotations

import json
import multiprocessing
import socket
import time
import urllib.request

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


def test_serves_http_and_udp_echo_on_loopback():
    tcp, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    proc = multiprocessing.get_context("fork").Process(target=server.serve, args=(INFO, [tcp], [udp]), daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{tcp}/hostname", timeout=1) as r:
                    assert r.read() == b"web-abc\n"
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(2)
        u.sendto(b"ping 1", ("127.0.0.1", udp))
        assert u.recvfrom(100)[0] == b"ping 1"
        u.close()
    finally:
        proc.kill()
        proc.join(5)
