"""The controllers as the manager runs them (a snapshot in, writes out, applied through the
API server), and the API server's write path, against a real store without root."""

from __future__ import annotations

import ipaddress
import random

import pytest

from nsk.api.cluster import parse_cluster
from nsk.api.objects import Key
from nsk.apiserver.admission import admit
from nsk.apiserver.server import APIServer, system_objects
from nsk.controllers import deployment, endpoints, loadbalancer, scheduler
from nsk.controllers.manager import ControllerManager, Delete, Put, Snapshot
from nsk.errors import AlreadyExists, BadRequest, Conflict, InvalidObject, NotFound, NskError
from nsk.net.plan import plan
from nsk.store import Store
from nsk.store.informer import Informer

CFG = parse_cluster({"apiVersion": "nsk.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "t"},
                     "spec": {"nodes": [{"name": "node-1"}, {"name": "node-2", "labels": {"zone": "b"}}]}})


@pytest.fixture
def api(tmp_path):
    store = Store(str(tmp_path), create=True)
    store.set_meta("cluster", CFG.to_dict())
    a = APIServer(store, CFG)
    with store.tx():
        for ns in ("default", "kube-system"):
            store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    yield a
    store.close()


def manager(api: APIServer, *controllers) -> tuple[ControllerManager, Informer]:
    inf = Informer(api.store, ("Pod", "Service", "Endpoints", "EndpointSlice", "Deployment", "Namespace"))
    return ControllerManager(api, list(controllers), inf), inf


def settle(m: ControllerManager, inf: Informer, rounds: int = 10) -> None:
    """Every controller on everything, until they write nothing more."""
    for _ in range(rounds):
        inf.sync()
        if not m.run(None):
            return


def deploy(replicas: int, **spec) -> dict:
    return admit({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}},
                                        "spec": {"containers": [{"name": "web", "image": "nginx",
                                                                 "ports": [{"containerPort": 80}]}], **spec}}}})


def run_pods(api: APIServer, ready: bool = True) -> None:
    """What kubelets would do: every bound Pod runs with an address."""
    for i, p in enumerate(api.store.list("Pod")):
        if p["spec"].get("nodeName"):
            api.update_status(Key("Pod", "default", p["metadata"]["name"]), {
                "phase": "Running", "podIP": f"10.244.1.{i + 2}",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]})


def test_a_deployment_gets_its_pods_bound_spread_and_in_its_endpoints(api):
    m, inf = manager(api, deployment.DeploymentController(random.Random(1)), scheduler.Scheduler(plan(CFG).nodes),
                     endpoints.EndpointSliceController(),
                     endpoints.EndpointsController())
    api.apply([deploy(4), admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                 "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})])
    settle(m, inf)
    pods = api.store.list("Pod")
    assert len(pods) == 4 and sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-1", "node-2", "node-2"]
    run_pods(api)
    settle(m, inf)
    ep = api.store.get("Endpoints", "default", "web")
    assert len(ep["subsets"][0]["addresses"]) == 4
    assert ep["metadata"]["labels"][endpoints.MANAGED_BY] == endpoints.CONTROLLER
    d = api.store.get("Deployment", "default", "web")
    assert d["status"]["readyReplicas"] == 4
    api.scale("default", "web", 1)
    settle(m, inf)
    # the three deleted gracefully: terminating (their kubelet ends them), the Deployment at 1
    pods = api.store.list("Pod")
    assert len(pods) == 4 and sum(1 for p in pods if not p["metadata"].get("deletionTimestamp")) == 1
    assert [a["ip"] for a in api.store.get("Endpoints", "default", "web")["subsets"][0]["addresses"]] == \
        [p["status"]["podIP"] for p in pods if not p["metadata"].get("deletionTimestamp")]


def test_a_terminating_pod_leaves_the_endpoints_but_stays_in_the_slice_as_terminating(api):
    """Graceful deletion: the Pod stays, terminating, until its kubelet deletes it; the
    Endpoints drop it at once, the EndpointSlice keeps it with its conditions (ready false,
    serving as its readiness, terminating true), as the two controllers do; a replacement
    Pod is made at once."""
    m, inf = manager(api, deployment.DeploymentController(random.Random(5)), scheduler.Scheduler(plan(CFG).nodes),
                     endpoints.EndpointSliceController(),
                     endpoints.EndpointsController())
    api.apply([deploy(2), admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                 "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})])
    settle(m, inf)
    run_pods(api)
    settle(m, inf)
    (sl,) = api.store.list("EndpointSlice")
    assert sl["metadata"]["name"].startswith("web-") and sl["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert [e["conditions"] for e in sl["endpoints"]] == [{"ready": True, "serving": True, "terminating": False}] * 2
    victim = api.store.list("Pod")[0]
    api.delete([Key("Pod", "default", victim["metadata"]["name"])])
    settle(m, inf)
    ip = victim["status"]["podIP"]
    assert api.store.get("Pod", "default", victim["metadata"]["name"])["metadata"]["deletionTimestamp"]
    assert ip not in [a["ip"] for a in api.store.get("Endpoints", "default", "web")["subsets"][0]["addresses"]]
    (sl,) = api.store.list("EndpointSlice")
    cond = next(e["conditions"] for e in sl["endpoints"] if e["addresses"] == [ip])
    assert cond == {"ready": False, "serving": True, "terminating": True}
    assert len(api.store.list("Pod")) == 3  # the replacement
    api.delete([Key("Pod", "default", victim["metadata"]["name"])], grace=0)  # its kubelet's final delete
    settle(m, inf)
    (sl,) = api.store.list("EndpointSlice")
    assert ip not in [e["addresses"][0] for e in sl["endpoints"]]
    api.delete([Key("Service", "default", "web")])
    settle(m, inf)
    assert api.store.list("EndpointSlice") == []


def test_endpoints_of_a_gone_service_go_and_a_users_own_endpoints_stay(api):
    m, inf = manager(api, endpoints.EndpointSliceController(),
                     endpoints.EndpointsController())
    svc = admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                 "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    mine = admit({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "db"},
                  "subsets": [{"addresses": [{"ip": "192.0.2.42"}], "ports": [{"port": 5432}]}]})
    api.apply([svc, mine])
    settle(m, inf)
    assert api.store.get("Endpoints", "default", "web") is not None
    api.delete([Key("Service", "default", "web")])
    settle(m, inf)
    assert api.store.get("Endpoints", "default", "web") is None
    assert api.store.get("Endpoints", "default", "db") is not None


def test_the_scheduler_says_why_no_node_fits_and_never_brings_back_a_deleted_pod(api):
    m, inf = manager(api, scheduler.Scheduler(plan(CFG).nodes))
    pod = admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                 "spec": {"nodeSelector": {"zone": "mars"}, "containers": [{"name": "c", "image": "x"}]}})
    api.apply([pod])
    settle(m, inf)
    st = api.store.get("Pod", "default", "p")["status"]
    assert st["conditions"][0]["reason"] == "Unschedulable" and "0/2 nodes" in st["conditions"][0]["message"]
    # a binding computed from a snapshot in which the Pod still existed is not applied
    api.apply([admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"},
                      "spec": {"containers": [{"name": "c", "image": "x"}]}})])
    inf.sync()
    snap = Snapshot(inf)
    api.delete([Key("Pod", "default", "q")])
    writes = scheduler.Scheduler(plan(CFG).nodes).reconcile(snap)
    assert [w.obj["spec"]["nodeName"] for w in writes if isinstance(w, Put)] == ["node-1"]
    applied, errors = m._apply("scheduler", writes)
    assert applied == 0 and 'pods "q" not found' in errors[0]
    assert api.store.get("Pod", "default", "q") is None  # not resurrected


def test_a_pod_gone_frees_its_host_port_and_the_waiting_pod_is_scheduled_at_once(api):
    """The waiting Pod has not changed itself: a Pod gone must send the scheduler back to
    every waiting Pod (no resync to wait for)."""
    m, inf = manager(api, scheduler.Scheduler(plan(CFG).nodes))

    def hp(name):
        return admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                      "spec": {"nodeSelector": {"kubernetes.io/hostname": "node-1"},
                               "containers": [{"name": "c", "image": "x",
                                               "ports": [{"containerPort": 80, "hostPort": 8080}]}]}})
    api.apply([hp("a")])
    settle(m, inf)
    api.apply([hp("b")])
    settle(m, inf)
    assert not api.store.get("Pod", "default", "b")["spec"].get("nodeName")
    api.delete([Key("Pod", "default", "a")])  # terminating: its port is still taken
    settle(m, inf)
    assert not api.store.get("Pod", "default", "b")["spec"].get("nodeName")
    api.delete([Key("Pod", "default", "a")], grace=0)  # what its kubelet does once it has ended
    settle(m, inf)
    assert api.store.get("Pod", "default", "b")["spec"]["nodeName"] == "node-1"


def test_a_failed_write_fails_alone_and_the_controller_backs_off(api):
    class Half:
        name = "half"

        def reconcile(self, snap):
            good = admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "good"},
                          "spec": {"ports": [{"port": 80}]}})
            bad = admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad", "namespace": "nowhere"},
                         "spec": {"ports": [{"port": 80}]}})
            return [Put(bad), Put(good), Delete(Key("Pod", "default", "ghost"))]
    m, inf = manager(api, Half())
    inf.sync()
    assert m.run(None) == 2  # the Service and the (idempotent) delete of nothing
    assert api.store.get("Service", "default", "good") is not None
    events = api.store.events(Key("Service", "nowhere", "bad"))
    assert events[-1][1:3] == ("Warning", "FailedHalf") and "not found" in events[-1][3]
    st = m.states[0]
    assert st.failures == 1 and st.retry_at > 0
    assert m.run(None) == 0  # backing off: not run again before its time
    st.retry_at = 0.0
    m.run(None)
    assert st.failures == 2 and st.backoff == 0.1  # doubled


def test_the_garbage_collector_deletes_pods_whose_deployment_is_gone(api):
    m, inf = manager(api, deployment.DeploymentController(random.Random(2)), deployment.GarbageCollector())
    api.apply([deploy(2)])
    settle(m, inf)
    assert len(api.store.list("Pod")) == 2
    api.delete([Key("Deployment", "default", "web")])
    settle(m, inf)
    assert api.store.list("Pod") == []


def test_load_balancer_addresses_come_from_the_pool_and_go_with_the_type(api):
    m, inf = manager(api, loadbalancer.LoadBalancerController("198.51.100.0/24"))
    lb = admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
                "spec": {"type": "LoadBalancer", "selector": {"a": "b"}, "ports": [{"port": 80}]}})
    api.apply([lb])
    settle(m, inf)
    st = api.store.get("Service", "default", "lb")["status"]
    assert st["loadBalancer"]["ingress"][0]["ip"] == "198.51.100.1"
    api.apply([{**lb, "spec": {**lb["spec"], "type": "ClusterIP"}}])
    settle(m, inf)
    assert "loadBalancer" not in (api.store.get("Service", "default", "lb").get("status") or {})


# ---- the write path ----------------------------------------------------------------------------

def test_the_write_path_refuses_what_the_api_server_refuses(api):
    api.apply([deploy(1)])
    with pytest.raises(AlreadyExists):
        api.create(deploy(1), admitted=True)
    with pytest.raises(InvalidObject, match="spec.selector: Invalid value.*field is immutable"):
        d = deploy(1)
        d["spec"]["selector"] = {"matchLabels": {"app": "other"}}
        d["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
        api.apply([d])
    stale = api.store.get("Deployment", "default", "web")  # as `get -o yaml` saves it
    api.scale("default", "web", 3)
    with pytest.raises(Conflict, match='Operation cannot be fulfilled on deployments.apps "web": the object has '
                                       'been modified'):
        api.apply([stale])
    assert api.store.get("Deployment", "default", "web")["spec"]["replicas"] == 3
    api.delete([Key("Deployment", "default", "web")])
    with pytest.raises(BadRequest, match="resourceVersion should not be set on objects to be created"):
        api.apply([stale])
    with pytest.raises(NotFound, match='deployments.apps "nope" not found in namespace "default"'):
        api.scale("default", "nope", 2)
    with pytest.raises(NskError, match='nodes are fixed by the Cluster document; "node-1" cannot be deleted'):
        api.delete([Key("Node", "", "node-1")])
    with pytest.raises(NskError, match='namespace "kube-system" is a system namespace'):
        api.delete([Key("Namespace", "", "kube-system")])
    pod = admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                 "spec": {"containers": [{"name": "c", "image": "x"}]}})
    api.apply([pod])
    with pytest.raises(NskError, match="pod updates may not change fields other than labels"):
        api.apply([{**pod, "spec": {**pod["spec"], "containers": [{**pod["spec"]["containers"][0], "image": "y"}]}}])


def test_a_namespace_is_made_for_what_is_applied_into_it_and_its_deletion_cascades(api):
    svc = admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "lab"},
                 "spec": {"ports": [{"port": 80}]}})
    with pytest.raises(NotFound, match='namespaces "lab" not found'):
        api.apply([svc])  # as kubectl: the namespace must exist, or come first in the file
    lab = admit({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lab"}})
    assert api.apply([lab, svc]) == ["namespace/lab created", "service/s created"]
    assert api.store.get("Service", "lab", "s")["spec"]["clusterIP"].startswith("10.96.")
    res = api.delete([Key("Namespace", "", "lab"), Key("Service", "default", "missing")])
    assert res.lines == ('namespace "lab" deleted',) and res.missing == ('services "missing" not found',)
    assert api.store.list("Service", "lab") == []


def test_expose_makes_a_service_selecting_what_the_deployment_selects(api):
    api.apply([deploy(1), *system_objects(CFG)])
    assert api.expose("deploy", "web", "default", None, None, None, "NodePort", "TCP") == "service/web exposed"
    svc = api.store.get("Service", "default", "web")
    assert svc["spec"]["selector"] == {"app": "web"} and 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767
    with pytest.raises(AlreadyExists):
        api.expose("deployment", "web", "default", 80, None, None, "ClusterIP", "TCP")
    with pytest.raises(NskError, match='cannot expose "svc/web"'):
        api.expose("svc", "web", "default", 80, None, None, "ClusterIP", "TCP")


def settle_changes(m: ControllerManager, inf: Informer, rounds: int = 10) -> None:
    """As the control plane runs them: on the keys each write changed, not the whole world."""
    keys = inf.sync()
    for _ in range(rounds):
        if not m.run(keys):
            return
        keys = inf.sync()


def test_each_controller_sees_what_those_before_it_wrote_in_the_same_run(api):
    """The informer takes each controller's writes in before the next runs: new Pods are
    bound in the run that made them, and the EndpointSlices are in (on_commit has heard of
    them: the proxies follow slices) before the Endpoints controller writes."""
    m, inf = manager(api, deployment.DeploymentController(random.Random(6)), scheduler.Scheduler(plan(CFG).nodes),
                     endpoints.EndpointSliceController(), endpoints.EndpointsController())
    heard = []
    m.on_commit = lambda keys: heard.append(({k.kind for k in keys}, api.store.get("Endpoints", "default", "web")))
    api.apply([deploy(2), admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                 "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})])
    m.run(inf.sync())
    assert [bool(p["spec"].get("nodeName")) for p in api.store.list("Pod")] == [True, True]
    run_pods(api)
    heard.clear()
    m.run(inf.sync())
    slices_in = next(i for i, (kinds, _) in enumerate(heard) if "EndpointSlice" in kinds)
    endpoints_in = next(i for i, (kinds, _) in enumerate(heard) if "Endpoints" in kinds)
    assert slices_in < endpoints_in
    assert "subsets" not in heard[slices_in][1]  # the Endpoints did not list the Pods yet
    assert len(api.store.list("EndpointSlice")[0]["endpoints"]) == 2
    assert len(api.store.get("Endpoints", "default", "web")["subsets"][0]["addresses"]) == 2


def test_controllers_follow_the_keys_that_changed(api):
    m, inf = manager(api, deployment.DeploymentController(random.Random(3)), scheduler.Scheduler(plan(CFG).nodes),
                     endpoints.EndpointSliceController(),
                     endpoints.EndpointsController())
    svc = admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                 "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    api.apply([deploy(3), svc])
    settle_changes(m, inf)  # the first run of each controller takes everything
    run_pods(api)
    settle_changes(m, inf)
    assert len(api.store.get("Endpoints", "default", "web")["subsets"][0]["addresses"]) == 3
    assert all(st.pending is not None for st in m.states)  # none has to take everything again
    # a Pod relabelled out of the Service leaves its endpoints (found through its targetRef)
    moved = api.store.list("Pod")[0]
    moved["metadata"]["labels"] = {**moved["metadata"]["labels"], "app": "elsewhere"}
    api.put(moved)
    settle_changes(m, inf)
    ips = [a["ip"] for a in api.store.get("Endpoints", "default", "web")["subsets"][0]["addresses"]]
    assert moved["status"]["podIP"] not in ips and len(ips) == 2
    # a deleted Pod: its owner makes a new one, the scheduler binds it, the Service drops the old address
    gone = next(p for p in api.store.list("Pod") if p["metadata"]["name"] != moved["metadata"]["name"])
    api.delete([Key("Pod", "default", gone["metadata"]["name"])])
    settle_changes(m, inf)
    pods = [p for p in api.store.list("Pod") if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 3 and all(p["spec"].get("nodeName") for p in pods)
    ips = [a["ip"] for a in api.store.get("Endpoints", "default", "web")["subsets"][0]["addresses"]]
    assert gone["status"]["podIP"] not in ips


def test_publish_not_ready_addresses_puts_unready_pods_in_the_endpoints_and_dns(api):
    from nsk.dns.records import answer, build
    m, inf = manager(api, deployment.DeploymentController(random.Random(4)), scheduler.Scheduler(plan(CFG).nodes),
                     endpoints.EndpointSliceController(),
                     endpoints.EndpointsController())
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
           "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}}
    api.apply([deploy(2), admit(svc), admit({**svc, "metadata": {"name": "published"},
                                             "spec": {**svc["spec"], "publishNotReadyAddresses": True}})])
    settle(m, inf)
    run_pods(api, ready=False)  # running, not ready (a StatefulSet's peers finding each other)
    settle(m, inf)
    plain = api.store.get("Endpoints", "default", "peers")["subsets"][0]
    published = api.store.get("Endpoints", "default", "published")["subsets"][0]
    assert "addresses" not in plain and len(plain["notReadyAddresses"]) == 2
    assert len(published["addresses"]) == 2 and "notReadyAddresses" not in published
    zone = build(api.store.list("Service"), api.store.list("Endpoints"), "cluster.local", "10.96.0.10")
    assert answer(zone, "peers.default.svc.cluster.local.", "A").rcode == "NXDOMAIN"
    assert len(answer(zone, "published.default.svc.cluster.local.", "A").answer) == 2


def test_a_pod_change_that_moves_no_endpoint_reconciles_no_service(api, monkeypatch):
    """Binding a new Pod, its status before it has an address, a restart count: none of it
    changes any Service's endpoints, so the controller looks at no Service (at 1,000
    Services selecting one Deployment, each such write used to cost a second)."""
    m, inf = manager(api, deployment.DeploymentController(random.Random(5)), scheduler.Scheduler(plan(CFG).nodes),
                     endpoints.EndpointSliceController(),
                     endpoints.EndpointsController())
    svcs = [admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"web-{i}"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}) for i in range(3)]
    api.apply([deploy(2), *svcs])
    settle_changes(m, inf)
    run_pods(api)
    settle_changes(m, inf)
    looked: list[str] = []
    real = endpoints._endpoints
    monkeypatch.setattr(endpoints, "_endpoints", lambda svc, *a: looked.append(svc["metadata"]["name"]) or real(svc, *a))
    # scale up: a new Pod is made and bound; it has no address yet
    api.apply([deploy(3)])
    settle_changes(m, inf)
    assert looked == [] and len([p for p in api.store.list("Pod") if p["spec"].get("nodeName")]) == 3
    # a running Pod's restart count moves: nothing of its endpoints does
    pod = next(p for p in api.store.list("Pod") if p["status"].get("podIP"))
    api.update_status(Key("Pod", "default", pod["metadata"]["name"]),
                      {**pod["status"], "containerStatuses": [{"name": "web", "restartCount": 1}]})
    settle_changes(m, inf)
    assert looked == []
    # the new Pod runs with an address: every Service that selects it is reconciled, once
    run_pods(api)
    settle_changes(m, inf)
    assert sorted(looked) == ["web-0", "web-1", "web-2"]
    assert all(len(api.store.get("Endpoints", "default", f"web-{i}")["subsets"][0]["addresses"]) == 3
               for i in range(3))
    # it becomes unready: the Services follow
    looked.clear()
    new = next(p for p in api.store.list("Pod") if p["status"].get("podIP") and p["metadata"]["name"] != pod["metadata"]["name"])
    api.update_status(Key("Pod", "default", new["metadata"]["name"]),
                      {**new["status"], "conditions": [{"type": "Ready", "status": "False"}]})
    settle_changes(m, inf)
    assert sorted(looked) == ["web-0", "web-1", "web-2"]
    assert len(api.store.get("Endpoints", "default", "web-0")["subsets"][0]["addresses"]) == 2


def test_services_applied_together_are_allocated_as_if_one_by_one(api):
    """`nsk up` of thousands of Services is one batch: each Service gets the lowest free
    address and node port the ones before it left, a clash inside the batch is refused,
    and a refused batch takes nothing."""
    def svc(name, **spec):
        return admit({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                      "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}], **spec}})

    api.apply([svc(f"s{i}") for i in range(300)])
    got = [api.store.get("Service", "default", f"s{i}")["spec"] for i in range(300)]
    ips, ports = [s["clusterIP"] for s in got], [s["ports"][0]["nodePort"] for s in got]
    assert ips[:9] == [f"10.96.0.{i}" for i in (2, 3, 4, 5, 6, 7, 8, 9, 11)]  # .1 and .10 are kept
    assert len(set(ips)) == 300 and ports == list(range(30000, 30300))
    api.delete([Key("Service", "default", "s5")])
    with pytest.raises(InvalidObject, match="spec.clusterIP: Invalid value: \"10.96.9.9\": provided IP is already"):
        api.apply([svc("x", clusterIP="10.96.9.9"), svc("y", clusterIP="10.96.9.9")])
    assert api.store.get("Service", "default", "x") is None
    api.apply([svc("a"), svc("b", ports=[{"port": 80, "nodePort": 30301}]), svc("c")])
    spec = {n: api.store.get("Service", "default", n)["spec"] for n in "abc"}
    assert (spec["a"]["clusterIP"], spec["a"]["ports"][0]["nodePort"]) == ("10.96.0.7", 30005)  # s5's, freed
    after = ipaddress.ip_address(ips[-1])
    assert (spec["b"]["clusterIP"], spec["c"]["clusterIP"]) == (str(after + 1), str(after + 2))
    assert spec["c"]["ports"][0]["nodePort"] == 30300  # b asked for 30301


@pytest.mark.parametrize("cidr", ["10.96.0.0/29", "fd00:10:96::/125"])
def test_the_free_addresses_of_a_range_are_its_hosts_in_order(cidr):
    from nsk.api.allocation import Allocations
    net, used, got = ipaddress.ip_network(cidr), Allocations([]), []
    while (ip := used.free_ip(net, set(), ("default", f"s{len(got)}"))) is not None:
        used.ips[ip] = ("default", f"s{len(got)}")
        got.append(ip)
    assert got == [str(h) for h in net.hosts()]
