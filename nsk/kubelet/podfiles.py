"""What kubelet writes for a Pod: /etc/resolv.conf, /etc/hosts and the environment (pure)."""

from __future__ import annotations

from nsk.api.cluster import ClusterConfig


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
    nameservers += [n for n in conf.get("nameservers") or [] if n not in nameservers]
    searches += [s for s in conf.get("searches") or [] if s not in searches]
    for opt in conf.get("options") or []:
        text = opt["name"] + (f":{opt['value']}" if opt.get("value") is not None else "")
        options = [o for o in options if o.split(":")[0] != opt["name"]] + [text]
    lines = [f"nameserver {n}" for n in nameservers[:3]]
    if searches:
        lines.append("search " + " ".join(searches[:32]))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def hosts_file(pod: dict, pod_ip: str, cfg: ClusterConfig) -> str:
    """kubelet's managed /etc/hosts (kubelet_pods.go: managedHostsFileContent)."""
    spec = pod["spec"]
    hostname = spec.get("hostname") or pod["metadata"]["name"]
    lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes",
             "fe00::2\tip6-allrouters"]
    if spec.get("subdomain"):
        ns = pod["metadata"]["namespace"]
        fqdn = f"{hostname}.{spec['subdomain']}.{ns}.svc.{cfg.cluster_domain}"
        lines.append(f"{pod_ip}\t{fqdn}\t{hostname}")
    else:
        lines.append(f"{pod_ip}\t{hostname}")
    return "\n".join(lines) + "\n"


def environment(pod: dict, container: dict, pod_ip: str, host_ip: str, base: dict) -> dict:
    """A container's environment: the base (PATH, HOME), HOSTNAME, then its `env` in order,
    with `$(VAR)` references expanded and the Pod fields kubelet offers through fieldRef."""
    meta, spec = pod["metadata"], pod["spec"]
    env = dict(base)
    env["HOSTNAME"] = spec.get("hostname") or meta["name"]
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
        if container.get("args"):
            return None  # args for the image's entrypoint: the built-in server takes none
        return None
    return [expand(a, env) for a in container["command"] + (container.get("args") or [])]
