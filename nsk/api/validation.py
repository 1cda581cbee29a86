"""Defaults and validation rules of Kubernetes objects, as the API server applies them
(pure). Each kind's registration (nsk/apiserver/registry.py) names its default and rules
functions here; admission (nsk/apiserver/admission.py) runs them.
"""

from __future__ import annotations

import ipaddress

from nsk.api import names
from nsk.api.objects import matches
from nsk.errors import FieldError, duplicate, invalid, required, unsupported

# The supported values in the order the API server lists them in an error (sets.List
# sorts them; restartPolicy and dnsPolicy are literal lists there).
PROTOCOLS = ["SCTP", "TCP", "UDP"]
RESTART_POLICIES = ["Always", "OnFailure", "Never"]
DNS_POLICIES = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
TRAFFIC_POLICIES = ["Cluster", "Local"]
AFFINITIES = ["ClientIP", "None"]
HTTP_SCHEMES = ["HTTP", "HTTPS"]


def metadata_rules(obj: dict, namespaced: bool) -> list[FieldError]:
    meta, kind = obj["metadata"], obj["kind"]
    errors = []
    name = meta.get("name")
    if not name:
        errors.append(required("metadata.name", "name or generateName is required"))
    else:
        rule = {"Namespace": names.dns1123_label, "Service": names.dns1035_label}.get(kind, names.dns1123_subdomain)
        errors += [invalid("metadata.name", name, m) for m in rule(name)]
    if namespaced:
        errors += [invalid("metadata.namespace", meta["namespace"], m) for m in names.dns1123_label(meta["namespace"])]
    errors += _labels(meta.get("labels") or {}, "metadata.labels")
    return errors


def _labels(labels: dict, path: str) -> list[FieldError]:
    """ValidateLabels: both a bad key and a bad value are reported at the map's path."""
    errors = []
    for k, v in labels.items():
        errors += [invalid(path, k, m) for m in names.label_key(k)]
        errors += [invalid(path, v, m) for m in names.label_value(v)]
    return errors


def _selector(selector: dict, path: str) -> list[FieldError]:
    """ValidateLabelSelector: matchLabels as labels, and each matchExpressions requirement."""
    errors = _labels(selector.get("matchLabels") or {}, f"{path}.matchLabels")
    for i, e in enumerate(selector.get("matchExpressions") or []):
        ep = f"{path}.matchExpressions[{i}]"
        op = e.get("operator")
        if op in ("In", "NotIn"):
            if not e.get("values"):
                errors.append(required(f"{ep}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if e.get("values"):
                errors.append(FieldError(f"{ep}.values", "Forbidden",
                                         detail="may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            errors.append(invalid(f"{ep}.operator", op, "not a valid selector operator"))
        errors += [invalid(f"{ep}.key", e.get("key", ""), m) for m in names.label_key(e.get("key", ""))]
        for j, v in enumerate(e.get("values") or []):
            errors += [invalid(f"{ep}.values[{j}]", v, m) for m in names.label_value(v)]
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
            if c.get(probe) is not None:
                pr = c[probe]
                # SetDefaults_Probe: an unset or zero field takes the default.
                for k, v in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                             ("failureThreshold", 3)):
                    if not pr.get(k):
                        pr[k] = v
                pr.setdefault("initialDelaySeconds", 0)
                if pr.get("httpGet") is not None:
                    pr["httpGet"].setdefault("path", "/")
                    pr["httpGet"].setdefault("scheme", "HTTP")


def default_pod(obj: dict) -> None:
    _default_pod_spec(obj.setdefault("spec", {}))


def default_deployment(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    _default_pod_spec(template.setdefault("spec", {}))


def _externally_accessible(spec: dict) -> bool:
    """apiservice.ExternallyAccessible: reachable from outside through a node port, an LB or an external IP."""
    return spec.get("type") in ("NodePort", "LoadBalancer") or \
        (spec.get("type") == "ClusterIP" and bool(spec.get("externalIPs")))


def default_service(obj: dict) -> None:
    """SetDefaults_Service."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        cfg = spec.setdefault("sessionAffinityConfig", {}).setdefault("clientIP", {})
        cfg.setdefault("timeoutSeconds", 10800)
    spec.setdefault("type", "ClusterIP")
    for p in spec.get("ports") or []:
        p.setdefault("protocol", "TCP")
        if "port" in p and p.get("targetPort") in (None, 0, ""):
            p["targetPort"] = p["port"]  # an unset, 0 or "" targetPort means "the same as port"
    if _externally_accessible(spec):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] in ("ClusterIP", "NodePort", "LoadBalancer"):
        spec.setdefault("internalTrafficPolicy", "Cluster")


def default_endpoints(obj: dict) -> None:
    for subset in obj.get("subsets") or []:
        for p in subset.get("ports") or []:
            p.setdefault("protocol", "TCP")




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
            if not p.get("containerPort"):  # 0 is the unset int32, as in validateContainerPorts
                errors.append(required(f"{pp}.containerPort"))
            else:
                errors += _port_range(f"{pp}.containerPort", p["containerPort"])
            if p.get("hostPort"):  # 0 means no host port
                errors += _port_range(f"{pp}.hostPort", p["hostPort"])
            errors += _protocol(f"{pp}.protocol", p["protocol"])
            if p.get("name"):
                errors += [invalid(f"{pp}.name", p["name"], m) for m in names.iana_svc_name(p["name"])]
                if p["name"] in port_names:
                    errors.append(duplicate(f"{pp}.name", p["name"]))
                port_names.add(p["name"])
            if p.get("hostIP"):
                errors += _ip(f"{pp}.hostIP", p["hostIP"])
        for j, e in enumerate(c.get("env") or []):
            if not e.get("name"):
                errors.append(required(f"{cp}.env[{j}].name"))
            else:
                errors += [invalid(f"{cp}.env[{j}].name", e["name"], m) for m in names.env_var_name(e["name"])]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if c.get(probe) is not None:
                errors += _probe(c[probe], f"{cp}.{probe}", probe != "readinessProbe")
    if spec["restartPolicy"] not in RESTART_POLICIES:
        errors.append(unsupported(f"{path}.restartPolicy", spec["restartPolicy"], RESTART_POLICIES))
    if spec["dnsPolicy"] not in DNS_POLICIES:
        errors.append(unsupported(f"{path}.dnsPolicy", spec["dnsPolicy"], DNS_POLICIES))
    else:
        errors += _dns_config(spec.get("dnsConfig"), spec["dnsPolicy"], f"{path}.dnsConfig")
    for k in ("hostname", "subdomain"):
        if spec.get(k):
            errors += [invalid(f"{path}.{k}", spec[k], m) for m in names.dns1123_label(spec[k])]
    if spec.get("nodeName"):
        errors += [invalid(f"{path}.nodeName", spec["nodeName"], m) for m in names.dns1123_subdomain(spec["nodeName"])]
    return errors


# kubelet's limits, from glibc's resolver (validation.go: MaxDNSNameservers, ...).
MAX_DNS_NAMESERVERS = 3
MAX_DNS_SEARCH_PATHS = 32
MAX_DNS_SEARCH_LIST_CHARS = 2048


def _dns_config(conf: dict | None, policy: str, path: str) -> list[FieldError]:
    """validatePodDNSConfig. Option names and values are also refused when they hold white
    space: upstream only requires a name, but either would split a line of resolv.conf."""
    if policy == "None":
        if conf is None:
            return [required(path, "must provide `dnsConfig` when `dnsPolicy` is None")]
        if not conf.get("nameservers"):
            return [required(f"{path}.nameservers", "must provide at least one DNS nameserver when `dnsPolicy` is None")]
    if conf is None:
        return []
    errors = []
    servers, searches = conf.get("nameservers") or [], conf.get("searches") or []
    if len(servers) > MAX_DNS_NAMESERVERS:
        errors.append(invalid(f"{path}.nameservers", servers,
                              f"must not have more than {MAX_DNS_NAMESERVERS} nameservers"))
    for i, ns in enumerate(servers):
        errors += _ip(f"{path}.nameservers[{i}]", ns)
    if len(searches) > MAX_DNS_SEARCH_PATHS:
        errors.append(invalid(f"{path}.searches", searches,
                              f"must not have more than {MAX_DNS_SEARCH_PATHS} search paths"))
    if len(" ".join(searches)) > MAX_DNS_SEARCH_LIST_CHARS:
        errors.append(invalid(f"{path}.searches", searches, f"must not have more than {MAX_DNS_SEARCH_LIST_CHARS} "
                                                            "characters (including spaces) in the search list"))
    for i, search in enumerate(searches):
        errors += [invalid(f"{path}.searches[{i}]", search, m)
                   for m in names.dns1123_subdomain(search.removesuffix("."))]
    for i, opt in enumerate(conf.get("options") or []):
        if not opt.get("name"):
            errors.append(required(f"{path}.options[{i}]", "must not be empty"))
        for k in ("name", "value"):
            if opt.get(k) and any(ch.isspace() or not ch.isprintable() for ch in opt[k]):
                errors.append(invalid(f"{path}.options[{i}].{k}", opt[k],
                                      "must not contain white space or control characters"))
    return errors


def _ip(path: str, value: str) -> list[FieldError]:
    """IsValidIP."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return [invalid(path, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]
    return []


def _cidr(path: str, value: str) -> list[FieldError]:
    """IsValidCIDR (ParseCIDRSloppy: host bits may be set)."""
    try:
        ipaddress.ip_network(value, strict=False)
        if "/" not in value:
            raise ValueError(value)
    except ValueError:
        return [invalid(path, value, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")]
    return []


def _probe(pr: dict, path: str, single_success: bool) -> list[FieldError]:
    """validateProbe and validateHandler."""
    errors = []
    handlers = [h for h in ("exec", "httpGet", "tcpSocket") if pr.get(h) is not None]
    if not handlers:
        errors.append(required(path, "must specify a handler type"))
    for h in handlers[1:]:
        errors.append(FieldError(f"{path}.{h}", "Forbidden", detail="may not specify more than 1 handler type"))
    if pr.get("exec") is not None and not pr["exec"].get("command"):
        errors.append(required(f"{path}.exec.command"))
    for h in ("httpGet", "tcpSocket"):
        if pr.get(h) is not None:
            errors += _port_num_or_name(f"{path}.{h}.port", pr[h].get("port", 0))
    if pr.get("httpGet") is not None and pr["httpGet"]["scheme"] not in HTTP_SCHEMES:
        errors.append(unsupported(f"{path}.httpGet.scheme", pr["httpGet"]["scheme"], HTTP_SCHEMES))
    for k in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        if pr[k] < 0:
            errors.append(invalid(f"{path}.{k}", pr[k], "must be greater than or equal to 0"))
    if single_success and pr["successThreshold"] != 1:
        errors.append(invalid(f"{path}.successThreshold", pr["successThreshold"], "must be 1"))
    return errors


def _port_range(path: str, port: int) -> list[FieldError]:
    if not 1 <= port <= 65535:
        return [invalid(path, port, "must be between 1 and 65535, inclusive")]
    return []


def _port_num_or_name(path: str, port: int | str) -> list[FieldError]:
    """ValidatePortNumOrName: a number in range, or an IANA service name."""
    if isinstance(port, str):
        if not port:
            return [required(path)]
        return [invalid(path, port, m) for m in names.iana_svc_name(port)]
    return _port_range(path, port)


def _protocol(path: str, protocol: str) -> list[FieldError]:
    if not protocol:
        return [required(path)]
    if protocol not in PROTOCOLS:
        return [unsupported(path, protocol, PROTOCOLS)]
    return []


def pod_rules(obj: dict) -> list[FieldError]:
    return _pod_spec(obj["spec"], "spec")


def deployment_rules(obj: dict) -> list[FieldError]:
    """ValidateDeploymentSpec and ValidatePodTemplateSpecForReplicaSet."""
    spec = obj["spec"]
    errors = []
    if spec["replicas"] < 0:
        errors.append(invalid("spec.replicas", spec["replicas"], "must be greater than or equal to 0"))
    selector = spec.get("selector")
    selector_ok = False
    if selector is None:
        errors.append(required("spec.selector"))
    elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append(invalid("spec.selector", selector, "empty selector is invalid for deployment"))
    else:
        selector_errors = _selector(selector, "spec.selector")
        errors += selector_errors
        selector_ok = not selector_errors
    tmpl_labels = spec["template"]["metadata"].get("labels") or {}
    # The API server checks the match whatever else is wrong, so that one run shows every error.
    if selector_ok and not matches(selector, tmpl_labels):
        errors.append(invalid("spec.template.metadata.labels", tmpl_labels,
                              "`selector` does not match template `labels`"))
    errors += _labels(tmpl_labels, "spec.template.metadata.labels")
    errors += _pod_spec(spec["template"]["spec"], "spec.template.spec")
    if spec["template"]["spec"]["restartPolicy"] != "Always":
        errors.append(unsupported("spec.template.spec.restartPolicy", spec["template"]["spec"]["restartPolicy"],
                                  ["Always"]))
    return errors


def service_rules(obj: dict) -> list[FieldError]:
    """ValidateService, for the fields nsk serves."""
    spec = obj["spec"]
    errors = []
    stype = spec["type"]
    if stype not in SERVICE_TYPES:
        return [unsupported("spec.type", stype, SERVICE_TYPES)]
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and not headless and stype != "ExternalName":
        errors.append(required("spec.ports"))
    if stype in ("NodePort", "LoadBalancer") and headless:
        errors.append(invalid("spec.clusterIP", "None", f"may not be set to 'None' for {stype} services"))
    if stype == "ExternalName":
        if spec.get("clusterIP") not in (None, ""):
            errors.append(FieldError("spec.clusterIP", "Forbidden",
                                     detail="may not be set for ExternalName services"))
        cname = (spec.get("externalName") or "").removesuffix(".")  # a trailing dot marks it absolute
        if not cname:
            errors.append(required("spec.externalName"))
        else:
            errors += [invalid("spec.externalName", cname, m) for m in names.dns1123_subdomain(cname)]
    port_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        pp = f"spec.ports[{i}]"
        if len(ports) > 1 and not p.get("name"):
            errors.append(required(f"{pp}.name"))
        elif p.get("name"):
            errors += [invalid(f"{pp}.name", p["name"], m) for m in names.dns1123_label(p["name"])]
            if p["name"] in port_names:
                errors.append(duplicate(f"{pp}.name", p["name"]))
            port_names.add(p["name"])
        if "port" not in p:
            errors.append(required(f"{pp}.port"))
        else:
            errors += _port_range(f"{pp}.port", p["port"])
        errors += _protocol(f"{pp}.protocol", p["protocol"])
        if "targetPort" in p:
            errors += _port_num_or_name(f"{pp}.targetPort", p["targetPort"])
        if p.get("nodePort"):
            if stype == "ClusterIP":
                errors.append(FieldError(f"{pp}.nodePort", "Forbidden",
                                         detail="may not be used when `type` is 'ClusterIP'"))
            else:
                errors += _port_range(f"{pp}.nodePort", p["nodePort"])
        if "port" in p:
            if (p["port"], p["protocol"]) in seen_ports:
                errors.append(duplicate(pp, {"port": p["port"], "protocol": p["protocol"]}))
            seen_ports.add((p["port"], p["protocol"]))
    errors += _labels(spec.get("selector") or {}, "spec.selector")
    cip = spec.get("clusterIP")
    if cip not in (None, "", "None"):
        try:
            ipaddress.IPv4Address(cip)
        except ValueError:
            errors.append(invalid("spec.clusterIP", cip, "must be a valid IP address, (e.g. 10.9.8.7)"))
    for i, ip in enumerate(spec.get("externalIPs") or []):
        errors += _endpoint_ip(f"spec.externalIPs[{i}]", ip)
    if spec.get("loadBalancerIP"):
        errors += _ip("spec.loadBalancerIP", spec["loadBalancerIP"])
    ranges = spec.get("loadBalancerSourceRanges") or []
    if ranges:
        # The API server's path has the capital L (a leftover of the annotation's days), and
        # entries may be padded with spaces (the same history).
        if stype != "LoadBalancer":
            errors.append(FieldError("spec.LoadBalancerSourceRanges", "Forbidden",
                                     detail="may only be used when `type` is 'LoadBalancer'"))
        for i, r in enumerate(ranges):
            errors += [invalid(f"spec.LoadBalancerSourceRanges[{i}]", r, e.detail)
                       for e in _cidr("", r.strip())]
    if spec["sessionAffinity"] not in AFFINITIES:
        errors.append(unsupported("spec.sessionAffinity", spec["sessionAffinity"], AFFINITIES))
    elif spec["sessionAffinity"] == "None" and spec.get("sessionAffinityConfig") is not None:
        errors.append(FieldError("spec.sessionAffinityConfig", "Forbidden",
                                 detail="must not be set when session affinity is None"))
    timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
    if spec["sessionAffinity"] == "ClientIP" and timeout is not None and not 0 < timeout <= 86400:
        errors.append(invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", timeout,
                              "must be greater than 0 and less than 86400"))
    etp = spec.get("externalTrafficPolicy")
    if etp is not None and not _externally_accessible(spec):
        errors.append(invalid("spec.externalTrafficPolicy", etp, "may only be set for externally-accessible services"))
    elif etp is not None and etp not in TRAFFIC_POLICIES:
        errors.append(unsupported("spec.externalTrafficPolicy", etp, TRAFFIC_POLICIES))
    hc = spec.get("healthCheckNodePort")
    if hc and not (stype == "LoadBalancer" and etp == "Local"):
        errors.append(invalid("spec.healthCheckNodePort", hc,
                              "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))
    elif hc:
        errors += _port_range("spec.healthCheckNodePort", hc)
    itp = spec.get("internalTrafficPolicy")
    if itp is not None and itp not in TRAFFIC_POLICIES:
        errors.append(unsupported("spec.internalTrafficPolicy", itp, TRAFFIC_POLICIES))
    return errors


def _endpoint_ip(path: str, value: str) -> list[FieldError]:
    """ValidateEndpointIP: used for Endpoints addresses and, as upstream, for externalIPs."""
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError:
        return [invalid(path, value, "must be a valid IP address, (e.g. 10.9.8.7)")]
    errors = []
    if ip.is_unspecified:
        errors.append(invalid(path, value, f"may not be unspecified ({value})"))
    if ip.is_loopback:
        errors.append(invalid(path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
    if ip.is_link_local:
        errors.append(invalid(path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"))
    if ip in ipaddress.IPv4Network("224.0.0.0/24"):
        errors.append(invalid(path, value, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"))
    return errors


MAX_CONFIGMAP_BYTES = 1024 * 1024  # the API server's limit on a ConfigMap's data


def configmap_rules(obj: dict) -> list[FieldError]:
    """ValidateConfigMap: each key a config key, in data or binaryData once, 1 MiB in all."""
    errors = []
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    for field_name, items in (("data", data), ("binaryData", binary)):
        for k in items:
            errors += [invalid(f"{field_name}[{k}]", k, m) for m in names.config_key(k)]
    for k in set(data) & set(binary):
        errors.append(invalid("data", k, "duplicate of key present in binaryData"))
    size = sum(len(k) + len(v) for k, v in data.items()) + sum(len(k) + len(v) for k, v in binary.items())
    if size > MAX_CONFIGMAP_BYTES:
        errors.append(FieldError("", "Too long", detail=f"must have at most {MAX_CONFIGMAP_BYTES} bytes"))
    return errors


def endpoints_rules(obj: dict) -> list[FieldError]:
    """ValidateEndpoints."""
    errors = []
    for i, subset in enumerate(obj.get("subsets") or []):
        for field_name in ("addresses", "notReadyAddresses"):
            for j, a in enumerate(subset.get(field_name) or []):
                ap = f"subsets[{i}].{field_name}[{j}]"
                if not a.get("ip"):
                    errors.append(required(f"{ap}.ip"))
                else:
                    errors += _endpoint_ip(f"{ap}.ip", a["ip"])
                if a.get("hostname"):
                    errors += [invalid(f"{ap}.hostname", a["hostname"], m) for m in names.dns1123_label(a["hostname"])]
                if a.get("nodeName"):
                    errors += [invalid(f"{ap}.nodeName", a["nodeName"], m)
                               for m in names.dns1123_subdomain(a["nodeName"])]
        ports = subset.get("ports") or []
        for j, p in enumerate(ports):
            pp = f"subsets[{i}].ports[{j}]"
            if len(ports) > 1 and not p.get("name"):
                errors.append(required(f"{pp}.name"))
            elif p.get("name"):
                errors += [invalid(f"{pp}.name", p["name"], m) for m in names.dns1123_label(p["name"])]
            if "port" not in p:
                errors.append(required(f"{pp}.port"))
            else:
                errors += _port_range(f"{pp}.port", p["port"])
            errors += _protocol(f"{pp}.protocol", p["protocol"])
    return errors

