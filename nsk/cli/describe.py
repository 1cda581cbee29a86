"""`nsk describe`: kubectl's describe layout for the kinds nsk serves (pure)."""

from __future__ import annotations

import time


def _kv(rows: list[tuple[str, str]], indent: int = 0) -> list[str]:
    width = max((len(k) for k, _ in rows), default=0) + 2
    # an empty key continues the row above (a second label), as kubectl prints it
    return [" " * indent + f"{(k + ':') if k else '':<{width}}{v}" for k, v in rows]


def _map(m: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((m or {}).items())) or "<none>"


def _labels_rows(label: str, m: dict | None) -> list[tuple[str, str]]:
    items = sorted((m or {}).items())
    if not items:
        return [(label, "<none>")]
    return [(label if i == 0 else "", f"{k}={v}") for i, (k, v) in enumerate(items)]


def _ports_table(ports: list[dict], indent: int) -> list[str]:
    from nsk.apiserver.printers import table
    rows = [[p.get("name") or "<unset>", str(p["port"]), p.get("protocol", "TCP")] for p in ports]
    body = table(["Name", "Port", "Protocol"], [["----", "----", "--------"], *rows])
    return [" " * indent + line for line in body.splitlines()]


def _events(events: list, now: float) -> list[str]:
    from nsk.apiserver.printers import human_duration, table
    if not events:
        return ["Events:  <none>"]
    rows = [[t, reason, human_duration(now - ts), "nsk", msg] for ts, t, reason, msg in events[-20:]]
    body = table(["Type", "Reason", "Age", "From", "Message"], rows)
    return ["Events:"] + ["  " + line for line in body.splitlines()]


def describe(obj: dict, events: list, now: float | None = None, endpoints: dict | None = None) -> str:
    now = time.time() if now is None else now
    kind, meta = obj["kind"], obj["metadata"]
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    head = [("Name", meta["name"])]
    if meta.get("namespace"):
        head.append(("Namespace", meta["namespace"]))
    lines: list[str] = []
    if kind == "Pod":
        head += [("Node", f"{spec.get('nodeName', '<none>')}/{st.get('hostIP', '')}"),
                 ("Start Time", st.get("startTime", "<none>"))]
        head += _labels_rows("Labels", meta.get("labels"))
        head += [("Status", st.get("phase", "Pending")), ("IP", st.get("podIP", "<none>"))]
        owner = (meta.get("ownerReferences") or [{}])[0]
        head.append(("Controlled By", f"{owner['kind']}/{owner['name']}" if owner else "<none>"))
        lines += _kv(head)
        lines.append("Containers:")
        statuses = {c["name"]: c for c in st.get("containerStatuses") or []}
        for c in spec.get("containers") or []:
            cs = statuses.get(c["name"], {})
            lines.append(f"  {c['name']}:")
            state = cs.get("state") or {}
            sname = next(iter(state), "waiting")
            ports = ", ".join(f"{p['containerPort']}/{p.get('protocol', 'TCP')}" for p in c.get("ports") or [])
            rows = [("Container ID", cs.get("containerID", "")), ("Image", c.get("image", "")),
                    ("Command", " ".join(c.get("command") or []) or "<nsk built-in server>"),
                    ("Port", ports or "<none>"), ("State", sname.capitalize())]
            reason = (state.get(sname) or {}).get("reason")
            if reason:
                rows.append(("  Reason", reason))
            if (state.get(sname) or {}).get("startedAt"):
                rows.append(("  Started", state[sname]["startedAt"]))
            last = (cs.get("lastState") or {}).get("terminated")
            if last:
                rows += [("Last State", "Terminated"), ("  Reason", last.get("reason", "")),
                         ("  Exit Code", str(last.get("exitCode", ""))),
                         ("  Finished", last.get("finishedAt", ""))]
            rows += [("Ready", str(cs.get("ready", False))), ("Restart Count", str(cs.get("restartCount", 0)))]
            env = c.get("env") or []
            lines += _kv(rows, 4)
            if env:
                lines.append("    Environment:")
                lines += [f"      {e['name']}:  {e.get('value', '<set from a field>')}" for e in env]
        lines.append("Conditions:")
        lines += ["  " + line for line in _kv([(c["type"], c["status"]) for c in st.get("conditions") or []])]
    elif kind == "Deployment":
        head += _labels_rows("Labels", meta.get("labels"))
        head += [("Selector", _map((spec.get("selector") or {}).get("matchLabels"))),
                 ("Replicas", f"{spec.get('replicas', 0)} desired | {st.get('updatedReplicas', 0)} updated | "
                              f"{st.get('replicas', 0)} total | {st.get('availableReplicas', 0)} available | "
                              f"{st.get('unavailableReplicas', 0)} unavailable")]
        lines += _kv(head)
        tmpl = spec.get("template") or {}
        lines.append("Pod Template:")
        lines += _kv(_labels_rows("Labels", (tmpl.get("metadata") or {}).get("labels")), 2)
        lines.append("  Containers:")
        for c in (tmpl.get("spec") or {}).get("containers") or []:
            ports = ", ".join(f"{p['containerPort']}/{p.get('protocol', 'TCP')}" for p in c.get("ports") or [])
            lines.append(f"   {c['name']}:")
            lines += _kv([("Image", c.get("image", "")), ("Port", ports or "<none>")], 4)
    elif kind == "Node":
        addrs = {a["type"]: a["address"] for a in st.get("addresses") or []}
        head += _labels_rows("Labels", meta.get("labels"))
        head += [("PodCIDR", spec.get("podCIDR", "")), ("InternalIP", addrs.get("InternalIP", ""))]
        lines += _kv(head)
        lines.append("Conditions:")
        lines += ["  " + line for line in _kv([(c["type"], f"{c['status']} ({c.get('reason', '')})")
                                               for c in st.get("conditions") or []])]
    elif kind == "Service":
        head += _labels_rows("Labels", meta.get("labels"))
        head += [("Selector", _map(spec.get("selector"))), ("Type", spec.get("type", "ClusterIP")),
                 ("IP", spec.get("clusterIP", "<none>"))]
        for p in spec.get("ports") or []:
            head += [("Port", f"{p.get('name') or '<unset>'}  {p['port']}/{p.get('protocol', 'TCP')}"),
                     ("TargetPort", f"{p.get('targetPort')}/{p.get('protocol', 'TCP')}")]
            if p.get("nodePort"):
                head.append(("NodePort", f"{p.get('name') or '<unset>'}  {p['nodePort']}/{p.get('protocol', 'TCP')}"))
        if spec.get("externalIPs"):
            head.append(("External IPs", ",".join(spec["externalIPs"])))
        ingress = [i.get("ip") for i in (st.get("loadBalancer") or {}).get("ingress") or []]
        if ingress:
            head.append(("LoadBalancer Ingress", ", ".join(ingress)))
        if spec.get("externalName"):
            head.append(("External Name", spec["externalName"]))
        if endpoints is not None:
            pairs = [f"{a['ip']}:{p['port']}" for sub in endpoints.get("subsets") or [] for p in sub.get("ports") or []
                     for a in sub.get("addresses") or []]
            head.append(("Endpoints", ",".join(pairs) or "<none>"))
        head.append(("Session Affinity", spec.get("sessionAffinity", "None")))
        if spec.get("externalTrafficPolicy"):
            head.append(("External Traffic Policy", spec["externalTrafficPolicy"]))
        if spec.get("internalTrafficPolicy"):
            head.append(("Internal Traffic Policy", spec["internalTrafficPolicy"]))
        lines += _kv(head)
    elif kind == "Endpoints":
        head += _labels_rows("Labels", meta.get("labels"))
        lines += _kv(head)
        lines.append("Subsets:")
        for sub in obj.get("subsets") or []:
            ips = lambda k: ",".join(a["ip"] for a in sub.get(k) or []) or "<none>"  # noqa: E731
            lines += _kv([("Addresses", ips("addresses")), ("NotReadyAddresses", ips("notReadyAddresses"))], 2)
            lines += ["  Ports:"] + _ports_table(sub.get("ports") or [], 4) + [""]
    elif kind == "EndpointSlice":
        head += _labels_rows("Labels", meta.get("labels"))
        head.append(("AddressType", obj.get("addressType", "IPv4")))
        lines += _kv(head)
        lines += ["Ports:"] + _ports_table(obj.get("ports") or [], 2)
        lines.append("Endpoints:")
        for e in obj.get("endpoints") or []:
            ref = e.get("targetRef") or {}
            rows = _kv([("Addresses", ",".join(e.get("addresses") or [])),
                        ("Conditions", ""),
                        ("  Ready", str((e.get("conditions") or {}).get("ready", False)).lower()),
                        ("Hostname", e.get("hostname") or "<unset>"),
                        ("TargetRef", f"{ref['kind']}/{ref['name']}" if ref else "<unset>"),
                        ("NodeName", e.get("nodeName") or "<unset>"),
                        ("Zone", e.get("zone") or "<unset>")], 4)
            lines += ["  - " + rows[0][4:]] + rows[1:]
    else:
        head += _labels_rows("Labels", meta.get("labels"))
        lines += _kv(head)
    lines += _events(events, now)
    return "\n".join(line.rstrip() for line in lines) + "\n"
