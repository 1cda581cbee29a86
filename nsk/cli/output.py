"""kubectl's table and object output (pure)."""

from __future__ import annotations

import calendar
import json
import time

import yaml


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d" if h % 24 == 0 else f"{h // 24}d{h % 24}h"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        y = h // 24 // 365
        d = h // 24 % 365
        return f"{y}y" if d == 0 else f"{y}y{d}d"
    return f"{h // 24 // 365}y"


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def age(obj: dict, now: float) -> str:
    t = _ts((obj.get("metadata") or {}).get("creationTimestamp"))
    return "<unknown>" if t is None else human_duration(now - t)


def table(headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [str(c).ljust(widths[i]) if i < len(r) - 1 else str(c) for i, c in enumerate(r)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _ns(obj: dict) -> list[str]:
    return [obj["metadata"].get("namespace", "")]


def pods_table(pods: list[dict], wide: bool, all_namespaces: bool, now: float):
    headers = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] + (["IP", "NODE"] if wide else [])
    rows = []
    for p in pods:
        st = p.get("status") or {}
        cs = st.get("containerStatuses") or []
        ready = sum(1 for c in cs if c.get("ready"))
        reason = st.get("reason") or st.get("phase") or "Pending"
        for c in cs:
            state = c.get("state") or {}
            if "waiting" in state and state["waiting"].get("reason"):
                reason = state["waiting"]["reason"]
            elif "terminated" in state and state["terminated"].get("reason") and reason == "Running":
                reason = state["terminated"]["reason"]
        restarts = sum(c.get("restartCount", 0) for c in cs)
        finished = [_ts(((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt")) for c in cs]
        finished = [f for f in finished if f is not None]
        rtext = str(restarts) + (f" ({human_duration(now - max(finished))} ago)" if restarts and finished else "")
        row = [p["metadata"]["name"], f"{ready}/{len(p['spec'].get('containers') or [])}", reason, rtext, age(p, now)]
        if wide:
            row += [st.get("podIP") or "<none>", p["spec"].get("nodeName") or "<none>"]
        rows.append((_ns(p) if all_namespaces else []) + row)
    return (["NAMESPACE"] if all_namespaces else []) + headers, rows


def nodes_table(nodes: list[dict], wide: bool, now: float):
    headers = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    if wide:
        headers += ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    rows = []
    for n in nodes:
        st = n.get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
        roles = sorted(k.split("/", 1)[1] for k in (n["metadata"].get("labels") or {})
                       if k.startswith("node-role.kubernetes.io/"))
        info = st.get("nodeInfo") or {}
        row = [n["metadata"]["name"], "Ready" if ready else "NotReady", ",".join(roles) or "<none>", age(n, now),
               info.get("kubeletVersion", "")]
        if wide:
            addrs = {a["type"]: a["address"] for a in st.get("addresses") or []}
            row += [addrs.get("InternalIP", "<none>"), addrs.get("ExternalIP", "<none>"), info.get("osImage", ""),
                    info.get("kernelVersion", ""), info.get("containerRuntimeVersion", "")]
        rows.append(row)
    return headers, rows


def _selector(m: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((m or {}).items())) or "<none>"


def deployments_table(deps: list[dict], wide: bool, all_namespaces: bool, now: float):
    headers = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] + (["CONTAINERS", "IMAGES", "SELECTOR"] if wide else [])
    rows = []
    for d in deps:
        st = d.get("status") or {}
        row = [d["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{d['spec'].get('replicas', 0)}",
               str(st.get("updatedReplicas", 0)), str(st.get("availableReplicas", 0)), age(d, now)]
        if wide:
            cs = d["spec"]["template"]["spec"].get("containers") or []
            row += [",".join(c["name"] for c in cs), ",".join(c.get("image", "") for c in cs),
                    _selector((d["spec"].get("selector") or {}).get("matchLabels"))]
        rows.append((_ns(d) if all_namespaces else []) + row)
    return (["NAMESPACE"] if all_namespaces else []) + headers, rows


def services_table(svcs: list[dict], wide: bool, all_namespaces: bool, now: float):
    headers = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"] + (["SELECTOR"] if wide else [])
    rows = []
    for s in svcs:
        spec, st = s["spec"], s.get("status") or {}
        stype = spec.get("type", "ClusterIP")
        ext = list(spec.get("externalIPs") or [])
        if stype == "LoadBalancer":
            ips = [i.get("ip") or i.get("hostname") for i in (st.get("loadBalancer") or {}).get("ingress") or []]
            external = ",".join(ips + ext) if ips or ext else "<pending>"
        elif stype == "ExternalName":
            external = spec.get("externalName", "<none>")
        else:
            external = ",".join(ext) or "<none>"
        ports = ",".join(f"{p['port']}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
                         for p in spec.get("ports") or []) or "<none>"
        row = [s["metadata"]["name"], stype, spec.get("clusterIP") or "<none>", external, ports, age(s, now)]
        if wide:
            row.append(_selector(spec.get("selector")))
        rows.append((_ns(s) if all_namespaces else []) + row)
    return (["NAMESPACE"] if all_namespaces else []) + headers, rows


def endpoints_table(eps: list[dict], all_namespaces: bool, now: float):
    rows = []
    for e in eps:
        pairs = [f"{a['ip']}:{p['port']}" for sub in e.get("subsets") or [] for p in sub.get("ports") or []
                 for a in sub.get("addresses") or []]
        text = ",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "") if pairs else "<none>"
        rows.append((_ns(e) if all_namespaces else []) + [e["metadata"]["name"], text, age(e, now)])
    return (["NAMESPACE"] if all_namespaces else []) + ["NAME", "ENDPOINTS", "AGE"], rows


def endpointslices_table(slices: list[dict], all_namespaces: bool, now: float):
    rows = []
    for s in slices:
        ports = ",".join(str(p["port"]) for p in s.get("ports") or []) or "<unset>"
        ips = [a for e in s.get("endpoints") or [] for a in e.get("addresses") or []]
        text = ",".join(ips[:3]) + (f" + {len(ips) - 3} more..." if len(ips) > 3 else "") if ips else "<unset>"
        rows.append((_ns(s) if all_namespaces else []) +
                    [s["metadata"]["name"], s.get("addressType", "IPv4"), ports, text, age(s, now)])
    return (["NAMESPACE"] if all_namespaces else []) + ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], rows


def to_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def dump(obj: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=4) + "\n"
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
