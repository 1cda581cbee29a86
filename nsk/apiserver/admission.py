"""Admission: what the API server does to an object before it is stored (pure).

`admit(obj)` checks the object against its kind's schema (an unknown field or a wrong
type is an error, as `kubectl --validate=strict`), fills in the kind's defaults and runs
its rules; it returns the defaulted object or raises InvalidObject with every field
error found, each naming its field path (apimachinery's format).
"""

from __future__ import annotations

import copy

from nsk.api.schema import STR, check, normalize
from nsk.api.validation import metadata_rules
from nsk.apiserver import registry
from nsk.errors import InvalidObject, invalid, required, unsupported


def admit(obj: object, source: str = "") -> dict:
    """Validate `obj` and fill in its defaults; raises InvalidObject naming each bad field."""
    if not isinstance(obj, dict):
        raise InvalidObject("Object", "?", [invalid("", obj, "a manifest must be a mapping")], source)
    kind = obj.get("kind")
    if not kind:
        raise InvalidObject("Object", _ref_guess(obj), [required("kind")], source)
    if not isinstance(kind, str):
        raise InvalidObject("Object", _ref_guess(obj), check(kind, STR, "kind"), source)
    kinds = registry.manifest_kinds()
    if kind not in kinds:
        raise InvalidObject(kind, _ref_guess(obj), [unsupported("kind", kind, sorted(kinds))], source)
    r = kinds[kind]
    obj = normalize(copy.deepcopy(obj), r.schema)
    meta = obj.setdefault("metadata", {}) if isinstance(obj.get("metadata", {}), dict) else obj.get("metadata")
    if isinstance(meta, dict):
        if r.namespaced and not meta.get("namespace"):
            meta["namespace"] = "default"  # kubectl's default namespace, also for `namespace: ""`
        elif not r.namespaced:
            meta.pop("namespace", None)  # the API server ignores it on a cluster-scoped kind
    ref = _ref_guess(obj)
    errors = check(obj, r.schema, "")
    if obj.get("apiVersion") is None:
        errors.append(required("apiVersion", f'kind "{kind}" is in version "{r.api_version}"'))
    elif obj.get("apiVersion") != r.api_version:
        errors.append(invalid("apiVersion", obj.get("apiVersion"),
                              f'no matches for kind "{kind}" in version "{obj.get("apiVersion")}": '
                              f'use "{r.api_version}"'))
    if errors:  # structure first: the rules below may assume the types are right
        raise InvalidObject(kind, ref, errors, source)
    errors = metadata_rules(obj, r.namespaced)
    r.default(obj)
    errors += r.validate(obj)
    if errors:
        raise InvalidObject(kind, ref, errors, source)
    return obj


def _ref_guess(obj: dict) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name") or meta.get("generateName") or ""
    ns = meta.get("namespace")
    kind = obj.get("kind")
    if ns and isinstance(kind, str) and kind in registry.manifest_kinds() and registry.namespaced(kind):
        return f"{ns}/{name}"
    return str(name)
