"""Processes in a Pod's namespaces: start by fork, identify by (pid, start time), stop by PID.

A Pod's process is forked straight from the control plane (no interpreter start): the
child joins the Pod's network namespace, gets its own UTS namespace (the Pod's hostname)
and, for a `command`, its own mount namespace where /etc/netns/<ns>/{resolv.conf,hosts}
are bind-mounted over /etc, exactly as `ip netns exec` does.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Callable

from nsk.kernel import netns


@dataclass(frozen=True)
class ProcRef:
    """A process by PID and start time, so a recycled PID is never mistaken for ours."""

    pid: int
    start: int

    def to_str(self) -> str:
        return f"{self.pid}:{self.start}"

    @staticmethod
    def from_str(text: str) -> "ProcRef":
        pid, start = text.split(":")
        return ProcRef(int(pid), int(start))


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19])


def alive(ref: ProcRef) -> bool:
    st = start_time(ref.pid)
    if st != ref.start:
        return False
    try:
        with open(f"/proc/{ref.pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except FileNotFoundError:
        return False


def stop(ref: ProcRef, grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; only if `ref` is still that process."""
    if not alive(ref):
        return
    with _suppress_gone():
        os.kill(ref.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(ref.pid)
        if not alive(ref):
            return
        time.sleep(0.01)
    if alive(ref):
        with _suppress_gone():
            os.kill(ref.pid, signal.SIGKILL)
    _reap(ref.pid)


def terminate(ref: ProcRef) -> None:
    """SIGTERM `ref` if it is still that process; nothing waits (its pidfd tells the end)."""
    if alive(ref):
        with _suppress_gone():
            os.kill(ref.pid, signal.SIGTERM)


def kill(ref: ProcRef) -> None:
    """SIGKILL `ref` and its process group, if it is still that process."""
    if alive(ref):
        with _suppress_gone():
            os.kill(ref.pid, signal.SIGKILL)
        kill_group(ref)
        _reap(ref.pid)


def kill_group(ref: ProcRef) -> None:
    """SIGKILL every process left in the group `ref` led: a container's children, which a
    runtime kills with the container (its cgroup) when the main process ends or is killed.

    Each container's process is made a session and group leader when spawned. Call it
    before the leader is reaped, or when it is gone: while any member lives, its number
    cannot be given to a new process; a number that another process now holds is left alone.
    """
    st = start_time(ref.pid)
    if st is not None and st != ref.start:
        return
    try:
        os.killpg(ref.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class _suppress_gone:
    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        return typ is ProcessLookupError


def in_netns(inode_: int) -> list[int]:
    """PIDs of the processes whose network namespace is the one with this inode.

    Used by `nsk down` to find what still holds a Pod's namespace (children of a Pod's
    command, an `nsk exec` shell): the namespace was made by nsk, so what runs in it is
    the cluster's, whatever its name.
    """
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == inode_:
                pids.append(int(entry))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return pids


@dataclass(frozen=True)
class Sandbox:
    """Where and as whom a Pod's process runs."""

    netns: str
    hostname: str
    env: dict
    etc_dir: str | None  # its files (resolv.conf, hosts) are bind-mounted over /etc; None: the host's


def enter(box: Sandbox) -> None:
    """Move the calling process into the sandbox: network, UTS and mount namespaces (root).

    Used in a freshly forked child and by `nsk exec` just before it execs.
    """
    fd = os.open(netns.path(box.netns), os.O_RDONLY)
    try:
        netns.setns(fd)
    finally:
        os.close(fd)
    flags = netns.CLONE_NEWUTS | (netns.CLONE_NEWNS if box.etc_dir else 0)
    netns.unshare(flags)
    socket.sethostname(box.hostname[:64])
    if box.etc_dir:
        # keep our mounts from propagating back to the host's mount namespace
        netns.mount("none", "/", None, netns.MS_REC | netns.MS_SLAVE)
        # and the host's from reaching ours under /run/netns: each new Pod's namespace is a
        # mount there, and propagating it into every running Pod's mount namespace made a
        # Pod cost more the more Pods there were (3.7 ms a mount at 1,000 Pods, 0.26 at 200)
        try:
            netns.mount("none", netns.RUN_DIR, None, netns.MS_REC | netns.MS_PRIVATE)
        except OSError:
            pass  # not a mount point: nothing propagates
        etc = box.etc_dir
        for fname in sorted(os.listdir(etc)) if os.path.isdir(etc) else []:
            dst = os.path.join("/etc", fname)
            if os.path.exists(dst):
                netns.mount(os.path.join(etc, fname), dst, "none", netns.MS_BIND)
        # /sys must show this namespace's interfaces, as after `ip netns exec`
        try:
            netns.umount("/sys")
            netns.mount(box.netns, "/sys", "sysfs", 0)
        except OSError:
            pass


def spawn(box: Sandbox, log_path: str, argv: list[str] | None = None, cwd: str | None = None,
          target: Callable[[], None] | None = None, comm: str = "") -> ProcRef:
    """Fork a process into the sandbox (root). It execs `argv`, or runs `target()` in Python.

    stdout and stderr go to `log_path`; stdin is /dev/null. The child never returns.
    """
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = os.fork()
    if pid == 0:  # child: only async-signal-safe habits from here, and never return
        code = 127
        try:
            os.setsid()
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.closerange(3, 65536)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            enter(box)
            if comm:
                _set_comm(comm)
            if argv is not None:
                if cwd:
                    os.chdir(cwd)
                os.execvpe(argv[0], argv, box.env)
            else:
                os.environ.clear()
                os.environ.update(box.env)
                assert target is not None
                code = 1  # from here a failure is the workload's own, not a missing command's
                target()
                code = 0
        except SystemExit as e:  # the workload said how it ends
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: BLE001 - report anything, then leave
            try:
                what = f"{argv[0]}: " if argv else ""
                why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                os.write(2, f"nsk: cannot start {what}{why}\n".encode())
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(log_fd)
    st = start_time(pid)
    return ProcRef(pid, st if st is not None else 0)


def _set_comm(name: str) -> None:
    """The name `ps` and `top` show (15 bytes), via /proc/self/comm."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def pidfd(pid: int) -> int | None:
    """A pidfd that becomes readable when `pid` exits (works for non-children too)."""
    try:
        return os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None


def exit_status(pid: int) -> int | None:
    """Reap a child of ours and return its exit code (128+N for signal N); None if not our child."""
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if got == 0:
        return None
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


