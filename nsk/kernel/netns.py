"""Named network namespaces, compatible with `ip netns` (/run/netns/NAME, /etc/netns/NAME).

Everything here needs root. A namespace is made by unsharing the *calling thread* and
bind-mounting its namespace file, then switching the thread back: no helper process,
about a millisecond each (pyroute2's netns.create forks one per namespace).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from typing import Callable, TypeVar

RUN_DIR = "/run/netns"
ETC_DIR = "/etc/netns"

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(result: int, what: str, target: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} {target}: {errno.errorcode.get(err, err)} ({os.strerror(err)})")


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    """mount(2); needs root."""
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), target.encode(), enc(fstype), flags, None), "mount", target)


def umount(target: str) -> None:
    """umount2(2) with MNT_DETACH; needs root."""
    _check(_libc.umount2(target.encode(), MNT_DETACH), "umount", target)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare", hex(flags))


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    _check(_libc.setns(fd, nstype), "setns", str(fd))


def path(name: str) -> str:
    return os.path.join(RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def _prepare_run_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so namespaces made
    later are seen from mount namespaces made earlier (a Pod's, for instance)."""
    os.makedirs(RUN_DIR, exist_ok=True)
    try:
        mount("none", RUN_DIR, None, MS_SHARED | MS_REC)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
        mount(RUN_DIR, RUN_DIR, "none", MS_BIND | MS_REC)
        mount("none", RUN_DIR, None, MS_SHARED | MS_REC)


def create(name: str, inside: Callable[[], T] | None = None) -> T | None:
    """Create the named network namespace (root). Raises FileExistsError if the name is taken.

    `inside`, if given, runs while the thread is still in the new namespace (once it is
    mounted): a socket it opens belongs to that namespace, without entering it again. Its
    result is returned; if it raises, the namespace is removed again.
    """
    target = path(name)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    except FileNotFoundError:
        _prepare_run_dir()
        fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    if not os.path.ismount(RUN_DIR):
        _prepare_run_dir()
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    mounted = False
    try:
        unshare(CLONE_NEWNET)
        try:
            mount("/proc/thread-self/ns/net", target, "none", MS_BIND)
            mounted = True
            return inside() if inside is not None else None
        finally:
            setns(own)
    except BaseException:
        if mounted:
            with contextlib.suppress(OSError):
                umount(target)
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    finally:
        os.close(own)


def remove(name: str) -> bool:
    """Unmount and delete the named namespace (root); False if it was not there.

    The kernel frees the namespace, and every interface in it, once no process and no
    open file refers to it any more.
    """
    target = path(name)
    try:
        umount(target)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    try:
        os.unlink(target)
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def entered(name: str):
    """Run the block with the calling thread in the named namespace (root)."""
    fd = os.open(path(name), os.O_RDONLY)
    try:
        with entered_fd(fd):
            yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered_fd(fd: int):
    """Run the block with the calling thread in the namespace `fd` refers to (root)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(own)
    finally:
        os.close(own)


def inode(name: str) -> int | None:
    try:
        return os.stat(path(name)).st_ino
    except FileNotFoundError:
        return None


def sysctl(name: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl (net.*) inside the named namespace (root).

    /proc/sys/net resolves to the namespace of the thread that opens the file, so the
    write must happen while the thread is inside `name`; the host's values never change.
    """
    with entered(name):
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
