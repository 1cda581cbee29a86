"""`nsk exec` and `nsk logs`: finding a Pod's sandbox, entering it, reading its output."""

from __future__ import annotations

import json
import os
import sys

from nsk.api.cluster import parse_cluster
from nsk.errors import NotFound, NskError
from nsk.kubelet import podfiles
from nsk.net.plan import plan
from nsk.store import Store


def sandbox(store: Store, namespace: str, name: str) -> dict:
    for _, ref, detail in store.owned("sandbox"):
        if ref == f"{namespace}/{name}":
            return json.loads(detail)
    pod = store.get("Pod", namespace, name)
    if pod is None:
        raise NotFound(f'pods "{name}" not found in namespace "{namespace}"')
    raise NskError(f'pod "{namespace}/{name}" has no sandbox yet (phase '
                   f'{(pod.get("status") or {}).get("phase", "Pending")}): wait for it to run')


def _container(store: Store, namespace: str, name: str, container: str | None) -> str:
    pod = store.get("Pod", namespace, name)
    names = [c["name"] for c in (pod or {}).get("spec", {}).get("containers", [])]
    if container is None:
        if len(names) > 1:
            print(f'Defaulted container "{names[0]}" out of: {", ".join(names)}', file=sys.stderr)
        return names[0] if names else ""
    if container not in names:
        raise NskError(f'container {container} is not valid for pod {name} (containers: {", ".join(names)})')
    return container


def exec_target(store: Store, target: str, namespace: str, container: str | None, command: list[str]) -> None:
    """Replace this process with `command` inside the target's namespaces (root); never returns."""
    from nsk.kernel import iptables, process
    kind, _, name = target.rpartition("/")
    p = plan(parse_cluster(store.get_meta("cluster")))
    if kind in ("node", "no", "nodes"):
        try:
            n = p.node(name)
        except KeyError:
            raise NskError(f'node "{name}" not found (nodes: {", ".join(x.name for x in p.nodes)})') from None
        # the node's own xtables lock, the one its kube-proxy takes (a real node's /run/xtables.lock)
        box = process.Sandbox(n.netns, n.name, iptables.lock_env(store.dir, n.netns), None)
    elif kind in ("host", "hosts"):
        hosts = {h.name: h for h in p.hosts}
        if name not in hosts:
            raise NskError(f'external host "{name}" not found (hosts: {", ".join(hosts) or "none"})')
        box = process.Sandbox(hosts[name].netns, name, iptables.lock_env(store.dir, hosts[name].netns), None)
    elif kind in ("", "pod", "pods", "po"):
        sb = sandbox(store, namespace, name)
        c = _container(store, namespace, name, container)
        env = dict(sb["env"].get(c) or {})
        if "TERM" in os.environ:
            env.setdefault("TERM", os.environ["TERM"])
        box = process.Sandbox(sb["netns"], sb["hostname"], env, sb["etc"])
    else:
        raise NskError(f'cannot exec in "{target}": give POD, node/NAME or host/NAME')
    store.close()
    process.enter(box)
    try:
        os.execvpe(command[0], command, box.env)
    except FileNotFoundError:
        # as a container runtime says it, and with its exit codes: 127 not found, 126 not runnable
        print(f'nsk: exec: "{command[0]}": executable file not found in $PATH', file=sys.stderr)
        sys.exit(127)
    except PermissionError:
        print(f'nsk: exec: "{command[0]}": permission denied', file=sys.stderr)
        sys.exit(126)


def log_file(store: Store, pod: str, namespace: str, container: str | None, previous: bool = False) -> str:
    """The current run's output of a container, or with `previous` the run before (kubectl's
    `--previous`)."""
    sandbox(store, namespace, pod)
    c = _container(store, namespace, pod, container)
    path = os.path.join(store.dir, "logs", podfiles.log_name(namespace, pod, c)) + (".previous" if previous else "")
    if not os.path.exists(path):
        if previous:
            raise NskError(f'previous terminated container "{c}" in pod "{pod}" not found')
        raise NskError(f'no log for container "{c}" of pod "{namespace}/{pod}" yet')
    return path
