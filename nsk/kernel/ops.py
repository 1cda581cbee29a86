"""The kernel operations the control plane's parts need, as one object passed in.

Controllers, kubelets and proxy backends get a `Kernel` instead of calling kernel modules
directly, so they run against `nsk.testing.fakes.RecordingKernel` in unit tests, without
root. Every failure comes out as one error type, KernelError: the object it was for, the
operation, the errno name and what to do next.
"""

from __future__ import annotations

import errno as errno_mod
import subprocess

from nsk.errors import KernelError, NskError
from nsk.kernel import iptables, netns, network


def _errno_name(e: BaseException) -> str:
    code = getattr(e, "errno", None) or getattr(e, "code", None)
    if isinstance(code, int) and code in errno_mod.errorcode:
        return errno_mod.errorcode[code]
    return type(e).__name__


class Kernel:
    """The real kernel (root)."""

    def restore(self, jobs: list[tuple[str, str]]) -> None:
        """iptables-restore --noflush of each (namespace, text), side by side."""
        try:
            iptables.restore_many(jobs)
        except NskError as e:
            raise KernelError(", ".join(ns for ns, _ in jobs), "iptables-restore", "EINVAL", str(e),
                              "the rules are written again on the next sync") from e
        except OSError as e:
            raise KernelError(", ".join(ns for ns, _ in jobs), "iptables-restore", _errno_name(e), str(e)) from e

    def save(self, ns: str, table: str | None = None) -> str:
        try:
            return iptables.save(ns, table)
        except (NskError, OSError) as e:
            raise KernelError(ns, "iptables-save", _errno_name(e), str(e)) from e

    def conntrack_delete(self, ns: str, args: tuple[str, ...]) -> None:
        try:
            iptables.conntrack_delete(ns, *args)
        except (OSError, subprocess.SubprocessError) as e:
            raise KernelError(ns, "conntrack -D", _errno_name(e), str(e)) from e

    def router_routes(self, wire_netns: str, want: dict, have: dict) -> None:
        try:
            network.router_routes(wire_netns, want, have)
        except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError is not an OSError
            raise KernelError(wire_netns, "route replace", _errno_name(e), str(e),
                              "the routes are made again on the next sync") from e

    def netns_exists(self, name: str) -> bool:
        return netns.exists(name)
