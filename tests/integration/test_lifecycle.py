"""Nothing leaks, nothing half-made: `nsk down` after anything, bad input, crashes (root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.conftest import WEB, wait_for

pytestmark = pytest.mark.root


def host_state() -> dict:
    """What nsk must never change in the root network namespace."""
    def cmd(*args):
        return subprocess.run(args, capture_output=True, text=True).stdout
    return {
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in cmd("ip", "-o", "link").splitlines()),
        "addresses": cmd("ip", "-o", "addr"),
        "routes": cmd("ip", "route", "show", "table", "all"),
        "rules": cmd("ip", "rule"),
        "iptables": "\n".join(l for l in cmd("iptables-save").splitlines() if not l.startswith(("#", ":"))),
        "forwarding": open("/proc/sys/net/ipv4/ip_forward").read(),
    }


def leftovers(name: str) -> dict:
    netns = [n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
             if n.startswith(f"nsk_{name}_")]
    etc = [n for n in (os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else [])
           if n.startswith(f"nsk_{name}_")]
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"nsk.daemon\0{name}\0".encode() in f.read():
                    procs.append(pid)
        except OSError:
            pass
    return {k: v for k, v in {"netns": netns, "etc": etc, "processes": procs,
                              "dir": os.path.exists(f"/run/nsk/{name}")}.items() if v}


def test_down_leaves_nothing_and_the_host_unchanged(cluster):
    before = host_state()
    cluster.up(WEB.format(replicas=3) + """
---
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  containers: [{name: c, image: x, command: ["sh", "-c", "sleep 3600 & sleep 3600"]}]
""")
    assert leftovers(cluster.name)["netns"]
    # an exec'd shell still inside a Pod when the cluster goes down
    shell = subprocess.Popen([sys.executable, "-m", "nsk", "exec", "sleeper", "--cluster", cluster.name, "--",
                              "sleep", "3600"], cwd=ROOT)
    try:
        wait_for(lambda: len([p for p in os.listdir("/proc") if p == str(shell.pid)]), what="the exec")
        out = cluster.nsk("down").stdout
        assert out.startswith(f'cluster "{cluster.name}" deleted')
        assert leftovers(cluster.name) == {}
        assert shell.wait(timeout=5) != 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
    assert host_state() == before


def test_down_after_kill_9_of_the_control_plane(cluster):
    cluster.up(WEB.format(replicas=2))
    pid = int(cluster.nsk("status").stdout.split("running (pid ")[1].split(")")[0])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "NOT running" in cluster.nsk("status").stdout, what="status to see the dead control plane")
    r = cluster.up(WEB.format(replicas=1), check=False)
    assert r.returncode == 1 and "control plane is not running" in r.stderr and "nsk resume" in r.stderr
    # the Pods live on without their control plane, as containers outlive a kubelet
    pod = cluster.pods()[0]
    out = cluster.exec("node/node-1", "curl", "-s", "--max-time", "5", pod["status"]["podIP"] + "/hostname").stdout
    assert out.strip() == pod["metadata"]["name"]
    cluster.nsk("down")
    assert leftovers(cluster.name) == {}


def test_resume_adopts_the_pods_and_catches_up(cluster):
    cluster.up(WEB.format(replicas=2) + """
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
""")
    before = {p["metadata"]["name"]: p["status"]["podIP"] for p in cluster.pods()}
    pid = int(cluster.nsk("status").stdout.split("running (pid ")[1].split(")")[0])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "NOT running" in cluster.nsk("status").stdout, what="status to see the dead control plane")
    victim = sorted(before)[0]
    cluster.nsk("delete", "pod", victim)  # a change while no one watches: the store keeps it
    out = cluster.nsk("resume").stdout
    assert out.startswith(f'cluster "{cluster.name}": control plane running again (pid ')
    # the surviving Pod was adopted (same IP, no restart), the deleted one replaced
    after = wait_for(lambda: len([p for p in cluster.pods() if p["status"].get("phase") == "Running"]) == 2
                     and {p["metadata"]["name"]: p for p in cluster.pods()}, what="2 Pods again")
    survivor = sorted(before)[1]
    assert after[survivor]["status"]["podIP"] == before[survivor]
    assert after[survivor]["status"]["containerStatuses"][0]["restartCount"] == 0
    assert victim not in after
    # its processes got SIGTERM; the namespace goes once they have ended
    wait_for(lambda: not os.path.exists(f"/run/netns/nsk_{cluster.name}_pod_default_{victim}"), timeout=5,
             what="the deleted Pod's namespace to go")
    wait_for(lambda: len(cluster.get("endpoints", "web")["subsets"][0]["addresses"]) == 2, what="2 endpoints")
    got = cluster.exec("node/node-1", "sh", "-c", "for i in $(seq 30); do curl -s --max-time 2 "
                                                  "10.96.0.2/hostname; echo; done").stdout.split()
    assert set(got) == set(after)
    # cluster DNS, whose Pods outlived the old control plane, follows the store still
    cluster.apply("apiVersion: v1\nkind: Service\nmetadata: {name: late}\n"
                  "spec: {selector: {app: web}, ports: [{port: 80}]}\n")
    late = cluster.get("svc", "late")["spec"]["clusterIP"]
    wait_for(lambda: cluster.exec(survivor, "dig", "+short", "late.default.svc.cluster.local").stdout.strip() == late,
             what="the new Service's name after resume")
    assert cluster.nsk("resume", check=False).stderr.startswith(f'Error: cluster "{cluster.name}" has a running')


def test_down_after_kill_9_of_up_half_way(cluster, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(WEB.format(replicas=40))
    up = subprocess.Popen([sys.executable, "-m", "nsk", "up", str(path), "--cluster", cluster.name], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # wait until some Pods exist, then kill both `up` and the control plane it started
    wait_for(lambda: len([n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
                          if n.startswith(f"nsk_{cluster.name}_pod_")]) >= 3, timeout=30, what="some Pods")
    up.send_signal(signal.SIGKILL)
    up.wait()
    for pid in leftovers(cluster.name).get("processes", []):
        os.kill(int(pid), signal.SIGKILL)
    assert leftovers(cluster.name)["netns"]
    cluster.nsk("down")
    assert leftovers(cluster.name) == {}


BAD = {
    "malformed YAML": ("kind: Pod\nmetadata: {name: x\n", "line "),
    "unknown kind": ("apiVersion: v1\nkind: Potato\nmetadata: {name: x}\n", 'kind: Unsupported value: "Potato"'),
    "unknown field": (WEB.format(replicas=1).replace("replicas:", "replica:"),
                      'Deployment "default/web" is invalid: spec.replica: Unknown field'),
    "negative replicas": (WEB.format(replicas=-1),
                          'Deployment "default/web" is invalid: spec.replicas: Invalid value: -1: '
                          "must be greater than or equal to 0"),
    "hostile name": (WEB.format(replicas=1).replace("name: web", "name: ../x", 1),
                     'Deployment "default/../x" is invalid: metadata.name: Invalid value: "../x"'),
    "overlapping subnets": ("apiVersion: nsk.io/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec:\n"
                            "  networking: {podSubnet: 10.96.0.0/16}\n", "overlaps spec.networking.podSubnet"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_creates_nothing(cluster, case):
    text, message = BAD[case]
    def mine() -> list[str]:  # other clusters may be up: only this test's own names count
        names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
        return sorted(n for n in names if n.startswith(f"nsk_{cluster.name}_"))
    r = cluster.up(text, check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("Error: ") and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert leftovers(cluster.name) == {}
    assert mine() == []


def test_ctrl_c_during_up_removes_what_was_made(cluster, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(WEB.format(replicas=100))  # long enough an `up` (~1.5 s) for the signal to land in it
    up = subprocess.Popen([sys.executable, "-m", "nsk", "up", str(path), "--cluster", cluster.name], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          # as from a terminal: a suite started in the background (`make test &`) has
                          # SIGINT ignored, which its children inherit, and nsk rightly keeps ignoring it
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: len([n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
                              if n.startswith(f"nsk_{cluster.name}_pod_")]) >= 3, timeout=30, what="some Pods")
        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 1, err
    assert err.strip().splitlines()[-1] == f'Error: interrupted: cluster "{cluster.name}" was removed'
    assert "Traceback" not in err and "Aborted!" not in err
    assert leftovers(cluster.name) == {}


def test_up_says_at_once_why_a_pod_does_not_run_and_leaves_the_cluster_to_look_at(cluster):
    t = time.monotonic()
    r = cluster.up(WEB.format(replicas=1) + """
---
apiVersion: v1
kind: Pod
metadata: {name: broken}
spec:
  containers: [{name: c, image: x, command: ["/nonexistent/binary"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: nowhere}
spec:
  nodeSelector: {zone: mars}
  containers: [{name: c, image: x}]
---
apiVersion: v1
kind: Pod
metadata: {name: unready}
spec:
  containers:
  - {name: c, image: x, ports: [{containerPort: 80}],
     readinessProbe: {tcpSocket: {port: 81}, periodSeconds: 1, failureThreshold: 2}}
---
apiVersion: v1
kind: Pod
metadata: {name: clash}
spec:
  containers:
  - {name: a, image: x, ports: [{containerPort: 80}]}
  - {name: b, image: x, ports: [{containerPort: 80}]}
""", check=False)
    assert r.returncode == 1 and time.monotonic() - t < 30  # not the whole timeout
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith(f'Error: cluster "{cluster.name}" is up, but 4 of 9 Pods do not run: ')
    assert "default/broken: CrashLoopBackOff (exit 127: nsk: cannot start /nonexistent/binary: " \
           "No such file or directory)" in err
    assert "default/nowhere: Unschedulable: 0/2 nodes are available: " \
           "2 node(s) didn't match Pod's node affinity/selector." in err
    assert "default/unready: Readiness probe failed: container c: dial tcp " in err
    assert "default/clash: CrashLoopBackOff (exit 1: nsk built-in server: cannot listen on 0.0.0.0:80/tcp: " \
           "Address already in use)" in err
    assert "nsk describe pod" in err and "nsk logs" in err
    assert "running (pid" in cluster.nsk("status").stdout  # left up to look at


def test_a_pod_with_the_longest_valid_name_runs_and_survives_a_resume(cluster):
    """A 253-character Pod name (a valid subdomain) once killed the control plane building
    its log path (ENAMETOOLONG), and again on every resume. It runs, logs, and resumes."""
    name = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61
    assert len(name) == 253
    cluster.up(WEB.format(replicas=1) + f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers: [{{name: c, image: x, command: ["sh", "-c", "echo hello from $HOSTNAME; sleep 300"]}}]
""")
    pod = cluster.get("pod", name)
    assert pod["status"]["phase"] == "Running"
    wait_for(lambda: cluster.nsk("logs", name).stdout == f"hello from {'a' * 63}\n", what="its log")
    pid = int(cluster.nsk("status").stdout.split("running (pid ")[1].split(")")[0])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "NOT running" in cluster.nsk("status").stdout, what="the dead control plane")
    cluster.nsk("resume")
    time.sleep(1)
    assert "running (pid" in cluster.nsk("status").stdout
    assert cluster.get("pod", name)["status"]["phase"] == "Running"


def test_ipvs_on_a_kernel_without_it_says_so_and_runs_iptables(cluster):
    """As the source describes (and kube-proxy does): without IPVS in the kernel, iptables
    mode runs; `nsk up` says so in one line, and the status shows the mode that runs.
    (This machine's kernel has no ip_vs; IPVS mode itself is tested under a kernel that
    has it, in tests/vm.)"""
    from nsk.proxy.provider import fallback
    r = cluster.up(WEB.format(replicas=1) + """
---
apiVersion: nsk.io/v1alpha1
kind: Cluster
metadata: {name: x}
spec: {proxy: {mode: ipvs}}
""")
    assert not os.path.exists("/proc/net/ip_vs"), "IPVS is here: tests/vm covers this kernel"
    assert fallback("ipvs") == "this kernel has no IPVS (ip_vs), so kube-proxy falls back to iptables mode"
    assert f" • proxy mode ipvs: {fallback('ipvs')}" in r.stderr
    assert "Proxy mode:     iptables" in cluster.nsk("status").stdout
    assert "-A KUBE-SERVICES" in cluster.nsk("rules", "-t", "nat").stdout
    # asked for where kubeadm keeps it, the same one line
    cm = cluster.get("configmap", "kube-proxy", namespace="kube-system")
    del cm["metadata"]["resourceVersion"]
    r = cluster.apply(json.dumps(cm))
    assert f"Warning: proxy mode ipvs: {fallback('ipvs')}" in r.stderr, r.stderr
