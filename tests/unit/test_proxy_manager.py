"""The proxy manager: syncs run beside the loop, changes that arrive meanwhile are merged
into one next sync, failures back off; with a fake kernel, no root."""

from __future__ import annotations

import pytest

from nsk.proxy.model import Endpoint, NodeContext, ServicePort
from nsk.proxy.provider import ProxyManager
from nsk.proxy.sync import IptablesProxier
from nsk.testing.fakes import RecordingKernel


class SlowJob:
    """A restore that ends when the test says so."""

    def __init__(self):
        self.ended = False
        self.fds = (99,)

    def done(self):
        return self.ended

    def result(self):
        return None


class SlowKernel(RecordingKernel):
    def __init__(self):
        super().__init__()
        self.jobs: list[SlowJob] = []

    def restore_start(self, jobs, tool="iptables-restore"):
        self.calls.append(("restore", tuple(jobs)))
        self.jobs.append(SlowJob())
        return self.jobs[-1]


def ports(n: int) -> list[ServicePort]:
    return [ServicePort("default", f"s{i}", "", "UDP", 53, f"10.96.0.{i + 10}",
                        endpoints=(Endpoint(f"10.244.1.{i + 2}", 53, "node-1"),)) for i in range(n)]


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def manager(kernel) -> tuple[ProxyManager, dict]:
    """A manager on a clock the test moves (m.clock.t)."""
    watched: dict = {}
    providers = {n: IptablesProxier(f"ns-{n}", NodeContext(n, "10.244.0.0/16"), kernel, fresh=True)
                 for n in ("node-1", "node-2")}
    events = []
    m = ProxyManager(providers, kernel, lambda *e: events.append(e), lambda fd, cb: watched.__setitem__(fd, cb),
                     lambda fd: watched.pop(fd, None), clock=Clock())
    m.events = events
    return m, watched


def test_changes_during_a_restore_are_merged_into_one_next_sync():
    kernel = SlowKernel()
    m, watched = manager(kernel)
    m.sync(ports(1), revision=1)
    assert len(kernel.ops("restore")) == 1 and m.busy and 99 in watched
    m.sync(ports(2), revision=2)
    m.sync(ports(3), revision=3)  # two changes while the first restore runs
    assert len(kernel.ops("restore")) == 1  # nothing queued behind it yet
    kernel.jobs[0].ended = True
    m.clock.t = 0.4
    watched[99]()  # its pidfd: ended
    assert len(kernel.ops("restore")) == 2  # one sync for both changes, of the latest ports
    assert "s2" in kernel.ops("restore")[1][1][0][1] and m.synced_rev == 1
    m.sync(ports(4), revision=4)  # a third change while the second restore runs
    kernel.jobs[1].ended = True
    m.clock.t = 0.5
    watched[99]()
    # kube-proxy's burst of two syncs is spent: the next waits for its minSyncPeriod bucket
    assert len(kernel.ops("restore")) == 2 and m.synced_rev == 3 and m.busy
    assert m.due_at == pytest.approx(1.0)
    m.clock.t = 1.0
    m.retry()
    assert len(kernel.ops("restore")) == 3 and m.due_at is None
    kernel.jobs[2].ended = True
    watched[99]()
    assert m.synced_rev == 4 and not m.busy


def test_a_udp_endpoint_that_leaves_has_its_conntrack_entries_cleared_on_every_node():
    kernel = RecordingKernel()
    m, _ = manager(kernel)
    m.sync(ports(1), revision=1)
    # a Service that gains its first endpoint: the entries that met its REJECT go
    assert {args for _, _, args in kernel.ops("conntrack")} == {("-p", "udp", "--orig-dst", "10.96.0.10")}
    before = len(kernel.ops("conntrack"))
    gone = [ServicePort("default", "s0", "", "UDP", 53, "10.96.0.10")]
    m.clock.t = 5.0  # a quiet spell: the change is synced at once
    m.sync(gone, revision=2)
    cleared = kernel.ops("conntrack")[before:]
    assert {ns for _, ns, _ in cleared} == {"ns-node-1", "ns-node-2"}
    assert all(args == ("-p", "udp", "--orig-dst", "10.96.0.10", "--dst-nat", "10.244.1.2")
               for _, _, args in cleared)


def test_a_refused_restore_backs_off_and_the_next_one_writes_every_chain():
    kernel = RecordingKernel(fail={"iptables-restore": 2})
    m, _ = manager(kernel)
    m.clock.t = 100.0
    m.sync(ports(2), revision=1)
    assert not m.healthy and m.retry_at == 100.1 and len(m.events) == 2
    m.retry()  # too early: nothing
    assert len(kernel.ops("restore")) == 1
    m.clock.t = 100.2
    m.retry()
    assert m.retry_at == pytest.approx(100.2 + 0.2)  # failed again: the back-off doubles
    m.clock.t = 100.4
    m.retry()  # past the back-off, but the burst of two syncs is spent: it waits for the bucket
    assert len(kernel.ops("restore")) == 2 and m.due_at == pytest.approx(101.0)
    m.clock.t = 101.0
    m.retry()
    assert m.healthy and m.synced_rev == 1
    assert all(":KUBE-SERVICES" in text for _, text in kernel.ops("restore")[-1][1])


def test_restores_together_weigh_one_restore_a_core_at_nice_minus_5():
    """A restore goes before the control plane's own work, but ten nodes' restores at once
    must not starve it: together they weigh what one restore a core at nice -5 does."""
    from nsk.kernel.iptables import _WEIGHTS, restore_nice
    assert restore_nice(1, cores=2) == restore_nice(2, cores=2) == -5
    for n in (3, 4, 10, 30):
        nice = restore_nice(n, cores=2)
        assert restore_nice(n - 1, cores=2) <= nice <= 10
        assert n * _WEIGHTS[nice] <= 1.2 * 2 * _WEIGHTS[-5]
