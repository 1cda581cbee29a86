"""The cluster DNS server (dnslib wire format), run as the kube-dns Pods' container.

It keeps Services, Endpoints and Pods in an informer (a cache fed by the store's change
log) and rebuilds the zone when the store says something changed (a datagram on its
watch socket), so answers follow the cluster within milliseconds. UDP and TCP on port 53, one thread, one epoll. Malformed
queries get FORMERR or are dropped; nothing a client sends can stop it.
"""

from __future__ import annotations

import collections
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from dnslib import CNAME, EDNS0, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A, DNSHeader, DNSRecord
from dnslib.dns import DNSError

from nsk.dns import records
from nsk.kernel.mmsg import Batch

MAX_TCP = 65535
TCP_IDLE = 5.0  # seconds a TCP client may stay silent before it is dropped
TCP_PENDING = 256 * 1024  # bytes of answers a TCP client may leave unread before it is dropped
UDP_PLAIN = 512  # the largest UDP answer without EDNS0 (RFC 1035)
EDNS_SIZE = 1232  # what nsk offers with EDNS0: the DNS flag day 2020 size, no IP fragments
FORWARD_TIMEOUT = 2.0  # seconds an upstream has to answer a forwarded query
RELOAD_DELAY = 0.01  # seconds: at most one look at the store per this time
MISS_BUDGET = 0.005  # seconds a loop turn spends answering misses before it looks at its sockets again
MISS_PER_SOURCE = 64  # misses one sender may have waiting
MISS_SOURCES = 4096  # senders with misses waiting


def _rdata(rr: records.RR):
    f = rr.data.split()
    if rr.type == records.A:
        return A(rr.data)
    if rr.type == records.CNAME:
        return CNAME(rr.data)
    if rr.type == records.PTR:
        return PTR(rr.data)
    if rr.type == records.NS:
        return NS(rr.data)
    if rr.type == records.TXT:
        return TXT(rr.data.strip('"'))
    if rr.type == records.SRV:
        return SRV(int(f[0]), int(f[1]), int(f[2]), f[3])
    if rr.type == records.SOA:
        return SOA(f[0], f[1], tuple(int(x) for x in f[2:7]))
    raise ValueError(rr.type)


def _rr(rr: records.RR, asked: str) -> RR:
    """The record on the wire, its owner spelled as the asker spelled it when the name ends
    the question (the name itself, the zone's apex): CoreDNS preserves case so, and
    resolvers that randomize the case of their questions (0x20) see their own spelling."""
    name = rr.name
    if asked.lower().endswith(name) and (len(asked) == len(name) or asked[-len(name) - 1] == "."):
        name = asked[len(asked) - len(name):]
    return RR(name, getattr(QTYPE, rr.type), rdata=_rdata(rr), ttl=rr.ttl)


FORWARD = b"forward"  # respond()'s word for "not ours: ask the upstream"


@dataclass(frozen=True)
class Chase:
    """A reply that ends in a CNAME to a name outside the cluster: the server asks its
    upstream for the target and adds what it says (CoreDNS's upstream lookup for an
    ExternalName); when the upstream fails, the reply goes as it is."""
    reply: bytes
    target: str
    qtype: int


_HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
QR, OPCODE_SHIFT, RD, CD = 0x8000, 11, 0x0100, 0x0010
MAX_PENDING = 4096  # forwarded queries in flight; past this, SERVFAIL at once
MAX_POINTERS = 32  # compression pointers one name may follow (a name has at most 127 labels)
BADVERS = 16


def name_end(data: bytes, off: int) -> int | None:
    """The offset just after the (possibly compressed) name at `off`, or None when it is
    malformed: a label over 63 bytes or past the end, a name over 255 bytes, a pointer that
    does not point strictly backwards, or more than MAX_POINTERS of them. A pointer always
    moving backwards ends every walk; dnslib follows a chain by recursion, so a long one
    (a 2.3 KB datagram) raised RecursionError in the server."""
    end, hops, total, pos = None, 0, 0, off
    while pos < len(data):
        b = data[pos]
        if b & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                return None
            target = ((b & 0x3F) << 8) | data[pos + 1]
            if end is None:
                end = pos + 2
            if target >= pos or hops >= MAX_POINTERS:
                return None
            hops, pos = hops + 1, target
        elif b & 0xC0:
            return None  # the extended label types (0x40, 0x80) are not in use
        elif b == 0:
            return end if end is not None else pos + 1
        else:
            total += b + 1
            if total > 255:
                return None
            pos += 1 + b
    return None


def well_formed(data: bytes, qdcount: int, arcount: int) -> bool:
    """Whether every name of a query (its questions and additional records) is sound and
    every record lies within the datagram, before dnslib parses it."""
    off = _HEADER.size
    for _ in range(qdcount):
        end = name_end(data, off)
        if end is None or end + 4 > len(data):
            return False
        off = end + 4
    for _ in range(arcount):
        end = name_end(data, off)
        if end is None or end + 10 > len(data):
            return False
        (rdlength,) = struct.unpack_from("!H", data, end + 8)
        off = end + 10 + rdlength
        if off > len(data):
            return False
    return True


def _with_upstream(reply: bytes, upstream: bytes) -> bytes:
    """The cluster's CNAME reply with the upstream's answer records for its target added."""
    try:
        up = DNSRecord.parse(upstream)
        if up.header.rcode != RCODE.NOERROR or not up.rr:
            return reply
        merged = DNSRecord.parse(reply)
        for rr in up.rr:
            merged.add_answer(rr)
        merged.header.tc = up.header.tc  # the upstream's answer did not fit: nor does ours (CoreDNS)
        return merged.pack()
    except Exception:  # noqa: BLE001 - an upstream's garbage: the CNAME alone, as before
        return reply


def _same_question(query: bytes, answer: bytes) -> bool:
    """Whether an upstream's answer is to the question of our query (names compared without
    regard to case, as DNS does)."""
    end = name_end(query, _HEADER.size)
    return end is not None and answer[4:6] == b"\x00\x01" and \
        answer[_HEADER.size:end + 4].lower() == query[_HEADER.size:end + 4].lower()


def _bare(qid: int, flags: int, rcode: int) -> bytes:
    """A reply of a header alone: the query's ID, opcode, RD and CD, and `rcode`."""
    return _HEADER.pack(qid, QR | (flags & (0xF << OPCODE_SHIFT)) | (flags & (RD | CD)) | rcode, 0, 0, 0, 0)


def respond(zone: records.Zone, data: bytes, forward: bool = False) -> bytes | None:
    """The wire reply to a wire query (pure); None = drop; FORWARD = a name outside the
    cluster that an upstream server should answer (when `forward`).

    What no datagram may do: a response (QR=1) is never answered, so two servers cannot
    ping-pong and nothing is reflected; a datagram shorter than a header gets nothing; an
    opcode other than QUERY gets NOTIMP, an EDNS version above 0 BADVERS; anything
    malformed FORMERR, checked before dnslib parses it (name_end); a failure building the
    answer SERVFAIL. A reply copies the query's RD and CD, never its TC or AD."""
    if len(data) < _HEADER.size:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & QR:
        return None
    if (flags >> OPCODE_SHIFT) & 0xF != 0:  # QUERY
        return _bare(qid, flags, RCODE.NOTIMP)
    if qdcount != 1 or ancount or nscount or arcount > 2 or not well_formed(data, qdcount, arcount):
        return _bare(qid, flags, RCODE.FORMERR)
    try:
        query = DNSRecord.parse(data)
    except Exception:  # noqa: BLE001 - whatever dnslib refuses is the sender's error
        return _bare(qid, flags, RCODE.FORMERR)
    opt = next((rr for rr in query.ar if rr.rtype == QTYPE.OPT), None)
    if opt is not None and (opt.ttl >> 16) & 0xFF > 0:  # EDNS version: we speak 0 (RFC 6891 §6.1.3)
        reply = DNSRecord(DNSHeader(id=qid, qr=1, rd=query.header.rd, ra=1), q=query.q)
        reply.header.cd = query.header.cd
        reply.add_ar(EDNS0(udp_len=EDNS_SIZE, ext_rcode=BADVERS >> 4))
        return reply.pack()
    q = query.questions[0]
    qtype = QTYPE.get(q.qtype, str(q.qtype))
    try:
        ans = records.answer(zone, str(q.qname), qtype)
        if (ans.rcode == "REFUSED" or ans.fallthrough) and forward:
            return FORWARD
        reply = DNSRecord(DNSHeader(id=qid, qr=1, aa=int(ans.authoritative), rd=query.header.rd, ra=1),
                          q=query.q)  # ra: as CoreDNS, which forwards
        reply.header.cd = query.header.cd
        reply.header.rcode = getattr(RCODE, ans.rcode)
        asked = str(q.qname)
        for rr in ans.answer:
            reply.add_answer(_rr(rr, asked))
        for rr in ans.authority:
            reply.add_auth(_rr(rr, asked))
        for rr in ans.additional:
            reply.add_ar(_rr(rr, asked))
        if opt is not None:  # EDNS0: answer with our own OPT
            reply.add_ar(EDNS0(udp_len=EDNS_SIZE))
        if ans.chase and forward:
            return Chase(reply.pack(), ans.chase, q.qtype)
        return reply.pack()
    except Exception as exc:  # noqa: BLE001 - as CoreDNS recovers a panic: this query fails, not the server
        print(f"nsk dns: error answering {q.qname} {qtype}: {exc!r}", file=sys.stderr, flush=True)
        failed = DNSRecord(DNSHeader(id=qid, qr=1, rd=query.header.rd, ra=1), q=query.q)
        failed.header.rcode = RCODE.SERVFAIL
        return failed.pack()


def udp_limit(query: bytes) -> int:
    """How large a UDP answer to this query may be: 512, or with EDNS0 what the client
    offers, up to EDNS_SIZE."""
    try:
        for rr in DNSRecord.parse(query).ar:
            if rr.rtype == QTYPE.OPT:
                return max(UDP_PLAIN, min(rr.rclass, EDNS_SIZE))
    except Exception:  # noqa: BLE001 - respond() checked it; whatever else, the plain size
        pass
    return UDP_PLAIN


@dataclass(eq=False)
class _Conn:
    """A client's TCP connection: what it sent that is not a whole message yet, and the
    answers it has not taken yet."""
    sock: socket.socket
    deadline: float  # closed when idle past this (monotonic)
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    writing: bool = False  # waiting for EPOLLOUT
    closed: bool = False


@dataclass
class _Forwarded:
    """A query not ours, asked of an upstream under an ID of ours."""
    query: bytes  # as the client sent it (its ID first)
    reply: Callable[[bytes], None]  # where the answer goes
    deadline: float  # monotonic: then the next upstream
    index: int  # the upstream asked
    tried: int  # how many were asked before it


class Server:
    def __init__(self, store_dir: str, domain: str, dns_ip: str, ttl: int, upstream: tuple[str, ...], name: str):
        self.store_dir, self.domain, self.dns_ip, self.ttl = store_dir, domain, dns_ip, ttl
        self.upstream_servers = upstream
        self.poll: select.epoll | None = None  # made in serve(): this object is built before a fork
        self.handlers: dict[int, Callable[[int], None]] = {}  # fd -> what to do with its epoll events
        self.watch_path = os.path.join(store_dir, "watch", f"{name}.sock")
        self.zone = records.build([], [], domain, dns_ip, ttl, namespaces=[])
        self.cache: dict[bytes, bytes] = {}
        self.conns: dict[int, _Conn] = {}
        self.informer = None  # opened in the child: a forked process carries no store connection
        self.up_sock: socket.socket | None = None
        self.batch: Batch | None = None  # the UDP socket's receive and send buffers
        self.pending: dict[int, _Forwarded] = {}  # by our ID
        self.up_first = 0  # the upstream that answered last: asked first
        self.reload_at = 0.0  # a write was announced: look at the store then
        self.misses: dict[str, collections.deque] = {}  # sender -> its queries waiting for a miss's answer
        self.miss_turn: collections.deque = collections.deque()  # senders, round robin
        self.loaded_at = -RELOAD_DELAY  # when we last looked
        self._rng = random.SystemRandom()

    def load(self) -> None:
        """Apply what changed to the zone, object by object (the watch of the store's change
        log): a write that changes no record costs a comparison, and one Pod coming up costs
        the same however many Pods there are."""
        if self.informer is None:
            from nsk.store import Store
            from nsk.store.informer import Informer
            self.informer = Informer(Store(self.store_dir), ("Service", "Endpoints", "Pod", "Namespace"))
        touched = False
        for k in self.informer.sync():
            touched |= self.zone.put(*self._part(k))
        if touched:
            self.cache.clear()

    def _part(self, k) -> tuple[tuple, records.Part]:
        """What the object `k` names gives the zone now (nothing, if it is gone)."""
        z, inf = self.zone, self.informer
        if k.kind in ("Service", "Endpoints"):
            svc = inf.get("Service", k.namespace, k.name)
            part = z.service_part(svc, inf.get("Endpoints", k.namespace, k.name)) if svc else records.Part()
            return ("Service", k.namespace, k.name), part
        obj = inf.get(k.kind, k.namespace, k.name)
        if k.kind == "Pod":
            return ("Pod", k.namespace, k.name), z.pod_part(obj) if obj else records.Part()
        return ("Namespace", k.name), z.namespace_part(k.name) if obj else records.Part()

    def answer(self, data: bytes, reply) -> None:
        """Answer `data` by calling reply(bytes), now or, for a forwarded query, when the
        upstream answers (never blocking the loop)."""
        # replies differ only in their ID: cache them by the query without its ID
        key = data[2:]
        hit = self.cache.get(key)
        if hit is not None:
            reply(data[:2] + hit)
            return
        out = respond(self.zone, data, forward=bool(self.upstream_servers))
        if out is FORWARD:
            self._forward(data, reply)
        elif isinstance(out, Chase):
            self._forward(DNSRecord.question(out.target, QTYPE.get(out.qtype, "A")).pack(),
                          lambda up, c=out: reply(_with_upstream(c.reply, up)))
        elif out is not None:
            # only answers that fit any UDP client: the receive loop sends cached ones as they are
            if len(out) <= UDP_PLAIN and len(self.cache) < 50000:
                self.cache[key] = out[2:]
            reply(out)

    def _forward(self, data: bytes, reply, tried: int = 0, index: int | None = None) -> None:
        """Ask an upstream (under a new ID of ours): first the one that answered last, then,
        when one does not answer within FORWARD_TIMEOUT, the next, as CoreDNS's forward
        moves on from an upstream that fails; SERVFAIL when every one was tried."""
        index = self.up_first if index is None else index
        if len(self.pending) >= MAX_PENDING:
            f_flags = struct.unpack_from("!H", data, 2)[0]
            reply(_bare(struct.unpack_from("!H", data)[0], f_flags, RCODE.SERVFAIL))
            return
        # an unpredictable ID, not one in flight: a spoofed answer must guess it (RFC 5452)
        qid = self._rng.randrange(65536)
        while qid in self.pending:
            qid = self._rng.randrange(65536)
        self.pending[qid] = _Forwarded(data, reply, time.monotonic() + FORWARD_TIMEOUT, index, tried)
        try:
            self.up_sock.sendto(struct.pack("!H", qid) + data[2:], (self.upstream_servers[index], 53))
        except OSError:
            self._next_upstream(qid)

    def _upstream_reply(self) -> None:
        while True:
            try:
                data, src = self.up_sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                continue
            if len(data) < _HEADER.size:
                continue
            qid = struct.unpack_from("!H", data)[0]
            f = self.pending.get(qid)
            # only the answer of the upstream asked, to the question asked (RFC 5452): a
            # datagram from anyone else, or a query, never reaches a client
            if f is None or src != (self.upstream_servers[f.index], 53) or not data[2] & 0x80 or \
                    not _same_question(f.query, data):
                continue
            del self.pending[qid]
            self.up_first = f.index
            f.reply(f.query[:2] + data[2:])

    def _next_upstream(self, qid: int) -> None:
        """The upstream did not answer in time: the next one, or SERVFAIL after the last."""
        f = self.pending.pop(qid)
        if f.tried + 1 < len(self.upstream_servers):
            self._forward(f.query, f.reply, f.tried + 1, (f.index + 1) % len(self.upstream_servers))
        else:
            qid, flags = struct.unpack_from("!HH", f.query)
            f.reply(_bare(qid, flags, RCODE.SERVFAIL))

    def serve(self, port: int = 53) -> None:
        self.poll = select.epoll()
        os.makedirs(os.path.dirname(self.watch_path), exist_ok=True)
        if os.path.exists(self.watch_path):
            os.unlink(self.watch_path)
        watch = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        watch.bind(self.watch_path)
        watch.setblocking(False)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # room for a burst of queries (the kernel caps it at the namespace's rmem_max)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        udp.bind(("0.0.0.0", port))
        udp.setblocking(False)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("0.0.0.0", port))
        tcp.listen(128)
        tcp.setblocking(False)
        self.up_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up_sock.setblocking(False)
        self.batch = Batch(udp)
        self._on_readable(watch, lambda _: self._watch_event(watch))
        self._on_readable(udp, lambda _: self._udp_burst(udp))
        self._on_readable(tcp, lambda _: self._accept(tcp))
        self._on_readable(self.up_sock, lambda _: self._upstream_reply())
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        self.load()
        print(f"nsk dns: serving {self.domain} on :{port} (udp, tcp)", flush=True)
        # epoll itself rather than selectors: the loop turns once per small batch of
        # queries under load, and selectors' per-call bookkeeping was a tenth of its time
        poll, handlers = self.poll.poll, self.handlers
        try:
            while True:
                timeout = 0.5 if not self.reload_at else max(0.0, self.reload_at - time.monotonic())
                if self.misses:
                    timeout = 0.0  # misses wait: answer more of them after a look at the sockets
                for fd, events in poll(timeout):
                    handler = handlers.get(fd)  # None: closed by an earlier handler of this turn
                    if handler is not None:
                        handler(events)
                if self.reload_at and time.monotonic() >= self.reload_at:
                    self.reload_at, self.loaded_at = 0.0, time.monotonic()
                    self.load()
                if self.conns or self.pending:
                    self._expire()
                if self.misses:
                    self._answer_misses(udp)
        finally:
            os.unlink(self.watch_path)

    def _on_readable(self, sock: socket.socket, handler: Callable[[int], None]) -> None:
        self.handlers[sock.fileno()] = handler
        self.poll.register(sock.fileno(), select.EPOLLIN)

    def _watch_event(self, sock: socket.socket) -> None:
        while True:
            try:
                sock.recv(64)
            except BlockingIOError:
                break
        # a write alone is looked at at once; writes come in bursts too (nsk up, a scale),
        # and then one look per RELOAD_DELAY, instead of one per write, takes them all
        if not self.reload_at:
            self.reload_at = max(time.monotonic(), self.loaded_at + RELOAD_DELAY)

    def _accept(self, sock: socket.socket) -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        c = _Conn(conn, time.monotonic() + TCP_IDLE)
        self.conns[conn.fileno()] = c
        self._on_readable(conn, lambda events: self._tcp_event(c, events))

    def _udp_burst(self, sock: socket.socket) -> None:
        """Answer the queries waiting on the UDP socket, a few batches at most so that TCP
        and the watch are not starved.

        The hot path of the whole server. Python's socket module costs two system calls a
        query (recvfrom, sendto), which made the server slower than dnsmasq; here one
        recvmmsg takes up to a batch of queries and one sendmmsg sends their answers. A
        cached answer is written behind the query's own ID in the query's buffer, with no
        Python call in between; anything else takes the general path."""
        batch = self.batch
        for _ in range(4):
            n = batch.recv()
            for i in batch.answer_from(self.cache, keep=2):
                data, addr = batch.data(i), batch.peer(i)
                if data:
                    self._queue_miss(bytes(data), addr)
            batch.send()
            if n < batch.size:  # the socket was empty: epoll says when more arrives
                break
        self._answer_misses(sock)

    def _queue_miss(self, data: bytes, addr) -> None:
        """A query the cache cannot answer waits in its sender's queue (bounded: a client
        that floods loses its own newest queries, nobody else's)."""
        q = self.misses.get(addr[0])
        if q is None:
            if len(self.misses) >= MISS_SOURCES:
                return
            q = self.misses[addr[0]] = collections.deque()
            self.miss_turn.append(addr[0])
        if len(q) < MISS_PER_SOURCE:
            q.append((data, addr))

    def _answer_misses(self, sock: socket.socket) -> None:
        """Answer waiting misses one sender at a time, round robin, for at most MISS_BUDGET
        of this turn: a flood of names nobody asked before from one Pod costs the others a
        turn each, not their answers (they used to wait behind it until the kernel dropped them)."""
        deadline = time.monotonic() + MISS_BUDGET
        turn, misses = self.miss_turn, self.misses
        while turn and time.monotonic() < deadline:
            src = turn.popleft()
            q = misses[src]
            data, addr = q.popleft()
            if q:
                turn.append(src)
            else:
                del misses[src]
            self.answer(data, lambda out, a=addr, d=data: self._udp_reply(sock, out, a, d))

    @staticmethod
    def _udp_reply(sock: socket.socket, out: bytes, addr, query: bytes) -> None:
        if len(out) > UDP_PLAIN and len(out) > udp_limit(query):  # too big: TC set, the client asks over TCP
            try:
                hdr = DNSRecord.parse(out)
                hdr.rr, hdr.auth, hdr.ar = [], [], []
                hdr.header.tc = 1
                out = hdr.pack()
            except (DNSError, ValueError, IndexError, struct.error):
                return
        try:
            sock.sendto(out, addr)
        except OSError:
            pass

    def _tcp_event(self, c: _Conn, events: int) -> None:
        if events & select.EPOLLOUT:
            self._tcp_flush(c)
        if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and not c.closed:
            self._tcp_read(c)

    def _tcp_reply(self, c: _Conn, out: bytes) -> None:
        """Queue an answer on a TCP connection and send what the socket takes now: a client
        that does not read must not stall the server (a blocking send would), so its answers
        wait in its own buffer, and a client that lets too many wait is dropped."""
        if c.closed:
            return  # the client went away while the upstream was asked
        c.outbuf += struct.pack("!H", len(out)) + out
        if len(c.outbuf) > TCP_PENDING:
            self._close(c)
        else:
            self._tcp_flush(c)

    def _tcp_flush(self, c: _Conn) -> None:
        try:
            del c.outbuf[:c.sock.send(c.outbuf)]
        except BlockingIOError:
            pass
        except OSError:
            self._close(c)
            return
        if bool(c.outbuf) != c.writing:  # epoll tells when the socket takes more
            c.writing = bool(c.outbuf)
            self.poll.modify(c.sock.fileno(), select.EPOLLIN | (select.EPOLLOUT if c.writing else 0))

    def _tcp_read(self, c: _Conn) -> None:
        try:
            chunk = c.sock.recv(MAX_TCP + 2)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(c)
            return
        c.deadline = time.monotonic() + TCP_IDLE
        buf = c.inbuf
        buf += chunk
        while len(buf) >= 2:
            n = struct.unpack("!H", buf[:2])[0]
            if len(buf) < 2 + n:
                break
            msg = bytes(buf[2:2 + n])
            del buf[:2 + n]
            self.answer(msg, lambda out: self._tcp_reply(c, out))
            if c.closed:
                return
        if len(buf) > MAX_TCP + 2:
            self._close(c)

    def _close(self, c: _Conn) -> None:
        if c.closed:
            return
        c.closed = True
        fd = c.sock.fileno()
        if self.conns.get(fd) is c:
            del self.conns[fd]
            self.handlers.pop(fd, None)
            self.poll.unregister(fd)
        c.sock.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for c in list(self.conns.values()):
            if now > c.deadline:
                self._close(c)
        for qid in [q for q, f in self.pending.items() if now > f.deadline]:
            self._next_upstream(qid)


def main(argv: list[str] | None = None) -> None:
    """The coredns Pods' container: `python -m nsk.dns.server --run-dir DIR ...`.

    A fresh interpreter, not a fork of the control plane: SQLite's state must not cross a
    fork (its locks are per process, its file table global), and this is the one workload
    that opens the store. A forked DNS server shared the control plane's record of the
    store's files, held no lock on its shared memory, and after another process closed the
    last connection it knew of, went on reading a deleted write-ahead log: new Services
    never resolved."""
    import argparse
    ap = argparse.ArgumentParser(prog="nsk-dns")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--dns-ip", required=True)
    ap.add_argument("--ttl", type=int, required=True)
    ap.add_argument("--upstream", default="")
    ap.add_argument("--name", required=True)
    a = ap.parse_args(argv)
    try:
        with open("/proc/self/comm", "w") as f:  # `ps` shows the Pod's name, as for a forked workload
            f.write(a.name.split("_", 1)[-1][:15])
    except OSError:
        pass
    Server(a.run_dir, a.domain, a.dns_ip, a.ttl, tuple(u for u in a.upstream.split(",") if u), a.name).serve()


if __name__ == "__main__":
    main()
