"""The pure modules stay pure: neither they nor anything of nsk they import (at any depth,
also inside a function) imports a module that touches the kernel or the network."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORBIDDEN = {"pyroute2", "subprocess", "socket", "ctypes", "nsk.kernel"}
PURE = [
    "nsk.api.allocation", "nsk.api.cluster", "nsk.api.load", "nsk.api.names", "nsk.api.objects", "nsk.api.schema",
    "nsk.api.types", "nsk.api.validation",
    "nsk.apiserver.admission", "nsk.apiserver.printers", "nsk.apiserver.registry",
    "nsk.net.plan", "nsk.proxy.iptables", "nsk.proxy.masquerade", "nsk.proxy.model", "nsk.proxy.nftables",
    "nsk.proxy.config", "nsk.kubelet.portmap", "nsk.dns.records",
    "nsk.controllers.deployment", "nsk.controllers.endpoints", "nsk.controllers.loadbalancer",
    "nsk.controllers.scheduler", "nsk.controllers.manager", "nsk.kubelet.podfiles", "nsk.testing.tracer",
]


def _imports(module: str) -> set[str]:
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    if not os.path.exists(path):
        path = os.path.join(ROOT, *module.split("."), "__init__.py")
    tree = ast.parse(open(path).read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names
                       if os.path.exists(os.path.join(ROOT, *node.module.split("."), a.name + ".py")))
    return out


def _closure(module: str) -> dict[str, str]:
    """Every module `module` reaches -> the nsk module that imports it."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        m = todo.pop()
        for dep in _imports(m):
            if dep in seen:
                continue
            seen[dep] = m
            if dep.startswith("nsk.") and not any(dep == f or dep.startswith(f + ".") for f in FORBIDDEN):
                todo.append(dep)
    return seen


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_reaches_no_kernel_code(module):
    reached = _closure(module)
    bad = {dep: via for dep, via in reached.items()
           if any(dep == f or dep.startswith(f + ".") for f in FORBIDDEN)}
    assert not bad, f"{module} reaches {bad} (module: imported by)"
