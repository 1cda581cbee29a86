"""The nsk Cluster document (SPEC §1): defaults and the checks that keep a topology buildable; no root."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from nsk.api.cluster import ClusterConfig, HostConfig, NodeConfig, parse_cluster
from nsk.api.load import load
from nsk.errors import InvalidObject, NskError

HEAD = "apiVersion: nsk.io/v1alpha1\nkind: Cluster\n"
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                     "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
                     "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


def parse(text: str, default_name: str = "nsk") -> ClusterConfig:
    return parse_cluster(yaml.safe_load(HEAD + textwrap.dedent(text)), default_name, "lab.yaml")


def error(text: str) -> str:
    with pytest.raises(InvalidObject) as e:
        parse(text)
    return str(e.value)


def test_no_cluster_document_means_the_defaults():
    cfg = parse_cluster(None)
    assert cfg == ClusterConfig(
        name="nsk", nodes=(NodeConfig("node-1"), NodeConfig("node-2")), pod_subnet="10.244.0.0/16",
        service_subnet="10.96.0.0/12", node_subnet="172.18.0.0/24", node_port_range=(30000, 32767),
        node_port_addresses=(), cluster_domain="cluster.local", proxy_mode="iptables", ipvs_scheduler="rr",
        dns_cluster_ip="10.96.0.10", dns_upstream=(), dns_ttl=5, external_subnet="192.0.2.0/24",
        hosts=(HostConfig("client", "192.0.2.10"),), lb_pool="198.51.100.0/24")
    assert parse_cluster(None, "lab").name == "lab"


def test_an_empty_cluster_document_is_the_defaults_too():
    assert parse("") == parse_cluster(None)
    assert parse("metadata: {name: lab}\n", default_name="other") == parse_cluster(None, "lab")
    # `ttl:` or `mode:` with nothing after them are absent fields, not null values
    assert parse("spec: {proxy: {mode: }, dns: {ttl: }, nodes: }\n") == parse_cluster(None)


def test_the_spec_example():
    cfg = parse("""\
        metadata: {name: lab}
        spec:
          nodes: [{name: node-1}, {name: node-2, labels: {zone: b}}]
          networking:
            podSubnet: 10.244.0.0/16
            serviceSubnet: 10.96.0.0/12
            nodeSubnet: 172.18.0.0/24
            nodePortRange: 30000-32767
            nodePortAddresses: []
            clusterDomain: cluster.local
          proxy: {mode: ipvs, ipvs: {scheduler: sh}}
          dns: {clusterIP: 10.96.0.10}
          external:
            subnet: 192.0.2.0/24
            hosts: [{name: client, ip: 192.0.2.10}]
          loadBalancer: {pool: 198.51.100.0/24}
        """)
    assert cfg == ClusterConfig(name="lab", nodes=(NodeConfig("node-1"), NodeConfig("node-2", {"zone": "b"})),
                                proxy_mode="ipvs", ipvs_scheduler="sh")


def test_what_follows_from_changed_networks():
    cfg = parse("""\
        spec:
          networking: {serviceSubnet: 10.100.0.0/16, nodePortRange: 31000-31099, clusterDomain: lab.example}
          external: {subnet: 203.0.113.0/24}
        """)
    assert cfg.dns_cluster_ip == "10.100.0.10"  # the 10th address, as kubeadm picks it
    assert cfg.hosts == ()  # the default client lives in the default external subnet only
    assert cfg.node_port_range == (31000, 31099) and cfg.cluster_domain == "lab.example"


def test_to_dict_round_trips():
    cfg = parse("spec: {nodes: [{name: a, labels: {zone: x}}], external: {hosts: [{name: c, ip: 192.0.2.20}]}}\n")
    assert parse_cluster(cfg.to_dict()) == cfg
    assert parse_cluster(parse_cluster(None).to_dict()) == parse_cluster(None)


def test_an_external_host_without_an_address_gets_the_next_free_one_from_dot_10():
    cfg = parse("spec: {external: {hosts: [{name: a}, {name: b, ip: 192.0.2.11}, {name: c}]}}\n")
    assert [(h.name, h.ip) for h in cfg.hosts] == [("a", "192.0.2.10"), ("b", "192.0.2.11"), ("c", "192.0.2.12")]
    small = parse("spec: {external: {subnet: 203.0.113.0/29, hosts: [{name: a}, {name: b}]}}\n")
    assert [h.ip for h in small.hosts] == ["203.0.113.2", "203.0.113.3"]  # no .10 in a /29
    assert parse_cluster(cfg.to_dict()).hosts == cfg.hosts  # the document as stored gives the same


@pytest.mark.parametrize("spec, message", [
    ("{networking: {podSubnet: 10.96.0.0/16}}",
     'spec.networking.serviceSubnet: Invalid value: "10.96.0.0/12": overlaps spec.networking.podSubnet '
     "(10.96.0.0/16)"),
    ("{networking: {nodeSubnet: 10.244.7.0/24}}",
     'spec.networking.nodeSubnet: Invalid value: "10.244.7.0/24": overlaps spec.networking.podSubnet (10.244.0.0/16)'),
    ("{loadBalancer: {pool: 192.0.2.128/25}}",
     'spec.loadBalancer.pool: Invalid value: "192.0.2.128/25": overlaps spec.external.subnet (192.0.2.0/24)'),
    ("{networking: {podSubnet: 10.244.0.0/23}}",
     'spec.networking.podSubnet: Invalid value: "10.244.0.0/23": too small for 2 nodes: each node gets a /24 and '
     "the first /24 is not used, so it must be /22 or larger"),
    ("{networking: {podSubnet: 10.244.0.0/24}, nodes: [{name: a}]}",
     'spec.networking.podSubnet: Invalid value: "10.244.0.0/24": too small for 1 node: each node gets a /24 and '
     "the first /24 is not used, so it must be /23 or larger"),
    ("{networking: {podSubnet: 10.244.0.0/25}}",
     'spec.networking.podSubnet: Invalid value: "10.244.0.0/25": must be /24 or larger: every node gets a /24'),
    ("{networking: {podSubnet: 10.244.0.1/16}}",
     'spec.networking.podSubnet: Invalid value: "10.244.0.1/16": must be an IPv4 CIDR with no host bits set '
     "(10.244.0.1/16 has host bits set)"),
    ("{networking: {serviceSubnet: services}}",
     "spec.networking.serviceSubnet: Invalid value: \"services\": must be an IPv4 CIDR with no host bits set "
     "(Expected 4 octets in 'services')"),
    ("{networking: {nodeSubnet: 172.18.0.0/30}}",
     'spec.networking.nodeSubnet: Invalid value: "172.18.0.0/30": too small for 2 nodes and a router: it must be '
     "/29 or larger"),
    ("{networking: {nodePortRange: 32767-30000}}",
     'spec.networking.nodePortRange: Invalid value: "32767-30000": must be FIRST-LAST, e.g. 30000-32767'),
    ("{networking: {nodePortRange: 30000-70000}}",
     'spec.networking.nodePortRange: Invalid value: "30000-70000": must be FIRST-LAST, e.g. 30000-32767'),
    ("{networking: {nodePortAddresses: [172.18.0.0/33]}}",
     'spec.networking.nodePortAddresses[0]: Invalid value: "172.18.0.0/33": must be a CIDR'),
    ("{networking: {clusterDomain: cluster_local}}",
     'spec.networking.clusterDomain: Invalid value: "cluster_local": a lowercase RFC 1123 subdomain must consist '
     "of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
     "(e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
     "[a-z0-9])?)*')"),
    ("{proxy: {mode: kernelspace}}",
     'spec.proxy.mode: Unsupported value: "kernelspace": supported values: "iptables", "ipvs", "nftables", '
     '"userspace"'),
    ("{proxy: {mode: IPVS}}",
     'spec.proxy.mode: Unsupported value: "IPVS": supported values: "iptables", "ipvs", "nftables", "userspace"'),
    ("{proxy: {ipvs: {scheduler: fastest}}}",
     'spec.proxy.ipvs.scheduler: Unsupported value: "fastest": supported values: "rr", "lc", "dh", "sh", "sed", "nq", '
     '"wrr", "wlc", "lblc", "lblcr", "fo", "ovf", "mh", "twos"'),
    ("{dns: {clusterIP: 10.0.0.10}}",
     'spec.dns.clusterIP: Invalid value: "10.0.0.10": must be an address in serviceSubnet 10.96.0.0/12 other than '
     "10.96.0.1, which is the kubernetes Service's"),
    ("{dns: {clusterIP: 10.96.0.1}}",
     'spec.dns.clusterIP: Invalid value: "10.96.0.1": must be an address in serviceSubnet 10.96.0.0/12 other than '
     "10.96.0.1, which is the kubernetes Service's"),
    ("{dns: {clusterIP: 10.111.255.255}}",
     'spec.dns.clusterIP: Invalid value: "10.111.255.255": must be an address in serviceSubnet 10.96.0.0/12 other '
     "than 10.96.0.1, which is the kubernetes Service's"),
    ("{dns: {clusterIP: kube-dns}}",
     'spec.dns.clusterIP: Invalid value: "kube-dns": must be an address in serviceSubnet 10.96.0.0/12 other than '
     "10.96.0.1, which is the kubernetes Service's"),
    ("{dns: {ttl: -1}}", "spec.dns.ttl: Invalid value: -1: must be greater than or equal to 0"),
    # a name would be looked up by the DNS server through itself; these addresses are itself
    ("{dns: {upstream: [dns.example.org]}}",
     'spec.dns.upstream[0]: Invalid value: "dns.example.org": must be an IPv4 address'),
    ("{dns: {upstream: [192.0.2.53, 10.96.0.10]}}",
     'spec.dns.upstream[1]: Invalid value: "10.96.0.10": must not be the cluster DNS itself (a forwarding loop)'),
    ("{dns: {upstream: [127.0.0.53]}}",
     'spec.dns.upstream[0]: Invalid value: "127.0.0.53": must not be the cluster DNS itself (a forwarding loop)'),
    ("{nodes: [{name: node-1}, {name: node-1}]}", 'spec.nodes[1].name: Duplicate value: "node-1"'),
    ("{nodes: []}", "spec.nodes: Required value: a cluster needs at least one node"),
    ("{nodes: [{labels: {zone: a}}]}", "spec.nodes[0].name: Required value"),
    ("{nodes: [~]}", "spec.nodes[0].name: Required value"),
    ("{nodes: [{name: Node_1}]}",
     'spec.nodes[0].name: Invalid value: "Node_1": a lowercase RFC 1123 subdomain must consist of lower case '
     "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
     "'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
     "[a-z0-9])?)*')"),
    ("{nodes: [{name: n1, labels: {zone: b c}}]}", f'spec.nodes[0].labels: Invalid value: "b c": {LABEL_VALUE_MSG}'),
    ("{external: {hosts: [{name: client, ip: 10.0.0.5}]}}",
     'spec.external.hosts[0].ip: Invalid value: "10.0.0.5": must be a host address in 192.0.2.0/24 other than the '
     "router's 192.0.2.1"),
    ("{external: {hosts: [{name: client, ip: 192.0.2.1}]}}",
     'spec.external.hosts[0].ip: Invalid value: "192.0.2.1": must be a host address in 192.0.2.0/24 other than the '
     "router's 192.0.2.1"),
    ("{external: {hosts: [{name: a, ip: 192.0.2.255}]}}",
     'spec.external.hosts[0].ip: Invalid value: "192.0.2.255": must be a host address in 192.0.2.0/24 other than '
     "the router's 192.0.2.1"),
    ("{external: {hosts: [{name: a, ip: 192.0.2.9}, {name: a, ip: 192.0.2.9}]}}",
     '[spec.external.hosts[1].name: Duplicate value: "a", spec.external.hosts[1].ip: Duplicate value: "192.0.2.9"]'),
    ("{external: {subnet: 192.0.2.0/30, hosts: [{name: a}, {name: b}]}}",
     'spec.external.hosts[1].ip: Invalid value: "": no free address left in 192.0.2.0/30: give one'),
    ("{external: {hosts: [{name: Client, ip: 192.0.2.9}]}}",
     f'spec.external.hosts[0].name: Invalid value: "Client": {DNS1123_LABEL_MSG}'),
    ("{node: [{name: a}]}", 'spec.node: Unknown field: not a field of ClusterSpec (did you mean "nodes"?)'),
    ("{dns: {ttl: five}}", 'spec.dns.ttl: Invalid value: "five": must be of type integer, not string'),
    ("{networking: {nodePortRange: 30000}}",
     "spec.networking.nodePortRange: Invalid value: 30000: must be of type string, not integer"),
])
def test_bad_cluster(spec, message):
    assert error(f"spec: {spec}\n") == f'lab.yaml: Cluster "nsk" is invalid: {message}'


def test_bad_cluster_name_and_api_version():
    assert error("metadata: {name: Lab_1}\n") == (
        f'lab.yaml: Cluster "Lab_1" is invalid: metadata.name: Invalid value: "Lab_1": {DNS1123_LABEL_MSG}')
    with pytest.raises(InvalidObject) as e:
        parse_cluster({"apiVersion": "nsk.io/v1", "kind": "Cluster", "metadata": {"name": "lab"}}, source="x.yaml")
    assert str(e.value) == ('x.yaml: Cluster "lab" is invalid: apiVersion: Unsupported value: "nsk.io/v1": '
                            'supported values: "nsk.io/v1alpha1"')


def test_every_error_at_once():
    assert error("spec: {proxy: {mode: fast}, dns: {clusterIP: 1.2.3.4}, nodes: [{name: a}, {name: a}]}\n") == (
        'lab.yaml: Cluster "nsk" is invalid: [spec.nodes[1].name: Duplicate value: "a", spec.proxy.mode: '
        'Unsupported value: "fast": supported values: "iptables", "ipvs", "nftables", "userspace", '
        'spec.dns.clusterIP: Invalid value: "1.2.3.4": must be an address in serviceSubnet 10.96.0.0/12 other '
        "than 10.96.0.1, which is the kubernetes Service's]")


def test_a_big_enough_pod_subnet():
    cfg = parse("spec: {networking: {podSubnet: 10.244.0.0/23}, nodes: [{name: a}]}\n")
    assert cfg.pod_subnet == "10.244.0.0/23" and [n.name for n in cfg.nodes] == ["a"]
    assert len(parse("spec: {networking: {podSubnet: 10.244.0.0/22}, nodes: [{name: a}, {name: b}, {name: c}]}\n")
               .nodes) == 3


# ---- the Cluster document inside a topology file -----------------------------------------------

def test_cluster_document_in_a_file():
    text = (HEAD + "metadata: {name: lab}\nspec: {nodes: [{name: n1}]}\n---\n"
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n")
    m = load(text, "lab.yaml", default_name="ignored")
    assert m.has_cluster_doc and m.cluster.name == "lab" and [n.name for n in m.cluster.nodes] == ["n1"]
    assert [o["kind"] for o in m.objects] == ["Service"]
    m = load(text.split("---\n")[1], "lab.yaml", default_name="mine")
    assert not m.has_cluster_doc and m.cluster == parse_cluster(None, "mine")


def test_two_cluster_documents():
    with pytest.raises(NskError) as e:
        load(HEAD + "---\n" + HEAD, "lab.yaml")
    assert str(e.value) == "lab.yaml: more than one Cluster document; a file describes one cluster"


def test_a_bad_cluster_document_in_a_file():
    with pytest.raises(NskError) as e:
        load(HEAD + "spec: {networking: {podSubnet: 10.244.0.0/23}}\n", "lab.yaml")
    assert str(e.value) == ('lab.yaml: Cluster "nsk" is invalid: spec.networking.podSubnet: Invalid value: '
                            '"10.244.0.0/23": too small for 2 nodes: each node gets a /24 and the first /24 is not '
                            "used, so it must be /22 or larger")
