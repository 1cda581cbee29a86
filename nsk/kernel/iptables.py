"""iptables-save / iptables-restore inside a node's network namespace (root).

The backend is the host's own: whatever `iptables` is (nf_tables or legacy), nsk calls
that variant's restore and save explicitly, so rules are never split across the two.

Each node has its own xtables lock, as each real node has its own /run/xtables.lock: the
legacy tools hold it for a whole restore, and one lock for the host would make every node's
restore wait for the others' (the nf_tables backend takes no lock).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from nsk.errors import NskError
from nsk.kernel import netns


@functools.lru_cache(maxsize=1)
def backend() -> str:
    """'nft' or 'legacy': the mode of the host's `iptables` command."""
    exe = shutil.which("iptables")
    if exe is None:
        raise NskError("iptables is not installed (apt-get install iptables; `make install` does it)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return "legacy" if "legacy" in out else "nft"


def _tool(name: str, which: str = "") -> str:
    """The iptables tool `name` ('save', 'restore'; '' for iptables itself) of a backend:
    `which` ('nft' or 'legacy'), else the host's."""
    variant = "-".join(filter(None, ("iptables", which or backend(), name)))
    if shutil.which(variant):
        return variant
    if which:
        raise NskError(f"{variant} is not installed (apt-get install iptables)")
    return "-".join(filter(None, ("iptables", name)))


LOCK_DIR = "xtables"  # in a cluster's run directory: each node's lock file, <netns>.lock


def lock_env(run_dir: str, ns: str) -> dict[str, str] | None:
    """The environment of an iptables tool run in namespace `ns` of the cluster whose run
    directory is `run_dir`: XTABLES_LOCKFILE names the namespace's own lock (None: the
    host's /run/xtables.lock, for a namespace of no cluster)."""
    if not run_dir:
        return None
    return {**os.environ, "XTABLES_LOCKFILE": os.path.join(run_dir, LOCK_DIR, f"{ns}.lock")}


def restore(ns: str, text: str, noflush: bool = True, which: str = "", run_dir: str = "") -> None:
    """Apply iptables-restore input atomically inside namespace `ns` (root)."""
    args = [_tool("restore", which), "-w", "5"] + (["--noflush"] if noflush else [])
    with netns.entered(ns):  # the child inherits the namespace of the thread that forks it
        proc = subprocess.run(args, input=text, capture_output=True, text=True, env=lock_env(run_dir, ns))
    if proc.returncode != 0:
        raise NskError(f"iptables-restore in {ns} failed: {proc.stderr.strip()}")


class RestoreJob:
    """iptables-restores running in the background, one per namespace (root): their input
    comes from a memfd (no pipe to keep fed), their pidfds tell the caller's selector when
    each ends. The control plane's loop goes on meanwhile."""

    def __init__(self, jobs: list[tuple[str, str]], noflush: bool = True, which: str = "",
                 argv: list[str] | None = None, name: str = "iptables-restore", run_dir: str = ""):
        """`argv`: another tool reading its input on stdin (`nft -f -`), named `name` in errors;
        `run_dir`: the cluster's, whose per-node xtables locks the tools take."""
        args = argv or [_tool("restore", which), "-w", "5"] + (["--noflush"] if noflush else [])
        self.name = name
        self.procs: list[tuple[str, subprocess.Popen, int]] = []
        self.pidfds: list[int] = []
        try:
            for ns, text in jobs:
                data = os.memfd_create("nsk-restore", os.MFD_CLOEXEC)
                err = os.memfd_create("nsk-restore-err", os.MFD_CLOEXEC)
                try:
                    view = memoryview(text.encode())
                    while view:
                        view = view[os.write(data, view):]
                    os.lseek(data, 0, os.SEEK_SET)
                    with netns.entered(ns):  # the child inherits the namespace of the thread that forks it
                        p = subprocess.Popen(args, stdin=data, stdout=subprocess.DEVNULL, stderr=err,
                                             env=lock_env(run_dir, ns))
                finally:
                    os.close(data)
                self.procs.append((ns, p, err))
                self.pidfds.append(os.pidfd_open(p.pid))
                _first_in_line(p.pid, restore_nice(len(jobs)))
        except BaseException:
            self.close()
            raise

    def poll(self) -> bool:
        """Whether every restore has ended."""
        return all(p.poll() is not None for _, p, _ in self.procs)

    def errors(self) -> list[str]:
        """What the ended restores said on failure, one line per namespace."""
        out = []
        for ns, p, err in self.procs:
            if p.returncode:
                os.lseek(err, 0, os.SEEK_SET)
                text = os.read(err, 65536).decode(errors="replace").strip()
                out.append(f"{self.name} in {ns} failed: {text or f'exit status {p.returncode}'}")
        return out

    def close(self) -> None:
        for fd in self.pidfds:
            os.close(fd)
        for _, p, err in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            os.close(err)
        self.pidfds, self.procs = [], []


# A node's proxy runs on its own machine in a real cluster: the control plane's work meanwhile
# (the Endpoints writes after the slices', the DNS servers reading them) never slows its sync.
# Here they share the host's cores, so a node's restore goes first: at nice -5 while there is
# a core for each restore; more restores at once share that weight (the kernel's CFS weights,
# sched_prio_to_weight), so that ten nodes' restores never starve the control plane.
RESTORE_NICE = -5
_WEIGHTS = {-5: 3121, -4: 2501, -3: 1991, -2: 1586, -1: 1277, 0: 1024, 1: 820, 2: 655, 3: 526, 4: 423,
            5: 335, 6: 272, 7: 215, 8: 172, 9: 137, 10: 110}


def restore_nice(restores: int, cores: int | None = None) -> int:
    """The nice of each of `restores` restores running at once: together they weigh what one
    restore a core at RESTORE_NICE does."""
    share = _WEIGHTS[RESTORE_NICE] * (cores or os.cpu_count() or 1) / max(1, restores)
    return min(_WEIGHTS, key=lambda n: (abs(_WEIGHTS[n] - share), -n)) if share < _WEIGHTS[RESTORE_NICE] \
        else RESTORE_NICE


def _first_in_line(pid: int, nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:  # not root, or it has already ended
        pass


def _missing_chain(stderr: str) -> bool:
    """What `iptables -S CHAIN` says of a chain that does not exist (legacy; the nf_tables
    backend of iptables 1.8.9 calls it "incompatible"; a table not made yet has no chain)."""
    return any(m in stderr for m in ("No chain/target/match", "is incompatible", "does not exist",
                                     "Table does not exist"))


def save_chains(ns: str, chains: list[tuple[str, str]], which: str = "", run_dir: str = "") -> str:
    """What iptables-save would print of these (table, chain)s alone: each one that exists,
    declared, with its rules (a built-in chain always: the nf_tables backend shows one of a
    table it has not made yet as empty). One `iptables -S CHAIN` each, as kube-proxy looks at single
    chains: the nf_tables backend's iptables-save reads the whole ruleset (0.75 s at 90,000
    rules, where a chain takes 5 ms)."""
    tool = _tool("", which)
    tables: dict[str, tuple[list[str], list[str]]] = {}
    with netns.entered(ns):
        for table, chain in chains:
            proc = subprocess.run([tool, "-w", "5", "-t", table, "-S", chain], capture_output=True, text=True,
                                  env=lock_env(run_dir, ns))
            if proc.returncode != 0:
                if _missing_chain(proc.stderr):
                    continue
                raise NskError(f"iptables -t {table} -S {chain} in {ns} failed: {proc.stderr.strip()}")
            decls, rules = tables.setdefault(table, ([], []))
            decls.append(f":{chain} - [0:0]")
            rules += [line for line in proc.stdout.splitlines() if line.startswith("-A ")]
    return save_text(tables)


def save_text(tables: dict[str, tuple[list[str], list[str]]]) -> str:
    """iptables-save's text of each table's (chain declarations, rules), in one order
    whatever order they were read in: tables and chains by name, a chain's rules in its order."""
    lines = [x for t, (decls, rules) in sorted(tables.items())
             for x in (f"*{t}", *sorted(decls), *sorted(rules, key=lambda r: r.split()[1]), "COMMIT")]
    return "\n".join(lines) + ("\n" if lines else "")


def save(ns: str, table: str | None = None, which: str = "") -> str:
    """iptables-save inside namespace `ns` (root)."""
    args = [_tool("save", which)] + (["-t", table] if table else [])
    with netns.entered(ns):
        proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NskError(f"iptables-save in {ns} failed: {proc.stderr.strip()}")
    return proc.stdout


def conntrack_delete(ns: str, *args: str) -> None:
    """`conntrack -D ...` inside namespace `ns` (root); no matching entry is not an error."""
    exe = shutil.which("conntrack")
    if exe is None:
        return
    with netns.entered(ns):
        subprocess.run([exe, "-D", *args], capture_output=True)
