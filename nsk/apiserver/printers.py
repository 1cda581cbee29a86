"""kubectl's table and object output (pure: objects and a clock in, strings out).

Each `*_table` function mirrors the printer kubectl uses for that kind
(kubernetes pkg/printers/internalversion/printers.go) and returns (headers, rows);
`table` lays them out the way kubectl's tabwriter does. Objects are plain dicts
shaped like the API server returns them.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import yaml

Table = tuple[list[str], list[list[str]]]

# kubectl's tabwriter (cli-runtime pkg/printers/tabwriter.go): a column is as wide as its
# widest cell plus 3 spaces of padding, and never narrower than 6.
_PADDING = 3
_MIN_WIDTH = 6
# printers.go clips the LoadBalancer ingress list to 16 characters unless -o wide.
_LOAD_BALANCER_WIDTH = 16
_NODE_ROLE_PREFIX = "node-role.kubernetes.io/"
_NODE_ROLE_LABEL = "kubernetes.io/role"
_MORE_AFTER = 3  # ENDPOINTS lists three addresses, then " + N more..."


# ---- durations and timestamps --------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: ~2-3 significant figures of a duration."""
    # Go takes int(d.Seconds()), which truncates toward zero; up to 2 s in the future
    # (excluded) is clock skew between machines and shows as "0s".
    s = math.trunc(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days_in_year = hours // 24 % 365
        years = hours // 24 // 365
        return f"{years}y" if days_in_year == 0 else f"{years}y{days_in_year}d"
    return f"{hours // 24 // 365}y"


def _timestamp(text: str | None) -> float | None:
    """An RFC 3339 time as the API writes it ("2026-11-28T14:00:00Z") in Unix seconds."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:  # shown as "<unknown>", as kubectl shows a zero time
        return None


def _since(text: str | None, now: float) -> str:
    """printers.go translateTimestampSince."""
    t = _timestamp(text)
    return "<unknown>" if t is None else human_duration(now - t)


def age(obj: dict, now: float) -> str:
    """The AGE column: time since metadata.creationTimestamp, "<unknown>" without one."""
    return _since((obj.get("metadata") or {}).get("creationTimestamp"), now)


# ---- layout --------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns laid out as kubectl prints them; "" when there are no rows."""
    if not rows:
        return ""
    lines = [[str(c) for c in r] for r in [headers, *rows]]
    columns = max(len(r) for r in lines)
    widths = [max(_MIN_WIDTH, max(len(r[i]) for r in lines if i < len(r)) + _PADDING)
              for i in range(columns - 1)]
    out = []
    for r in lines:
        # The last cell is not padded, as tabwriter leaves text after the last tab alone;
        # an empty last cell would leave padding behind, which we strip.
        text = "".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + (r[-1] if r else "")
        out.append(text.rstrip())
    return "\n".join(out) + "\n"


def _with_namespace(all_namespaces: bool, headers: list[str], rows: list[tuple[dict, list[str]]]) -> Table:
    """kubectl -A: a leading NAMESPACE column."""
    if not all_namespaces:
        return headers, [row for _, row in rows]
    return (["NAMESPACE", *headers],
            [[(obj.get("metadata") or {}).get("namespace", ""), *row] for obj, row in rows])


def _more(items: list[str], count: int, empty: str) -> str:
    """The first three items, then " + N more..." (printers.go listWithMoreString)."""
    if not items:
        return empty
    text = ",".join(items[:_MORE_AFTER])
    return f"{text} + {count - _MORE_AFTER} more..." if count > _MORE_AFTER else text


def _labels(m: dict | None) -> str:
    """labels.FormatLabels: "k=v,k2=v2" sorted by key, "<none>" when empty."""
    return ",".join(f"{k}={v}" for k, v in sorted((m or {}).items())) or "<none>"


def _label_selector(sel: dict | None) -> str:
    """metav1.LabelSelectorAsSelector(sel).String(): requirements sorted by key."""
    if not sel:
        return ""  # labels.Nothing() and labels.Everything() both print as ""
    reqs = [(k, f"{k}={v}") for k, v in (sel.get("matchLabels") or {}).items()]
    for e in sel.get("matchExpressions") or []:
        key, op, values = e.get("key", ""), e.get("operator"), ",".join(sorted(e.get("values") or []))
        if op == "In":
            reqs.append((key, f"{key} in ({values})"))
        elif op == "NotIn":
            reqs.append((key, f"{key} notin ({values})"))
        elif op == "Exists":
            reqs.append((key, key))
        elif op == "DoesNotExist":
            reqs.append((key, f"!{key}"))
        else:
            return "<invalid>"
    return ",".join(text for _, text in sorted(reqs, key=lambda r: r[0]))


def _containers(containers: list[dict]) -> list[str]:
    """printers.go layoutContainerCells: names and images, comma-joined."""
    return [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)]


# ---- Pods ----------------------------------------------------------------------------------


def _condition_true(status: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def _finished_at(container_status: dict) -> float | None:
    last = (container_status.get("lastState") or {}).get("terminated")
    return _timestamp(last.get("finishedAt")) if last is not None else None


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None or (b is not None and b > a) else a


def _terminated_reason(term: dict, prefix: str = "") -> str:
    if term.get("reason"):
        return prefix + term["reason"]
    if term.get("signal"):
        return f"{prefix}Signal:{term['signal']}"
    return f"{prefix}ExitCode:{term.get('exitCode', 0)}"


def _pod_row(pod: dict, wide: bool, now: float) -> list[str]:
    """printers.go printPod: READY, STATUS and RESTARTS as kubectl derives them."""
    meta, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    # The API server sets phase Pending when it creates a Pod; a status not written yet means that.
    phase = st.get("phase") or "Pending"
    reason = st.get("reason") or phase
    for c in st.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    # Sidecars (init containers with restartPolicy Always) count as containers.
    sidecar = {n for n, c in init_specs.items() if c.get("restartPolicy") == "Always"}
    total = len(spec.get("containers") or []) + len(sidecar)
    ready = restarts = sidecar_restarts = 0
    last_restart = last_sidecar_restart = None

    initializing = False
    for i, cs in enumerate(st.get("initContainerStatuses") or []):
        restarts += cs.get("restartCount", 0)
        last_restart = _later(last_restart, _finished_at(cs))
        is_sidecar = cs.get("name") in sidecar
        if is_sidecar:
            sidecar_restarts += cs.get("restartCount", 0)
            last_sidecar_restart = _later(last_sidecar_restart, _finished_at(cs))
        state = cs.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term is not None and term.get("exitCode", 0) == 0:
            continue
        if is_sidecar and cs.get("started"):
            ready += 1 if cs.get("ready") else 0
            continue
        if term is not None:
            reason = _terminated_reason(term, "Init:")
        elif wait is not None and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(st, "Initialized"):
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        # kubectl walks the containers from last to first, so the first container's
        # waiting or terminated reason is the one shown.
        for cs in reversed(st.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            last_restart = _later(last_restart, _finished_at(cs))
            state = cs.get("state") or {}
            term, wait = state.get("terminated"), state.get("waiting")
            if wait is not None and wait.get("reason"):
                reason = wait["reason"]
            elif term is not None:
                reason = _terminated_reason(term)
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        # A finished container beside a running one: the Pod is not "Completed".
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(st, "Ready") else "NotReady"

    if meta.get("deletionTimestamp") and st.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"

    row = [meta.get("name", ""), f"{ready}/{total}", reason, restarts_text, age(pod, now)]
    if wide:
        ips = st.get("podIPs") or []
        pod_ip = (ips[0].get("ip") if ips else None) or st.get("podIP")
        row += [pod_ip or "<none>", spec.get("nodeName") or "<none>"]
    return row


def pods_table(pods: list[dict], wide: bool, all_namespaces: bool, now: float) -> Table:
    """kubectl get pods [-o wide] [-A]."""
    headers = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] + (["IP", "NODE"] if wide else [])
    return _with_namespace(all_namespaces, headers, [(p, _pod_row(p, wide, now)) for p in pods])


# ---- Nodes ---------------------------------------------------------------------------------


def _node_row(node: dict, wide: bool, now: float) -> list[str]:
    """printers.go printNode."""
    meta, spec, st = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    conditions = {c.get("type"): c for c in st.get("conditions") or []}
    if "Ready" in conditions:
        status = ["Ready" if conditions["Ready"].get("status") == "True" else "NotReady"]
    else:
        status = ["Unknown"]
    if spec.get("unschedulable"):
        status.append("SchedulingDisabled")
    roles = set()
    for k, v in (meta.get("labels") or {}).items():
        if k.startswith(_NODE_ROLE_PREFIX) and k[len(_NODE_ROLE_PREFIX):]:
            roles.add(k[len(_NODE_ROLE_PREFIX):])
        elif k == _NODE_ROLE_LABEL and v:
            roles.add(v)
    info = st.get("nodeInfo") or {}
    row = [meta.get("name", ""), ",".join(status), ",".join(sorted(roles)) or "<none>", age(node, now),
           info.get("kubeletVersion", "")]
    if wide:
        def address(kind: str) -> str:  # the first of its type, as getNodeInternalIP does
            return next((a.get("address", "") for a in st.get("addresses") or [] if a.get("type") == kind), "<none>")
        row += [address("InternalIP"), address("ExternalIP"), info.get("osImage") or "<unknown>",
                info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]
    return row


def nodes_table(nodes: list[dict], wide: bool, now: float) -> Table:
    """kubectl get nodes [-o wide]."""
    headers = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    if wide:
        headers += ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    return headers, [_node_row(n, wide, now) for n in nodes]


# ---- Deployments ---------------------------------------------------------------------------


def _deployment_row(dep: dict, wide: bool, now: float) -> list[str]:
    """printers.go printDeployment."""
    spec, st = dep.get("spec") or {}, dep.get("status") or {}
    row = [(dep.get("metadata") or {}).get("name", ""),
           f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
           str(st.get("updatedReplicas", 0)), str(st.get("availableReplicas", 0)), age(dep, now)]
    if wide:
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
        row += [*_containers(containers), _label_selector(spec.get("selector"))]
    return row


def deployments_table(deps: list[dict], wide: bool, all_namespaces: bool, now: float) -> Table:
    """kubectl get deployments [-o wide] [-A]."""
    headers = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    if wide:
        headers += ["CONTAINERS", "IMAGES", "SELECTOR"]
    return _with_namespace(all_namespaces, headers, [(d, _deployment_row(d, wide, now)) for d in deps])


# ---- Services ------------------------------------------------------------------------------


def _load_balancer_ips(status: dict, wide: bool) -> str:
    """printers.go loadBalancerStatusStringer: sorted, de-duplicated, clipped unless wide."""
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    text = ",".join(sorted({i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")}))
    if not wide and len(text) > _LOAD_BALANCER_WIDTH:
        text = text[:_LOAD_BALANCER_WIDTH - 3] + "..."
    return text


def _external_ip(svc: dict, wide: bool) -> str:
    """printers.go getServiceExternalIP."""
    spec = svc.get("spec") or {}
    external = list(spec.get("externalIPs") or [])
    kind = spec.get("type") or "ClusterIP"
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "LoadBalancer":
        lb = _load_balancer_ips(svc.get("status") or {}, wide)
        if external:
            return ",".join((lb.split(",") if lb else []) + external)
        return lb or "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName", "")
    return "<unknown>"


def _service_ports(ports: list[dict]) -> str:
    """printers.go makePortString: "80/TCP", or "80:30007/TCP" with a node port."""
    pieces = []
    for p in ports:
        proto = p.get("protocol") or "TCP"
        node_port = p.get("nodePort") or 0
        pieces.append(f"{p.get('port')}:{node_port}/{proto}" if node_port > 0 else f"{p.get('port')}/{proto}")
    return ",".join(pieces) or "<none>"


def _service_row(svc: dict, wide: bool, now: float) -> list[str]:
    """printers.go printService."""
    spec = svc.get("spec") or {}
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    row = [(svc.get("metadata") or {}).get("name", ""), spec.get("type") or "ClusterIP",
           cluster_ips[0] if cluster_ips else "<none>", _external_ip(svc, wide),
           _service_ports(spec.get("ports") or []), age(svc, now)]
    if wide:
        row.append(_labels(spec.get("selector")))
    return row


def services_table(svcs: list[dict], wide: bool, all_namespaces: bool, now: float) -> Table:
    """kubectl get services [-o wide] [-A]."""
    headers = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"] + (["SELECTOR"] if wide else [])
    return _with_namespace(all_namespaces, headers, [(s, _service_row(s, wide, now)) for s in svcs])


# ---- Endpoints and EndpointSlices ----------------------------------------------------------


def _host_port(ip: str, port: int) -> str:
    """net.JoinHostPort: IPv6 addresses in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _endpoints(ep: dict) -> str:
    """printers.go formatEndpoints: ready addresses only, every port of every subset."""
    subsets = ep.get("subsets") or []
    if not subsets:
        return "<none>"
    items: list[str] = []
    count = 0
    for sub in subsets:
        addresses = [a.get("ip", "") for a in sub.get("addresses") or []]
        ports = sub.get("ports") or []
        if not ports:  # a headless Service's Endpoints may have addresses and no ports
            count += len(addresses)
            items += addresses
        for p in ports:
            count += len(addresses)
            items += [_host_port(ip, p.get("port")) for ip in addresses]
    # With subsets that hold only notReadyAddresses kubectl prints an empty cell, not "<none>".
    return _more(items, count, "")


def configmaps_table(items: list[dict], all_namespaces: bool, now: float) -> Table:
    """kubectl get configmaps [-A]: NAME DATA AGE."""
    rows = [(c, [c["metadata"]["name"], str(len(c.get("data") or {}) + len(c.get("binaryData") or {})), age(c, now)])
            for c in items]
    return _with_namespace(all_namespaces, ["NAME", "DATA", "AGE"], rows)


def endpoints_table(eps: list[dict], all_namespaces: bool, now: float) -> Table:
    """kubectl get endpoints [-A]."""
    rows = [(e, [(e.get("metadata") or {}).get("name", ""), _endpoints(e), age(e, now)]) for e in eps]
    return _with_namespace(all_namespaces, ["NAME", "ENDPOINTS", "AGE"], rows)


def _slice_row(s: dict, now: float) -> list[str]:
    """printers.go printEndpointSlice (formatDiscoveryPorts, formatDiscoveryEndpoints)."""
    ports = [str(p["port"]) if p.get("port") is not None else (p.get("name") or "*") for p in s.get("ports") or []]
    addresses = [a for e in s.get("endpoints") or [] for a in e.get("addresses") or []]
    return [(s.get("metadata") or {}).get("name", ""), s.get("addressType", ""),
            _more(ports, len(ports), "<unset>"), _more(addresses, len(addresses), "<unset>"), age(s, now)]


def endpointslices_table(slices: list[dict], all_namespaces: bool, now: float) -> Table:
    """kubectl get endpointslices [-A]."""
    headers = ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    return _with_namespace(all_namespaces, headers, [(s, _slice_row(s, now)) for s in slices])


# ---- -o json|yaml --------------------------------------------------------------------------


def to_list(items: list[dict]) -> dict:
    """The List kubectl prints for -o json|yaml over several objects."""
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


class _Dumper(yaml.SafeDumper):
    """kubectl's YAML: a string of several lines (a ConfigMap's file) as a `|` block."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                               style="|" if "\n" in s else None))


def dump(obj: dict, fmt: str) -> str:
    """-o json (4-space indent, as kubectl) or -o yaml (block style, keys in the object's order)."""
    if fmt == "json":
        return json.dumps(obj, indent=4) + "\n"
    if fmt == "yaml":
        return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    raise ValueError(f"unknown output format {fmt!r}: want json or yaml")
