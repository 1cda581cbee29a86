"""Small helpers over Kubernetes objects kept as plain dicts (as the API serves them):
keys, labels and label selectors (pure). What each kind is: nsk/apiserver/registry.py."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nsk.errors import NskError


@dataclass(frozen=True, order=True)
class Key:
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def key(obj: dict) -> Key:
    """An object's key; admission leaves no namespace on a cluster-scoped kind."""
    meta = obj.get("metadata") or {}
    return Key(obj["kind"], meta.get("namespace", ""), meta.get("name", ""))


def labels(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("labels") or {}


def matches(selector: dict, obj_labels: dict) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against labels."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if obj_labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and obj_labels.get(k) not in values:
            return False
        if op == "NotIn" and k in obj_labels and obj_labels[k] in values:
            return False
        if op == "Exists" and k not in obj_labels:
            return False
        if op == "DoesNotExist" and k in obj_labels:
            return False
    return True


_SET_TERM = re.compile(r"(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)")


def parse_label_selector(text: str) -> list[tuple[str, str, object]]:
    """kubectl's `-l` syntax -> [(key, op, value)], op one of `=`, `!=`, `exists`, `!`, `in`, `notin`.

        selector    = term *("," term)
        term        = key ("=" / "==" / "!=") value / key ("in" / "notin") "(" value *("," value) ")"
                      / key / "!" key

    Commas inside the parentheses of a set term belong to it (`env in (a,b),tier`). A term
    that is none of these raises NskError, as kubectl refuses it, rather than matching nothing.
    """
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                break
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise NskError(f'unable to parse the label selector "{text}": unbalanced parentheses')
    parts.append(cur)
    terms: list[tuple[str, str, object]] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        m = _SET_TERM.fullmatch(part)
        if m:
            values = tuple(v.strip() for v in m["values"].split(",") if v.strip())
            terms.append((m["key"], m["op"], values))
            continue
        for op in ("!=", "==", "="):
            if op in part:
                k, v = (x.strip() for x in part.split(op, 1))
                terms.append((k, "!=" if op == "!=" else "=", v))
                break
        else:
            k = part[1:].strip() if part.startswith("!") else part
            terms.append((k, "!" if part.startswith("!") else "exists", None))
        k, v = terms[-1][0], terms[-1][2]
        if not k or any(c.isspace() or c in "!=()" for c in k) or \
                (isinstance(v, str) and any(c.isspace() or c in "!=()," for c in v)):
            raise NskError(f'unable to parse the label selector "{text}": bad requirement "{part}"')
    return terms


def selected(terms: list[tuple[str, str, object]], obj_labels: dict) -> bool:
    for k, op, v in terms:
        if op == "=" and obj_labels.get(k) != v:
            return False
        if op == "!=" and obj_labels.get(k) == v:
            return False
        if op == "exists" and k not in obj_labels:
            return False
        if op == "!" and k in obj_labels:
            return False
        if op == "in" and (k not in obj_labels or obj_labels[k] not in v):
            return False
        if op == "notin" and k in obj_labels and obj_labels[k] in v:
            return False
    return True
