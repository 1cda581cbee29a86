"""What kubelet writes for a Pod: /etc/resolv.conf, /etc/hosts and the environment (pure)."""

from __future__ import annotations

import hashlib
import ipaddress

from nsk.api import names
from nsk.api.cluster import ClusterConfig


def hostname(pod: dict) -> str:
    """The Pod's host name: spec.hostname or its name, cut to a DNS label's 63 characters
    with the dashes and dots left at the cut dropped (kubelet's truncatePodHostnameIfNeeded)."""
    name = pod["spec"].get("hostname") or pod["metadata"]["name"]
    return name if len(name) <= 63 else name[:63].rstrip("-.")


def log_name(namespace: str, pod: str, container: str) -> str:
    """The file a container's output goes to: `<ns>_<pod>_<container>.log`. A Pod name may
    be 253 characters, more than a file name can hold with the rest: a long one is cut and
    given a hash of the whole, so the name (with `.previous`) stays under NAME_MAX."""
    if len(pod) > 100:
        pod = pod[:100] + "-" + hashlib.sha256(pod.encode()).hexdigest()[:10]
    return f"{namespace}_{pod}_{container}.log"


def resolv_conf(pod: dict, cfg: ClusterConfig, host_resolv: str) -> str:
    """kubelet's dns.go: ClusterFirst, ClusterFirstWithHostNet, Default, None (+ dnsConfig)."""
    spec = pod["spec"]
    policy = spec.get("dnsPolicy", "ClusterFirst")
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"  # as kubelet: a hostNetwork Pod needs ClusterFirstWithHostNet for cluster DNS
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        ns = pod["metadata"]["namespace"]
        d = cfg.cluster_domain
        nameservers = [cfg.dns_cluster_ip]
        searches = [f"{ns}.svc.{d}", f"svc.{d}", d]
        options = ["ndots:5"]
    elif policy == "Default":
        for line in host_resolv.splitlines():
            parts = line.split()
            if not parts or parts[0].startswith(("#", ";")):
                continue
            if parts[0] == "nameserver":
                nameservers += parts[1:2]
            elif parts[0] in ("search", "domain"):
                searches = parts[1:]
            elif parts[0] == "options":
                options += parts[1:]
    conf = spec.get("dnsConfig") or {}
    # Validation refuses what would not fit resolv.conf; what is written is still only
    # what parses back (an address, a DNS name, a word), so no value can add a line.
    nameservers += [n for n in _addresses(conf.get("nameservers") or []) if n not in nameservers]
    searches += [s for s in conf.get("searches") or []
                 if s not in searches and names.DNS1123_SUBDOMAIN.fullmatch(s.removesuffix("."))]
    for opt in conf.get("options") or []:
        text = opt["name"] + (f":{opt['value']}" if opt.get("value") is not None else "")
        if text.isprintable() and not any(c.isspace() for c in text):
            options = [o for o in options if o.split(":")[0] != opt["name"]] + [text]
    lines = [f"nameserver {n}" for n in nameservers[:3]]
    if searches:
        lines.append("search " + " ".join(searches[:32]))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def _addresses(values: list[str]) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_address(v)))
        except ValueError:
            pass
    return out


def hosts_file(pod: dict, pod_ip: str, cfg: ClusterConfig) -> str:
    """kubelet's managed /etc/hosts (kubelet_pods.go: managedHostsFileContent)."""
    spec = pod["spec"]
    host = hostname(pod)
    lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes",
             "fe00::2\tip6-allrouters"]
    if spec.get("subdomain"):
        ns = pod["metadata"]["namespace"]
        fqdn = f"{host}.{spec['subdomain']}.{ns}.svc.{cfg.cluster_domain}"
        lines.append(f"{pod_ip}\t{fqdn}\t{host}")
    else:
        lines.append(f"{pod_ip}\t{host}")
    return "\n".join(lines) + "\n"


def service_environment(services: list[dict]) -> dict:
    """kubelet's Service variables (envvars.FromServices) for these Services, in order:
    {SVC}_SERVICE_HOST/_PORT/_PORT_<NAME> and the Docker-links set {SVC}_PORT..."""
    env: dict[str, str] = {}
    for svc in sorted(services, key=lambda s: s["metadata"]["name"]):
        spec = svc["spec"]
        ip = spec.get("clusterIP")
        if spec.get("type") == "ExternalName" or ip in (None, "", "None") or not spec.get("ports"):
            continue
        name = svc["metadata"]["name"].upper().replace("-", "_")
        ports = spec["ports"]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
        first = ports[0]
        env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for p in ports:
            proto = p.get("protocol", "TCP")
            prefix = f"{name}_PORT_{p['port']}_{proto}"
            env[prefix] = f"{proto.lower()}://{ip}:{p['port']}"
            env[f"{prefix}_PROTO"] = proto.lower()
            env[f"{prefix}_PORT"] = str(p["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


def visible_services(pod: dict, services: list[dict]) -> list[dict]:
    """The Services whose variables a Pod gets when it starts: those of its namespace
    (unless enableServiceLinks is false) and the `kubernetes` Service of `default`."""
    ns = pod["metadata"]["namespace"]
    links = pod["spec"].get("enableServiceLinks", True)
    out = {}
    for s in services:
        m = s["metadata"]
        if (m["namespace"] == ns and links) or (m["namespace"] == "default" and m["name"] == "kubernetes"):
            out[m["name"]] = s
    return list(out.values())


def environment(pod: dict, container: dict, pod_ip: str, host_ip: str, base: dict,
                services: list[dict] = (), service_env: dict | None = None) -> dict:
    """A container's environment: the base (PATH, HOME), HOSTNAME, the Service variables
    (`service_env` when the caller made them already, else from `services`), then its `env`
    in order (which wins), with `$(VAR)` references expanded and the Pod fields kubelet
    offers through fieldRef."""
    meta, spec = pod["metadata"], pod["spec"]
    env = dict(base)
    env["HOSTNAME"] = hostname(pod)
    env.update(service_environment(visible_services(pod, list(services))) if service_env is None else service_env)
    fields = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
              "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
              "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
              "status.podIP": pod_ip, "status.podIPs": pod_ip, "status.hostIP": host_ip,
              "status.hostIPs": host_ip}
    for k, v in (meta.get("labels") or {}).items():
        fields[f"metadata.labels['{k}']"] = v
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
        elif ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") in fields:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env.setdefault(e["name"], "")
    return env


def expand(text: str, env: dict) -> str:
    """Kubernetes' `$(VAR)` expansion: `$$` escapes, unknown references stay as written."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and ")" in text[i:]:
            end = text.index(")", i)
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def argv(container: dict, env: dict) -> list[str] | None:
    """The command line of a container, or None when it runs nsk's built-in server."""
    if not container.get("command"):
        return None  # the image's entrypoint: nsk's built-in server (it takes no args)
    return [expand(a, env) for a in container["command"] + (container.get("args") or [])]
