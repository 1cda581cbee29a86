"""Batched UDP: recvmmsg/sendmmsg through nsk.kernel.mmsg, on loopback sockets."""

from __future__ import annotations

import contextlib
import socket

import pytest

from nsk.kernel.mmsg import Batch


@pytest.fixture
def server():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    with contextlib.closing(s):
        yield s


def client() -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", 0))
    c.settimeout(1)
    return c


def replies(c: socket.socket) -> list[bytes]:
    c.settimeout(0.2)
    out = []
    with contextlib.suppress(TimeoutError):
        while True:
            out.append(c.recv(65535))
    return out


def test_answers_go_to_their_askers_behind_the_kept_bytes(server):
    table = {b"who": b"-alice", b"what": b"-nothing"}
    a, b = client(), client()
    with contextlib.closing(a), contextlib.closing(b):
        a.sendto(b"1:who", server.getsockname())
        b.sendto(b"2:what", server.getsockname())
        a.sendto(b"3:what", server.getsockname())
        batch = Batch(server, size=8)
        assert batch.recv() == 3
        assert [batch.data(i) for i in range(3)] == [b"1:who", b"2:what", b"3:what"]
        assert batch.peer(1) == b.getsockname()
        assert batch.answer_from(table, keep=2) == []
        batch.send()
        assert replies(a) == [b"1:-alice", b"3:-nothing"]
        assert replies(b) == [b"2:-nothing"]


def test_unknown_datagrams_are_left_to_the_caller_and_the_rest_still_answered(server):
    c = client()
    with contextlib.closing(c):
        for q in (b"1:a", b"2:zz", b"3:a", b"4:zz", b"5:a"):
            c.sendto(q, server.getsockname())
        batch = Batch(server, size=8)
        assert batch.recv() == 5
        assert batch.answer_from({b"a": b"=A"}, keep=2) == [1, 3]
        assert [batch.data(i) for i in (1, 3)] == [b"2:zz", b"4:zz"]
        batch.send()
        assert replies(c) == [b"1:=A", b"3:=A", b"5:=A"]


def test_a_full_batch_leaves_the_rest_for_the_next_receive(server):
    c = client()
    with contextlib.closing(c):
        for i in range(10):
            c.sendto(b"%d" % i, server.getsockname())
        batch = Batch(server, size=4)
        got = []
        while n := batch.recv():
            got += [batch.data(i) for i in range(n)]
        assert got == [b"%d" % i for i in range(10)]
        assert batch.recv() == 0  # nothing waiting: no block, no error


def test_an_oversized_datagram_is_reported_empty_and_never_answered(server):
    c = client()
    with contextlib.closing(c):
        c.sendto(b"x" * 600, server.getsockname())
        c.sendto(b"1:ok", server.getsockname())
        batch = Batch(server, size=4, slot=512)
        assert batch.recv() == 2
        assert batch.data(0) == b""
        assert batch.answer_from({b"x" * 510: b"!", b"ok": b"-yes"}, keep=2) == [0]
        batch.send()
        assert replies(c) == [b"1:-yes"]


def test_an_answer_larger_than_its_slot_is_left_to_the_caller(server):
    c = client()
    with contextlib.closing(c):
        c.sendto(b"1:big", server.getsockname())
        batch = Batch(server, size=2, slot=64)
        batch.recv()
        assert batch.answer_from({b"big": b"y" * 100}, keep=2) == [0]
        batch.send()
        assert replies(c) == []


def test_answers_not_sent_before_the_next_receive_are_dropped(server):
    c = client()
    with contextlib.closing(c):
        c.sendto(b"1:a", server.getsockname())
        batch = Batch(server, size=2)
        batch.recv()
        batch.answer_from({b"a": b"-old"}, keep=2)
        c.sendto(b"2:a", server.getsockname())
        assert batch.recv() == 1
        batch.answer_from({b"a": b"-new"}, keep=2)
        batch.send()
        assert replies(c) == [b"2:-new"]
