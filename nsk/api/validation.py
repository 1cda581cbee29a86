"""Defaults and validation of Kubernetes objects, as the API server applies them.

`admit(obj)` returns the object with its defaults filled in, or raises InvalidObject with
every field error found, each naming its field path (apimachinery's format).
"""

from __future__ import annotations

import copy
import ipaddress

from nsk.api import names
from nsk.api.objects import matches, namespaced
from nsk.api.schema import KINDS, check
from nsk.errors import FieldError, InvalidObject, duplicate, invalid, required, unsupported

PROTOCOLS = ["TCP", "UDP", "SCTP"]
RESTART_POLICIES = ["Always", "OnFailure", "Never"]
DNS_POLICIES = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]
SERVICE_TYPES = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
TRAFFIC_POLICIES = ["Cluster", "Local"]
AFFINITIES = ["None", "ClientIP"]


def admit(obj: object, source: str = "") -> dict:
    """Validate `obj` and fill in its defaults; raises InvalidObject naming each bad field."""
    if not isinstance(obj, dict):
        raise InvalidObject("Object", "?", [invalid("", obj, "a manifest must be a mapping")], source)
    kind = obj.get("kind")
    if not kind:
        raise InvalidObject("Object", _ref_guess(obj), [required("kind")], source)
    if kind not in KINDS:
        raise InvalidObject(str(kind), _ref_guess(obj), [unsupported("kind", kind, sorted(KINDS))], source)
    api_version, schema = KINDS[kind]
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {}) if isinstance(obj.get("metadata", {}), dict) else obj.get("metadata")
    if isinstance(meta, dict) and namespaced(kind):
        meta.setdefault("namespace", "default")
    ref = _ref_guess(obj)
    errors = check(obj, schema, "")
    if obj.get("apiVersion") != api_version:
        errors.append(invalid("apiVersion", obj.get("apiVersion"),
                              f'no matches for kind "{kind}" in version "{obj.get("apiVersion")}": '
                              f'use "{api_version}"'))
    if errors:  # structure first: the rules below may assume the types are right
        raise InvalidObject(kind, ref, errors, source)
    errors = _metadata(obj)
    _DEFAULTS[kind](obj)
    errors += _RULES[kind](obj)
    if errors:
        raise InvalidObject(kind, ref, errors, source)
    return obj


def _ref_guess(obj: dict) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name") or meta.get("generateName") or ""
    ns = meta.get("namespace")
    if ns and obj.get("kind") in KINDS and namespaced(obj["kind"]):
        return f"{ns}/{name}"
    return str(name)


def _metadata(obj: dict) -> list[FieldError]:
    meta, kind = obj["metadata"], obj["kind"]
    errors = []
    name = meta.get("name")
    if not name:
        errors.append(required("metadata.name", "name or generateName is required"))
    else:
        rule = {"Namespace": names.dns1123_label, "Service": names.dns1035_label}.get(kind, names.dns1123_subdomain)
        errors += [invalid("metadata.name", name, m) for m in rule(name)]
    if namespaced(kind):
        errors += [invalid("metadata.namespace", meta["namespace"], m) for m in names.dns1123_label(meta["namespace"])]
    errors += _labels(meta.get("labels") or {}, "metadata.labels")
    return errors


def _labels(labels: dict, path: str) -> list[FieldError]:
    errors = []
    for k, v in labels.items():
        errors += [invalid(path, k, m) for m in names.label_key(k)]
        errors += [invalid(f"{path}.{k}", v, m) for m in names.label_value(v)]
    return errors


# ---- defaults ---------------------------------------------------------------------------

def _default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if c.get(probe):
                pr = c[probe]
                for k, v in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                             ("failureThreshold", 3), ("initialDelaySeconds", 0)):
                    pr.setdefault(k, v)
                if pr.get("httpGet"):
                    pr["httpGet"].setdefault("path", "/")
                    pr["httpGet"].setdefault("scheme", "HTTP")


def _default_pod(obj: dict) -> None:
    _default_pod_spec(obj.setdefault("spec", {}))


def _default_deployment(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    _default_pod_spec(template.setdefault("spec", {}))


def _default_service(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    if spec["type"] != "ExternalName":
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if spec.get("sessionAffinity") == "ClientIP":
            spec.setdefault("sessionAffinityConfig", {}).setdefault("clientIP", {}).setdefault("timeoutSeconds", 10800)
    for p in spec.get("ports") or []:
        p.setdefault("protocol", "TCP")
        if "port" in p:
            p.setdefault("targetPort", p["port"])


def _default_endpoints(obj: dict) -> None:
    for subset in obj.get("subsets") or []:
        for p in subset.get("ports") or []:
            p.setdefault("protocol", "TCP")


_DEFAULTS = {"Namespace": lambda o: None, "Pod": _default_pod, "Deployment": _default_deployment,
             "Service": _default_service, "Endpoints": _default_endpoints}


# ---- rules ------------------------------------------------------------------------------

def _pod_spec(spec: dict, path: str) -> list[FieldError]:
    errors = []
    containers = spec.get("containers") or []
    if not containers:
        errors.append(required(f"{path}.containers"))
    seen_names: set[str] = set()
    for i, c in enumerate(containers):
        cp = f"{path}.containers[{i}]"
        if not c.get("name"):
            errors.append(required(f"{cp}.name"))
        else:
            errors += [invalid(f"{cp}.name", c["name"], m) for m in names.dns1123_label(c["name"])]
            if c["name"] in seen_names:
                errors.append(duplicate(f"{cp}.name", c["name"]))
            seen_names.add(c["name"])
        if not c.get("image"):
            errors.append(required(f"{cp}.image"))
        port_names: set[str] = set()
        for j, p in enumerate(c.get("ports") or []):
            pp = f"{cp}.ports[{j}]"
            if "containerPort" not in p:
                errors.append(required(f"{pp}.containerPort"))
            else:
                errors += _port_range(f"{pp}.containerPort", p["containerPort"])
            if p.get("hostPort") is not None:
                errors += _port_range(f"{pp}.hostPort", p["hostPort"])
            if p["protocol"] not in PROTOCOLS:
                errors.append(unsupported(f"{pp}.protocol", p["protocol"], PROTOCOLS))
            if p.get("name"):
                errors += [invalid(f"{pp}.name", p["name"], m) for m in names.iana_svc_name(p["name"])]
                if p["name"] in port_names:
                    errors.append(duplicate(f"{pp}.name", p["name"]))
                port_names.add(p["name"])
        for j, e in enumerate(c.get("env") or []):
            if not e.get("name"):
                errors.append(required(f"{cp}.env[{j}].name"))
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            pr = c.get(probe)
            if pr is None:
                continue
            handlers = [h for h in ("httpGet", "tcpSocket", "exec") if pr.get(h) is not None]
            if len(handlers) != 1:
                errors.append(FieldError(f"{cp}.{probe}", "Required value" if not handlers else "Forbidden",
                                         detail="must specify exactly one handler: httpGet, tcpSocket or exec"))
            for k in ("periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
                if pr[k] < 1:
                    errors.append(invalid(f"{cp}.{probe}.{k}", pr[k], "must be greater than or equal to 1"))
    if spec["restartPolicy"] not in RESTART_POLICIES:
        errors.append(unsupported(f"{path}.restartPolicy", spec["restartPolicy"], RESTART_POLICIES))
    if spec["dnsPolicy"] not in DNS_POLICIES:
        errors.append(unsupported(f"{path}.dnsPolicy", spec["dnsPolicy"], DNS_POLICIES))
    elif spec["dnsPolicy"] == "None" and not (spec.get("dnsConfig") or {}).get("nameservers"):
        errors.append(required(f"{path}.dnsConfig.nameservers",
                               "must provide at least one DNS nameserver when `dnsPolicy` is None"))
    for k in ("hostname", "subdomain"):
        if spec.get(k):
            errors += [invalid(f"{path}.{k}", spec[k], m) for m in names.dns1123_label(spec[k])]
    return errors


def _port_range(path: str, port: int) -> list[FieldError]:
    if not 1 <= port <= 65535:
        return [invalid(path, port, "must be between 1 and 65535, inclusive")]
    return []


def _pod(obj: dict) -> list[FieldError]:
    return _pod_spec(obj["spec"], "spec")


def _deployment(obj: dict) -> list[FieldError]:
    spec = obj["spec"]
    errors = []
    if spec["replicas"] < 0:
        errors.append(invalid("spec.replicas", spec["replicas"], "must be greater than or equal to 0"))
    selector = spec.get("selector")
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append(required("spec.selector"))
    else:
        for i, e in enumerate(selector.get("matchExpressions") or []):
            if e.get("operator") not in ("In", "NotIn", "Exists", "DoesNotExist"):
                errors.append(unsupported(f"spec.selector.matchExpressions[{i}].operator", e.get("operator"),
                                          ["In", "NotIn", "Exists", "DoesNotExist"]))
    tmpl_labels = spec["template"]["metadata"].get("labels") or {}
    errors += _labels(tmpl_labels, "spec.template.metadata.labels")
    if selector and not errors and not matches(selector, tmpl_labels):
        errors.append(invalid("spec.template.metadata.labels", tmpl_labels,
                              "`selector` does not match template `labels`"))
    errors += _pod_spec(spec["template"]["spec"], "spec.template.spec")
    if spec["template"]["spec"]["restartPolicy"] != "Always":
        errors.append(unsupported("spec.template.spec.restartPolicy", spec["template"]["spec"]["restartPolicy"],
                                  ["Always"]))
    return errors


def _service(obj: dict) -> list[FieldError]:
    spec = obj["spec"]
    errors = []
    stype = spec["type"]
    if stype not in SERVICE_TYPES:
        return [unsupported("spec.type", stype, SERVICE_TYPES)]
    ports = spec.get("ports") or []
    if stype == "ExternalName":
        ext = spec.get("externalName")
        if not ext:
            errors.append(required("spec.externalName"))
        else:
            errors += [invalid("spec.externalName", ext, m) for m in names.dns1123_subdomain(ext.rstrip("."))]
        if spec.get("clusterIP") not in (None, ""):
            errors.append(FieldError("spec.clusterIP", "Forbidden",
                                     detail="may not be set for ExternalName services"))
    elif not ports and spec.get("clusterIP") != "None":
        errors.append(required("spec.ports"))
    port_names: set[str] = set()
    for i, p in enumerate(ports):
        pp = f"spec.ports[{i}]"
        if len(ports) > 1 and not p.get("name"):
            errors.append(required(f"{pp}.name"))
        if p.get("name"):
            errors += [invalid(f"{pp}.name", p["name"], m) for m in names.dns1123_label(p["name"])]
            if p["name"] in port_names:
                errors.append(duplicate(f"{pp}.name", p["name"]))
            port_names.add(p["name"])
        if "port" not in p:
            errors.append(required(f"{pp}.port"))
        else:
            errors += _port_range(f"{pp}.port", p["port"])
        if p["protocol"] not in PROTOCOLS:
            errors.append(unsupported(f"{pp}.protocol", p["protocol"], PROTOCOLS))
        tp = p.get("targetPort")
        if isinstance(tp, int):
            errors += _port_range(f"{pp}.targetPort", tp)
        elif isinstance(tp, str):
            errors += [invalid(f"{pp}.targetPort", tp, m) for m in names.iana_svc_name(tp)]
        if p.get("nodePort") is not None and stype not in ("NodePort", "LoadBalancer"):
            errors.append(FieldError(f"{pp}.nodePort", "Forbidden",
                                     detail="may not be used when `type` is 'ClusterIP'"))
    cip = spec.get("clusterIP")
    if cip not in (None, "", "None"):
        try:
            ipaddress.IPv4Address(cip)
        except ValueError:
            errors.append(invalid("spec.clusterIP", cip, "must be a valid IP address, (e.g. 10.9.8.7)"))
    for i, ip in enumerate(spec.get("externalIPs") or []):
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            errors.append(invalid(f"spec.externalIPs[{i}]", ip, "must be a valid IP address, (e.g. 10.9.8.7)"))
    for field_name, allowed in (("sessionAffinity", AFFINITIES), ("externalTrafficPolicy", TRAFFIC_POLICIES),
                                ("internalTrafficPolicy", TRAFFIC_POLICIES)):
        if spec.get(field_name) is not None and spec[field_name] not in allowed:
            errors.append(unsupported(f"spec.{field_name}", spec[field_name], allowed))
    timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
    if timeout is not None and not 0 < timeout <= 86400:
        errors.append(invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", timeout,
                              "must be greater than 0 and less than 86400"))
    return errors


def _endpoints(obj: dict) -> list[FieldError]:
    errors = []
    for i, subset in enumerate(obj.get("subsets") or []):
        for field_name in ("addresses", "notReadyAddresses"):
            for j, a in enumerate(subset.get(field_name) or []):
                ap = f"subsets[{i}].{field_name}[{j}].ip"
                if not a.get("ip"):
                    errors.append(required(ap))
                    continue
                try:
                    ip = ipaddress.IPv4Address(a["ip"])
                except ValueError:
                    errors.append(invalid(ap, a["ip"], "must be a valid IP address, (e.g. 10.9.8.7)"))
                    continue
                if ip.is_loopback:
                    errors.append(invalid(ap, a["ip"], "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
                elif ip.is_link_local or ip in ipaddress.IPv4Network("224.0.0.0/24"):
                    errors.append(invalid(ap, a["ip"], "may not be in the link-local range (169.254.0.0/16, "
                                                       "fe80::/10)" if ip.is_link_local else
                                          "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"))
        ports = subset.get("ports") or []
        for j, p in enumerate(ports):
            pp = f"subsets[{i}].ports[{j}]"
            if len(ports) > 1 and not p.get("name"):
                errors.append(required(f"{pp}.name"))
            if "port" not in p:
                errors.append(required(f"{pp}.port"))
            else:
                errors += _port_range(f"{pp}.port", p["port"])
            if p["protocol"] not in PROTOCOLS:
                errors.append(unsupported(f"{pp}.protocol", p["protocol"], PROTOCOLS))
    return errors


_RULES = {"Namespace": lambda o: [], "Pod": _pod, "Deployment": _deployment, "Service": _service,
          "Endpoints": _endpoints}
