"""Reading a topology file: a YAML stream of manifests plus at most one nsk Cluster document."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from nsk.api.cluster import ClusterConfig, parse_cluster
from nsk.api.objects import key
from nsk.api.schema import json_key
from nsk.apiserver.admission import admit
from nsk.errors import NskError


@dataclass(frozen=True)
class Manifest:
    cluster: ClusterConfig
    has_cluster_doc: bool
    objects: tuple[dict, ...]  # admitted (defaulted and valid), in file order


# The API server's limit on a request body; a topology file is held to it too, so that
# `nsk up /dev/zero` is one line, not a MemoryError.
MAX_BYTES = 3 * 1024 * 1024
# What `kubectl apply -f DIR` reads from a directory (its FileExtensions), not recursing.
EXTENSIONS = (".json", ".yaml", ".yml")


def text_of(data: bytes, source: str) -> str:
    """The text of a manifest file's bytes, or a one-line error."""
    if len(data) > MAX_BYTES:
        raise NskError(f"{source}: larger than {MAX_BYTES // (1024 * 1024)} MiB, the API server's limit for a request")
    nul = data.find(b"\0")
    if nul >= 0:
        raise NskError(f"{source}: not a text file (a NUL byte at byte {nul})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NskError(f"{source}: not a UTF-8 text file ({e.reason} at byte {e.start})") from e


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, made to read a manifest as kubectl (sigs.k8s.io/yaml) does.

    - A key given twice in one mapping is an error: PyYAML would keep the last value
      silently, and a lab's `replicas:` written twice must not pass.
    - Integer, float and boolean keys become strings (`1:` is "1", `true:` is "true"), as
      the YAML-to-JSON conversion makes them; in a Python dict `true` and `1` would be one key.
    """

    def compose_document(self):
        node = super().compose_document()
        if _expanded_size(node, {}) > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"the document expands to more than {MAX_NODES} values through its aliases "
                            "(refused, as kubectl refuses excessive aliasing)", node.start_mark)
        return node

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep)
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merges may be overridden, that is their purpose
            key = json_key(self.construct_object(key_node, deep=True))
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: reported below
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f'mapping key "{key}" already defined at line {first.line + 1}', key_node.start_mark)
        self.flatten_mapping(node)
        mapping = {}
        for key_node, value_node in node.value:
            key = json_key(self.construct_object(key_node, deep=deep))
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        "found unhashable key", key_node.start_mark) from None
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


# The most values one document may stand for once its aliases are expanded: far above any
# real manifest, and low enough that a "billion laughs" is refused before it is built and walked.
MAX_NODES = 100_000


def _expanded_size(node: yaml.Node, memo: dict) -> int:
    """The number of values the node stands for once every alias is expanded."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a cycle counts once; PyYAML builds it as a shared object
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(n, memo) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


_TYPE_WORDS = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


def _not_object(where: str, doc: object) -> str:
    what = _TYPE_WORDS.get(type(doc), type(doc).__name__)
    return f"{where} is a {what}, not a Kubernetes object (a mapping with apiVersion, kind and metadata)"


def parse_documents(text: str, source: str) -> list[dict]:
    """The non-empty documents of a YAML stream; `kind: List` is flattened as kubectl does."""
    try:
        docs = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise NskError(f"{source}: {where}{e.problem or e.context}") from e
    except yaml.YAMLError as e:
        raise NskError(f"{source}: not valid YAML: {e}") from e
    except RecursionError as e:  # PyYAML parses nested collections recursively
        raise NskError(f"{source}: not valid YAML: nested too deeply") from e
    out = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise NskError(f"{source}: {_not_object(f'document {i + 1}', doc)}")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for j, item in enumerate(doc["items"]):
                if not isinstance(item, dict):
                    raise NskError(f"{source}: {_not_object(f'document {i + 1}, items[{j}]', item)}")
            out.extend(doc["items"])
        else:
            out.append(doc)
    return out


def load(text: str, source: str, default_name: str = "nsk", live: ClusterConfig | None = None) -> Manifest:
    """Parse and admit every object of a topology file; raises NskError, changes nothing.

    `live`: the running cluster a file is applied to; without a Cluster document, its
    nodes (not the defaults) are what a nodeName must name."""
    return load_sources([(source, text)], default_name, live)


def load_sources(sources: list[tuple[str, str]], default_name: str = "nsk",
                 live: ClusterConfig | None = None) -> Manifest:
    """`load` of several files (a directory) as one topology; errors name the file."""
    docs = [(source, d) for source, text in sources for d in parse_documents(text, source)]
    cluster_docs = [(source, d) for source, d in docs if d.get("kind") == "Cluster"]
    if len(cluster_docs) > 1:
        where = ", ".join(dict.fromkeys(source for source, _ in cluster_docs))
        raise NskError(f"{where}: more than one Cluster document; a file describes one cluster")
    if cluster_docs or live is None:
        source = cluster_docs[0][0] if cluster_docs else sources[0][0]
        cluster = parse_cluster(cluster_docs[0][1] if cluster_docs else None, default_name, source)
    else:
        cluster = live
    objects, sources_of, seen = [], [], {}
    for i, (source, doc) in enumerate((s, d) for s, d in docs if d.get("kind") != "Cluster"):
        obj = admit(doc, source)
        k = key(obj)
        if k in seen:
            raise NskError(f'{source}: {k.kind} "{k}" is defined twice (objects {seen[k] + 1} and {i + 1})')
        seen[k] = i
        objects.append(obj)
        sources_of.append(source)
    node_names = {n.name for n in cluster.nodes}
    for source, obj in zip(sources_of, objects):
        spec = obj.get("spec") or {}
        pod_spec = spec.get("template", {}).get("spec", {}) if obj["kind"] == "Deployment" else spec
        node = pod_spec.get("nodeName") if obj["kind"] in ("Pod", "Deployment") else None
        if node and node not in node_names:
            path = "spec.template.spec.nodeName" if obj["kind"] == "Deployment" else "spec.nodeName"
            raise NskError(f'{source}: {obj["kind"]} "{key(obj)}" is invalid: {path}: Not found: "{node}": '
                           f"the cluster's nodes are {', '.join(sorted(node_names))}")
    return Manifest(cluster, bool(cluster_docs), tuple(objects))
