"""What kubelet writes for a Pod: resolv.conf, hosts, environment (pure)."""

from __future__ import annotations

import pytest

from nsk.api.cluster import ClusterConfig
from nsk.kubelet import podfiles

CFG = ClusterConfig()
HOST_RESOLV = "# host\nnameserver 192.168.1.1\nsearch corp.example\noptions edns0\n"


def pod(**spec):
    return {"metadata": {"name": "web-1", "namespace": "prod", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "x"}], **spec}}


@pytest.mark.parametrize("spec,expected", [
    ({}, "nameserver 10.96.0.10\nsearch prod.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"),
    ({"dnsPolicy": "Default"}, "nameserver 192.168.1.1\nsearch corp.example\noptions edns0\n"),
    # a hostNetwork Pod with ClusterFirst falls back to the node's resolver, as kubelet does
    ({"hostNetwork": True}, "nameserver 192.168.1.1\nsearch corp.example\noptions edns0\n"),
    ({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"},
     "nameserver 10.96.0.10\nsearch prod.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"),
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.example"],
                                         "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}},
     "nameserver 1.2.3.4\nsearch a.example\noptions ndots:2 edns0\n"),
    ({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}},
     "nameserver 10.96.0.10\nsearch prod.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:1\n"),
])
def test_resolv_conf(spec, expected):
    assert podfiles.resolv_conf(pod(**spec), CFG, HOST_RESOLV) == expected


def test_hosts_file_names_the_pod():
    text = podfiles.hosts_file(pod(), "10.244.1.7", CFG)
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert text.endswith("10.244.1.7\tweb-1\n")
    text = podfiles.hosts_file(pod(hostname="db-0", subdomain="db"), "10.244.1.7", CFG)
    assert text.endswith("10.244.1.7\tdb-0.db.prod.svc.cluster.local\tdb-0\n")


def test_environment_expands_references_and_fields():
    p = pod(nodeName="node-2")
    c = {"name": "c", "env": [
        {"name": "A", "value": "x"},
        {"name": "B", "value": "$(A)-$(MISSING)-$$(A)"},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
    ]}
    env = podfiles.environment(p, c, "10.244.2.5", "172.18.0.3", {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "HOSTNAME": "web-1", "A": "x", "B": "x-$(MISSING)-$(A)", "IP": "10.244.2.5",
                   "NODE": "node-2", "APP": "web"}


def test_argv():
    assert podfiles.argv({"image": "nginx"}, {}) is None
    assert podfiles.argv({"command": ["sh", "-c"], "args": ["echo $(X)"]}, {"X": "1"}) == ["sh", "-c", "echo 1"]
