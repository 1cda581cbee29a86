"""Raw rtnetlink (nsk/kernel/rtnl.py): message encoding, checked by decoding it with pyroute2's
own message classes, and the ack handling of a batch, against a stand-in socket (no root)."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from nsk.kernel import rtnl

REQ_ACK = rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK
CREATE = REQ_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL


def decode(cls, data: bytes):
    """One netlink message decoded by pyroute2 (an independent implementation)."""
    msg = cls(data)
    msg.decode()
    return msg


def one(request: rtnl.Request, seq: int = 7) -> bytes:
    return rtnl.encode([request], seq)


# ---- attributes and headers ------------------------------------------------------------------

def test_attributes_are_padded_to_four_bytes_with_the_unpadded_length_in_the_header():
    a = rtnl.attr_str(rtnl.IFLA_IFNAME, "eth0")  # 4 + 5 bytes ("eth0\0")
    assert len(a) == 12
    assert struct.unpack_from("=HH", a) == (9, rtnl.IFLA_IFNAME)
    assert a[4:9] == b"eth0\0" and a[9:] == b"\0\0\0"
    assert rtnl.attr_u32(rtnl.IFLA_MASTER, 5) == struct.pack("=HHI", 8, rtnl.IFLA_MASTER, 5)


def test_a_batch_numbers_its_requests_and_asks_an_ack_of_each():
    reqs = [rtnl.link_up(1, "lo"), rtnl.link_up(2, "eth0"), rtnl.link_get("eth0")]
    msgs = rtnl.messages(rtnl.encode(reqs, 41))
    assert [(m.type, m.seq) for m in msgs] == [(rtnl.RTM_NEWLINK, 41), (rtnl.RTM_NEWLINK, 42), (rtnl.RTM_GETLINK, 43)]
    assert all(m.flags & REQ_ACK == REQ_ACK for m in msgs)
    assert [m.payload for m in msgs] == [r.payload for r in reqs]


# ---- the requests of a sandbox ---------------------------------------------------------------

def test_veth_add_makes_the_peer_in_the_pods_namespace_on_the_bridge_and_up():
    msg = decode(ifinfmsg, one(rtnl.veth_add("veth0123456789a", "eth0", 9, master=4)))
    assert msg["header"]["type"] == rtnl.RTM_NEWLINK
    assert msg["header"]["flags"] == CREATE
    assert msg["header"]["sequence_number"] == 7
    assert msg["index"] == 0 and msg["flags"] & rtnl.IFF_UP and msg["change"] & rtnl.IFF_UP
    assert msg.get_attr("IFLA_IFNAME") == "veth0123456789a"
    assert msg.get_attr("IFLA_MASTER") == 4
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth0"
    assert peer.get_attr("IFLA_NET_NS_FD") == 9
    assert peer["index"] == 0


def test_veth_add_without_master_or_up():
    msg = decode(ifinfmsg, one(rtnl.veth_add("v1", "p1", 3, up=False)))
    assert msg.get_attr("IFLA_MASTER") is None
    assert msg["flags"] == 0 and msg["change"] == 0


def test_link_get_asks_by_name_without_statistics():
    msg = decode(ifinfmsg, one(rtnl.link_get("veth0123456789a")))
    assert msg["header"]["type"] == rtnl.RTM_GETLINK
    assert msg["header"]["flags"] == REQ_ACK  # not a dump
    assert msg["index"] == 0
    assert msg.get_attr("IFLA_IFNAME") == "veth0123456789a"
    assert msg.get_attr("IFLA_EXT_MASK") == rtnl.RTEXT_FILTER_SKIP_STATS


def test_link_up_sets_only_the_up_flag():
    msg = decode(ifinfmsg, one(rtnl.link_up(1, "lo")))
    assert (msg["index"], msg["flags"], msg["change"]) == (1, rtnl.IFF_UP, rtnl.IFF_UP)
    assert msg["header"]["flags"] == REQ_ACK
    assert msg["attrs"] == []


def test_addr_add_is_ip_slash_32_on_the_interface():
    msg = decode(ifaddrmsg, one(rtnl.addr_add(2, "eth0", "10.244.1.7", 32)))
    assert msg["header"]["type"] == rtnl.RTM_NEWADDR
    assert msg["header"]["flags"] == CREATE
    assert (msg["family"], msg["prefixlen"], msg["index"], msg["scope"]) == (socket.AF_INET, 32, 2, 0)
    assert msg.get_attr("IFA_LOCAL") == "10.244.1.7"
    assert msg.get_attr("IFA_ADDRESS") == "10.244.1.7"


def test_on_link_route_to_the_gateway():
    msg = decode(rtmsg, one(rtnl.route_add("10.244.1.1/32", oif=2, name="eth0", scope=rtnl.RT_SCOPE_LINK)))
    assert msg["header"]["type"] == rtnl.RTM_NEWROUTE
    assert msg["header"]["flags"] == CREATE
    assert (msg["family"], msg["dst_len"], msg["table"], msg["scope"], msg["type"], msg["proto"]) == \
        (socket.AF_INET, 32, 254, 253, 1, rtnl.RTPROT_STATIC)
    assert msg.get_attr("RTA_DST") == "10.244.1.1"
    assert msg.get_attr("RTA_OIF") == 2
    assert msg.get_attr("RTA_GATEWAY") is None


def test_default_route_via_the_gateway():
    msg = decode(rtmsg, one(rtnl.route_add("0.0.0.0/0", gateway="10.244.1.1")))
    assert (msg["dst_len"], msg["scope"], msg["table"]) == (0, 0, 254)
    assert msg.get_attr("RTA_DST") is None
    assert msg.get_attr("RTA_GATEWAY") == "10.244.1.1"
    assert msg.get_attr("RTA_OIF") is None


def test_requests_name_their_interface_for_errors():
    assert rtnl.veth_add("vethA", "eth0", 3).what == "RTM_NEWLINK vethA"
    assert rtnl.link_up(2, "eth0").what == "RTM_NEWLINK eth0 up"
    assert rtnl.addr_add(2, "eth0", "10.0.0.2", 32).what == "RTM_NEWADDR 10.0.0.2/32 on eth0"
    assert rtnl.route_add("0.0.0.0/0", gateway="10.0.0.1").what == "RTM_NEWROUTE 0.0.0.0/0 via 10.0.0.1"
    assert rtnl.route_add("10.0.0.1/32", oif=2, name="eth0").what == "RTM_NEWROUTE 10.0.0.1/32 dev eth0"


def test_bad_addresses_fail_before_anything_is_sent():
    with pytest.raises(ValueError):
        rtnl.addr_add(2, "eth0", "10.0.0.300", 32)
    with pytest.raises(ValueError):
        rtnl.route_add("10.0.0.1/33", oif=2)


# ---- answers ---------------------------------------------------------------------------------

def ack(seq: int, err: int = 0, text: str = "", capped: bool = True, request: bytes = b"") -> bytes:
    """An NLMSG_ERROR message as the kernel writes it."""
    flags = rtnl.NLM_F_CAPPED if capped else 0
    orig = struct.pack("=IHHII", 16 + len(request), rtnl.RTM_NEWLINK, REQ_ACK, seq, 0)
    body = struct.pack("=i", -err) + orig + (b"" if capped else request)
    if text:
        flags |= rtnl.NLM_F_ACK_TLVS
        body += rtnl.attr(rtnl.NLMSGERR_ATTR_MSG, text.encode() + b"\0")
    return rtnl.nlmsg(rtnl.NLMSG_ERROR, flags, seq, body)


def link_answer(seq: int, index: int, peer_index: int) -> bytes:
    payload = rtnl.ifinfomsg(index) + rtnl.attr_str(rtnl.IFLA_IFNAME, "veth0") + rtnl.attr_u32(rtnl.IFLA_LINK, peer_index)
    return rtnl.nlmsg(rtnl.RTM_NEWLINK, 0, seq, payload)


def test_ack_error_reads_the_errno_and_the_kernels_reason():
    for capped in (True, False):
        (m,) = rtnl.messages(ack(3, errno.EEXIST, "File exists here", capped=capped, request=b"\x01\x02\x03\x04"))
        assert rtnl.ack_error(m) == (errno.EEXIST, "File exists here")
    (m,) = rtnl.messages(ack(3))
    assert rtnl.ack_error(m) == (0, "")


def test_link_peer_index_is_ifla_link():
    assert rtnl.link_peer_index(rtnl.messages(link_answer(1, 40, 2))) == 2
    bare = rtnl.nlmsg(rtnl.RTM_NEWLINK, 0, 1, rtnl.ifinfomsg(40) + rtnl.attr_str(rtnl.IFLA_IFNAME, "lo"))
    for answer in (rtnl.messages(bare), []):
        with pytest.raises(OSError) as info:  # what the kubelet catches
            rtnl.link_peer_index(answer, "veth0")
        assert info.value.errno == errno.EPROTO and "veth0" in str(info.value)


def test_link_index_is_the_answers_ifi_index():
    assert rtnl.link_index(rtnl.messages(link_answer(1, 40, 2))) == 40
    with pytest.raises(OSError) as info:
        rtnl.link_index([], "cbr0")
    assert info.value.errno == errno.EPROTO and "cbr0" in str(info.value)


def test_messages_refuses_a_truncated_datagram():
    data = ack(1)
    with pytest.raises(OSError) as info:
        rtnl.messages(data[:-4])
    assert info.value.errno == errno.EPROTO


class FakeKernel:
    """A stand-in for the netlink socket: records what is sent, answers with given datagrams."""

    def __init__(self, answer):
        self.answer = answer  # (sent bytes) -> list of datagrams
        self.sent: list[bytes] = []
        self.queue: list[bytes] = []

    def sendmsg(self, buffers):
        data = b"".join(buffers)
        self.sent.append(data)
        self.queue.extend(self.answer(data))
        return len(data)

    def recv(self, size):
        return self.queue.pop(0)

    def close(self):
        pass


def sandbox_batch():
    return [rtnl.link_up(1, "lo"), rtnl.link_up(2, "eth0"), rtnl.addr_add(2, "eth0", "10.244.1.2", 32),
            rtnl.route_add("10.244.1.1/32", oif=2, name="eth0", scope=rtnl.RT_SCOPE_LINK),
            rtnl.route_add("0.0.0.0/0", gateway="10.244.1.1")]


def test_a_batch_is_one_sendmsg_and_every_ack_is_read_even_across_datagrams():
    def answer(data):
        seqs = [m.seq for m in rtnl.messages(data)]
        return [b"".join(ack(s) for s in seqs[:2]), b"".join(ack(s) for s in seqs[2:])] if len(seqs) > 2 \
            else [ack(s) for s in seqs]

    kernel = FakeKernel(answer)
    s = rtnl.Socket("nsk_x_pod_default_web", sock=kernel)
    assert s.transact(sandbox_batch()) == [[] for _ in range(5)]
    assert len(kernel.sent) == 1 and len(rtnl.messages(kernel.sent[0])) == 5
    assert kernel.queue == []
    s.transact([rtnl.link_up(1, "lo")])  # sequence numbers go on
    assert rtnl.messages(kernel.sent[1])[0].seq == 6


def test_answers_go_to_their_request():
    def answer(data):
        add, get = rtnl.messages(data)
        return [ack(add.seq), link_answer(get.seq, 40, 2) + ack(get.seq)]

    s = rtnl.Socket("node", sock=FakeKernel(answer))
    _, answer = s.transact([rtnl.veth_add("veth0", "eth0", 3, master=4), rtnl.link_get("veth0")])
    assert rtnl.link_peer_index(answer) == 2


def test_the_first_failure_is_raised_after_every_ack_is_read():
    def answer(data):
        seqs = [m.seq for m in rtnl.messages(data)]
        errs = {seqs[2]: errno.EEXIST, seqs[4]: errno.ENETUNREACH}
        return [ack(s, errs.get(s, 0)) for s in seqs]

    kernel = FakeKernel(answer)
    s = rtnl.Socket("nsk_x_pod_default_web", sock=kernel)
    with pytest.raises(OSError) as info:
        s.transact(sandbox_batch())
    e = info.value
    assert isinstance(e, rtnl.NetlinkError)
    assert e.errno == errno.EEXIST
    assert str(e) == "RTM_NEWADDR 10.244.1.2/32 on eth0 in nsk_x_pod_default_web: EEXIST (File exists)"
    assert kernel.queue == []  # nothing left behind for the next batch


def test_the_namespace_is_named_lazily_and_the_kernels_reason_is_kept():
    asked = []

    def where():
        asked.append(1)
        return "nsk_c_node_node-1"

    s = rtnl.Socket(where, sock=FakeKernel(lambda data: [ack(rtnl.messages(data)[0].seq, errno.ENODEV,
                                                             "Unknown device")]))
    assert asked == []
    with pytest.raises(rtnl.NetlinkError) as info:
        s.transact([rtnl.link_up(9, "eth9")])
    assert str(info.value) == "RTM_NEWLINK eth9 up in nsk_c_node_node-1: ENODEV (No such device): Unknown device"
    assert info.value.errno == errno.ENODEV and asked == [1]


def test_addresses_and_routes_of_either_family():
    msg = decode(ifaddrmsg, one(rtnl.addr_add(2, "eth0", "fd00:10:244:1::2", 128)))
    assert (msg["family"], msg["prefixlen"]) == (socket.AF_INET6, 128)
    assert msg.get_attr("IFA_LOCAL") == "fd00:10:244:1::2"
    msg = decode(rtmsg, one(rtnl.route_add("::/0", gateway="fd00:10:244:1::1")))
    assert (msg["family"], msg["dst_len"]) == (socket.AF_INET6, 0)
    assert msg.get_attr("RTA_GATEWAY") == "fd00:10:244:1::1"
    with pytest.raises(ValueError):
        rtnl.route_add("0.0.0.0/0", gateway="fd00::1")
