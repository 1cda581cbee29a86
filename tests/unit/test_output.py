"""kubectl's table and -o output (pure): exact strings, as a user reads them."""

from __future__ import annotations

import ast
import calendar
import json
import time
from pathlib import Path

import pytest
import yaml

from nsk.apiserver import printers as out
from nsk.apiserver.printers import (
    age, deployments_table, dump, endpoints_table, endpointslices_table, human_duration, nodes_table,
    pods_table, services_table, table, to_list,
)

CREATED = "2026-11-28T14:00:00Z"
T0 = calendar.timegm(time.strptime(CREATED, "%Y-%m-%dT%H:%M:%SZ"))
NOW = T0 + 3 * 60 + 20  # every object below is 3m20s old


def render(t: tuple[list[str], list[list[str]]]) -> str:
    return table(*t)


def meta(name: str, namespace: str | None = "default", **extra) -> dict:
    m = {"name": name, "uid": f"uid-{name}", "creationTimestamp": CREATED, **extra}
    if namespace is not None:
        m["namespace"] = namespace
    return m


def pod(name: str, namespace: str = "default", phase: str = "Running", statuses: list[dict] | None = None,
        containers: int = 1, ip: str | None = "10.244.1.2", node: str | None = "node-1", **status) -> dict:
    st = {"phase": phase, **status}
    if ip:
        st["podIP"], st["podIPs"] = ip, [{"ip": ip}]
    st["containerStatuses"] = statuses if statuses is not None else [running()] * containers
    spec = {"containers": [{"name": f"c{i}", "image": "nginx"} for i in range(containers)]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta(name, namespace), "spec": spec, "status": st}


def running(ready: bool = True, restarts: int = 0, **extra) -> dict:
    return {"name": "c0", "ready": ready, "restartCount": restarts,
            "state": {"running": {"startedAt": CREATED}}, **extra}


def last_exit(seconds_before_now: int) -> dict:
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - seconds_before_now))
    return {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": finished}}


# ---- durations -----------------------------------------------------------------------------

MIN, HOUR, DAY, YEAR = 60, 3600, 86400, 365 * 86400


@pytest.mark.parametrize("seconds,want", [
    # clock skew: Go truncates toward zero, and up to 2 s in the future is "0s"
    (-2, "<invalid>"), (-1.5, "0s"), (-1, "0s"), (-0.5, "0s"), (0, "0s"), (1.9, "1s"),
    # seconds below 2 minutes
    (95, "95s"), (119, "119s"), (119.99, "119s"),
    # minutes and seconds below 10 minutes
    (2 * MIN, "2m"), (2 * MIN + 1, "2m1s"), (5 * MIN + 12, "5m12s"), (10 * MIN - 1, "9m59s"),
    # minutes below 3 hours
    (10 * MIN, "10m"), (45 * MIN + 30, "45m"), (3 * HOUR - 1, "179m"),
    # hours and minutes below 8 hours
    (3 * HOUR, "3h"), (5 * HOUR + 12 * MIN + 59, "5h12m"), (8 * HOUR - 1, "7h59m"),
    # hours below 48 hours
    (8 * HOUR, "8h"), (30 * HOUR + 59 * MIN, "30h"), (48 * HOUR - 1, "47h"),
    # days and hours below 8 days
    (48 * HOUR, "2d"), (3 * DAY + 5 * HOUR, "3d5h"), (8 * DAY - 1, "7d23h"),
    # days below 2 years
    (8 * DAY, "8d"), (45 * DAY + 23 * HOUR, "45d"), (2 * YEAR - 1, "729d"),
    # years and days below 8 years
    (2 * YEAR, "2y"), (2 * YEAR + 45 * DAY, "2y45d"), (8 * YEAR - 1, "7y364d"),
    # years
    (8 * YEAR, "8y"), (8 * YEAR + 100 * DAY, "8y"), (12 * YEAR, "12y"),
])
def test_human_duration_matches_apimachinery(seconds, want):
    assert human_duration(seconds) == want


@pytest.mark.parametrize("obj,want", [
    ({"metadata": {"creationTimestamp": CREATED}}, "3m20s"),
    ({"metadata": {"creationTimestamp": "2026-11-28T14:00:00.500000Z"}}, "3m19s"),
    ({"metadata": {"creationTimestamp": "2026-11-28T15:00:00+01:00"}}, "3m20s"),
    ({"metadata": {"name": "x"}}, "<unknown>"),
    ({"metadata": {"creationTimestamp": None}}, "<unknown>"),
    ({"metadata": {"creationTimestamp": "yesterday"}}, "<unknown>"),
    ({}, "<unknown>"),
])
def test_age(obj, want):
    assert age(obj, NOW) == want


# ---- layout --------------------------------------------------------------------------------


def test_table_pads_to_the_widest_cell_plus_three_and_leaves_the_last_column_alone():
    assert table(["NAME", "STATUS", "AGE"], [["web-1", "Running", "5m"], ["a-much-longer-name", "Pending", "95s"]]) == (
        "NAME                 STATUS    AGE\n"
        "web-1                Running   5m\n"
        "a-much-longer-name   Pending   95s\n")


def test_table_columns_are_at_least_six_wide_like_kubectls_tabwriter():
    assert table(["A", "B", "C"], [["1", "22", "333"]]) == (
        "A     B     C\n"
        "1     22    333\n")


def test_table_has_no_trailing_spaces_when_the_last_cell_is_empty():
    assert table(["NAME", "VERSION"], [["node-1", ""]]) == "NAME     VERSION\nnode-1\n"


def test_table_without_rows_is_empty():
    assert table(["NAME", "AGE"], []) == ""


# ---- Pods ----------------------------------------------------------------------------------

PODS = [
    pod("web-7d4b9c-abcde", ip="10.244.1.2", node="node-1"),
    pod("web-7d4b9c-fghij", ip="10.244.2.3", node="node-2",
        statuses=[running(restarts=2, lastState=last_exit(5))]),
    pod("pending", phase="Pending", ip=None, node=None, statuses=[]),
]


def test_pods_table():
    assert render(pods_table(PODS, False, False, NOW)) == (
        "NAME               READY   STATUS    RESTARTS     AGE\n"
        "web-7d4b9c-abcde   1/1     Running   0            3m20s\n"
        "web-7d4b9c-fghij   1/1     Running   2 (5s ago)   3m20s\n"
        "pending            0/1     Pending   0            3m20s\n")


def test_pods_table_wide_adds_ip_and_node():
    assert render(pods_table(PODS, True, False, NOW)) == (
        "NAME               READY   STATUS    RESTARTS     AGE     IP           NODE\n"
        "web-7d4b9c-abcde   1/1     Running   0            3m20s   10.244.1.2   node-1\n"
        "web-7d4b9c-fghij   1/1     Running   2 (5s ago)   3m20s   10.244.2.3   node-2\n"
        "pending            0/1     Pending   0            3m20s   <none>       <none>\n")


def test_pods_table_all_namespaces_wide():
    pods = [pod("web-1", ip="10.244.1.2"), pod("coredns-0", namespace="kube-system", ip="10.244.0.2")]
    assert render(pods_table(pods, True, True, NOW)) == (
        "NAMESPACE     NAME        READY   STATUS    RESTARTS   AGE     IP           NODE\n"
        "default       web-1       1/1     Running   0          3m20s   10.244.1.2   node-1\n"
        "kube-system   coredns-0   1/1     Running   0          3m20s   10.244.0.2   node-1\n")


def test_crash_loop_back_off_shows_the_waiting_reason_and_the_last_restart():
    crashing = {"name": "c0", "ready": False, "restartCount": 5, "lastState": last_exit(5 * MIN + 12),
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}}}
    assert render(pods_table([pod("crashy", statuses=[crashing])], False, False, NOW)) == (
        "NAME     READY   STATUS             RESTARTS        AGE\n"
        "crashy   0/1     CrashLoopBackOff   5 (5m12s ago)   3m20s\n")


def initializing(init_status: dict) -> dict:
    """A Pending Pod whose one init container has not finished."""
    p = pod("a", phase="Pending", statuses=[], initContainerStatuses=[init_status])
    p["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    return p


def status_of(p: dict) -> list[str]:
    return pods_table([p], False, False, NOW)[1][0][1:4]


@pytest.mark.parametrize("p,want", [
    # a Running Pod whose container failed its readiness probe
    (pod("a", statuses=[running(ready=False)]), ["0/1", "Running", "0"]),
    # ready is counted only for running containers
    (pod("a", containers=2, statuses=[running(), {"name": "c1", "ready": True, "restartCount": 0,
                                                  "state": {"waiting": {}}}]), ["1/2", "Running", "0"]),
    # the Pod's own status.reason beats the phase
    (pod("a", phase="Failed", reason="Evicted", statuses=[]), ["0/1", "Evicted", "0"]),
    # a terminated container shows its reason, or its signal, or its exit code
    (pod("a", phase="Succeeded", statuses=[{"name": "c0", "ready": False, "restartCount": 0,
                                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]),
     ["0/1", "Completed", "0"]),
    (pod("a", phase="Failed", statuses=[{"name": "c0", "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]),
     ["0/1", "ExitCode:3", "0"]),
    (pod("a", phase="Failed", statuses=[{"name": "c0", "restartCount": 0,
                                         "state": {"terminated": {"exitCode": 137, "signal": 9}}}]),
     ["0/1", "Signal:9", "0"]),
    # one container Completed beside a running one: Running if the Pod is Ready, else NotReady
    (pod("a", containers=2, conditions=[{"type": "Ready", "status": "True"}], statuses=[
        {"name": "c0", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        running()]), ["1/2", "Running", "0"]),
    (pod("a", containers=2, statuses=[
        {"name": "c0", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        running()]), ["1/2", "NotReady", "0"]),
    # with several waiting containers the first one's reason wins (kubectl walks them backwards)
    (pod("a", containers=2, statuses=[
        {"name": "c0", "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
        {"name": "c1", "restartCount": 2, "state": {"waiting": {"reason": "ContainerCreating"}}}]),
     ["0/2", "CrashLoopBackOff", "3"]),
    # restarts without a recorded finish time have no "(... ago)"
    (pod("a", statuses=[running(restarts=4)]), ["1/1", "Running", "4"]),
    # the latest finish across containers is the one shown
    (pod("a", containers=2, statuses=[running(restarts=1, lastState=last_exit(600)),
                                      running(restarts=1, lastState=last_exit(30))]),
     ["2/2", "Running", "2 (30s ago)"]),
    # no status written yet: the API server's default phase
    ({"metadata": meta("a"), "spec": {"containers": [{"name": "c0"}]}}, ["0/1", "Pending", "0"]),
    # an init container still running, and one that failed
    (initializing({"name": "init", "restartCount": 0, "state": {"running": {}}}), ["0/1", "Init:0/1", "0"]),
    (initializing({"name": "init", "restartCount": 3, "lastState": last_exit(8),
                   "state": {"waiting": {"reason": "CrashLoopBackOff"}}}),
     ["0/1", "Init:CrashLoopBackOff", "3 (8s ago)"]),
])
def test_pod_ready_status_and_restarts_follow_kubectl(p, want):
    assert status_of(p) == want


def test_a_deleted_pod_is_terminating():
    p = pod("a")
    p["metadata"]["deletionTimestamp"] = CREATED
    assert status_of(p) == ["1/1", "Terminating", "0"]


# ---- Nodes ---------------------------------------------------------------------------------


def node(name: str, ready: str | None = "True", labels: dict | None = None, external: str | None = None) -> dict:
    addresses = [{"type": "InternalIP", "address": f"10.0.0.{name[-1]}"}, {"type": "Hostname", "address": name}]
    if external:
        addresses.append({"type": "ExternalIP", "address": external})
    st = {"addresses": addresses,
          "nodeInfo": {"kubeletVersion": "v0.1.0-nsk", "osImage": "nsk network namespace",
                       "kernelVersion": "6.8.0-45-generic", "containerRuntimeVersion": "nsk://fork"}}
    if ready is not None:
        st["conditions"] = [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}]
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta(name, None, labels=labels or {}),
            "spec": {}, "status": st}


NODES = [
    node("node-1", labels={"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}),
    node("node-2", ready="False", external="203.0.113.7"),
    node("node-3", ready=None, labels={"kubernetes.io/role": "edge"}),
]


def test_nodes_table():
    assert render(nodes_table(NODES, False, NOW)) == (
        "NAME     STATUS     ROLES                  AGE     VERSION\n"
        "node-1   Ready      control-plane,worker   3m20s   v0.1.0-nsk\n"
        "node-2   NotReady   <none>                 3m20s   v0.1.0-nsk\n"
        "node-3   Unknown    edge                   3m20s   v0.1.0-nsk\n")


def test_nodes_table_wide():
    assert render(nodes_table(NODES[:2], True, NOW)) == (
        "NAME     STATUS     ROLES                  AGE     VERSION      INTERNAL-IP   EXTERNAL-IP   "
        "OS-IMAGE                KERNEL-VERSION     CONTAINER-RUNTIME\n"
        "node-1   Ready      control-plane,worker   3m20s   v0.1.0-nsk   10.0.0.1      <none>        "
        "nsk network namespace   6.8.0-45-generic   nsk://fork\n"
        "node-2   NotReady   <none>                 3m20s   v0.1.0-nsk   10.0.0.2      203.0.113.7   "
        "nsk network namespace   6.8.0-45-generic   nsk://fork\n")


def test_a_cordoned_node_shows_scheduling_disabled():
    n = node("node-1")
    n["spec"]["unschedulable"] = True
    assert nodes_table([n], False, NOW)[1][0][1] == "Ready,SchedulingDisabled"


# ---- Deployments ---------------------------------------------------------------------------


def deployment(name: str, replicas: int | None, status: dict, namespace: str = "default") -> dict:
    spec = {"selector": {"matchLabels": {"tier": "front", "app": name}},
            "template": {"metadata": {"labels": {"app": name, "tier": "front"}},
                         "spec": {"containers": [{"name": "web", "image": "nginx:1.27"},
                                                 {"name": "log", "image": "busybox"}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name, namespace),
            "spec": spec, "status": status}


DEPLOYMENTS = [
    deployment("web", 3, {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}),
    deployment("idle", None, {}, namespace="lab"),
]


def test_deployments_table():
    assert render(deployments_table(DEPLOYMENTS, False, False, NOW)) == (
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\n"
        "web    2/3     3            2           3m20s\n"
        "idle   0/0     0            0           3m20s\n")


def test_deployments_table_wide_all_namespaces():
    assert render(deployments_table(DEPLOYMENTS, True, True, NOW)) == (
        "NAMESPACE   NAME   READY   UP-TO-DATE   AVAILABLE   AGE     CONTAINERS   IMAGES               SELECTOR\n"
        "default     web    2/3     3            2           3m20s   web,log      nginx:1.27,busybox   "
        "app=web,tier=front\n"
        "lab         idle   0/0     0            0           3m20s   web,log      nginx:1.27,busybox   "
        "app=idle,tier=front\n")


@pytest.mark.parametrize("selector,want", [
    ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
    ({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["front", "back"]},
        {"key": "env", "operator": "NotIn", "values": ["dev"]},
        {"key": "canary", "operator": "DoesNotExist"},
        {"key": "zone", "operator": "Exists"}]},
     "app=web,!canary,env notin (dev),tier in (back,front),zone"),
    ({}, ""),
    (None, ""),
])
def test_deployment_selector_is_printed_like_a_label_selector(selector, want):
    d = deployment("web", 1, {})
    d["spec"]["selector"] = selector
    assert deployments_table([d], True, False, NOW)[1][0][-1] == want


# ---- Services ------------------------------------------------------------------------------


def service(name: str, kind: str, cluster_ip: str | None, ports: list[dict] | None = None,
            selector: dict | None = None, status: dict | None = None, namespace: str = "default", **spec) -> dict:
    s = {"type": kind, "ports": ports if ports is not None else [{"port": 80, "protocol": "TCP", "targetPort": 80}],
         **spec}
    if cluster_ip:
        s["clusterIP"], s["clusterIPs"] = cluster_ip, [cluster_ip]
    if selector is not None:
        s["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, namespace), "spec": s,
            "status": status or {"loadBalancer": {}}}


SERVICES = [
    service("kubernetes", "ClusterIP", "10.96.0.1", [{"name": "https", "port": 443, "protocol": "TCP"}]),
    service("web", "ClusterIP", "10.96.0.2", selector={"app": "web"}, externalIPs=["198.51.100.9"]),
    service("np", "NodePort", "10.96.0.3", [{"port": 80, "protocol": "TCP", "nodePort": 30007},
                                            {"port": 53, "protocol": "UDP", "nodePort": 30053}],
            selector={"app": "web", "tier": "front"}),
    service("lb", "LoadBalancer", "10.96.0.4", [{"port": 80, "protocol": "TCP", "nodePort": 31080}],
            selector={"app": "web"}),
    service("lb-up", "LoadBalancer", "10.96.0.5", [{"port": 80, "protocol": "TCP", "nodePort": 31081}],
            selector={"app": "web"}, status={"loadBalancer": {"ingress": [{"ip": "198.51.100.1", "ipMode": "VIP"}]}}),
    service("search", "ExternalName", None, [], externalName="search.example.com"),
    service("db", "ClusterIP", "None", [{"port": 5432, "protocol": "TCP"}], selector={"app": "db"}),
]


def test_services_table():
    assert render(services_table(SERVICES, False, False, NOW)) == (
        "NAME         TYPE           CLUSTER-IP   EXTERNAL-IP          PORT(S)                     AGE\n"
        "kubernetes   ClusterIP      10.96.0.1    <none>               443/TCP                     3m20s\n"
        "web          ClusterIP      10.96.0.2    198.51.100.9         80/TCP                      3m20s\n"
        "np           NodePort       10.96.0.3    <none>               80:30007/TCP,53:30053/UDP   3m20s\n"
        "lb           LoadBalancer   10.96.0.4    <pending>            80:31080/TCP                3m20s\n"
        "lb-up        LoadBalancer   10.96.0.5    198.51.100.1         80:31081/TCP                3m20s\n"
        "search       ExternalName   <none>       search.example.com   <none>                      3m20s\n"
        "db           ClusterIP      None         <none>               5432/TCP                    3m20s\n")


def test_services_table_wide_all_namespaces_adds_the_selector():
    assert render(services_table(SERVICES[2:4], True, True, NOW)) == (
        "NAMESPACE   NAME   TYPE           CLUSTER-IP   EXTERNAL-IP   PORT(S)                     AGE     SELECTOR\n"
        "default     np     NodePort       10.96.0.3    <none>        80:30007/TCP,53:30053/UDP   3m20s   "
        "app=web,tier=front\n"
        "default     lb     LoadBalancer   10.96.0.4    <pending>     80:31080/TCP                3m20s   app=web\n")


def test_services_without_selector_show_none_in_wide():
    assert services_table(SERVICES[:1], True, False, NOW)[1][0][-1] == "<none>"


LB_TWO = {"loadBalancer": {"ingress": [{"ip": "198.51.100.2"}, {"ip": "198.51.100.1"}, {"ip": "198.51.100.1"}]}}


@pytest.mark.parametrize("svc,wide,want", [
    # ingress addresses are sorted and de-duplicated; kubectl clips them to 16 characters unless wide
    (service("lb", "LoadBalancer", "10.96.0.4", status=LB_TWO), False, "198.51.100.1,..."),
    (service("lb", "LoadBalancer", "10.96.0.4", status=LB_TWO), True, "198.51.100.1,198.51.100.2"),
    # a hostname when the ingress has no IP
    (service("lb", "LoadBalancer", "10.96.0.4", status={"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}),
     False, "lb.example"),
    # externalIPs come after the load balancer's, and replace "<pending>"
    (service("lb", "LoadBalancer", "10.96.0.4", externalIPs=["203.0.113.5"],
             status={"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}), False, "198.51.100.1,203.0.113.5"),
    (service("lb", "LoadBalancer", "10.96.0.4", externalIPs=["203.0.113.5"]), False, "203.0.113.5"),
    (service("np", "NodePort", "10.96.0.3", externalIPs=["203.0.113.5", "203.0.113.6"]), False,
     "203.0.113.5,203.0.113.6"),
])
def test_service_external_ip(svc, wide, want):
    assert services_table([svc], wide, False, NOW)[1][0][3] == want


def test_a_service_without_ports_shows_none():
    assert services_table([service("x", "ClusterIP", "10.96.0.9", [])], False, False, NOW)[1][0][4] == "<none>"


# ---- Endpoints -----------------------------------------------------------------------------


def endpoints(name: str, subsets: list[dict] | None, namespace: str = "default") -> dict:
    e = {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta(name, namespace)}
    if subsets is not None:
        e["subsets"] = subsets
    return e


def addrs(*ips: str) -> list[dict]:
    return [{"ip": ip, "nodeName": "node-1"} for ip in ips]


ENDPOINTS = [
    endpoints("kubernetes", [{"addresses": addrs("10.0.0.1"), "ports": [{"name": "https", "port": 6443}]}]),
    endpoints("web", [{"addresses": addrs("10.244.1.2", "10.244.1.3", "10.244.2.2", "10.244.2.3"),
                       "ports": [{"port": 80, "protocol": "TCP"}]}]),
    endpoints("nobody", None),
]


def test_endpoints_table_lists_three_then_counts_the_rest():
    assert render(endpoints_table(ENDPOINTS, False, NOW)) == (
        "NAME         ENDPOINTS                                               AGE\n"
        "kubernetes   10.0.0.1:6443                                           3m20s\n"
        "web          10.244.1.2:80,10.244.1.3:80,10.244.2.2:80 + 1 more...   3m20s\n"
        "nobody       <none>                                                  3m20s\n")


def test_endpoints_table_all_namespaces():
    eps = [endpoints("web", [{"addresses": addrs("10.244.1.2"), "ports": [{"port": 80}]}], namespace="lab")]
    assert render(endpoints_table(eps, True, NOW)) == (
        "NAMESPACE   NAME   ENDPOINTS       AGE\n"
        "lab         web    10.244.1.2:80   3m20s\n")


@pytest.mark.parametrize("subsets,want", [
    # every port of every address, port by port, then subset by subset
    ([{"addresses": addrs("10.244.1.2", "10.244.1.3"), "ports": [{"port": 80}, {"port": 443}]},
      {"addresses": addrs("10.244.2.2"), "ports": [{"port": 8080}]}],
     "10.244.1.2:80,10.244.1.3:80,10.244.1.2:443 + 2 more..."),
    # exactly three: no "more"
    ([{"addresses": addrs("10.244.1.2", "10.244.1.3", "10.244.1.4"), "ports": [{"port": 80}]}],
     "10.244.1.2:80,10.244.1.3:80,10.244.1.4:80"),
    # a headless Service without ports lists bare IPs
    ([{"addresses": addrs("10.244.1.2", "10.244.1.3")}], "10.244.1.2,10.244.1.3"),
    # unready addresses are not listed; kubectl prints an empty cell then, not "<none>"
    ([{"notReadyAddresses": addrs("10.244.1.2"), "ports": [{"port": 80}]}], ""),
    ([], "<none>"),
    # IPv6 addresses are bracketed, as net.JoinHostPort does
    ([{"addresses": addrs("fd00::2"), "ports": [{"port": 80}]}], "[fd00::2]:80"),
])
def test_endpoints_column(subsets, want):
    assert endpoints_table([endpoints("web", subsets)], False, NOW)[1][0][1] == want


def test_endpointslices_table():
    s = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta("web-abc12"),
         "addressType": "IPv4", "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
         "endpoints": [{"addresses": [ip]} for ip in ("10.244.1.2", "10.244.1.3", "10.244.2.2", "10.244.2.3")]}
    empty = {"metadata": meta("web-empty"), "addressType": "IPv4", "ports": None, "endpoints": []}
    assert render(endpointslices_table([s, empty], False, NOW)) == (
        "NAME        ADDRESSTYPE   PORTS     ENDPOINTS                                      AGE\n"
        "web-abc12   IPv4          80,443    10.244.1.2,10.244.1.3,10.244.2.2 + 1 more...   3m20s\n"
        "web-empty   IPv4          <unset>   <unset>                                        3m20s\n")


# ---- -o json|yaml --------------------------------------------------------------------------


def test_to_list():
    items = [{"kind": "Pod"}]
    assert to_list(items) == {"apiVersion": "v1", "kind": "List", "items": items,
                              "metadata": {"resourceVersion": ""}}


def test_dump_json_uses_four_spaces_and_a_trailing_newline():
    assert dump({"kind": "List", "items": [{"a": 1}]}, "json") == (
        '{\n'
        '    "kind": "List",\n'
        '    "items": [\n'
        '        {\n'
        '            "a": 1\n'
        '        }\n'
        '    ]\n'
        '}\n')


def test_dump_yaml_is_block_style_in_the_objects_key_order():
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.96.0.2"}}
    assert dump(obj, "yaml") == (
        "apiVersion: v1\n"
        "kind: Service\n"
        "metadata:\n"
        "  name: web\n"
        "  labels:\n"
        "    app: web\n"
        "spec:\n"
        "  ports:\n"
        "  - port: 80\n"
        "    protocol: TCP\n"
        "  clusterIP: 10.96.0.2\n")


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_dump_round_trips_a_list(fmt):
    doc = to_list([s for s in SERVICES])
    text = dump(doc, fmt)
    assert (json.loads(text) if fmt == "json" else yaml.safe_load(text)) == doc


def test_dump_rejects_other_formats():
    with pytest.raises(ValueError, match="unknown output format 'wide'"):
        dump({}, "wide")


# ---- purity --------------------------------------------------------------------------------


def test_the_module_is_pure():
    tree = ast.parse(Path(out.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "json", "math", "datetime", "yaml"}


def test_yaml_output_writes_a_files_lines_as_a_block_and_reads_back_the_same():
    """kubectl prints a ConfigMap's file as `key: |`, so it can be edited and applied back."""
    import yaml

    from nsk.apiserver.printers import dump
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
          "data": {"config.conf": "mode: ''\nipvs:\n  scheduler: rr\n", "odd": "trailing \nspace"}}
    text = dump(cm, "yaml")
    assert "  config.conf: |\n    mode: ''\n    ipvs:\n      scheduler: rr\n" in text
    assert yaml.safe_load(text) == cm
