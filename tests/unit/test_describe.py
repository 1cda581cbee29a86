"""`nsk describe` in kubectl's layout (pure)."""

from __future__ import annotations

from nsk.cli.describe import describe
from nsk.controllers.endpoints import mirrored_slices

EP = {"apiVersion": "v1", "kind": "Endpoints",
      "metadata": {"name": "my-nginx", "namespace": "default", "labels": {"run": "my-nginx"}},
      "subsets": [{"addresses": [{"ip": "10.244.1.2", "nodeName": "node-1",
                                  "targetRef": {"kind": "Pod", "name": "my-nginx-1", "namespace": "default"}}],
                   "notReadyAddresses": [{"ip": "10.244.2.2", "nodeName": "node-2"}],
                   "ports": [{"port": 80, "protocol": "TCP"}]}]}


def test_endpoints_show_their_subsets():
    text = describe(EP, [], 0)
    assert "Subsets:\n  Addresses:         10.244.1.2\n  NotReadyAddresses: 10.244.2.2\n  Ports:\n" in text
    assert "    <unset>   80     TCP\n" in text and text.endswith("Events:  <none>\n")


def test_an_endpoint_slice_shows_each_endpoint_and_its_conditions():
    (sl,) = mirrored_slices({"metadata": {"name": "my-nginx", "namespace": "default"}}, EP)
    text = describe(sl, [], 0)
    assert "AddressType: IPv4\n" in text
    assert "  - Addresses:  10.244.1.2\n    Conditions:\n      Ready:    true\n" in text
    assert "    TargetRef:  Pod/my-nginx-1\n    NodeName:   node-1\n" in text
    assert "  - Addresses:  10.244.2.2\n    Conditions:\n      Ready:    false\n" in text
    assert not any(line != line.rstrip() for line in text.splitlines())
