"""Fixtures: a real cluster per test, with its own name, always torn down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/vm needs a kernel with IPVS and the dummy link type: tests/vm/run boots one in QEMU
# and runs them there (NSK_VM_TIER=1); `make test` runs both tiers
collect_ignore = [] if os.environ.get("NSK_VM_TIER") else ["vm"]


def run_nsk(*args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """The nsk command line, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "nsk", *args], capture_output=True, text=True, input=input,
                          timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"nsk {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# ---- shared by the integration tests ------------------------------------------------------

WEB = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx
        ports:
        - containerPort: 80
"""


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll `predicate` until it returns a true value (bounded in time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def running(pods):
    """The Pods running and ready, not Terminating (as `kubectl get pods` would show them)."""
    return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and all(c["ready"] for c in p["status"].get("containerStatuses", []))]



class Cluster:
    def __init__(self, name: str, tmp_path):
        self.name = name
        self.tmp = tmp_path

    def nsk(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120):
        return run_nsk(args[0], "--cluster", self.name, *args[1:], check=check, input=input, timeout=timeout)

    def up(self, manifest: str, *extra: str, check: bool = True):
        path = self.tmp / f"{self.name}.yaml"
        path.write_text(textwrap.dedent(manifest))
        return self.nsk("up", str(path), *extra, check=check)

    def apply(self, manifest: str, check: bool = True):
        path = self.tmp / f"{self.name}-apply-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(textwrap.dedent(manifest))
        return self.nsk("apply", "-f", str(path), check=check)

    def exec(self, target: str, *cmd: str, check: bool = True, input: str | None = None):
        return self.nsk("exec", target, "--", *cmd, check=check, input=input)

    def pods(self, selector: str | None = None, namespace: str = "default") -> list[dict]:
        args = ["get", "pods", "-o", "json", "-n", namespace] + (["-l", selector] if selector else [])
        return json.loads(self.nsk(*args).stdout)["items"]

    def get(self, kind: str, name: str, namespace: str = "default") -> dict:
        return json.loads(self.nsk("get", kind, name, "-o", "json", "-n", namespace).stdout)


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: it creates network namespaces (run the suite as root: make test)")


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration is a root test: marked `root` (`-m "not root"`
    runs the unit tiers alone), and skipped with the reason when the suite runs unprivileged."""
    for item in items:
        if f"{os.sep}integration{os.sep}" in str(item.fspath) or f"{os.sep}vm{os.sep}" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="needs root: it creates network namespaces"))


@pytest.fixture
def cluster(tmp_path):
    """A cluster name of this test's own; `nsk down` runs at the end whatever happened."""
    needs_root()
    c = Cluster("t" + uuid.uuid4().hex[:8], tmp_path)
    try:
        yield c
    finally:
        if os.path.isdir(f"/run/nsk/{c.name}"):
            run_nsk("down", "--cluster", c.name, check=False)


@pytest.fixture
def cluster_factory(tmp_path):
    """Several clusters in one test, each torn down at the end."""
    needs_root()
    made: list[Cluster] = []

    def make() -> Cluster:
        c = Cluster("t" + uuid.uuid4().hex[:8], tmp_path)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            if os.path.isdir(f"/run/nsk/{c.name}"):
                run_nsk("down", "--cluster", c.name, check=False)
