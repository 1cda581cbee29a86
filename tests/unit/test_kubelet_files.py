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


def test_resolv_conf_writes_only_what_parses():
    """Validation refuses these; should one slip past, it still cannot add a line."""
    spec = {"dnsConfig": {"nameservers": ["not-an-ip", "1.2.3.4\nnameserver 6.6.6.6", "9.9.9.9"],
                          "searches": ["a.example\nnameserver 6.6.6.6", "b.example."],
                          "options": [{"name": "ndots:1\nnameserver", "value": "x"}, {"name": "edns0"}]}}
    text = podfiles.resolv_conf(pod(**spec), CFG, HOST_RESOLV)
    assert text == ("nameserver 10.96.0.10\nnameserver 9.9.9.9\n"
                    "search prod.svc.cluster.local svc.cluster.local cluster.local b.example.\n"
                    "options ndots:5 edns0\n")


def test_a_long_pod_name_gives_a_bounded_hostname_and_log_file():
    """A Pod name may be a 253-character subdomain; a host name is a 63-character label, and
    a file name holds 255 bytes (it once killed the control plane with ENAMETOOLONG)."""
    name = "a" * 62 + "-" + "b" * 190
    p = pod()
    p["metadata"]["name"] = name
    assert podfiles.hostname(p) == "a" * 62  # cut at 63, the dash left at the cut dropped
    assert "\t" + "a" * 62 + "\n" in podfiles.hosts_file(p, "10.244.1.2", CFG)
    log = podfiles.log_name("n" * 63, name, "c" * 63)
    assert len(log + ".previous") <= 255
    assert log != podfiles.log_name("n" * 63, name[:-1] + "c", "c" * 63)  # unique by a hash of the whole
    assert podfiles.log_name("prod", "web-1", "c") == "prod_web-1_c.log"


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


def svc(name, ns="prod", **spec):
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": "10.0.0.11", **spec}}


def test_service_variables_as_the_source_lists_them():
    redis = svc("redis-master", ports=[{"port": 6379, "protocol": "TCP"}])
    env = podfiles.environment(pod(), {"name": "c"}, "10.244.1.7", "172.18.0.2", {}, [redis])
    assert {k: v for k, v in env.items() if k.startswith("REDIS")} == {
        "REDIS_MASTER_SERVICE_HOST": "10.0.0.11",
        "REDIS_MASTER_SERVICE_PORT": "6379",
        "REDIS_MASTER_PORT": "tcp://10.0.0.11:6379",
        "REDIS_MASTER_PORT_6379_TCP": "tcp://10.0.0.11:6379",
        "REDIS_MASTER_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_MASTER_PORT_6379_TCP_PORT": "6379",
        "REDIS_MASTER_PORT_6379_TCP_ADDR": "10.0.0.11",
    }


def test_service_variables_named_ports_other_namespaces_and_links_off():
    multi = svc("my-service", ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                                     {"name": "dns-udp", "port": 53, "protocol": "UDP"}])
    other = svc("elsewhere", ns="default", ports=[{"port": 1}])
    headless = svc("headless", clusterIP="None", ports=[{"port": 1}])
    ext = svc("ext", type="ExternalName", ports=[{"port": 1}])
    env = podfiles.environment(pod(), {"name": "c", "env": [{"name": "MY_SERVICE_SERVICE_HOST", "value": "mine"}]},
                               "10.244.1.7", "172.18.0.2", {}, [multi, other, headless, ext])
    assert env["MY_SERVICE_SERVICE_PORT"] == "80" and env["MY_SERVICE_SERVICE_PORT_HTTP"] == "80"
    assert env["MY_SERVICE_SERVICE_PORT_DNS_UDP"] == "53" and env["MY_SERVICE_PORT_53_UDP_PROTO"] == "udp"
    assert env["MY_SERVICE_SERVICE_HOST"] == "mine"  # the container's own env wins
    assert not any(k.startswith(("ELSEWHERE", "HEADLESS", "EXT_")) for k in env)
    off = podfiles.environment(pod(enableServiceLinks=False), {"name": "c"}, "10.244.1.7", "172.18.0.2", {},
                               [multi, svc("kubernetes", ns="default", clusterIP="10.96.0.1",
                                           ports=[{"name": "https", "port": 443}])])
    assert not any(k.startswith("MY_SERVICE") for k in off)
    assert off["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"  # the master Service stays
