"""Raw rtnetlink for the one hot path of `nsk up`: a Pod's sandbox (root to use; encoding is pure).

SPEC §10 says pyroute2 for all netlink work, and everything else in nsk still uses it
(kernel/links.py). A Pod's sandbox is the exception, because pyroute2's cost is per request,
not per byte: each request runs through an asyncio event loop and pyroute2's generic
message classes. Measured on the project's machine (2 cores, kernel 6.18, Python 3.11) with
`bench/up_down.py --netlink`, in throw-away namespaces, several runs:

    one request (`link set lo up`, 2,000 times)   pyroute2 280-370 µs   here 6-9 µs (4-6 µs in batches of 6)
    opening + closing a socket                    pyroute2 430-650 µs   here 9-11 µs
    a Pod's sandbox (200 Pods on 2 nodes)          pyroute2 4.9-5.3 ms   here 1.7-1.8 ms

A sandbox took one IPRoute and seven requests (veth, lo up, get eth0, eth0 up, address, two
routes) through pyroute2. Here it takes two batches, one per socket, each a single sendmsg
of several messages with NLM_F_ACK on each: the node's (create the veth pair, then ask for
the node end, whose IFLA_LINK is the peer's index in the Pod's namespace) and the Pod's (lo
up, eth0 up, address, on-link route, default route). What is left of the 1.7 ms is the
kernel's (making the namespace ~0.4-0.6 ms, the veth pair on the bridge ~0.7 ms, the Pod's
batch ~0.3 ms); the Python is about 0.1 ms a Pod (encoding both batches 35 µs, opening
the node's socket ~50 µs).

Only what a sandbox needs is encoded; the kernel's structures (linux/netlink.h,
linux/rtnetlink.h, linux/if_link.h, linux/veth.h) are packed with `struct`. The encoders
and decoders are pure (tests/unit/test_rtnl.py); `Socket.transact` alone talks to the kernel
(tests/integration/test_pod_sandbox.py).

The kernel carries on with the rest of a batch after a request fails; `transact` reads
every answer and raises `NetlinkError` (an OSError with the kernel's errno) for the first
failure, naming the request, its interface and the namespace. A half-made sandbox is thrown
away with its namespace by the caller, as before.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import socket
import struct
from typing import Callable, NamedTuple

# linux/netlink.h
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in an ack: the request is not echoed back
NLM_F_ACK_TLVS = 0x200  # in an ack: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1
# linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4  # what pyroute2 sets, and nsk did before (`ip route add` sets boot)
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTEXT_FILTER_SKIP_STATS = 1 << 3
# linux/if_link.h, linux/if_addr.h, linux/veth.h
IFLA_IFNAME = 3
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFF_UP = 0x1

NAMES = {RTM_NEWLINK: "RTM_NEWLINK", RTM_GETLINK: "RTM_GETLINK", RTM_NEWADDR: "RTM_NEWADDR",
         RTM_NEWROUTE: "RTM_NEWROUTE"}

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_NLATTR = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_ERRNO = struct.Struct("=i")


class NetlinkError(OSError):
    """A request the kernel refused: `errno` is the kernel's, the message names the request,
    the interface, the namespace and the errno ("RTM_NEWLINK veth… in nsk_…: EEXIST (File
    exists)"), and is all that str() shows."""

    def __str__(self) -> str:
        return str(self.strerror)


class Request(NamedTuple):
    type: int  # RTM_*
    flags: int  # beyond NLM_F_REQUEST | NLM_F_ACK, which every request carries
    payload: bytes  # the family header and its attributes
    what: str  # for errors: "RTM_NEWLINK veth0123456789a"


# ---- encoding (pure) -------------------------------------------------------------------------

def _pad(n: int) -> int:
    return (n + 3) & ~3


def attr(atype: int, payload: bytes) -> bytes:
    """One netlink attribute (struct nlattr + payload), padded to 4 bytes."""
    n = _NLATTR.size + len(payload)
    return _NLATTR.pack(n, atype) + payload + b"\0" * (_pad(n) - n)


def attr_u32(atype: int, value: int) -> bytes:
    return attr(atype, _U32.pack(value))


def attr_str(atype: int, value: str) -> bytes:
    return attr(atype, value.encode() + b"\0")


def packed_ip(addr: str) -> tuple[int, bytes]:
    """(address family, packed address) of an IPv4 or IPv6 address."""
    a = ipaddress.ip_address(addr)
    return (socket.AF_INET if a.version == 4 else socket.AF_INET6), a.packed


def ifinfomsg(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


def nlmsg(mtype: int, flags: int, seq: int, payload: bytes) -> bytes:
    """One netlink message (struct nlmsghdr + payload); payloads here are 4-byte multiples."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), mtype, flags, seq, 0) + payload


def veth_add(name: str, peer: str, peer_netns_fd: int, master: int | None = None, up: bool = True) -> Request:
    """`ip link add NAME [master M] [up] type veth peer name PEER netns FD`: the peer end is
    created directly in the namespace `peer_netns_fd` refers to, down."""
    peer_info = ifinfomsg() + attr_str(IFLA_IFNAME, peer) + attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
    linkinfo = attr_str(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info))
    payload = (ifinfomsg(flags=IFF_UP if up else 0, change=IFF_UP if up else 0) + attr_str(IFLA_IFNAME, name)
               + (attr_u32(IFLA_MASTER, master) if master else b"") + attr(IFLA_LINKINFO, linkinfo))
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, payload, f"RTM_NEWLINK {name}")


def link_get(name: str) -> Request:
    """RTM_GETLINK of one interface by name (no dump, no statistics)."""
    payload = ifinfomsg() + attr_str(IFLA_IFNAME, name) + attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    return Request(RTM_GETLINK, 0, payload, f"RTM_GETLINK {name}")


def link_up(index: int, name: str) -> Request:
    """`ip link set dev NAME up`, by index (`name` only names it in errors)."""
    return Request(RTM_NEWLINK, 0, ifinfomsg(index, IFF_UP, IFF_UP), f"RTM_NEWLINK {name} up")


def addr_add(index: int, name: str, ip: str, prefixlen: int) -> Request:
    """`ip addr add IP/PREFIXLEN dev NAME` (either family)."""
    family, packed = packed_ip(ip)
    payload = (_IFADDRMSG.pack(family, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
               + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed))
    return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, payload, f"RTM_NEWADDR {ip}/{prefixlen} on {name}")


def route_add(dst: str, gateway: str | None = None, oif: int | None = None, name: str = "",
              scope: int = RT_SCOPE_UNIVERSE) -> Request:
    """`ip route add DST [via GATEWAY] [dev NAME] [scope link]` in the main table (either family);
    `dst` is "a.b.c.d/len"."""
    net = ipaddress.ip_network(dst)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    payload = _RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, 0)
    if net.prefixlen:
        payload += attr(RTA_DST, net.network_address.packed)
    if gateway is not None:
        gw_family, gw = packed_ip(gateway)
        if gw_family != family:
            raise ValueError(f"gateway {gateway} is not of the family of {dst}")
        payload += attr(RTA_GATEWAY, gw)
    if oif is not None:
        payload += attr_u32(RTA_OIF, oif)
    what = f"RTM_NEWROUTE {dst}" + (f" via {gateway}" if gateway else "") + (f" dev {name}" if name else "")
    return Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, payload, what)


def encode(requests: list[Request], first_seq: int) -> bytes:
    """The batch as one buffer: request i gets sequence number first_seq + i, and NLM_F_ACK."""
    return b"".join(nlmsg(r.type, NLM_F_REQUEST | NLM_F_ACK | r.flags, first_seq + i, r.payload)
                    for i, r in enumerate(requests))


# ---- decoding (pure) -------------------------------------------------------------------------

class Reply(NamedTuple):
    type: int
    flags: int
    seq: int
    payload: bytes


def messages(data: bytes) -> list[Reply]:
    """Split a datagram from the kernel into its netlink messages."""
    out, off = [], 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            raise OSError(_errno.EPROTO, f"truncated netlink message at byte {off} of {len(data)}")
        out.append(Reply(mtype, flags, seq, data[off + _NLMSGHDR.size:off + length]))
        off += _pad(length)
    return out


def attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Top-level attributes from `offset` on (the last of a type wins), NLA_F_* bits masked off."""
    out, off = {}, offset
    while off + _NLATTR.size <= len(data):
        length, atype = _NLATTR.unpack_from(data, off)
        if length < _NLATTR.size:
            break
        out[atype & 0x3FFF] = data[off + _NLATTR.size:off + length]
        off += _pad(length)
    return out


def ack_error(reply: Reply) -> tuple[int, str]:
    """(errno, extended-ack text) of an NLMSG_ERROR message; errno 0 is an ack."""
    (err,) = _ERRNO.unpack_from(reply.payload, 0)
    text = ""
    if err and reply.flags & NLM_F_ACK_TLVS:
        # after the error: the request's header, and its payload unless the ack is capped
        off = _ERRNO.size + _NLMSGHDR.size
        if not reply.flags & NLM_F_CAPPED:
            (orig_len,) = struct.unpack_from("=I", reply.payload, _ERRNO.size)
            off = _ERRNO.size + _pad(orig_len)
        msg = attrs(reply.payload, off).get(NLMSGERR_ATTR_MSG)
        if msg:
            text = msg.split(b"\0", 1)[0].decode(errors="replace")
    return -err, text


def link_index(answer: list[Reply], name: str = "") -> int:
    """The interface index (ifinfomsg.ifi_index) of the RTM_NEWLINK answer to link_get."""
    for reply in answer:
        if reply.type == RTM_NEWLINK and len(reply.payload) >= _IFINFOMSG.size:
            return _IFINFOMSG.unpack_from(reply.payload, 0)[2]
    raise OSError(_errno.EPROTO, f"RTM_GETLINK {name}: no interface in the kernel's answer")


def link_peer_index(answer: list[Reply], name: str = "") -> int:
    """IFLA_LINK of the RTM_NEWLINK answer to link_get: for a veth, its peer's index (in the
    peer's namespace). An answer without one raises OSError(EPROTO)."""
    for reply in answer:
        if reply.type == RTM_NEWLINK:
            found = attrs(reply.payload, _IFINFOMSG.size).get(IFLA_LINK)
            if found is not None and len(found) >= 4:
                return _U32.unpack(found[:4])[0]
    raise OSError(_errno.EPROTO, f"RTM_GETLINK {name}: no peer index (IFLA_LINK) in the kernel's answer")


def error(code: int, what: str, where: str, text: str = "") -> NetlinkError:
    name = _errno.errorcode.get(code, str(code))
    msg = f"{what}{f' in {where}' if where else ''}: {name} ({os.strerror(code)})" + (f": {text}" if text else "")
    return NetlinkError(code, msg)


# ---- the socket --------------------------------------------------------------------------------

class Socket:
    """A NETLINK_ROUTE socket in the calling thread's network namespace (root for changes).

    `where` names that namespace in errors; a callable is asked only when an error is raised.
    """

    def __init__(self, where: str | Callable[[], str] = "", sock: socket.socket | None = None) -> None:
        self.where = where
        self._seq = 0
        if sock is not None:  # an already open one (tests pass a stand-in)
            self.sock = sock
            return
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # acks without a copy of the request
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)  # and with the kernel's reason
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def _where(self) -> str:
        return self.where() if callable(self.where) else self.where

    def transact(self, requests: list[Request]) -> list[list[Reply]]:
        """Send `requests` in one sendmsg and wait for every ack; the answers (other than
        acks) each request got. Raises NetlinkError for the first request that failed."""
        first = self._seq + 1
        self._seq += len(requests)
        self.sock.sendmsg([encode(requests, first)])
        answers: list[list[Reply]] = [[] for _ in requests]
        failed: dict[int, tuple[int, str]] = {}
        pending = len(requests)
        while pending:
            for reply in messages(self.sock.recv(65536)):
                i = reply.seq - first
                if not 0 <= i < len(requests):
                    continue  # not ours (no group is joined, so this does not happen)
                if reply.type == NLMSG_ERROR:
                    code, text = ack_error(reply)
                    if code:
                        failed[i] = (code, text)
                    pending -= 1
                elif reply.type != NLMSG_DONE:
                    answers[i].append(reply)
        if failed:
            i = min(failed)
            raise error(failed[i][0], requests[i].what, self._where(), failed[i][1])
        return answers
