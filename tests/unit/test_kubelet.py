"""The kubelet and its prober against a recording kernel: sandboxes, containers, restarts
with back-off, removal, probes, adoption — without root."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time

import pytest

from nsk.api.cluster import parse_cluster
from nsk.api.objects import Key
from nsk.apiserver.admission import admit
from nsk.kubelet import kubelet as kubelet_mod
from nsk.kubelet.kubelet import Kubelet
from nsk.kubelet.prober import Prober
from nsk.kernel.process import Sandbox
from nsk.net.plan import plan
from nsk.store import Store
from nsk.testing.fakes import RecordingKernel


class Loop:
    """The control plane's selector, as the kubelet sees it: fds and their callbacks."""

    def __init__(self):
        self.fds: dict[int, object] = {}

    def watch(self, fd, callback, events=None):
        self.fds[fd] = callback

    def unwatch(self, fd):
        self.fds.pop(fd, None)

    def run_ready(self, timeout: float = 0.5) -> int:
        """Call the callbacks of the fds that are ready (as select() would); how many."""
        import select
        r, w, _ = select.select(list(self.fds), list(self.fds), [], timeout)
        n = 0
        for fd in r + [x for x in w if x not in r]:
            cb = self.fds.get(fd)
            if cb is not None:
                cb()
                n += 1
        return n


@pytest.fixture
def env(tmp_path):
    store = Store(str(tmp_path), create=True)
    os.makedirs(tmp_path / "logs")
    cfg = parse_cluster(None)
    p = plan(cfg)
    kernel = RecordingKernel(etc_root=str(tmp_path / "etc"))
    loop = Loop()
    k = Kubelet(p.nodes[0], p, cfg, store, str(tmp_path), loop.watch, loop.unwatch, kernel)
    yield store, kernel, loop, k
    kernel.close()
    store.close()


def make_pod(store: Store, name: str, restart: str = "Always", **container) -> dict:
    c = {"name": "app", "image": "nginx", **container}
    pod = admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                 "spec": {"nodeName": "node-1", "restartPolicy": restart, "containers": [c]}})
    store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    store.put(pod)
    return store.get("Pod", "default", name)


def status(store: Store, name: str) -> dict:
    return store.get("Pod", "default", name)["status"]


def test_a_pod_gets_a_sandbox_its_files_and_a_process_per_container(env):
    store, kernel, loop, k = env
    pod = make_pod(store, "web")
    k.sync([pod])
    (sandbox,) = kernel.ops("sandbox")
    _, node_ns, pod_ns, veth, ip, gw = sandbox
    assert node_ns == k.node.netns and pod_ns.endswith("_pod_default_web") and veth.startswith("veth")
    assert ip.startswith("10.244.1.") and gw == "10.244.1.1" and ip != gw
    resolv = open(os.path.join(kernel.etc_dir(pod_ns), "resolv.conf")).read()
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert f"{ip}\tweb" in open(os.path.join(kernel.etc_dir(pod_ns), "hosts")).read()
    (proc,) = kernel.running()
    assert proc.box.netns == pod_ns and proc.box.env["HOSTNAME"] == "web" and proc.target is not None
    st = status(store, "web")
    assert st["phase"] == "Running" and st["podIP"] == ip
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    assert {kind for kind, _, _ in store.owned()} == {"netns", "etc", "sandbox", "process"}


def test_pods_get_distinct_addresses_and_a_removed_pod_leaves_nothing(env):
    store, kernel, loop, k = env
    pods = [make_pod(store, f"p{i}") for i in range(3)]
    k.sync(pods)
    ips = {p["metadata"]["name"]: status(store, p["metadata"]["name"])["podIP"] for p in pods}
    assert len(set(ips.values())) == 3
    k.sync(pods[1:])  # p0 deleted: its container gets SIGTERM, and nothing waits for it
    assert ("remove-sandbox", "nsk_nsk_pod_default_p0") not in kernel.calls
    loop.run_ready()  # its end: now the sandbox goes
    assert ("remove-sandbox", "nsk_nsk_pod_default_p0") in kernel.calls
    assert len(kernel.running()) == 2
    assert not os.path.exists(kernel.etc_dir("nsk_nsk_pod_default_p0"))
    assert not [r for kind, r, _ in store.owned() if "p0" in r]
    new = make_pod(store, "p3")
    k.sync(pods[1:] + [new])
    # host-local IPAM: the next address after the last one given, so a freed one is not reused at once
    assert status(store, "p3")["podIP"] not in ips.values()


def test_the_critical_pods_start_first_in_a_sync_of_their_own(env):
    """CoreDNS (system-cluster-critical) starts alone in a first sync (the control plane
    passes the cluster's highest waiting priority as the floor): what it started reaches its
    Endpoints before the rest of the Pods start."""
    store, kernel, loop, k = env
    pods = [make_pod(store, f"p{i}") for i in range(3)]
    dns = admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "z-dns"},
                 "spec": {"nodeName": "node-1", "priorityClassName": "system-cluster-critical",
                          "containers": [{"name": "dns", "image": "nsk/dns"}]}})
    store.put(dns)
    pods.append(store.get("Pod", "default", "z-dns"))
    assert k.next_priority(pods) == 2000000000
    assert k.sync(pods, floor=k.next_priority(pods))  # Pods left: only the critical one started
    assert [p for p in ("p0", "p1", "p2", "z-dns") if (store.get("Pod", "default", p).get("status") or {}).get(
        "podIP")] == ["z-dns"]
    assert k.next_priority(pods) == 0
    assert k.sync(pods, floor=2000000000)  # another node's critical Pod waits: none of these starts
    assert not (store.get("Pod", "default", "p0").get("status") or {}).get("podIP")
    assert not k.sync(pods, floor=k.next_priority(pods))  # the others, and none left
    assert all(status(store, f"p{i}").get("podIP") for i in range(3)) and k.next_priority(pods) is None


def test_a_critical_pod_whose_sandbox_fails_holds_no_other_pod_back(env):
    """A CoreDNS Pod that cannot start is retried every pass, but sets no floor: the
    cluster's other Pods start meanwhile."""
    store, kernel, loop, k = env
    store.put(admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dns"},
                     "spec": {"nodeName": "node-1", "priorityClassName": "system-cluster-critical",
                              "containers": [{"name": "dns", "image": "nsk/dns"}]}}))
    pods = [store.get("Pod", "default", "dns"), make_pod(store, "web")]
    kernel.fail["create the Pod sandbox"] = 1
    assert k.sync(pods, floor=k.next_priority(pods))
    assert k.next_priority(pods) == 0  # the failed one no longer holds the floor
    assert not k.sync(pods, floor=k.next_priority(pods))  # retried, and the web Pod started
    assert len(kernel.running()) == 2 and not k.failed


def test_a_pod_whose_sandbox_failed_goes_after_its_peers_and_past_its_time_waits(env):
    """Of one priority, a Pod that failed to start is retried last; past `until` it does not
    take the one start a pass guarantees, so a Pod that can start is not starved by it."""
    store, kernel, loop, k = env
    for name in ("dns-a", "dns-b"):
        store.put(admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                         "spec": {"nodeName": "node-1", "priorityClassName": "system-cluster-critical",
                                  "containers": [{"name": "dns", "image": "nsk/dns"}]}}))
    pods = [store.get("Pod", "default", n) for n in ("dns-a", "dns-b")]
    kernel.fail["create the Pod sandbox"] = 1
    assert k.sync(pods, until=time.monotonic() - 1)  # dns-a tried (and failed); dns-b left
    assert not kernel.running()
    assert k.sync(pods, until=time.monotonic() - 1)  # dns-b first now; dns-a's retry waits
    assert [p.box.netns for p in kernel.running()] == ["nsk_nsk_pod_default_dns-b"]
    assert not k.sync(pods, until=time.monotonic() + 60) and len(kernel.running()) == 2


def test_the_pods_a_sync_starts_share_one_making_of_the_service_variables(env, monkeypatch):
    """At 5,000 Services a Pod's Service variables are 35,000: a sync makes them once for the
    Pods of one namespace it starts from one list of Services, and each Pod has them all."""
    store, kernel, loop, k = env
    made = []
    real = kubelet_mod.podfiles.service_environment
    monkeypatch.setattr(kubelet_mod.podfiles, "service_environment", lambda svcs: made.append(1) or real(svcs))
    services = [admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"},
                       "spec": {"clusterIP": f"10.96.0.{10 + i}", "ports": [{"port": 80}]}}) for i in range(3)]
    pods = [make_pod(store, f"p{i}") for i in range(3)]
    k.sync(pods, services=services)
    assert len(made) == 1
    assert all(run.containers["app"].env["S2_SERVICE_HOST"] == "10.96.0.12" for run in k.pods.values())
    k.sync(pods + [make_pod(store, "p3")], services=list(services))  # another list: made again
    assert len(made) == 2 and k.pods[Key("Pod", "default", "p3")].containers["app"].env["S0_SERVICE_PORT"] == "80"


def test_a_sync_past_its_time_starts_one_pod_and_leaves_the_rest(env):
    """The control loop's pass is bounded: a kubelet starts no Pod after `until` (one at
    least, so every node makes progress), and says Pods are left."""
    store, kernel, loop, k = env
    pods = [make_pod(store, f"p{i}") for i in range(3)]
    assert k.sync(pods, until=time.monotonic() - 1)
    assert len(kernel.running()) == 1
    assert not k.sync(pods, until=time.monotonic() + 60) and len(kernel.running()) == 3


def test_a_failed_sandbox_is_an_event_and_the_next_sync_tries_again(env):
    store, kernel, loop, k = env
    kernel.fail["create the Pod sandbox"] = 1
    pod = make_pod(store, "web")
    k.sync([pod])
    events = store.events(Key("Pod", "default", "web"))
    assert events[-1][1:3] == ("Warning", "FailedCreatePodSandBox") and "EPERM" in events[-1][3]
    assert not kernel.running() and not k.pods and ("remove-sandbox", "nsk_nsk_pod_default_web") in kernel.calls
    k.sync([pod])
    assert len(kernel.running()) == 1 and status(store, "web")["phase"] == "Running"


def test_a_container_that_exits_is_restarted_at_once_then_after_a_back_off(env):
    store, kernel, loop, k = env
    k.sync([make_pod(store, "web")])
    (first,) = kernel.running()
    kernel.exit(first.ref.pid, 1)
    loop.run_ready()
    assert ("kill-group", first.ref.pid) in kernel.calls  # what it started ends with it
    k.tick(time.monotonic())  # what the loop does after every select
    (second,) = kernel.running()  # the first restart is immediate
    st = status(store, "web")["containerStatuses"][0]
    assert st["restartCount"] == 1 and st["lastState"]["terminated"]["exitCode"] == 1
    kernel.exit(second.ref.pid, 2)
    loop.run_ready()
    k.tick(time.monotonic())
    assert not kernel.running()  # now it waits 10 s
    st = status(store, "web")["containerStatuses"][0]
    assert st["state"]["waiting"]["reason"] == "CrashLoopBackOff" and st["restartCount"] == 2
    nxt = k.tick(time.monotonic())
    assert nxt is not None and 9 < nxt - time.monotonic() <= kubelet_mod.BACKOFF_START
    k.tick(time.monotonic() + kubelet_mod.BACKOFF_START)
    assert len(kernel.running()) == 1 and status(store, "web")["containerStatuses"][0]["state"].get("running")


@pytest.mark.parametrize("policy, code, phase", [("Never", 0, "Succeeded"), ("Never", 3, "Failed"),
                                                 ("OnFailure", 0, "Succeeded")])
def test_the_restart_policy_decides_whether_an_ended_container_comes_back(env, policy, code, phase):
    store, kernel, loop, k = env
    k.sync([make_pod(store, "job", restart=policy, command=["true"])])
    (proc,) = kernel.running()
    assert proc.argv == ["true"]
    kernel.exit(proc.ref.pid, code)
    loop.run_ready()
    assert not kernel.running() and status(store, "job")["phase"] == phase
    assert status(store, "job")["containerStatuses"][0]["state"]["terminated"]["exitCode"] == code


def test_a_readiness_probe_that_never_passes_is_told_once_it_reaches_its_threshold(env):
    """The failure `nsk up` and `describe` show for a Pod that never becomes ready."""
    store, kernel, loop, k = env
    probe = {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2, "successThreshold": 1,
             "timeoutSeconds": 1, "initialDelaySeconds": 0}
    k.sync([make_pod(store, "web", readinessProbe=probe)])
    now = time.monotonic()
    for i in range(1, 4):
        k.tick(now + i)
        kernel.exit(next(p for p in kernel.running() if p.argv == ["false"]).ref.pid, 1)
        loop.run_ready()
    told = [e[3] for e in store.events(Key("Pod", "default", "web")) if e[2] == "Unhealthy"]
    assert told == ["Readiness probe failed: container app: command ['false'] exited with 1"]  # once, at the threshold


def test_a_failing_liveness_probe_restarts_the_container(env):
    store, kernel, loop, k = env
    probe = {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}
    k.sync([make_pod(store, "web", livenessProbe=probe)])
    (app,) = kernel.running()
    k.tick(time.monotonic() + 1)  # the probe is due: its process starts
    probe_proc = next(p for p in kernel.running() if p.argv == ["false"])
    kernel.exit(probe_proc.ref.pid, 1)
    loop.run_ready()  # the probe's result: the container is killed...
    assert ("kill", app.ref.pid) in kernel.calls
    loop.run_ready()  # ...and its exit restarts it
    k.tick(time.monotonic())
    assert status(store, "web")["containerStatuses"][0]["restartCount"] == 1
    events = [e[2] for e in store.events(Key("Pod", "default", "web"))]
    assert "Unhealthy" in events


def test_a_restarted_kubelet_adopts_the_running_pods(env, tmp_path):
    store, kernel, loop, k = env
    pods = [make_pod(store, "a"), make_pod(store, "b")]
    k.sync(pods)
    ips = {p: status(store, p)["podIP"] for p in ("a", "b")}
    dead = next(p for p in kernel.running() if p.box.env["HOSTNAME"] == "b")
    kernel.exit(dead.ref.pid, 137)  # died while no kubelet watched
    again = Kubelet(k.node, k.plan, k.cfg, store, str(tmp_path), loop.watch, loop.unwatch, kernel)
    assert again.adopt() == 2
    assert {kk.name: r.ip for kk, r in again.pods.items()} == ips  # same addresses, no new sandbox
    assert len(kernel.ops("sandbox")) == 2
    again.tick(time.monotonic())
    assert len(kernel.running()) == 2  # b started again


def test_a_pod_that_ignores_sigterm_is_killed_after_its_grace_period_and_its_namesake_waits(env):
    store, kernel, loop, k = env
    pod = make_pod(store, "web")
    pod["spec"]["terminationGracePeriodSeconds"] = 5
    k.sync([pod])
    (proc,) = kernel.running()
    kernel.ignore_term.add(proc.ref.pid)
    woken = []
    k.on_change = lambda: woken.append(True)
    k.sync([])  # deleted
    assert ("terminate", proc.ref.pid) in kernel.calls and kernel.running()
    again = make_pod(store, "web")  # re-created under the same name, a new uid
    k.sync([again])
    assert len(kernel.ops("sandbox")) == 1  # not while its namesake's namespace still exists
    nxt = k.tick(time.monotonic())
    assert nxt is not None and 4 < nxt - time.monotonic() <= 5
    k.tick(time.monotonic() + 5)  # the grace period is over
    assert ("kill", proc.ref.pid) in kernel.calls and ("remove-sandbox", "nsk_nsk_pod_default_web") in kernel.calls
    assert woken  # the loop is told: a sync may start the namesake now
    k.sync([again])
    assert len(kernel.ops("sandbox")) == 2 and len(kernel.running()) == 1


def test_a_pod_deleted_while_no_kubelet_watched_is_torn_down_on_adoption(env, tmp_path):
    store, kernel, loop, k = env
    k.sync([make_pod(store, "a"), make_pod(store, "b")])
    store.delete(Key("Pod", "default", "b"))
    again = Kubelet(k.node, k.plan, k.cfg, store, str(tmp_path), loop.watch, loop.unwatch, kernel)
    assert again.adopt() == 1
    loop.run_ready()  # b's process ended on its SIGTERM
    assert ("remove-sandbox", "nsk_nsk_pod_default_b") in kernel.calls
    assert [p.box.env["HOSTNAME"] for p in kernel.running()] == ["a"]
    assert not [r for _, r, _ in store.owned("sandbox") if r.endswith("/b")]


# ---- the prober on its own -------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/ok" else 500)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def run_probe(spec: dict, kind: str = "readiness", rounds: int = 1) -> list[tuple[str, str, bool]]:
    kernel, loop, changes = RecordingKernel(), Loop(), []
    full = {"timeoutSeconds": 1, "periodSeconds": 1, "successThreshold": 1, "failureThreshold": 1, **spec}
    container = {"name": "app", f"{kind}Probe": full, "ports": [{"name": "http", "containerPort": 1}]}
    p = Prober("node-ns", "127.0.0.1", [container], Sandbox("pod-ns", "h", {}, None), kernel, loop.watch,
               loop.unwatch, lambda *a: changes.append(a))
    t = time.monotonic()
    for i in range(rounds):
        t += 1
        p.tick(t, lambda name: True)
        deadline = time.monotonic() + 10  # (a loaded machine: it ends when the probe has)
        while loop.fds and time.monotonic() < deadline:
            loop.run_ready(0.2)
    p.close()
    kernel.close()
    assert ("probe-socket", "node-ns") in kernel.calls or "exec" in spec
    return changes


def test_an_http_probe_is_ready_on_2xx_and_not_on_500(http_server):
    assert run_probe({"httpGet": {"path": "/ok", "port": http_server}}) == [("readiness", "app", True)]
    # never ready: no change, but told once the failures reach the threshold (for `nsk up`)
    assert run_probe({"httpGet": {"path": "/bad", "port": http_server}}) == [("readiness", "app", False)]


def test_a_tcp_probe_fails_on_a_closed_port_and_liveness_reports_it():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    assert run_probe({"tcpSocket": {"port": port}}, kind="liveness") == [("liveness", "app", False)]


def test_a_named_probe_port_is_the_containers_port_of_that_name(http_server):
    kernel, loop = RecordingKernel(), Loop()
    c = {"name": "app", "ports": [{"name": "http", "containerPort": http_server}],
         "readinessProbe": {"httpGet": {"path": "/ok", "port": "http"}, "timeoutSeconds": 1, "periodSeconds": 1,
                            "successThreshold": 1, "failureThreshold": 1}}
    changes = []
    p = Prober("node-ns", "127.0.0.1", [c], Sandbox("pod-ns", "h", {}, None), kernel, loop.watch, loop.unwatch,
               lambda *a: changes.append(a))
    p.tick(time.monotonic() + 1, lambda name: True)
    deadline = time.monotonic() + 10  # (a loaded machine: it ends when the probe has)
    while loop.fds and time.monotonic() < deadline:
        loop.run_ready(0.2)
    assert changes == [("readiness", "app", True)] and p.ready("app")
    p.close()
    kernel.close()


def test_a_probe_answered_while_the_loop_was_busy_is_not_a_timeout(http_server):
    """The container answered at once, but the control loop was busy past the probe's
    timeoutSeconds (a pass of a thousand Pod starts): the probe gets that time back and
    passes, where kubelet's own goroutine would have seen the answer."""
    kernel, loop, changes = RecordingKernel(), Loop(), []
    c = {"name": "app", "readinessProbe": {"httpGet": {"path": "/ok", "port": http_server}, "timeoutSeconds": 1,
                                           "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 1}}
    p = Prober("node-ns", "127.0.0.1", [c], Sandbox("pod-ns", "h", {}, None), kernel, loop.watch, loop.unwatch,
               lambda *a: changes.append(a))
    t = time.monotonic() + 1
    p.tick(t, lambda name: True)  # started; then the loop is busy for 3 s without looking
    p.stalled(3.0)
    p.tick(t + 3.0, lambda name: True)  # past timeoutSeconds, but not past the loop's stall
    deadline = time.monotonic() + 10  # (a loaded machine: it ends when the probe has)
    while loop.fds and time.monotonic() < deadline:
        loop.run_ready(0.2)
    assert changes == [("readiness", "app", True)]
    p.close()
    kernel.close()


def test_a_probe_that_outlives_its_timeout_fails():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # accepts, never answers
    kernel, loop, changes = RecordingKernel(), Loop(), []
    c = {"name": "app", "readinessProbe": {"httpGet": {"path": "/", "port": srv.getsockname()[1]},
                                           "timeoutSeconds": 1, "periodSeconds": 5, "successThreshold": 1,
                                           "failureThreshold": 1}}
    p = Prober("node-ns", "127.0.0.1", [c], Sandbox("pod-ns", "h", {}, None), kernel, loop.watch, loop.unwatch,
               lambda *a: changes.append(a))
    p.states[0].ok = True  # was ready
    t = time.monotonic() + 1
    p.tick(t, lambda name: True)
    loop.run_ready(0.5)  # connected, request sent
    p.tick(t + 1.1, lambda name: True)  # past timeoutSeconds
    assert changes == [("readiness", "app", False)] and "timed out" in p.states[0].last_message
    p.close()
    kernel.close()
    srv.close()


def test_a_restart_keeps_the_last_runs_output_as_the_previous_log(env):
    store, kernel, loop, k = env
    k.sync([make_pod(store, "web")])
    (first,) = kernel.running()
    with open(first.log_path, "a") as f:
        f.write("the first run's last words\n")
    kernel.exit(first.ref.pid, 1)
    loop.run_ready()
    k.tick(time.monotonic())
    (second,) = kernel.running()
    assert second.log_path == first.log_path
    assert open(first.log_path + ".previous").read() == "the first run's last words\n"
    assert not os.path.exists(first.log_path)  # the current run's output starts empty
