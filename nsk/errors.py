"""Errors a person can act on: the CLI prints them as one line and exits 1."""

from __future__ import annotations

import json
from dataclasses import dataclass


class NskError(Exception):
    """An expected failure: printed as `Error: <message>`, exit status 1, no traceback."""


class ApiError(NskError):
    """A failure the API server answers with a status code (metav1.Status: code, reason)."""

    code = 500
    reason = "InternalError"


class BadRequest(ApiError):
    code, reason = 400, "BadRequest"


class NotFound(ApiError):
    code, reason = 404, "NotFound"


class AlreadyExists(ApiError):
    code, reason = 409, "AlreadyExists"


class Conflict(ApiError):
    """A write whose resourceVersion is not the object's current one (optimistic concurrency)."""

    code, reason = 409, "Conflict"


class Gone(ApiError):
    """A watch from a revision the change log no longer holds: the reader must list again
    (etcd's "required revision has been compacted", the API server's 410 Expired)."""

    code, reason = 410, "Expired"


class KernelError(NskError):
    """A kernel operation failed: the object it was for, the operation, the errno name, and
    what a person can do next. Controllers turn it into an Event and a retry."""

    def __init__(self, obj: str, op: str, errno_name: str, detail: str = "", next_step: str = ""):
        self.obj, self.op, self.errno_name, self.detail, self.next_step = obj, op, errno_name, detail, next_step
        text = f"{obj}: {op} failed: {errno_name}" + (f" ({detail})" if detail else "")
        super().__init__(text + (f"; {next_step}" if next_step else ""))


@dataclass(frozen=True)
class FieldError:
    """One field error, shaped like apimachinery's field.Error."""

    path: str
    kind: str  # "Required value", "Invalid value", "Unsupported value", ...
    value: object = None
    detail: str = ""

    def __str__(self) -> str:
        if self.kind in ("Required value", "Forbidden", "Unknown field", "Too long"):
            text = f"{self.path}: {self.kind}"
        elif self.kind == "Unsupported value":
            text = f"{self.path}: {self.kind}: {_show(self.value)}"
        else:
            text = f"{self.path}: {self.kind}: {_show(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text


def _show(value: object) -> str:
    if isinstance(value, str):
        # Go's %q as apimachinery prints it: a quote or a newline cannot break the one-line error
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "}"  # Go's %#v
    return str(value)


def required(path: str, detail: str = "") -> FieldError:
    return FieldError(path, "Required value", detail=detail)


def invalid(path: str, value: object, detail: str) -> FieldError:
    return FieldError(path, "Invalid value", value, detail)


def unsupported(path: str, value: object, allowed: list[str]) -> FieldError:
    return FieldError(path, "Unsupported value", value, "supported values: " + ", ".join(f'"{a}"' for a in allowed))


def duplicate(path: str, value: object) -> FieldError:
    return FieldError(path, "Duplicate value", value)


class InvalidObject(ApiError):
    """The API server's 422: `Service "default/web" is invalid: spec.ports[1].name: Required value`."""

    code, reason = 422, "Invalid"

    def __init__(self, kind: str, ref: str, errors: list[FieldError], source: str = ""):
        self.kind, self.ref, self.errors, self.source = kind, ref, errors, source
        if len(errors) == 1:
            detail = str(errors[0])
        else:
            detail = "[" + ", ".join(str(e) for e in errors) + "]"
        prefix = f"{source}: " if source else ""
        super().__init__(f'{prefix}{kind} "{ref}" is invalid: {detail}')
