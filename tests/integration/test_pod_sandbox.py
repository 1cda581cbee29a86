"""A Pod's sandbox made by network.pod_sandbox (the raw rtnetlink path), with real packets (root).

Every namespace here is the test's own (nskperf_<random>_...): a node with cbr0, as
network.build makes it, and Pods on it. All of them are removed at the end, whatever happened.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import time
import uuid

import pytest

from nsk.kernel import links, netns, network, process, rtnl
from tests.conftest import needs_root

pytestmark = pytest.mark.root

GATEWAY = "10.244.1.1"


@pytest.fixture
def made():
    """Names of the namespaces the test makes (recorded before making them); all removed after."""
    needs_root()
    names: list[str] = []
    try:
        yield names
    finally:
        for name in reversed(names):
            netns.remove(name)


@pytest.fixture
def node(made):
    """A node namespace with cbr0 (GATEWAY/24) that forwards; its rtnetlink socket, as the kernel adapter has it."""
    prefix = f"nskperf_{uuid.uuid4().hex[:8]}"
    name = f"{prefix}_node"
    made.append(name)
    netns.create(name)
    with links.ipr(name) as r:
        links.lo_up(r)
        links.bridge(r, "cbr0", GATEWAY, 24)
    for key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.cbr0.send_redirects"):
        netns.sysctl(name, key, "1" if key.endswith("forward") else "0")
    sock, bridge_index = network.node_socket(name)
    route = links.open_route(name)  # pyroute2, to look at what was made
    try:
        yield Node(name, prefix, sock, bridge_index, made, route)
    finally:
        sock.close()
        route.close()


class Node:
    def __init__(self, name, prefix, sock, bridge_index, made, route):
        self.name, self.prefix, self.sock, self.bridge_index, self.made = name, prefix, sock, bridge_index, made
        self.route = route

    def pod(self, n: int, veth: str | None = None) -> str:
        """Pod n: namespace <prefix>_pod<n>, IP 10.244.1.<n+1>, node end veth<prefix hex><n>."""
        name = f"{self.prefix}_pod{n}"
        self.made.append(name)
        network.pod_sandbox(self.sock, self.bridge_index, name, veth or self.veth(n), f"10.244.1.{n + 1}", GATEWAY)
        return name

    def veth(self, n: int) -> str:
        return f"v{self.prefix[-8:]}{n}"


def ping(ns: str, ip: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", ip],
                          capture_output=True, text=True, timeout=10)


def test_pods_reach_the_gateway_and_each_other_through_the_node(node):
    a, b = node.pod(1), node.pod(2)
    for src, dst in ((a, GATEWAY), (a, "10.244.1.3"), (b, "10.244.1.2")):
        p = ping(src, dst)
        assert p.returncode == 0, f"ping {dst} from {src}:\n{p.stdout}{p.stderr}"


def test_the_sandbox_is_what_the_design_says(node):
    pod = node.pod(1)
    with links.ipr(pod) as r:
        lo = r.link("get", index=1)[0]
        eth0 = r.link("get", ifname="eth0")[0]
        assert lo["flags"] & 1 and eth0["flags"] & 1  # IFF_UP
        assert eth0.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "veth"
        addrs = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in r.get_addr(family=2, index=eth0["index"])]
        assert addrs == [("10.244.1.2", 32)]
        routes = {(rt.get_attr("RTA_DST"), rt["dst_len"]): rt for rt in r.get_routes(family=2, table=254)}
        assert set(routes) == {(GATEWAY, 32), (None, 0)}
        onlink = routes[(GATEWAY, 32)]
        assert onlink["scope"] == 253 and onlink.get_attr("RTA_OIF") == eth0["index"]
        assert routes[(None, 0)].get_attr("RTA_GATEWAY") == GATEWAY
    end = node.route.link("get", ifname=node.veth(1))[0]
    assert end.get_attr("IFLA_MASTER") == node.bridge_index
    assert end["flags"] & 1
    assert end.get_attr("IFLA_LINK") == eth0["index"]


def test_the_bridge_keeps_its_mac_as_pods_come_and_go(node):
    """A bridge without a set MAC takes its ports' lowest and changed it 10 times in a churn
    run, leaving Pods a stale ARP entry for the gateway (#16). Its MAC is fixed when made."""
    def mac():
        return node.route.link("get", index=node.bridge_index)[0].get_attr("IFLA_ADDRESS")
    assert mac() == links.bridge_mac(GATEWAY) == "0a:58:0a:f4:01:01"
    pods = [node.pod(n) for n in range(1, 4)]
    for n in range(1, 4):  # ports with MACs lower than the bridge's: a bridge left alone would take one
        node.route.link("set", index=node.route.link_lookup(ifname=node.veth(n))[0], address=f"02:00:00:00:00:0{n}")
    assert mac() == "0a:58:0a:f4:01:01"
    netns.remove(pods[0])
    assert mac() == "0a:58:0a:f4:01:01"


def test_a_containers_children_end_with_it(node, tmp_path):
    """A restarted container once left its previous run's children behind (3 processes
    before, 5 after). Its process leads a group; kill_group ends what it started."""
    pod = node.pod(1)
    ref = process.spawn(process.Sandbox(pod, "p", {"PATH": "/usr/bin:/bin"}, None), str(tmp_path / "log"),
                        argv=["sh", "-c", "sleep 300 & echo $!; sleep 300 & wait"])
    try:
        deadline = time.monotonic() + 5
        while len(process.in_netns(os.stat(netns.path(pod)).st_ino)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(process.in_netns(os.stat(netns.path(pod)).st_ino)) == 3
        os.kill(ref.pid, signal.SIGKILL)  # the main process dies; its children do not by themselves
        time.sleep(0.1)
        assert len(process.in_netns(os.stat(netns.path(pod)).st_ino)) == 2  # its two sleeps live on
        process.kill_group(ref)
        process.exit_status(ref.pid)
        deadline = time.monotonic() + 5
        while process.in_netns(os.stat(netns.path(pod)).st_ino) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.in_netns(os.stat(netns.path(pod)).st_ino) == []
    finally:
        process.kill(ref)
        process.kill_group(ref)


def test_a_netlink_error_is_an_oserror_naming_the_request_and_namespaces(node):
    node.pod(1)
    with pytest.raises(OSError) as info:
        node.pod(2, veth=node.veth(1))  # the node end's name is taken
    e = info.value
    assert isinstance(e, rtnl.NetlinkError) and e.errno == errno.EEXIST
    assert str(e).startswith(f"RTM_NEWLINK {node.veth(1)} (peer eth0 in {node.prefix}_pod2) in {node.name}: "
                             "EEXIST (File exists)"), str(e)
    # what the kubelet does then: remove the namespace; the Pod can be made again
    netns.remove(f"{node.prefix}_pod2")
    node.made.remove(f"{node.prefix}_pod2")
    pod = node.pod(2)
    assert ping(pod, GATEWAY).returncode == 0


def test_a_batch_reports_its_first_failure_and_the_socket_goes_on(node, made):
    name = f"{node.prefix}_raw"
    made.append(name)
    s = netns.create(name, lambda: rtnl.Socket(name))
    with s:
        with pytest.raises(rtnl.NetlinkError) as info:
            s.transact([rtnl.link_up(1, "lo"), rtnl.link_up(4242, "eth9"), rtnl.route_add("0.0.0.0/0", gateway="10.9.9.9")])
        assert info.value.errno == errno.ENODEV
        assert str(info.value).startswith(f"RTM_NEWLINK eth9 up in {name}: ENODEV (No such device)")
        # every answer of the failed batch was read: the next batch gets its own
        (answer,) = s.transact([rtnl.link_get("lo")])
        assert len(answer) == 1 and answer[0].type == rtnl.RTM_NEWLINK


def test_a_taken_namespace_name_fails_before_any_interface_is_made(node):
    pod = node.pod(1)
    with pytest.raises(FileExistsError):
        network.pod_sandbox(node.sock, node.bridge_index, pod, node.veth(9), "10.244.1.10", GATEWAY)
    assert not node.route.link_lookup(ifname=node.veth(9))


def test_create_removes_the_namespace_when_inside_fails(made):
    name = f"nskperf_{uuid.uuid4().hex[:8]}_inside"
    made.append(name)

    def inside():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        netns.create(name, inside)
    assert not netns.exists(name)


def test_each_node_has_its_own_xtables_lock(made, tmp_path):
    """A real node has its own /run/xtables.lock: a legacy restore in one node does not wait
    for another node's (held here), and does wait for its own node's."""
    from nsk.kernel.ops import Kernel
    prefix = f"nskperf_{uuid.uuid4().hex[:8]}"
    one, two = f"{prefix}_a", f"{prefix}_b"
    for name in (one, two):
        made.append(name)
        netns.create(name)
    kernel = Kernel("legacy", str(tmp_path))
    text = "*filter\n:NSK-LOCK-TEST - [0:0]\nCOMMIT\n"
    held = os.open(os.path.join(tmp_path, "xtables", f"{two}.lock"), os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        kernel.restore(one, text)
        job = kernel.restore_start([(two, text)])
        time.sleep(0.5)
        assert not job.done(), "a restore went on while its node's lock was held"
    finally:
        os.close(held)  # releases the lock
    deadline = time.monotonic() + 6
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    job.result()
    assert all(":NSK-LOCK-TEST " in kernel.save(ns, "filter") for ns in (one, two))


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_a_few_chains_read_alone_are_what_iptables_save_shows_of_them(made, backend):
    """kube-proxy's jumps and canary are checked chain by chain (Kernel.save(chains=)): the
    same rules as a whole iptables-save shows, and nothing for a chain that is not there."""
    from nsk.kernel.iptables import save, save_chains
    from nsk.testing.fakes import only_chains
    ns = f"nskperf_{uuid.uuid4().hex[:8]}_ipt"
    made.append(ns)
    netns.create(ns)
    from nsk.kernel.iptables import restore
    restore(ns, "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-X - [0:0]\n"
                "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
                "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-X\nCOMMIT\n"
                "*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n*filter\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n", which=backend)
    chains = [("nat", "PREROUTING"), ("nat", "KUBE-SERVICES"), ("nat", "KUBE-NOPE"), ("mangle", "KUBE-PROXY-CANARY"),
              ("filter", "KUBE-PROXY-CANARY"), ("filter", "INPUT")]
    got = save_chains(ns, chains, backend)
    assert got == only_chains(save(ns, None, backend), chains)
    assert "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" in got
    assert ":KUBE-PROXY-CANARY - [0:0]" in got and "KUBE-NOPE" not in got


def test_a_sync_in_transactions_leaves_on_the_nft_backend_what_one_transaction_leaves(made):
    """A big sync on iptables' nft backend goes in several transactions (rules.staged):
    iptables-nft-restore takes each (a jump to a chain not yet there would fail it), and
    the node's nat table is then what kube-proxy's one restore makes of it."""
    from nsk.kernel.iptables import restore, save
    from nsk.proxy import iptables as rules
    from nsk.proxy.model import Endpoint, NodeContext, ServicePort
    from nsk.testing.tracer import parse
    ctx = NodeContext("node-1", "10.244.0.0/16", ("172.18.0.2",))

    def ports(n, ranges="192.0.2.0/24", local=True):
        eps = tuple(Endpoint(f"10.244.{1 + i % 2}.{10 + i}", 8080, f"node-{1 + i % 2}") for i in range(n))
        return [ServicePort("default", f"s{i}", "", "TCP", 80, f"10.96.0.{10 + i}", 30000 + i if i % 2 else 0,
                            lb_ips=("198.51.100.1",) if i == 3 else (), lb_source_ranges=(ranges,) if i == 3
                            else (), external_local=local and i == 5, endpoints=eps) for i in range(8)]
    before = rules.render(ports(3), ctx)
    # one endpoint more, one Service less, the FW chain's ranges and s5's policy changed
    after = rules.render(ports(4, "192.0.2.0/25", local=False)[:7], ctx, before.nat_chains)
    tables = {}
    for budget in (0, 5):
        ns = f"nskperf_{uuid.uuid4().hex[:8]}_stg"
        made.append(ns)
        netns.create(ns)
        restore(ns, rules.missing_jumps("") + before.full(budget), which="nft")
        restore(ns, after.since(before, budget), which="nft")
        tables[budget] = parse(save(ns, "nat", "nft"))
    assert after.since(before, 5).count("COMMIT") > 4
    assert tables[5] == tables[0] and any(c.startswith("KUBE-FW-") for c in tables[0]["nat"].chains)
