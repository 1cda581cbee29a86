"""Name rules of the Kubernetes API (apimachinery's validation), with its messages."""

from __future__ import annotations

import re

# The regular expressions and their text as apimachinery writes them in its messages.
# They are used with fullmatch: Go's `^...$` match the whole string, while Python's `$`
# also matches before a final newline, which would let "web\n" through as a name.
_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT = _LABEL_FMT + "(\\." + _LABEL_FMT + ")*"
_DNS1035_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = f"({_QNAME_FMT})?"
DNS1123_LABEL = re.compile(_LABEL_FMT)
DNS1123_SUBDOMAIN = re.compile(_SUBDOMAIN_FMT)
DNS1035_LABEL = re.compile(_DNS1035_FMT)
_QNAME = re.compile(_QNAME_FMT)
_LABEL_VALUE = re.compile(_LABEL_VALUE_FMT)


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """apimachinery's RegexError, with its doubled space before "or" kept so the text is identical."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    return msg + " (e.g. " + " or ".join(f"'{e}', " for e in examples) + f"regex used for validation is '{fmt}')"


_QNAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
              "alphanumeric character")


def dns1123_label(value: str) -> list[str]:
    msgs = []
    if len(value) > 63:
        msgs.append("must be no more than 63 characters")
    if not DNS1123_LABEL.fullmatch(value):
        if DNS1123_SUBDOMAIN.fullmatch(value):
            msgs.append("must not contain dots")  # a valid subdomain that is not a label
        else:
            msgs.append(_regex_error("a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                                     "or '-', and must start and end with an alphanumeric character",
                                     _LABEL_FMT, "my-name", "123-abc"))
    return msgs


def dns1123_subdomain(value: str) -> list[str]:
    msgs = []
    if len(value) > 253:
        msgs.append("must be no more than 253 characters")
    if not DNS1123_SUBDOMAIN.fullmatch(value):
        msgs.append(_regex_error("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                                 "'-' or '.', and must start and end with an alphanumeric character",
                                 _SUBDOMAIN_FMT, "example.com"))
    return msgs


def dns1035_label(value: str) -> list[str]:
    msgs = []
    if len(value) > 63:
        msgs.append("must be no more than 63 characters")
    if not DNS1035_LABEL.fullmatch(value):
        msgs.append(_regex_error("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
                                 "with an alphabetic character, and end with an alphanumeric character",
                                 _DNS1035_FMT, "my-name", "abc-123"))
    return msgs


def iana_svc_name(value: str) -> list[str]:
    """Container port names and named targetPorts (IsValidPortName), its checks in its order."""
    msgs = []
    if len(value) > 15:
        msgs.append("must be no more than 15 characters")
    if not re.fullmatch(r"[-a-z0-9]+", value):
        msgs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", value):
        msgs.append("must contain at least one letter (a-z)")
    if "--" in value:
        msgs.append("must not contain consecutive hyphens")
    if value.startswith("-") or value.endswith("-"):
        msgs.append("must not begin or end with a hyphen")
    return msgs


def label_value(value: str) -> list[str]:
    msgs = []
    if len(value) > 63:
        msgs.append("must be no more than 63 characters")
    if not _LABEL_VALUE.fullmatch(value):
        msgs.append(_regex_error("a valid label must be an empty string or consist of alphanumeric characters, '-', "
                                 "'_' or '.', and must start and end with an alphanumeric character",
                                 _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return msgs


def label_key(value: str) -> list[str]:
    """IsQualifiedName (label keys, selector keys): an optional DNS subdomain prefix and '/', then a name."""
    msgs = []
    parts = value.split("/")
    if len(parts) > 2:
        return ["a valid label key " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            msgs.append("prefix part must be non-empty")
        else:
            msgs += ["prefix part " + m for m in dns1123_subdomain(prefix)]
    name = parts[-1]
    if not name:
        msgs.append("name part must be non-empty")
    elif len(name) > 63:
        msgs.append("name part must be no more than 63 characters")
    if not _QNAME.fullmatch(name):
        msgs.append("name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return msgs


_ENV_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"


def config_key(value: str) -> list[str]:
    """IsConfigMapKey: the keys of a ConfigMap's data."""
    msgs = []
    if len(value) > 253:
        msgs.append("must be no more than 253 characters")
    if not re.fullmatch(_CONFIG_KEY_FMT, value):
        msgs.append(_regex_error("a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                                 _CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    return msgs


def env_var_name(value: str) -> list[str]:
    """IsEnvVarName: the names a container's environment may hold."""
    msgs = []
    if not re.fullmatch(_ENV_FMT, value):
        msgs.append(_regex_error("a valid environment variable name must consist of alphabetic characters, digits, "
                                 "'_', '-', or '.', and must not start with a digit",
                                 _ENV_FMT, "my.env-name", "MY_ENV.NAME", "MyEnvName1"))
    return msgs
