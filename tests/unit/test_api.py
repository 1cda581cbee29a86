"""Manifests in, defaults and API-server validation out (nsk.api, nsk.errors); no root.

Error texts are asserted whole: they are apimachinery's (`Service "default/web" is invalid:
spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive`), prefixed
with the file name, several errors joined as `[a, b]`.
"""

from __future__ import annotations

import ast
import pathlib
import re
import textwrap

import pytest

from nsk.api import names
from nsk.api.load import load
from nsk.api.objects import Key, key, matches, parse_label_selector, selected
from nsk.api.schema import KINDS
from nsk.apiserver import registry
from nsk.apiserver.admission import admit
from nsk.errors import FieldError, InvalidObject, NskError, duplicate, invalid, required, unsupported

# the source document (the Kubernetes docs chapter, Chinese, CC BY 4.0), copied into the repo
SEED = pathlib.Path(__file__).parent.parent / "data" / "services-networking.zh.md"
SRC = "f.yaml"

# The error texts of apimachinery's name rules, as the API server prints them.
DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                     "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
                     "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                         "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                         "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                     "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                     "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
LABEL_NAME_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                  "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                  "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
KINDS_LIST = ", ".join(f'"{k}"' for k in sorted(KINDS))


def objects(text: str) -> tuple[dict, ...]:
    return load(textwrap.dedent(text), SRC).objects


def error(text: str) -> str:
    with pytest.raises(NskError) as e:
        load(textwrap.dedent(text), SRC)
    return str(e.value)


def svc(spec: str, meta: str = "{name: web}") -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {meta}\nspec: {spec}\n"


def pod(containers: str, extra: str = "", meta: str = "{name: p}") -> str:
    return f"apiVersion: v1\nkind: Pod\nmetadata: {meta}\nspec: {{containers: {containers}{extra}}}\n"


def deploy(spec_lines: str = "", selector: str = "{matchLabels: {app: web}}", labels: str = "{app: web}",
           containers: str = "[{name: web, image: nginx}]", pod_extra: str = "") -> str:
    return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n{spec_lines}"
            f"  selector: {selector}\n  template:\n    metadata: {{labels: {labels}}}\n"
            f"    spec: {{containers: {containers}{pod_extra}}}\n")


def endpoints(addresses: str, ports: str = "[{port: 9376}]") -> str:
    return (f"apiVersion: v1\nkind: Endpoints\nmetadata: {{name: my-service}}\n"
            f"subsets: [{{addresses: {addresses}, ports: {ports}}}]\n")


# ---- the source document's examples, verbatim ----------------------------------------------

# The Service, Endpoints and Deployment examples of the source document, copied byte for byte
# (test_seed_examples_are_these checks the copy against the document when it is present),
# each with the object the API server stores for it: the defaults filled in.
SOURCE_EXAMPLES = [
    ("""\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
""", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-service", "namespace": "default"},
      "spec": {"selector": {"app": "MyApp"}, "ports": [{"protocol": "TCP", "port": 80, "targetPort": 9376}],
               "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster"}}),
    ("""\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
""", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-service", "namespace": "default"},
      "spec": {"ports": [{"protocol": "TCP", "port": 80, "targetPort": 9376}],
               "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster"}}),
    ("""\
apiVersion: v1
kind: Endpoints
metadata:
  name: my-service
subsets:
  - addresses:
      - ip: 192.0.2.42
    ports:
      - port: 9376
""", {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "my-service", "namespace": "default"},
      "subsets": [{"addresses": [{"ip": "192.0.2.42"}], "ports": [{"port": 9376, "protocol": "TCP"}]}]}),
    ("""\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: MyApp
  ports:
    - name: http
      protocol: TCP
      port: 80
      targetPort: 9376
    - name: https
      protocol: TCP
      port: 443
      targetPort: 9377
""", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-service", "namespace": "default"},
      "spec": {"selector": {"app": "MyApp"},
               "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9376},
                         {"name": "https", "protocol": "TCP", "port": 443, "targetPort": 9377}],
               "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster"}}),
    ("""\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  type: NodePort
  selector:
    app: MyApp
  ports:
      # 默认情况下，为了方便起见，`targetPort` 被设置为与 `port` 字段相同的值。
    - port: 80
      targetPort: 80
      # 可选字段
      # 默认情况下，为了方便起见，Kubernetes 控制平面会从某个范围内分配一个端口号（默认：30000-32767）
      nodePort: 30007
""", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-service", "namespace": "default"},
      "spec": {"type": "NodePort", "selector": {"app": "MyApp"},
               "ports": [{"port": 80, "targetPort": 80, "nodePort": 30007, "protocol": "TCP"}],
               "sessionAffinity": "None", "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster"}}),
    ("""\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
  clusterIP: 10.0.171.239
  type: LoadBalancer
status:
  loadBalancer:
    ingress:
      - ip: 192.0.2.127
""", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-service", "namespace": "default"},
      "spec": {"selector": {"app": "MyApp"}, "ports": [{"protocol": "TCP", "port": 80, "targetPort": 9376}],
               "clusterIP": "10.0.171.239", "type": "LoadBalancer", "sessionAffinity": "None",
               "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster"},
      "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.127"}]}}}),
    ("""\
apiVersion: v1
kind: Service
metadata:
  name: my-service
  namespace: prod
spec:
  type: ExternalName
  externalName: my.database.example.com
""", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-service", "namespace": "prod"},
      "spec": {"type": "ExternalName", "externalName": "my.database.example.com", "sessionAffinity": "None"}}),
    ("""\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: MyApp
  ports:
    - name: http
      protocol: TCP
      port: 80
      targetPort: 9376
  externalIPs:
    - 80.11.12.10
""", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-service", "namespace": "default"},
      "spec": {"selector": {"app": "MyApp"},
               "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9376}],
               "externalIPs": ["80.11.12.10"], "type": "ClusterIP", "sessionAffinity": "None",
               # externally accessible through its external IP: defaulted as for a NodePort
               "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster"}}),
    ("""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
spec:
  selector:
    matchLabels:
      run: my-nginx
  replicas: 2
  template:
    metadata:
      labels:
        run: my-nginx
    spec:
      containers:
      - name: my-nginx
        image: nginx
        ports:
        - containerPort: 80
""", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "my-nginx", "namespace": "default"},
      "spec": {"selector": {"matchLabels": {"run": "my-nginx"}}, "replicas": 2,
               "template": {"metadata": {"labels": {"run": "my-nginx"}},
                            "spec": {"containers": [{"name": "my-nginx", "image": "nginx",
                                                     "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
                                     "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                                     "enableServiceLinks": True, "terminationGracePeriodSeconds": 30}}}}),
    ("""\
apiVersion: v1
kind: Service
metadata:
  name: my-nginx
  labels:
    run: my-nginx
spec:
  ports:
  - port: 80
    protocol: TCP
  selector:
    run: my-nginx

""", {"apiVersion": "v1", "kind": "Service",
      "metadata": {"name": "my-nginx", "labels": {"run": "my-nginx"}, "namespace": "default"},
      "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "selector": {"run": "my-nginx"},
               "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster"}}),
]


@pytest.mark.parametrize("text, stored", SOURCE_EXAMPLES,
                         ids=[f"{i}-{s['kind']}-{s['metadata']['name']}" for i, (_, s) in enumerate(SOURCE_EXAMPLES)])
def test_source_examples_are_accepted_with_defaults(text, stored):
    m = load(text, SRC)
    assert m.objects == (stored,)
    assert not m.has_cluster_doc


def test_source_examples_side_by_side():
    """The selector-less Service and its manual Endpoints, as the source writes them, in one file."""
    text = SOURCE_EXAMPLES[1][0] + "---\n" + SOURCE_EXAMPLES[2][0]
    assert [key(o) for o in load(text, SRC).objects] == [Key("Service", "default", "my-service"),
                                                          Key("Endpoints", "default", "my-service")]


def _seed_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", SEED.read_text(encoding="utf-8"), re.S)


def test_seed_examples_are_these():
    blocks = _seed_blocks()
    served = [b for b in blocks if re.search(r"^kind: (Service|Endpoints|Deployment)$", b, re.M)]
    assert served == [text for text, _ in SOURCE_EXAMPLES]


def test_every_seed_example_is_accepted_or_an_unsupported_kind():
    """Every YAML block of the source: served kinds load; others fail with one clear line, no crash."""
    blocks = _seed_blocks()
    assert len(blocks) == 21
    for text in blocks:
        kind = re.search(r"^kind: (\w+)$", text, re.M)
        if kind is None:  # the last block is an excerpt of `kubectl edit` output ending in "..", not a manifest
            assert error(text) == "f.yaml: line 20, column 1: could not find expected ':'"
            continue
        kind = kind[1]
        if kind in ("Service", "Endpoints", "Deployment"):
            assert len(load(text, SRC).objects) == 1
        elif kind not in KINDS:  # Ingress, IngressClass, Secret: not served yet
            name = re.search(r"^  name: (\S+)$", text, re.M)[1]
            assert error(text) == (f'f.yaml: {kind} "{name}" is invalid: kind: Unsupported value: "{kind}": '
                                   f"supported values: {KINDS_LIST}")


# ---- the file itself ---------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("apiVersion: v1\nkind: Service\nmetadata: {name: web\n",
     "f.yaml: line 4, column 1: expected ',' or '}', but got '<stream end>'"),
    ("apiVersion: v1\nkind: Service\nmetadata:\n\tname: web\n",
     "f.yaml: line 4, column 1: found character '\\t' that cannot start any token"),
    ("apiVersion: v1\nkind: Service\n  metadata: {}\n",
     "f.yaml: line 3, column 11: mapping values are not allowed here"),
    ("- apiVersion: v1\n- kind: Service\n",
     "f.yaml: document 1 is a list, not a Kubernetes object (a mapping with apiVersion, kind and metadata)"),
    ("just a sentence\n",
     "f.yaml: document 1 is a string, not a Kubernetes object (a mapping with apiVersion, kind and metadata)"),
    (svc("{ports: [{port: 80}]}") + "---\n42\n",
     "f.yaml: document 2 is a number, not a Kubernetes object (a mapping with apiVersion, kind and metadata)"),
    ("apiVersion: v1\nkind: List\nitems: [web]\n",
     "f.yaml: document 1, items[0] is a string, not a Kubernetes object (a mapping with apiVersion, kind and "
     "metadata)"),
    # kubectl refuses a key written twice; PyYAML alone would keep the last one silently
    ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n  ports: [{port: 81}]\n",
     'f.yaml: line 6, column 3: mapping key "ports" already defined at line 5'),
    (deploy("  replicas: 2\n  replicas: 3\n"),
     'f.yaml: line 6, column 3: mapping key "replicas" already defined at line 5'),
])
def test_files_that_are_not_manifests(text, message):
    assert error(text) == message


def test_list_kind_is_flattened_and_empty_documents_skipped():
    text = ("---\n---\napiVersion: v1\nkind: List\nitems:\n"
            "- {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 80}]}}\n"
            "- {apiVersion: v1, kind: Service, metadata: {name: b}, spec: {ports: [{port: 80}]}}\n---\n")
    assert [o["metadata"]["name"] for o in objects(text)] == ["a", "b"]


def test_an_alias_bomb_is_refused_before_it_is_expanded():
    """A "billion laughs" (9 levels of 9 aliases: 387 million values) fails at once instead of hanging."""
    lines = ["apiVersion: v1", "kind: Service", "metadata:", "  name: web", "  annotations:", '    a0: &a0 "lol"']
    lines += [f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    assert error("\n".join(lines) + "\n") == (
        "f.yaml: line 1, column 1: the document expands to more than 100000 values through its aliases "
        "(refused, as kubectl refuses excessive aliasing)")


def test_deep_nesting_is_an_error_not_a_crash():
    assert error("a: " + "[" * 5000 + "]" * 5000 + "\n") == "f.yaml: not valid YAML: nested too deeply"


def test_yaml_merge_keys_are_not_duplicates():
    text = ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
            "spec:\n  ports:\n  - &p {port: 80, name: http}\n  - <<: *p\n    port: 81\n    name: alt\n")
    assert [(p["name"], p["port"]) for p in objects(text)[0]["spec"]["ports"]] == [("http", 80), ("alt", 81)]


@pytest.mark.parametrize("text, message", [
    ("apiVersion: v1\nkind: Potato\nmetadata: {name: x}\n",
     f'f.yaml: Potato "x" is invalid: kind: Unsupported value: "Potato": supported values: {KINDS_LIST}'),
    ("apiVersion: v1\nmetadata: {name: x}\n", 'f.yaml: Object "x" is invalid: kind: Required value'),
    ("kind: [Service]\nmetadata: {name: x}\n",
     "f.yaml: Object \"x\" is invalid: kind: Invalid value: []string{\"Service\"}: must be of type string, not array"),
    (svc("{ports: [{port: 80}]}").replace("apiVersion: v1", "apiVersion: apps/v1"),
     'f.yaml: Service "default/web" is invalid: apiVersion: Invalid value: "apps/v1": '
     'no matches for kind "Service" in version "apps/v1": use "v1"'),
    (deploy().replace("apps/v1", "extensions/v1beta1"),
     'f.yaml: Deployment "default/web" is invalid: apiVersion: Invalid value: "extensions/v1beta1": '
     'no matches for kind "Deployment" in version "extensions/v1beta1": use "apps/v1"'),
    (svc("{ports: [{port: 80}]}").replace("apiVersion: v1\n", ""),
     'f.yaml: Service "default/web" is invalid: apiVersion: Required value: kind "Service" is in version "v1"'),
])
def test_kind_and_api_version(text, message):
    assert error(text) == message


@pytest.mark.parametrize("text, message", [
    (deploy("  replica: 2\n"),
     'Deployment "default/web" is invalid: spec.replica: Unknown field: not a field of DeploymentSpec '
     '(did you mean "replicas"?)'),
    (svc("{ports: [{port: 80}]}").replace("spec:", "specs:"),
     'Service "default/web" is invalid: specs: Unknown field: not a field of Service (did you mean "spec"?)'),
    (svc("{ports: [{port: 80, targetport: 8080}]}"),
     'Service "default/web" is invalid: spec.ports[0].targetport: Unknown field: not a field of ServicePort '
     '(did you mean "targetPort"?)'),
    (svc("{ports: [{port: 80}], foo: 1, selectr: {app: web}}"),
     'Service "default/web" is invalid: [spec.foo: Unknown field: not a field of ServiceSpec, '
     'spec.selectr: Unknown field: not a field of ServiceSpec (did you mean "selector"?)]'),
    (pod("[{name: c, image: x, readinessProbe: {httpGet: {port: 80, paht: /}}}]"),
     'Pod "default/p" is invalid: spec.containers[0].readinessProbe.httpGet.paht: Unknown field: '
     'not a field of HTTPGetAction (did you mean "path"?)'),
])
def test_unknown_fields(text, message):
    assert error(text) == f"{SRC}: {message}"


@pytest.mark.parametrize("text, message", [
    (deploy('  replicas: "two"\n'),
     'spec.replicas: Invalid value: "two": must be of type integer, not string'),
    (deploy("  replicas: 2.5\n"), "spec.replicas: Invalid value: 2.5: must be of type integer, not number"),
    (deploy("  replicas: true\n"), "spec.replicas: Invalid value: true: must be of type integer, not boolean"),
    (deploy("  replicas: 99999999999\n"),
     "spec.replicas: Invalid value: 99999999999: must be a 32-bit integer (-2147483648 to 2147483647)"),
    (deploy(containers="{name: web, image: nginx}"),
     "spec.template.spec.containers: Invalid value: {'name': 'web', 'image': 'nginx'}: "
     "must be of type array, not object"),
    (deploy(pod_extra=", hostNetwork: yess"),
     'spec.template.spec.hostNetwork: Invalid value: "yess": must be of type boolean, not string'),
    (deploy(labels="{app: web, version: 1}"),
     "spec.template.metadata.labels.version: Invalid value: 1: must be of type string, not integer"),
])
def test_wrong_types(text, message):
    assert error(text) == f'{SRC}: Deployment "default/web" is invalid: {message}'


def test_wrong_types_all_reported_at_once():
    assert error(svc('{ports: [{port: "80", targetPort: 8.5}], type: 1}')) == (
        'f.yaml: Service "default/web" is invalid: [spec.ports[0].port: Invalid value: "80": must be of type '
        'integer, not string, spec.ports[0].targetPort: Invalid value: 8.5: must be of type int-or-string, not '
        'number, spec.type: Invalid value: 1: must be of type string, not integer]')


# ---- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    (deploy().replace("name: web}", "name: ../x}"),
     f'Deployment "default/../x" is invalid: metadata.name: Invalid value: "../x": {DNS1123_SUBDOMAIN_MSG}'),
    (deploy().replace("name: web}", "name: Web}"),
     f'Deployment "default/Web" is invalid: metadata.name: Invalid value: "Web": {DNS1123_SUBDOMAIN_MSG}'),
    (pod("[{name: c, image: x}]", meta="{name: " + "p" * 300 + "}"),
     f'Pod "default/{"p" * 300}" is invalid: metadata.name: Invalid value: "{"p" * 300}": '
     "must be no more than 253 characters"),
    (svc("{ports: [{port: 80}]}", meta="{name: " + "s" * 300 + "}"),
     f'Service "default/{"s" * 300}" is invalid: metadata.name: Invalid value: "{"s" * 300}": '
     "must be no more than 63 characters"),
    (svc("{ports: [{port: 80}]}", meta="{name: My-Service}"),
     f'Service "default/My-Service" is invalid: metadata.name: Invalid value: "My-Service": {DNS1035_LABEL_MSG}'),
    # a Service name is a DNS-1035 label: it becomes a DNS name and an environment variable prefix
    (svc("{ports: [{port: 80}]}", meta="{name: 1web}"),
     f'Service "default/1web" is invalid: metadata.name: Invalid value: "1web": {DNS1035_LABEL_MSG}'),
    (svc("{ports: [{port: 80}]}", meta="{name: web.v2}"),
     f'Service "default/web.v2" is invalid: metadata.name: Invalid value: "web.v2": {DNS1035_LABEL_MSG}'),
    (svc("{ports: [{port: 80}]}", meta="{name: web, namespace: ../etc}"),
     f'Service "../etc/web" is invalid: metadata.namespace: Invalid value: "../etc": {DNS1123_LABEL_MSG}'),
    (svc("{ports: [{port: 80}]}", meta="{name: web, namespace: team.a}"),
     'Service "team.a/web" is invalid: metadata.namespace: Invalid value: "team.a": must not contain dots'),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: Prod}\n",
     f'Namespace "Prod" is invalid: metadata.name: Invalid value: "Prod": {DNS1123_LABEL_MSG}'),
    (svc("{ports: [{port: 80}]}", meta="{labels: {app: web}}"),
     'Service "default/" is invalid: metadata.name: Required value: name or generateName is required'),
    (svc("{ports: [{port: 80}]}", meta="{name: web, labels: {app: -web, app/x/y: a}}"),
     f'Service "default/web" is invalid: [metadata.labels: Invalid value: "-web": {LABEL_VALUE_MSG}, '
     'metadata.labels: Invalid value: "app/x/y": a valid label key must consist of alphanumeric characters, '
     "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
     "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS "
     "subdomain prefix and '/' (e.g. 'example.com/MyName')]"),
    (svc("{ports: [{port: 80}]}", meta="{name: web, labels: {Example.com/app: web}}"),
     'Service "default/web" is invalid: metadata.labels: Invalid value: "Example.com/app": prefix part '
     + DNS1123_SUBDOMAIN_MSG),
])
def test_bad_names(text, message):
    assert error(text) == f"{SRC}: {message}"


@pytest.mark.parametrize("name", ["web\n", "web\nx", "web ", "wéb", "web/..", ""])
def test_hostile_names_are_rejected_at_the_name(name):
    """A name reaches netns names and paths: nothing but a DNS name may pass, not even a final newline."""
    with pytest.raises(InvalidObject) as e:
        admit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "c", "image": "x"}]}})
    assert [f.path for f in e.value.errors] == ["metadata.name"]


def test_names_accepted():
    text = (svc("{ports: [{port: 80}]}", meta="{name: a, namespace: kube-system, labels: {example.com/app: A_b.c}}")
            + "---\n" + pod("[{name: c, image: x}]", meta="{name: web.v2-0, namespace: " + "n" * 63 + "}")
            + "---\n" + svc("{ports: [{port: 80}]}", meta="{name: " + "s" * 63 + ", namespace: ''}"))
    assert [str(key(o)) for o in objects(text)] == ["kube-system/a", f"{'n' * 63}/web.v2-0", f"default/{'s' * 63}"]


@pytest.mark.parametrize("rule, value, msgs", [
    (names.dns1123_label, "123-abc", []),
    (names.dns1123_label, "a" * 64, ["must be no more than 63 characters"]),
    (names.dns1123_label, "a.b", ["must not contain dots"]),
    (names.dns1123_label, "-a", [DNS1123_LABEL_MSG]),
    (names.dns1123_subdomain, "a.b-c.d", []),
    (names.dns1123_subdomain, "a..b", [DNS1123_SUBDOMAIN_MSG]),
    (names.dns1123_subdomain, ("a" * 63 + ".") * 4 + "a",
     ["must be no more than 253 characters"]),
    (names.dns1035_label, "abc-123", []),
    (names.dns1035_label, "123-abc", [DNS1035_LABEL_MSG]),
    (names.iana_svc_name, "123-abc", []),
    (names.iana_svc_name, "web", []),
    (names.iana_svc_name, "123_abc", ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"]),
    (names.iana_svc_name, "-web", ["must not begin or end with a hyphen"]),
    (names.iana_svc_name, "web-", ["must not begin or end with a hyphen"]),
    (names.iana_svc_name, "1234", ["must contain at least one letter (a-z)"]),
    (names.iana_svc_name, "a--b", ["must not contain consecutive hyphens"]),
    (names.iana_svc_name, "a-very-long-port-name", ["must be no more than 15 characters"]),
    (names.iana_svc_name, "-Web--", ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                                     "must not contain consecutive hyphens", "must not begin or end with a hyphen"]),
    (names.label_value, "", []),
    (names.label_value, "A-b_c.9", []),
    (names.label_value, "v" * 64, ["must be no more than 63 characters"]),
    (names.label_key, "app.kubernetes.io/name", []),
    (names.label_key, "/name", ["prefix part must be non-empty"]),
    (names.label_key, "example.com/", ["name part must be non-empty", LABEL_NAME_MSG]),
    (names.label_key, "n" * 64, ["name part must be no more than 63 characters"]),
])
def test_name_rules(rule, value, msgs):
    assert rule(value) == msgs


# ---- several objects in one file -----------------------------------------------------------

def test_the_same_object_twice_is_an_error():
    one = svc("{ports: [{port: 80}]}")
    assert error(one + "---\n" + one) == 'f.yaml: Service "default/web" is defined twice (objects 1 and 2)'
    explicit = svc("{ports: [{port: 81}]}", meta="{name: web, namespace: default}")
    assert error(one + "---\n" + pod("[{name: c, image: x}]") + "---\n" + explicit) == \
        'f.yaml: Service "default/web" is defined twice (objects 1 and 3)'


def test_the_same_name_in_other_namespaces_or_kinds_is_fine():
    text = (svc("{ports: [{port: 80}]}") + "---\n" + svc("{ports: [{port: 80}]}", meta="{name: web, namespace: b}")
            + "---\n" + deploy() + "---\n" + endpoints("[{ip: 10.1.2.3}]").replace("my-service", "web"))
    assert [str(key(o)) for o in objects(text)] == ["default/web", "b/web", "default/web", "default/web"]


def test_a_bad_object_names_its_file_and_nothing_after_it_matters():
    text = svc("{ports: [{port: 80}]}") + "---\n" + svc("{ports: [{port: 0, targetPort: 80}]}", meta="{name: db}")
    assert error(text) == ('f.yaml: Service "default/db" is invalid: spec.ports[0].port: Invalid value: 0: '
                           "must be between 1 and 65535, inclusive")


# ---- Deployments ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    (deploy("  replicas: -1\n"), "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
    (deploy(labels="{app: other}"),
     "spec.template.metadata.labels: Invalid value: {'app': 'other'}: `selector` does not match template `labels`"),
    (deploy(labels="{}"),
     "spec.template.metadata.labels: Invalid value: {}: `selector` does not match template `labels`"),
    # the API server reports every error in one answer, not only the first
    (deploy("  replicas: -1\n", labels="{app: other}"),
     "[spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.template.metadata.labels: "
     "Invalid value: {'app': 'other'}: `selector` does not match template `labels`]"),
    (deploy(selector="{matchExpressions: [{key: app, operator: In, values: [db, cache]}]}"),
     "spec.template.metadata.labels: Invalid value: {'app': 'web'}: `selector` does not match template `labels`"),
    (deploy().replace("  selector: {matchLabels: {app: web}}\n", ""), "spec.selector: Required value"),
    (deploy(selector="{}"), "spec.selector: Invalid value: {}: empty selector is invalid for deployment"),
    (deploy(selector="{matchExpressions: [{key: app, operator: Equals, values: [web]}]}"),
     'spec.selector.matchExpressions[0].operator: Invalid value: "Equals": not a valid selector operator'),
    (deploy(selector="{matchExpressions: [{key: app, operator: In}]}"),
     "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or "
     "'NotIn'"),
    (deploy(selector="{matchExpressions: [{key: app, operator: Exists, values: [web]}]}"),
     "spec.selector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or "
     "'DoesNotExist'"),
    (deploy(selector="{matchExpressions: [{operator: Exists}]}"),
     '[spec.selector.matchExpressions[0].key: Invalid value: "": name part must be non-empty, '
     f'spec.selector.matchExpressions[0].key: Invalid value: "": {LABEL_NAME_MSG}]'),
    (deploy(selector="{matchLabels: {app: we b}}", labels="{app: we b}"),
     f'[spec.selector.matchLabels: Invalid value: "we b": {LABEL_VALUE_MSG}, '
     f'spec.template.metadata.labels: Invalid value: "we b": {LABEL_VALUE_MSG}]'),
    (deploy(pod_extra=", restartPolicy: Never"),
     'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"'),
    (deploy(containers="[]"), "spec.template.spec.containers: Required value"),
])
def test_deployment_rules(text, message):
    assert error(text) == f'{SRC}: Deployment "default/web" is invalid: {message}'


def test_deployment_defaults():
    d = objects(deploy(selector="{matchExpressions: [{key: app, operator: In, values: [web]}]}"))[0]
    assert d["spec"]["replicas"] == 1
    assert objects(deploy("  replicas: 0\n"))[0]["spec"]["replicas"] == 0
    # `replicas:` with nothing after it is null: absent, so defaulted, as the API server decodes it
    assert objects(deploy("  replicas:\n"))[0]["spec"]["replicas"] == 1


# ---- Services ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("{ports: [{port: 80}, {port: 443}]}",
     "[spec.ports[0].name: Required value, spec.ports[1].name: Required value]"),
    ("{ports: [{port: 80, name: http}, {port: 443}]}", "spec.ports[1].name: Required value"),
    ("{ports: [{port: 80, name: http}, {port: 443, name: http}]}", 'spec.ports[1].name: Duplicate value: "http"'),
    ("{ports: [{port: 80, name: a}, {port: 80, name: b}]}",
     "spec.ports[1]: Duplicate value: {'port': 80, 'protocol': 'TCP'}"),
    ("{ports: [{port: 80, name: 123_abc}]}", f'spec.ports[0].name: Invalid value: "123_abc": {DNS1123_LABEL_MSG}'),
    ("{ports: [{port: 80, name: -web}]}", f'spec.ports[0].name: Invalid value: "-web": {DNS1123_LABEL_MSG}'),
    ("{ports: [{port: 80, targetPort: -web}]}",
     'spec.ports[0].targetPort: Invalid value: "-web": must not begin or end with a hyphen'),
    ("{ports: [{port: 80, targetPort: 70000}]}",
     "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
    # the defaulted targetPort (= port) is checked too, and reported, as the API server does
    ("{ports: [{port: 0}]}", "[spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive, "
                             "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive]"),
    ("{ports: [{port: 65536, targetPort: 80}]}",
     "spec.ports[0].port: Invalid value: 65536: must be between 1 and 65535, inclusive"),
    ("{ports: [{targetPort: 80}]}", "spec.ports[0].port: Required value"),
    ("{ports: [~]}", "spec.ports[0].port: Required value"),
    ("{ports: []}", "spec.ports: Required value"),
    ("{selector: {app: web}}", "spec.ports: Required value"),
    ("{ports: [{port: 80, protocol: HTTP}]}",
     'spec.ports[0].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"'),
    ("{ports: [{port: 80}], type: Ingress}",
     'spec.type: Unsupported value: "Ingress": supported values: "ClusterIP", "ExternalName", "LoadBalancer", '
     '"NodePort"'),
    ("{ports: [{port: 80, nodePort: 30080}]}",
     "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"),
    ("{ports: [{port: 80, nodePort: 70000}], type: NodePort}",
     "spec.ports[0].nodePort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ("{ports: [{port: 80}], type: NodePort, clusterIP: None}",
     "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for NodePort services"),
    ("{ports: [{port: 80}], type: LoadBalancer, clusterIP: None}",
     "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services"),
    ("{ports: [{port: 80}], clusterIP: 10.96.0.300}",
     'spec.clusterIP: Invalid value: "10.96.0.300": must be a valid IP address, (e.g. 10.9.8.7)'),
    ("{ports: [{port: 80}], externalIPs: [127.0.0.1]}",
     'spec.externalIPs[0]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)'),
    ("{ports: [{port: 80}], externalIPs: [0.0.0.0]}",
     'spec.externalIPs[0]: Invalid value: "0.0.0.0": may not be unspecified (0.0.0.0)'),
    ("{ports: [{port: 80}], externalIPs: [example.com]}",
     'spec.externalIPs[0]: Invalid value: "example.com": must be a valid IP address, (e.g. 10.9.8.7)'),
    ("{ports: [{port: 80}], externalTrafficPolicy: Local}",
     'spec.externalTrafficPolicy: Invalid value: "Local": may only be set for externally-accessible services'),
    ("{ports: [{port: 80}], type: NodePort, externalTrafficPolicy: Global}",
     'spec.externalTrafficPolicy: Unsupported value: "Global": supported values: "Cluster", "Local"'),
    ("{ports: [{port: 80}], internalTrafficPolicy: local}",
     'spec.internalTrafficPolicy: Unsupported value: "local": supported values: "Cluster", "Local"'),
    ("{ports: [{port: 80}], sessionAffinity: Sticky}",
     'spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None"'),
    ("{ports: [{port: 80}], sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}}",
     "spec.sessionAffinityConfig: Forbidden: must not be set when session affinity is None"),
    ("{ports: [{port: 80}], sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}}",
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than "
     "86400"),
    ("{ports: [{port: 80}], sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}}",
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: must be greater than 0 and less "
     "than 86400"),
    ("{ports: [{port: 80}], selector: {app: My App}}",
     f'spec.selector: Invalid value: "My App": {LABEL_VALUE_MSG}'),
    ("{type: ExternalName}", "spec.externalName: Required value"),
    ("{type: ExternalName, externalName: my_db.example.com}",
     f'spec.externalName: Invalid value: "my_db.example.com": {DNS1123_SUBDOMAIN_MSG}'),
    ("{type: ExternalName, externalName: db.example.com, clusterIP: 10.96.0.5}",
     "spec.clusterIP: Forbidden: may not be set for ExternalName services"),
    # A source range is a CIDR and nothing else: one with a newline once wrote its own rule
    # into every node's iptables-restore input. The path has the API server's capital L.
    ("{type: LoadBalancer, ports: [{port: 80}], loadBalancerSourceRanges: [not-a-cidr]}",
     'spec.LoadBalancerSourceRanges[0]: Invalid value: "not-a-cidr": must be a valid CIDR value, '
     "(e.g. 10.9.8.0/24 or 2001:db8::/64)"),
    ('{type: LoadBalancer, ports: [{port: 80}], loadBalancerSourceRanges: ["10.0.0.0/8\\n-A KUBE-SERVICES -j RETURN"]}',
     'spec.LoadBalancerSourceRanges[0]: Invalid value: "10.0.0.0/8\\n-A KUBE-SERVICES -j RETURN": must be a valid '
     "CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"),
    ("{type: LoadBalancer, ports: [{port: 80}], loadBalancerSourceRanges: [10.0.0.1]}",
     'spec.LoadBalancerSourceRanges[0]: Invalid value: "10.0.0.1": must be a valid CIDR value, '
     "(e.g. 10.9.8.0/24 or 2001:db8::/64)"),
    ("{type: NodePort, ports: [{port: 80}], loadBalancerSourceRanges: [10.0.0.0/8]}",
     "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'"),
    ("{type: LoadBalancer, ports: [{port: 80}], loadBalancerIP: 10.0.0.300}",
     'spec.loadBalancerIP: Invalid value: "10.0.0.300": must be a valid IP address, (e.g. 10.9.8.7 or '
     "2001:db8::ffff)"),
])
def test_service_rules(spec, message):
    assert error(svc(spec)) == f'{SRC}: Service "default/web" is invalid: {message}'


def test_source_ranges_may_be_padded_with_spaces():
    """As upstream (a leftover of the annotation): the entry is trimmed before it is checked."""
    ok = objects(svc('{type: LoadBalancer, ports: [{port: 80}], loadBalancerSourceRanges: [" 10.0.0.0/8 "]}'))[0]
    assert ok["spec"]["loadBalancerSourceRanges"] == [" 10.0.0.0/8 "]


def test_service_port_names_of_the_source():
    """The source's rule: `123-abc` and `web` are valid port names, `123_abc` and `-web` are not."""
    ok = objects(svc("{ports: [{port: 80, name: 123-abc}, {port: 81, name: web}]}"))[0]
    assert [p["name"] for p in ok["spec"]["ports"]] == ["123-abc", "web"]
    assert error(svc("{ports: [{port: 80, name: 123_abc}, {port: 81, name: -web}]}")) == (
        f'f.yaml: Service "default/web" is invalid: [spec.ports[0].name: Invalid value: "123_abc": '
        f'{DNS1123_LABEL_MSG}, spec.ports[1].name: Invalid value: "-web": {DNS1123_LABEL_MSG}]')


@pytest.mark.parametrize("spec, expected", [
    ("{ports: [{port: 80}]}", {"type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                               "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}),
    # an unset, 0 or "" targetPort is the port (SetDefaults_Service)
    ("{ports: [{port: 80, targetPort: 0, protocol: UDP}]}",
     {"type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
      "ports": [{"port": 80, "protocol": "UDP", "targetPort": 80}]}),
    ("{ports: [{port: 80, targetPort: http}], sessionAffinity: ClientIP}",
     {"type": "ClusterIP", "sessionAffinity": "ClientIP", "internalTrafficPolicy": "Cluster",
      "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
      "ports": [{"port": 80, "protocol": "TCP", "targetPort": "http"}]}),
    ("{ports: [{port: 53, name: dns, protocol: UDP}, {port: 53, name: dns-tcp}], clusterIP: None}",
     {"type": "ClusterIP", "clusterIP": "None", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
      "ports": [{"port": 53, "name": "dns", "protocol": "UDP", "targetPort": 53},
                {"port": 53, "name": "dns-tcp", "protocol": "TCP", "targetPort": 53}]}),
    ("{clusterIP: None, selector: {app: web}}",
     {"type": "ClusterIP", "clusterIP": "None", "selector": {"app": "web"}, "sessionAffinity": "None",
      "internalTrafficPolicy": "Cluster"}),
    ("{type: LoadBalancer, ports: [{port: 80}], externalTrafficPolicy: Local}",
     {"type": "LoadBalancer", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
      "externalTrafficPolicy": "Local", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}),
    ("{type: ExternalName, externalName: db.example.com.}",
     {"type": "ExternalName", "externalName": "db.example.com.", "sessionAffinity": "None"}),
])
def test_service_defaults(spec, expected):
    assert objects(svc(spec))[0]["spec"] == expected


# ---- Pods ----------------------------------------------------------------------------------

C = "spec.containers[0]"


@pytest.mark.parametrize("containers, extra, message", [
    ("[]", "", "spec.containers: Required value"),
    ("[{name: c}]", "", f"{C}.image: Required value"),
    ("[{image: x}]", "", f"{C}.name: Required value"),
    ("[{name: c, image: x}, {name: c, image: y}]", "", 'spec.containers[1].name: Duplicate value: "c"'),
    ("[{name: C_1, image: x}]", "", f'{C}.name: Invalid value: "C_1": {DNS1123_LABEL_MSG}'),
    ("[{name: c, image: x, ports: [{name: 123_abc, containerPort: 80}, {name: -web, containerPort: 81}]}]", "",
     f'[{C}.ports[0].name: Invalid value: "123_abc": must contain only alpha-numeric characters (a-z, 0-9), and '
     f'hyphens (-), {C}.ports[1].name: Invalid value: "-web": must not begin or end with a hyphen]'),
    ("[{name: c, image: x, ports: [{name: web, containerPort: 80}, {name: web, containerPort: 81}]}]", "",
     f'{C}.ports[1].name: Duplicate value: "web"'),
    ("[{name: c, image: x, ports: [{containerPort: 0}]}]", "", f"{C}.ports[0].containerPort: Required value"),
    ("[{name: c, image: x, ports: [{containerPort: 80, hostPort: 65536}]}]", "",
     f"{C}.ports[0].hostPort: Invalid value: 65536: must be between 1 and 65535, inclusive"),
    ("[{name: c, image: x, ports: [{containerPort: 80, protocol: tcp}]}]", "",
     f'{C}.ports[0].protocol: Unsupported value: "tcp": supported values: "SCTP", "TCP", "UDP"'),
    ("[{name: c, image: x, env: [{value: a}]}]", "", f"{C}.env[0].name: Required value"),
    ("[{name: c, image: x, readinessProbe: {periodSeconds: 5}}]", "",
     f"{C}.readinessProbe: Required value: must specify a handler type"),
    ("[{name: c, image: x, readinessProbe: {exec: {command: [cat]}, tcpSocket: {port: 80}}}]", "",
     f"{C}.readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"),
    ("[{name: c, image: x, startupProbe: {exec: {command: []}}}]", "",
     f"{C}.startupProbe.exec.command: Required value"),
    ("[{name: c, image: x, readinessProbe: {httpGet: {path: /healthz}}}]", "",
     f"{C}.readinessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive"),
    ("[{name: c, image: x, readinessProbe: {tcpSocket: {port: Web}}}]", "",
     f'{C}.readinessProbe.tcpSocket.port: Invalid value: "Web": must contain only alpha-numeric characters '
     "(a-z, 0-9), and hyphens (-)"),
    ("[{name: c, image: x, readinessProbe: {httpGet: {port: 80, scheme: FTP}}}]", "",
     f'{C}.readinessProbe.httpGet.scheme: Unsupported value: "FTP": supported values: "HTTP", "HTTPS"'),
    ("[{name: c, image: x, livenessProbe: {tcpSocket: {port: 80}, successThreshold: 2}}]", "",
     f"{C}.livenessProbe.successThreshold: Invalid value: 2: must be 1"),
    ("[{name: c, image: x, readinessProbe: {tcpSocket: {port: 80}, periodSeconds: -1}}]", "",
     f"{C}.readinessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0"),
    ("[{name: c, image: x}]", ", restartPolicy: Sometimes",
     'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'),
    ("[{name: c, image: x}]", ", dnsPolicy: None",
     "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"),
    ("[{name: c, image: x}]", ", dnsPolicy: None, dnsConfig: {searches: [a.b]}",
     "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is "
     "None"),
    # No string may add a line to resolv.conf or reach it unparsed (the security findings of #16).
    ("[{name: c, image: x}]", ', dnsConfig: {searches: ["a.b\\nnameserver 6.6.6.6"]}',
     'spec.dnsConfig.searches[0]: Invalid value: "a.b\\nnameserver 6.6.6.6": ' + DNS1123_SUBDOMAIN_MSG),
    ("[{name: c, image: x}]", ", dnsConfig: {nameservers: [not-an-ip]}",
     'spec.dnsConfig.nameservers[0]: Invalid value: "not-an-ip": must be a valid IP address, '
     "(e.g. 10.9.8.7 or 2001:db8::ffff)"),
    ("[{name: c, image: x}]", ", dnsConfig: {nameservers: [1.1.1.1, 1.1.1.2, 1.1.1.3, 1.1.1.4]}",
     'spec.dnsConfig.nameservers: Invalid value: []string{"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"}: '
     "must not have more than 3 nameservers"),
    ("[{name: c, image: x}]", ", dnsConfig: {searches: [" + ",".join(["a"] * 33) + "]}",
     "spec.dnsConfig.searches: Invalid value: []string{" + ", ".join(['"a"'] * 33) + "}: "
     "must not have more than 32 search paths"),
    ("[{name: c, image: x}]", ', dnsConfig: {options: [{name: "ndots:1\\nnameserver"}]}',
     'spec.dnsConfig.options[0].name: Invalid value: "ndots:1\\nnameserver": '
     "must not contain white space or control characters"),
    ("[{name: c, image: x}]", ", dnsConfig: {options: [{value: '2'}]}",
     "spec.dnsConfig.options[0]: Required value: must not be empty"),
    ("[{name: c, image: x, env: [{name: 1BAD, value: x}]}]", "",
     f'{C}.env[0].name: Invalid value: "1BAD": a valid environment variable name must consist of alphabetic '
     "characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or "
     "'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"),
    ("[{name: c, image: x, ports: [{containerPort: 80, hostIP: 'x y'}]}]", "",
     f'{C}.ports[0].hostIP: Invalid value: "x y": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)'),
    ("[{name: c, image: x}]", ", hostname: my_host",
     f'spec.hostname: Invalid value: "my_host": {DNS1123_LABEL_MSG}'),
])
def test_pod_rules(containers, extra, message):
    assert error(pod(containers, extra)) == f'{SRC}: Pod "default/p" is invalid: {message}'


def test_pod_defaults():
    p = objects(pod("[{name: c, image: x, ports: [{containerPort: 80, hostPort: 0}], "
                    "readinessProbe: {httpGet: {port: 80}, periodSeconds: 0}}]"))[0]
    assert p["spec"] == {
        "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 0, "protocol": "TCP"}],
                        # SetDefaults_Probe: 0 is unset; hostPort 0 is "no host port"
                        "readinessProbe": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                                           "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
                                           "failureThreshold": 3, "initialDelaySeconds": 0}}],
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "enableServiceLinks": True,
        "terminationGracePeriodSeconds": 30}


# ---- Endpoints -----------------------------------------------------------------------------

A = "subsets[0].addresses[0]"


@pytest.mark.parametrize("addresses, ports, message", [
    ("[{ip: 127.0.0.1}]", "[{port: 9376}]",
     f'{A}.ip: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)'),
    ("[{ip: 169.254.1.1}]", "[{port: 9376}]",
     f'{A}.ip: Invalid value: "169.254.1.1": may not be in the link-local range (169.254.0.0/16, fe80::/10)'),
    ("[{ip: 224.0.0.251}]", "[{port: 9376}]",
     f'{A}.ip: Invalid value: "224.0.0.251": may not be in the link-local multicast range (224.0.0.0/24, '
     "ff02::/10)"),
    ("[{ip: 0.0.0.0}]", "[{port: 9376}]", f'{A}.ip: Invalid value: "0.0.0.0": may not be unspecified (0.0.0.0)'),
    ("[{ip: 10.1.2}]", "[{port: 9376}]",
     f'{A}.ip: Invalid value: "10.1.2": must be a valid IP address, (e.g. 10.9.8.7)'),
    ("[{hostname: web-0}]", "[{port: 9376}]", f"{A}.ip: Required value"),
    ("[{ip: 10.1.2.3, hostname: Web_0}]", "[{port: 9376}]",
     f'{A}.hostname: Invalid value: "Web_0": {DNS1123_LABEL_MSG}'),
    ("[{ip: 10.1.2.3}]", "[{port: 9376}, {port: 9377}]",
     "[subsets[0].ports[0].name: Required value, subsets[0].ports[1].name: Required value]"),
    ("[{ip: 10.1.2.3}]", "[{port: 0}]",
     "subsets[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
    ("[{ip: 10.1.2.3}]", "[{port: 80, name: Http}]",
     f'subsets[0].ports[0].name: Invalid value: "Http": {DNS1123_LABEL_MSG}'),
])
def test_endpoints_rules(addresses, ports, message):
    assert error(endpoints(addresses, ports)) == f'{SRC}: Endpoints "default/my-service" is invalid: {message}'


def test_endpoints_not_ready_addresses_are_checked_too():
    text = ("apiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\n"
            "subsets: [{notReadyAddresses: [{ip: 127.0.0.2}], ports: [{port: 5432}]}]\n")
    assert error(text) == ('f.yaml: Endpoints "default/db" is invalid: subsets[0].notReadyAddresses[0].ip: '
                           'Invalid value: "127.0.0.2": may not be in the loopback range (127.0.0.0/8, ::1/128)')


# ---- nodes named by Pods -------------------------------------------------------------------

def test_node_name_must_name_a_node():
    assert error(pod("[{name: c, image: x}]", ", nodeName: node-3")) == (
        "f.yaml: Pod \"default/p\" is invalid: spec.nodeName: Not found: \"node-3\": the cluster's nodes are "
        "node-1, node-2")
    assert error(deploy(pod_extra=", nodeName: worker")) == (
        "f.yaml: Deployment \"default/web\" is invalid: spec.template.spec.nodeName: Not found: \"worker\": the "
        "cluster's nodes are node-1, node-2")
    cluster = "apiVersion: nsk.io/v1alpha1\nkind: Cluster\nspec: {nodes: [{name: b}, {name: a}]}\n---\n"
    assert error(cluster + pod("[{name: c, image: x}]", ", nodeName: node-1")) == (
        "f.yaml: Pod \"default/p\" is invalid: spec.nodeName: Not found: \"node-1\": the cluster's nodes are a, b")
    m = load(cluster + pod("[{name: c, image: x}]", ", nodeName: b"), SRC)
    assert m.has_cluster_doc and m.objects[0]["spec"]["nodeName"] == "b"


def test_node_name_must_be_a_node_name():
    assert error(pod("[{name: c, image: x}]", ", nodeName: ../node-1")) == (
        f'f.yaml: Pod "default/p" is invalid: spec.nodeName: Invalid value: "../node-1": {DNS1123_SUBDOMAIN_MSG}')


# ---- null, absent and odd YAML ---------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    # YAML's null is an absent field, as the API server's JSON decoding makes it: no crash
    ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n", "spec.ports: Required value"),
    ("apiVersion: v1\nkind: Service\nmetadata:\nspec: {ports: [{port: 80}]}\n",
     "metadata.name: Required value: name or generateName is required"),
    (pod("[~]"), f"[{C}.name: Required value, {C}.image: Required value]"),
    (pod("[{name: c, image: x, env: [~]}]"), f"{C}.env[0].name: Required value"),
    (pod("[{name: c, image: x, readinessProbe: {httpGet: ~}}]"),
     f"{C}.readinessProbe: Required value: must specify a handler type"),
])
def test_nulls_are_absent_fields(text, message):
    with pytest.raises(InvalidObject) as e:
        load(text, SRC)
    assert str(e.value).partition(" is invalid: ")[2] == message


def test_nulls_and_non_string_keys_decode_as_kubectl_sends_them():
    s = objects(svc("{ports: [{port: 80}], selector: {true: a, 1: b}}",
                    meta="{name: web, namespace: ~, labels: {app: ~}}"))[0]
    assert s["metadata"] == {"name": "web", "namespace": "default", "labels": {"app": ""}}
    assert s["spec"]["selector"] == {"true": "a", "1": "b"}
    e = objects("apiVersion: v1\nkind: Endpoints\nmetadata: {name: x}\nsubsets: [~]\n")[0]
    assert e["subsets"] == [{}]


def test_admit_does_not_change_its_input():
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    before = repr(doc)
    assert admit(doc)["spec"]["ports"][0]["targetPort"] == 80
    assert repr(doc) == before
    assert admit(admit(doc)) == admit(doc)  # defaults are idempotent: re-admitting a stored object changes nothing


# ---- nsk.errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("err, text", [
    (required("spec.ports[1].name"), "spec.ports[1].name: Required value"),
    (required("spec.selector", "needed"), "spec.selector: Required value: needed"),
    (invalid("spec.replicas", -1, "must be greater than or equal to 0"),
     "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
    (invalid("spec.clusterIP", "x", "bad"), 'spec.clusterIP: Invalid value: "x": bad'),
    (invalid("spec.hostNetwork", True, "bad"), "spec.hostNetwork: Invalid value: true: bad"),
    (invalid("spec.x", None, "bad"), "spec.x: Invalid value: null: bad"),
    (unsupported("spec.type", "Foo", ["A", "B"]), 'spec.type: Unsupported value: "Foo": supported values: "A", "B"'),
    (duplicate("spec.ports[1].name", "http"), 'spec.ports[1].name: Duplicate value: "http"'),
    (FieldError("spec.ports[0].nodePort", "Forbidden", detail="may not be used"),
     "spec.ports[0].nodePort: Forbidden: may not be used"),
    (FieldError("spec.foo", "Unknown field"), "spec.foo: Unknown field"),
])
def test_field_error_text(err, text):
    assert str(err) == text


def test_invalid_object_text():
    one = InvalidObject("Deployment", "default/web", [invalid("spec.replicas", -1, "must be greater than or equal "
                                                                                   "to 0")])
    assert str(one) == ('Deployment "default/web" is invalid: spec.replicas: Invalid value: -1: '
                        "must be greater than or equal to 0")
    two = InvalidObject("Service", "default/web", [required("spec.ports[0].name"), required("spec.ports[1].name")],
                        "web.yaml")
    assert str(two) == ('web.yaml: Service "default/web" is invalid: '
                        "[spec.ports[0].name: Required value, spec.ports[1].name: Required value]")
    assert isinstance(two, NskError) and two.kind == "Service" and len(two.errors) == 2


def test_string_values_are_quoted_like_go():
    assert str(invalid("metadata.name", 'a"b\nc', "bad")) == 'metadata.name: Invalid value: "a\\"b\\nc": bad'


# ---- nsk.api.objects ---------------------------------------------------------------------

@pytest.mark.parametrize("word, kind", [
    ("svc", "Service"), ("services", "Service"), ("Service", "Service"), ("ep", "Endpoints"),
    ("endpoints", "Endpoints"), ("po", "Pod"), ("pods", "Pod"), ("deploy", "Deployment"),
    ("deployments.apps", "Deployment"), ("deployment.apps", "Deployment"), ("ns", "Namespace"), ("no", "Node"),
    ("ingress", None), ("", None),
])
def test_the_words_a_user_may_type_for_a_kind(word, kind):
    if kind is None:
        with pytest.raises(NskError, match="the server doesn't have a resource type"):
            registry.lookup(word)
    else:
        assert registry.lookup(word).kind == kind


def test_type_name_and_key():
    assert registry.resource("Deployment").type_name == "deployment.apps"
    assert registry.resource("Pod").type_name == "pod"
    # admission drops a namespace given to a cluster-scoped kind, as the API server ignores it
    ns = admit({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "namespace": "x"}})
    assert key(ns) == Key("Namespace", "", "prod")
    assert str(Key("Namespace", "", "prod")) == "prod" and str(Key("Pod", "a", "b")) == "a/b"


@pytest.mark.parametrize("selector, labels, ok", [
    ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "y"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
    ({"matchLabels": {}}, {}, True),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}]}, {"env": "b"}, True),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["a"]}]}, {}, False),
    ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["a"]}]}, {"env": "a"}, False),
    ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, {"env": ""}, True),
    ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, {"env": ""}, False),
])
def test_matches(selector, labels, ok):
    assert matches(selector, labels) is ok


@pytest.mark.parametrize("text, labels, ok", [
    ("run=my-nginx", {"run": "my-nginx"}, True),
    ("run==my-nginx", {"run": "other"}, False),
    ("run!=my-nginx", {}, True),
    ("app,!canary", {"app": "x"}, True),
    ("app,!canary", {"app": "x", "canary": "1"}, False),
    ("env in (prod, dev),tier notin (fe)", {"env": "dev", "tier": "be"}, True),
    ("env in (prod,dev)", {"env": "test"}, False),
    ("env in (prod,dev)", {}, False),
    ("tier notin (fe)", {}, True),
    ("", {"a": "b"}, True),
])
def test_label_selector_flag(text, labels, ok):
    assert selected(parse_label_selector(text), labels) is ok


@pytest.mark.parametrize("text", ["env in (a,b", "a b", "=x", "a=b=c", "!", "a)"])
def test_bad_label_selector_flag(text):
    with pytest.raises(NskError) as e:
        parse_label_selector(text)
    assert str(e.value).startswith(f'unable to parse the label selector "{text}": ')


# ---- purity --------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["nsk/api/schema.py", "nsk/api/names.py", "nsk/api/validation.py",
                                    "nsk/api/cluster.py", "nsk/api/load.py", "nsk/api/objects.py",
                                    "nsk/errors.py", "nsk/net/plan.py"])
def test_pure_modules_do_not_touch_the_kernel(module):
    """STYLE habit 2: these modules compute; only nsk.kernel talks to the host."""
    root = pathlib.Path(__file__).resolve().parents[2]
    tree = ast.parse((root / module).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"pyroute2", "subprocess", "socket", "os", "ctypes"}


def test_configmap_keys_are_validated_as_the_api_server_does():
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {'bad key': x}\n"
    assert error(cm) == (f'{SRC}: ConfigMap "default/c" is invalid: data[bad key]: Invalid value: "bad key": a valid '
                         "config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                         "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")


def test_kube_proxys_configmap_says_the_mode_and_refuses_an_unknown_one():
    from nsk.api.cluster import ClusterConfig
    from nsk.proxy import config
    cm = config.configmap(ClusterConfig(proxy_mode="nftables"))
    assert config.proxy_of(cm) == ("nftables", "rr")
    assert config.proxy_of(config.configmap(ClusterConfig())) == ("iptables", "rr")  # kubeadm's mode ""
    cm["data"]["config.conf"] = cm["data"]["config.conf"].replace("mode: nftables", "mode: warp")
    with pytest.raises(NskError, match='config.conf: mode: Unsupported value: "warp"'):
        config.proxy_of(cm)
