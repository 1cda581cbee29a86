"""Many UDP datagrams per system call: recvmmsg(2) and sendmmsg(2) through ctypes.

Python's socket module has no recvmmsg/sendmmsg, so a server written with it pays two
system calls a datagram (recvfrom, sendto), and under load that is much of a small
server's time. `Batch` keeps `size` slots in C memory, each a buffer and a peer address:
one `recv()` fills as many slots as datagrams are waiting, each answer is written into
its query's own slot, and one `send()` sends the answers back to their peers.

The same mmsghdr array serves both calls: after recvmmsg, entry i already names slot i's
buffer and the peer the kernel wrote; an answer only sets the length of slot i's iovec.
A pristine copy of the arrays is written back before each receive. Fields are read and
written through memoryviews at offsets ctypes computes: attribute access on ctypes
structures costs a Python object per access, which is what the hot path cannot afford.

Addresses are IPv4, as the cluster's are; the address slots are sockaddr_in6-sized, so
the kernel never truncates one.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket

SOCKADDR_SIZE = 28  # sizeof(struct sockaddr_in6), large enough for a sockaddr_in


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_IoVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]

# indexes into 32-bit views of the mmsghdr array and 64-bit views of the iovec array
_U32 = ctypes.sizeof(ctypes.c_uint32)
_MSG_STRIDE = ctypes.sizeof(_MMsgHdr) // _U32
_MSG_LEN = _MMsgHdr.msg_len.offset // _U32
_MSG_FLAGS = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_flags.offset) // _U32
_IOV_STRIDE = ctypes.sizeof(_IoVec) // ctypes.sizeof(ctypes.c_size_t)
_IOV_LEN = _IoVec.iov_len.offset // ctypes.sizeof(ctypes.c_size_t)


class Batch:
    """Up to `size` datagrams of at most `slot` bytes each, received and sent per call.

    After `n = recv()`, slot i < n holds datagram `data(i)` from `peer(i)`.
    `answer_from(table)` answers those it finds in a table, in their own slots, and
    `send()` sends every answer made since the last recv().
    """

    def __init__(self, sock: socket.socket, size: int = 64, slot: int = 4096):
        self.fd, self.size, self.slot = sock.fileno(), size, slot
        self._buf = ctypes.create_string_buffer(size * slot)
        self._names = ctypes.create_string_buffer(size * SOCKADDR_SIZE)
        self._iov = (_IoVec * size)()
        self._msg = (_MMsgHdr * size)()
        base, names = ctypes.addressof(self._buf), ctypes.addressof(self._names)
        for i in range(size):
            self._iov[i].iov_base, self._iov[i].iov_len = base + i * slot, slot
            h = self._msg[i].msg_hdr
            h.msg_name, h.msg_namelen = names + i * SOCKADDR_SIZE, SOCKADDR_SIZE
            h.msg_iov, h.msg_iovlen = ctypes.pointer(self._iov[i]), 1
        # what recv() writes back: the kernel changes name lengths, flags and message
        # lengths, and answers change iovec lengths
        self._fresh_iov = bytes(self._iov)
        self._fresh_msg = bytes(self._msg)
        self._addr_iov, self._addr_msg = ctypes.addressof(self._iov), ctypes.addressof(self._msg)
        self._view = memoryview(self._buf).cast("B")
        self._msg32 = memoryview(self._msg).cast("B").cast("I")
        self._iov64 = memoryview(self._iov).cast("B").cast("N")
        self._n = 0  # datagrams in the slots
        self._runs: list[tuple[int, int]] = []  # answered, not yet sent: slots [start, end)

    def recv(self) -> int:
        """Receive the datagrams waiting, up to `size`, without blocking; 0 when none.
        Answers made and not sent are dropped."""
        ctypes.memmove(self._addr_iov, self._fresh_iov, len(self._fresh_iov))
        ctypes.memmove(self._addr_msg, self._fresh_msg, len(self._fresh_msg))
        self._runs.clear()
        n = _recvmmsg(self.fd, self._addr_msg, self.size, socket.MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.EINTR):
                raise OSError(err, os.strerror(err))
            n = 0
        self._n = n
        return n

    def data(self, i: int, start: int = 0) -> bytes:
        """Datagram i of the last recv() from byte `start` on; b"" for an oversized one
        (cut at the slot's size by the kernel: dropped, as no DNS query is that long)."""
        k = i * _MSG_STRIDE
        if self._msg32[k + _MSG_FLAGS] & socket.MSG_TRUNC:
            return b""
        off = i * self.slot
        return bytes(self._view[off + start:off + self._msg32[k + _MSG_LEN]])

    def peer(self, i: int) -> tuple[str, int]:
        """The address datagram i came from, as socket.recvfrom gives it (IPv4)."""
        raw = self._names.raw[i * SOCKADDR_SIZE:(i + 1) * SOCKADDR_SIZE]
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")

    def answer_from(self, table: dict[bytes, bytes], keep: int = 0) -> list[int]:
        """Answer each datagram of the last recv() whose bytes after its first `keep`
        are a key of `table` with those `keep` bytes followed by table[key] (for DNS: the
        query's own ID and a reply encoded before); the answer goes into the datagram's
        own slot, to be sent by send(). Returns the indices of the others, oversized
        datagrams included, for the caller to deal with.

        The hot loop of a server that answers from a table: it runs here, on local
        names and memoryviews, because a Python call per datagram would cost more."""
        view, msg32, iov64, slot = self._view, self._msg32, self._iov64, self.slot
        get, runs, others, trunc = table.get, self._runs, [], socket.MSG_TRUNC
        start = 0
        for i in range(self._n):
            k, off = i * _MSG_STRIDE, i * slot
            hit = None if msg32[k + _MSG_FLAGS] & trunc else \
                get(bytes(view[off + keep:off + msg32[k + _MSG_LEN]]))
            if hit is None or keep + len(hit) > slot:
                if start < i:
                    runs.append((start, i))  # sendmmsg takes runs of answered slots
                start = i + 1
                others.append(i)
                continue
            n = keep + len(hit)
            view[off + keep:off + n] = hit
            iov64[i * _IOV_STRIDE + _IOV_LEN] = n
        if start < self._n:
            runs.append((start, self._n))
        return others

    def send(self) -> None:
        """Send the answers made since the last recv(). UDP's way: one the kernel refuses
        (a full buffer, an unreachable peer) is dropped."""
        for run in self._runs:
            self._flush(*run)
        self._runs.clear()

    def _flush(self, start: int, end: int) -> None:
        stride = ctypes.sizeof(_MMsgHdr)
        while start < end:
            n = _sendmmsg(self.fd, self._addr_msg + start * stride, end - start, socket.MSG_DONTWAIT)
            if n > 0:
                start += n
            elif ctypes.get_errno() != errno.EINTR:
                start += 1  # the kernel would not take this one: skip it
