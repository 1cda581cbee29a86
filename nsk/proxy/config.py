"""kube-proxy's configuration where a kubeadm cluster keeps it: the `kube-system/kube-proxy`
ConfigMap, its `config.conf` a KubeProxyConfiguration (pure). nsk writes it from the
Cluster document's spec.proxy at `nsk up` and keeps the two in step: applying either
switches every node's proxy (nsk/daemon.py)."""

from __future__ import annotations

import yaml

from nsk.api.cluster import IPVS_SCHEDULERS, PROXY_MODES, ClusterConfig
from nsk.errors import NskError

NAMESPACE, NAME, KEY = "kube-system", "kube-proxy", "config.conf"


def configmap(cfg: ClusterConfig) -> dict:
    """The ConfigMap as kubeadm writes it (mode "" is iptables on Linux, as kubeadm leaves it)."""
    conf = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "bindAddress": "0.0.0.0", "clusterCIDR": cfg.pod_subnet,
        "iptables": {"masqueradeBit": 14, "minSyncPeriod": "1s", "syncPeriod": "30s"},
        "ipvs": {"scheduler": "" if cfg.ipvs_scheduler == "rr" else cfg.ipvs_scheduler},
        "mode": "" if cfg.proxy_mode == "iptables" else cfg.proxy_mode,
        "nodePortAddresses": list(cfg.node_port_addresses) or None,
    }
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"app": "kube-proxy"}},
            "data": {KEY: yaml.safe_dump(conf, sort_keys=True)}}


IMAGE = "registry.k8s.io/kube-proxy:v1.35.0"


def pod(cfg: ClusterConfig, node: str) -> dict:
    """A node's kube-proxy Pod, as kubeadm's DaemonSet makes it (hostNetwork, on that node,
    system-node-critical): the control plane is the proxy; the Pod stands for it, so that
    `nsk get pods -n kube-system -o wide` shows one kube-proxy a node, as on a real cluster."""
    from nsk.controllers.deployment import template_hash
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"kube-proxy-{template_hash({'node': node})[:5]}", "namespace": NAMESPACE,
                         "labels": {"k8s-app": "kube-proxy", "pod-template-generation": "1"}},
            "spec": {"nodeName": node, "hostNetwork": True, "priorityClassName": "system-node-critical",
                     "containers": [{"name": "kube-proxy", "image": IMAGE}]}}


def proxy_of(cm: dict) -> tuple[str, str]:
    """(mode, IPVS scheduler) from the ConfigMap; NskError saying what is wrong otherwise."""
    try:
        conf = yaml.safe_load((cm.get("data") or {}).get(KEY) or "") or {}
    except yaml.YAMLError as e:
        raise NskError(f"{KEY}: not valid YAML: {e}") from e
    if not isinstance(conf, dict):
        raise NskError(f"{KEY}: not a KubeProxyConfiguration")
    mode = conf.get("mode") or "iptables"
    scheduler = (conf.get("ipvs") or {}).get("scheduler") or "rr"
    if mode not in PROXY_MODES:
        raise NskError(f'{KEY}: mode: Unsupported value: "{mode}": supported values: '
                       + ", ".join(f'"{m}"' for m in PROXY_MODES))
    if scheduler not in IPVS_SCHEDULERS:
        raise NskError(f'{KEY}: ipvs.scheduler: Unsupported value: "{scheduler}": supported values: '
                       + ", ".join(f'"{m}"' for m in IPVS_SCHEDULERS))
    return mode, scheduler


class KubeProxyPods:
    """kubeadm's kube-proxy DaemonSet, the part nsk needs: every node has its kube-proxy Pod;
    one that is gone (deleted, its node's Pod evicted) is made again. In userspace mode that
    Pod is the node's proxy."""

    name = "daemonset-controller"

    def __init__(self, cfg: ClusterConfig):
        self.cfg = cfg

    def reconcile(self, snap) -> list:
        from nsk.apiserver.admission import admit
        from nsk.controllers.manager import Put
        if snap.changed is not None and not any(k.kind == "Pod" and k.namespace == NAMESPACE for k in snap.changed):
            return []
        have = {p["spec"].get("nodeName") for p in snap.in_namespace("Pod", NAMESPACE)
                if (p["metadata"].get("labels") or {}).get("k8s-app") == "kube-proxy"}
        return [Put(admit(pod(self.cfg, n.name))) for n in self.cfg.nodes if n.name not in have]
