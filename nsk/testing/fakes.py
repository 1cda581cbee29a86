"""Recording fakes of the kernel adapter, for unit tests without root."""

from __future__ import annotations

from dataclasses import dataclass, field

from nsk.errors import KernelError


@dataclass
class RecordingKernel:
    """Records every call; `fail` names operations that raise KernelError (once each, or
    always when the count is negative)."""

    calls: list[tuple] = field(default_factory=list)
    saved: dict[str, str] = field(default_factory=dict)  # namespace -> what iptables-save prints
    fail: dict[str, int] = field(default_factory=dict)

    def _maybe_fail(self, op: str, obj: str) -> None:
        left = self.fail.get(op, 0)
        if left:
            if left > 0:
                self.fail[op] = left - 1
            raise KernelError(obj, op, "EPERM", "injected by the test")

    def restore(self, jobs: list[tuple[str, str]]) -> None:
        self.calls.append(("restore", tuple(jobs)))
        self._maybe_fail("iptables-restore", ", ".join(ns for ns, _ in jobs))

    def save(self, ns: str, table: str | None = None) -> str:
        self.calls.append(("save", ns, table))
        self._maybe_fail("iptables-save", ns)
        return self.saved.get(ns, "")

    def conntrack_delete(self, ns: str, args: tuple[str, ...]) -> None:
        self.calls.append(("conntrack", ns, tuple(args)))
        self._maybe_fail("conntrack -D", ns)

    def router_routes(self, wire_netns: str, want: dict, have: dict) -> None:
        self.calls.append(("routes", wire_netns, dict(want)))
        self._maybe_fail("route replace", wire_netns)

    def netns_exists(self, name: str) -> bool:
        return True

    def ops(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]
