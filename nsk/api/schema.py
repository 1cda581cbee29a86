"""The fields nsk knows for each kind, and a structural check against them.

Unknown fields and wrong types are errors, as with `kubectl apply --validate=strict`:
a typo such as `replica:` must not be silently ignored in a lab. The schema lists the
fields of the Kubernetes API that nsk reads, plus the common ones it accepts and
ignores (resources, securityContext, ...), which are typed `ANY`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from nsk.errors import FieldError


@dataclass(frozen=True)
class Scalar:
    name: str  # "string", "integer", "boolean", "int-or-string", "any"


STR, INT, BOOL, INT_OR_STR, ANY = (Scalar(n) for n in ("string", "integer", "boolean", "int-or-string", "any"))


@dataclass(frozen=True)
class MapOf:
    value: object


@dataclass(frozen=True)
class ListOf:
    item: object


@dataclass(frozen=True)
class Obj:
    type_name: str
    fields: dict = field(default_factory=dict)


STRING_MAP = MapOf(STR)

OBJECT_META = Obj("ObjectMeta", {
    "name": STR, "generateName": STR, "namespace": STR, "labels": STRING_MAP,
    "annotations": STRING_MAP, "uid": STR, "resourceVersion": STR, "generation": INT,
    "creationTimestamp": ANY, "ownerReferences": ANY, "finalizers": ANY, "managedFields": ANY,
    "deletionTimestamp": ANY,
})

LABEL_SELECTOR = Obj("LabelSelector", {
    "matchLabels": STRING_MAP,
    "matchExpressions": ListOf(Obj("LabelSelectorRequirement", {
        "key": STR, "operator": STR, "values": ListOf(STR)})),
})

_HTTP_GET = Obj("HTTPGetAction", {"path": STR, "port": INT_OR_STR, "host": STR, "scheme": STR,
                                  "httpHeaders": ANY})
PROBE = Obj("Probe", {
    "httpGet": _HTTP_GET,
    "tcpSocket": Obj("TCPSocketAction", {"port": INT_OR_STR, "host": STR}),
    "exec": Obj("ExecAction", {"command": ListOf(STR)}),
    "initialDelaySeconds": INT, "periodSeconds": INT, "timeoutSeconds": INT,
    "successThreshold": INT, "failureThreshold": INT, "terminationGracePeriodSeconds": INT,
})

ENV_VAR = Obj("EnvVar", {
    "name": STR, "value": STR,
    "valueFrom": Obj("EnvVarSource", {
        "fieldRef": Obj("ObjectFieldSelector", {"fieldPath": STR, "apiVersion": STR}),
        "configMapKeyRef": ANY, "secretKeyRef": ANY, "resourceFieldRef": ANY}),
})

CONTAINER = Obj("Container", {
    "name": STR, "image": STR, "imagePullPolicy": STR,
    "command": ListOf(STR), "args": ListOf(STR), "workingDir": STR,
    "env": ListOf(ENV_VAR), "envFrom": ANY,
    "ports": ListOf(Obj("ContainerPort", {
        "name": STR, "containerPort": INT, "protocol": STR, "hostPort": INT, "hostIP": STR})),
    "readinessProbe": PROBE, "livenessProbe": PROBE, "startupProbe": PROBE,
    "resources": ANY, "securityContext": ANY, "volumeMounts": ANY, "lifecycle": ANY,
    "stdin": BOOL, "tty": BOOL, "terminationMessagePath": STR, "terminationMessagePolicy": STR,
})

POD_SPEC = Obj("PodSpec", {
    "containers": ListOf(CONTAINER), "initContainers": ANY,
    "restartPolicy": STR, "nodeName": STR, "nodeSelector": STRING_MAP,
    "hostNetwork": BOOL, "hostname": STR, "subdomain": STR,
    "dnsPolicy": STR,
    "dnsConfig": Obj("PodDNSConfig", {
        "nameservers": ListOf(STR), "searches": ListOf(STR),
        "options": ListOf(Obj("PodDNSConfigOption", {"name": STR, "value": STR}))}),
    "enableServiceLinks": BOOL, "terminationGracePeriodSeconds": INT,
    "volumes": ANY, "affinity": ANY, "tolerations": ANY, "securityContext": ANY,
    "serviceAccountName": STR, "automountServiceAccountToken": BOOL, "schedulerName": STR,
    "priorityClassName": STR, "setHostnameAsFQDN": BOOL, "shareProcessNamespace": BOOL,
    "readinessGates": ANY, "topologySpreadConstraints": ANY, "imagePullSecrets": ANY,
})

POD_TEMPLATE = Obj("PodTemplateSpec", {"metadata": OBJECT_META, "spec": POD_SPEC})

SERVICE_PORT = Obj("ServicePort", {
    "name": STR, "protocol": STR, "port": INT, "targetPort": INT_OR_STR, "nodePort": INT,
    "appProtocol": STR,
})

SERVICE_SPEC = Obj("ServiceSpec", {
    "selector": STRING_MAP, "ports": ListOf(SERVICE_PORT), "type": STR,
    "clusterIP": STR, "clusterIPs": ListOf(STR), "externalIPs": ListOf(STR),
    "externalName": STR, "sessionAffinity": STR,
    "sessionAffinityConfig": Obj("SessionAffinityConfig", {
        "clientIP": Obj("ClientIPConfig", {"timeoutSeconds": INT})}),
    "externalTrafficPolicy": STR, "internalTrafficPolicy": STR,
    "loadBalancerIP": STR, "loadBalancerSourceRanges": ListOf(STR), "loadBalancerClass": STR,
    "publishNotReadyAddresses": BOOL, "ipFamilies": ListOf(STR), "ipFamilyPolicy": STR,
    "allocateLoadBalancerNodePorts": BOOL, "healthCheckNodePort": INT,
})

_LB_INGRESS = ListOf(Obj("LoadBalancerIngress", {"ip": STR, "hostname": STR, "ipMode": STR, "ports": ANY}))

_ENDPOINT_ADDRESS = Obj("EndpointAddress", {"ip": STR, "hostname": STR, "nodeName": STR, "targetRef": ANY})

ENDPOINT_SUBSET = Obj("EndpointSubset", {
    "addresses": ListOf(_ENDPOINT_ADDRESS),
    "notReadyAddresses": ListOf(_ENDPOINT_ADDRESS),
    "ports": ListOf(Obj("EndpointPort", {"name": STR, "port": INT, "protocol": STR, "appProtocol": STR})),
})


def _top(type_name: str, **fields) -> Obj:
    return Obj(type_name, {"apiVersion": STR, "kind": STR, "metadata": OBJECT_META, **fields})


# kind -> (apiVersion, schema). The status of input objects is accepted and ignored,
# as the API server does on create (the source's LoadBalancer example carries one).
KINDS: dict[str, tuple[str, Obj]] = {
    "Namespace": ("v1", _top("Namespace", spec=ANY, status=ANY)),
    "Pod": ("v1", _top("Pod", spec=POD_SPEC, status=ANY)),
    "Deployment": ("apps/v1", _top("Deployment", status=ANY, spec=Obj("DeploymentSpec", {
        "replicas": INT, "selector": LABEL_SELECTOR, "template": POD_TEMPLATE,
        "strategy": ANY, "minReadySeconds": INT, "revisionHistoryLimit": INT,
        "progressDeadlineSeconds": INT, "paused": BOOL}))),
    "Service": ("v1", _top("Service", spec=SERVICE_SPEC, status=Obj("ServiceStatus", {
        "loadBalancer": Obj("LoadBalancerStatus", {"ingress": _LB_INGRESS}), "conditions": ANY}))),
    "Endpoints": ("v1", _top("Endpoints", subsets=ListOf(ENDPOINT_SUBSET))),
    "ConfigMap": ("v1", _top("ConfigMap", data=STRING_MAP, binaryData=STRING_MAP, immutable=BOOL)),
}


INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1


def normalize(value: object, schema: object) -> object:
    """`value` as the API server decodes it: a null field is an absent one, a null list item
    or map value is its type's zero value, and an integer or boolean map key is a string.

    YAML makes nulls easy to write by accident (`replicas:` with nothing after it); the
    API server's JSON decoding turns them into absent fields and zero values, so the
    validation rules never see None. Keys are turned into strings as sigs.k8s.io/yaml does.
    """
    if isinstance(schema, Obj) and isinstance(value, dict):
        out = {}
        for k, v in value.items():
            k = json_key(k)
            if v is None and k in schema.fields:
                continue
            out[k] = normalize(v, schema.fields[k]) if k in schema.fields else v
        return out
    if isinstance(schema, MapOf) and isinstance(value, dict):
        return {json_key(k): _zero(schema.value) if v is None else normalize(v, schema.value) for k, v in value.items()}
    if isinstance(schema, ListOf) and isinstance(value, list):
        return [_zero(schema.item) if v is None else normalize(v, schema.item) for v in value]
    return value


def json_key(k: object) -> object:
    """A YAML mapping key as sigs.k8s.io/yaml turns it into a JSON key: 1 -> "1", true -> "true"."""
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, (int, float)):
        return str(k)
    return k


def _zero(schema: object) -> object:
    if isinstance(schema, Obj | MapOf):
        return {}
    if isinstance(schema, ListOf):
        return []
    if isinstance(schema, Scalar):
        return {"string": "", "integer": 0, "boolean": False, "int-or-string": 0}.get(schema.name)
    return None


def check(value: object, schema: object, path: str) -> list[FieldError]:
    """Structural errors of `value` against `schema`: wrong types and unknown fields."""
    if schema is ANY or value is None:
        return []
    if isinstance(schema, Scalar):
        ok = {
            "string": lambda v: isinstance(v, str),
            # Kubernetes' integer fields are int32 (replicas, ports, seconds): a larger
            # number is a decoding error there, and here it must not reach a controller.
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and INT32_MIN <= v <= INT32_MAX,
            "boolean": lambda v: isinstance(v, bool),
            "int-or-string": lambda v: isinstance(v, (int, str)) and not isinstance(v, bool),
        }[schema.name](value)
        return [] if ok else [_wrong_type(path, value, schema.name)]
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            return [_wrong_type(path, value, "object")]
        errors = []
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append(FieldError(path, "Invalid value", key, "a map key must be a string"))
                continue
            errors += check(item, schema.value, f"{path}.{key}" if path else str(key))
        return errors
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            return [_wrong_type(path, value, "array")]
        errors = []
        for i, item in enumerate(value):
            errors += check(item, schema.item, f"{path}[{i}]")
        return errors
    assert isinstance(schema, Obj)
    if not isinstance(value, dict):
        return [_wrong_type(path, value, "object")]
    errors = []
    for key, item in value.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in schema.fields:
            hint = difflib.get_close_matches(str(key), list(schema.fields), n=1)
            detail = f"not a field of {schema.type_name}" + (f' (did you mean "{hint[0]}"?)' if hint else "")
            errors.append(FieldError(sub, "Unknown field", detail=detail))
            continue
        errors += check(item, schema.fields[key], sub)
    return errors


def _wrong_type(path: str, value: object, expected: str) -> FieldError:
    if expected == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return FieldError(path, "Invalid value", value, f"must be a 32-bit integer ({INT32_MIN} to {INT32_MAX})")
    got = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return FieldError(path, "Invalid value", value, f"must be of type {expected}, not {got.get(type(value), type(value).__name__)}")
