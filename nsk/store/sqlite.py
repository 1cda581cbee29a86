"""The cluster's object store: SQLite in WAL mode under /run/nsk/<cluster>/ (as k3s keeps
its objects in SQLite through kine).

Any process may read and write it: the CLI writes what the user applies, the control
plane writes status. Every write takes the next revision and appends a row to the change
log (`changes`), as etcd's MVCC history: a reader keeps a cache current with
`watch(kinds, since)` and, when the log was compacted past `since`, learns it must list
again (`Gone`, the API server's 410). Each object carries its `uid` and its
`resourceVersion` (the revision of its last write); a write that names a resourceVersion
is a conditional update and fails with `Conflict` (409) when the object moved on. After
each commit the writer sends a datagram to the control plane's socket and to every
watcher's (the DNS servers): a wake-up, the data comes from the log.

SQLite gives atomic, crash-safe writes and consistent reads (one read transaction sees
one revision); spec and status live in separate columns, so a user's `apply` and the
kubelet's status update never overwrite each other (the status subresource).

Also recorded here: every kernel object and process nsk creates (`owned`), written
*before* it is created, so that `nsk down` after a crash removes exactly what exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid

from dataclasses import dataclass

from nsk.api.objects import Key, key
from nsk.errors import Conflict, Gone, NotFound

RUN_ROOT = "/run/nsk"
NOTIFY = "notify.sock"
WATCH_DIR = "watch"  # one datagram socket per other watcher
# The change log keeps at least this many revisions; a watcher further behind lists again.
# (etcd compacts by time, the API server's watch cache holds a window of events; a window of
# writes is what matters to a reader that fell behind.)
HISTORY = 20_000
COMPACT_EVERY = 1_000


@dataclass(frozen=True)
class WatchEvent:
    """One change, as a watch delivers it: ADDED, MODIFIED or DELETED, and the object
    as that write left it (for DELETED, as it was last)."""

    type: str
    revision: int
    key: Key
    object: dict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, namespace, name));
CREATE TABLE IF NOT EXISTS owned (
    kind TEXT NOT NULL, name TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS changes (
    rev INTEGER PRIMARY KEY, type TEXT NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL, type TEXT NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL);
"""


def _encode(value: object) -> str:
    """An object's stored text: canonical (sorted keys), so that the same object is the same
    text; compact (a fifth faster to write than with spaces, and smaller to read)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def cluster_dir(cluster: str) -> str:
    return os.path.join(RUN_ROOT, cluster)


def now_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def _create(db: str) -> None:
    """Make the store file whole or not at all: its tables are built under a temporary name
    that is renamed into place, so a `kill -9` of `nsk up` at any moment leaves either no
    store (the name is free again after `nsk down`) or a complete one."""
    tmp = f"{db}.{os.getpid()}.tmp"
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        os.rename(tmp, db)
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


class Store:
    def __init__(self, directory: str, create: bool = False):
        self.dir = directory
        db = os.path.join(directory, "store.db")
        if create and not os.path.exists(db):
            _create(db)
        if not os.path.exists(db):
            raise FileNotFoundError(db)
        self.db = sqlite3.connect(db, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._depth = 0
        self._tx_revisions = 0  # revisions the open transaction has taken (0: nothing to announce)
        # This process's last `keep_decoded` writes, decoded: (body text, status text, object).
        # A process that writes and watches one store (the control plane: for one new Pod
        # behind 1,000 Services, 2,000 Endpoints and slices) then never decodes what it has
        # just encoded. A row whose texts are those of a kept write gives the kept object,
        # shared and read-only, as an informer's are (a rolled-back write's revision taken
        # again by another write has other texts, and is decoded).
        self.keep_decoded = 0
        self._decoded: dict[int, tuple[str, str, dict]] = {}
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.setblocking(False)

    def close(self) -> None:
        self.db.close()
        self._notify.close()

    # ---- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def tx(self):
        """One atomic write (nestable); watchers are woken after the outermost commit."""
        if self._depth == 0:
            self.db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self.db.execute("ROLLBACK")
                self._tx_revisions = 0
            raise
        self._depth -= 1
        if self._depth == 0:
            self.db.execute("COMMIT")
            took, self._tx_revisions = self._tx_revisions, 0
            if took:
                self.wake()

    @contextlib.contextmanager
    def savepoint(self):
        """Inside a transaction: a part that fails alone, rolled back to here while what
        came before stays (one controller's failed write does not undo its others)."""
        assert self._depth, "a savepoint needs an open transaction"
        taken = self._tx_revisions
        self.db.execute("SAVEPOINT part")
        try:
            yield self
        except BaseException:
            self.db.execute("ROLLBACK TO part")
            self.db.execute("RELEASE part")
            self._tx_revisions = taken
            raise
        self.db.execute("RELEASE part")

    @contextlib.contextmanager
    def read(self):
        """A consistent read: every query in the block sees the same revision."""
        if self._depth:
            yield self
            return
        self.db.execute("BEGIN")
        try:
            yield self
        finally:
            self.db.execute("COMMIT")

    def wake(self) -> None:
        """Tell the control plane, and every other watcher (the DNS servers), that a write happened."""
        paths = [os.path.join(self.dir, NOTIFY)]
        watch = os.path.join(self.dir, WATCH_DIR)
        with contextlib.suppress(OSError):
            paths += [os.path.join(watch, n) for n in os.listdir(watch)]
        for path in paths:
            with contextlib.suppress(OSError):
                self._notify.sendto(b"!", path)

    def _record(self, type_: str, k: Key, body: str, status: str) -> int:
        """Take the next revision for a write of `k` and log it (inside a transaction)."""
        self._tx_revisions += 1
        cur = self.db.execute("SELECT v FROM meta WHERE k='revision'").fetchone()
        rev = int(cur[0]) + 1 if cur else 1
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (str(rev),))
        self.db.execute("INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (rev, type_, k.kind, k.namespace, k.name, body, status))
        if rev % COMPACT_EVERY == 0 and rev > HISTORY:
            self.db.execute("DELETE FROM changes WHERE rev <= ?", (rev - HISTORY,))
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('compacted', ?)", (str(rev - HISTORY),))
        return rev

    def revision(self) -> int:
        cur = self.db.execute("SELECT v FROM meta WHERE k='revision'").fetchone()
        return int(cur[0]) if cur else 0

    # ---- meta ---------------------------------------------------------------------------

    def get_meta(self, k: str, default: object = None) -> object:
        row = self.db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, k: str, value: object) -> None:
        with self.tx():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, json.dumps(value)))

    # ---- objects ------------------------------------------------------------------------

    @staticmethod
    def _row(body: str, status: str, rv: int) -> dict:
        obj = json.loads(body)
        obj["metadata"]["resourceVersion"] = str(rv)
        st = json.loads(status)
        if st:
            obj["status"] = st
        return obj

    def _shared(self, body: str, status: str, rv: int) -> dict:
        """The object of a row: the kept one of this process's write (not a copy: read it
        only), else decoded."""
        kept = self._decoded.get(rv)
        if kept is not None and kept[0] == body and kept[1] == status:
            return kept[2]
        return self._row(body, status, rv)

    def _keep(self, rv: int, text: str, status_text: str, body: dict, status: dict | None) -> None:
        if not self.keep_decoded:
            return
        obj = {**body, "metadata": {**body["metadata"], "resourceVersion": str(rv)}}
        if status:
            obj["status"] = status
        self._decoded[rv] = (text, status_text, obj)
        if len(self._decoded) > self.keep_decoded:
            del self._decoded[next(iter(self._decoded))]

    def _raw(self, k: Key) -> tuple[str, str, int] | None:
        return self.db.execute("SELECT body, status, rv FROM objects WHERE kind=? AND namespace=? AND name=?",
                               (k.kind, k.namespace, k.name)).fetchone()

    def get(self, kind: str, namespace: str, name: str, shared: bool = False) -> dict | None:
        """The object, or None. `shared`: it may be the object this process's own write
        kept (see keep_decoded), not a copy: only to read."""
        row = self._raw(Key(kind, namespace, name))
        if not row:
            return None
        return self._shared(*row) if shared else self._row(*row)

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        if namespace is None:
            rows = self.db.execute("SELECT body, status, rv FROM objects WHERE kind=? ORDER BY namespace, name",
                                   (kind,))
        else:
            rows = self.db.execute("SELECT body, status, rv FROM objects WHERE kind=? AND namespace=? "
                                   "ORDER BY name", (kind, namespace))
        return [self._row(*r) for r in rows]

    def snapshot(self, kinds: tuple[str, ...]) -> tuple[dict[str, list[dict]], int]:
        """Every object of `kinds` and the revision they were read at, in one read."""
        with self.read():
            return {k: self.list(k) for k in kinds}, self.revision()

    def watch(self, kinds: tuple[str, ...], since: int) -> tuple[list[WatchEvent], int]:
        """The changes to `kinds` after revision `since`, and the revision read up to.

        Raises Gone when the log no longer reaches back to `since`: list again
        (`snapshot`) and watch from the revision that gave."""
        with self.read():
            compacted = int(self.db.execute("SELECT coalesce((SELECT v FROM meta WHERE k='compacted'), 0)")
                            .fetchone()[0])
            if since < compacted:
                raise Gone(f"too old resource version: {since} ({compacted})")
            marks = ",".join("?" * len(kinds))
            rows = self.db.execute(f"SELECT rev, type, kind, namespace, name, body, status FROM changes "
                                   f"WHERE rev > ? AND kind IN ({marks}) ORDER BY rev", (since, *kinds)).fetchall()
            rev = self.revision()
        return [WatchEvent(t, r, Key(kind, ns, name), self._shared(body, status, r))
                for r, t, kind, ns, name, body, status in rows], rev

    @staticmethod
    def _precondition(k: Key, want: object, have: int | None) -> None:
        if want in (None, ""):
            return
        if have is None:
            raise NotFound(f'{k.kind} "{k}" not found')
        if str(want) != str(have):
            raise Conflict(f'Operation cannot be fulfilled on {k.kind} "{k}": the object has been modified; '
                           "please apply your changes to the latest version and try again")

    def put(self, obj: dict) -> str:
        """Create or update an object's spec (never its status): 'created', 'configured' or
        'unchanged'. With `metadata.resourceVersion` set it is an update of that version:
        NotFound when the object is gone, Conflict when it has moved on."""
        k = key(obj)
        body = {kk: v for kk, v in obj.items() if kk != "status"}
        meta = dict(body.get("metadata") or {})
        want_rv = meta.pop("resourceVersion", None)
        with self.tx():
            row = self._raw(k)
            self._precondition(k, want_rv, row[2] if row else None)
            if row is not None:
                old = self._shared(*row)  # its metadata and spec are read, nothing else
                old_meta = old["metadata"]
                meta["uid"] = old_meta["uid"]
                meta["creationTimestamp"] = old_meta["creationTimestamp"]
                meta["generation"] = old_meta.get("generation", 1) + (old.get("spec") != body.get("spec"))
            else:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", now_iso())
                meta.setdefault("generation", 1)
            body["metadata"] = meta
            text = _encode(body)
            if row is not None and text == row[0]:
                return "unchanged"
            status = row[1] if row else "{}"
            rv = self._record("MODIFIED" if row else "ADDED", k, text, status)
            self.db.execute(
                "INSERT INTO objects (kind, namespace, name, rv, body, status) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, namespace, name) DO UPDATE SET rv=excluded.rv, body=excluded.body",
                (k.kind, k.namespace, k.name, rv, text, status))
            self._keep(rv, text, status, body, old.get("status") if row is not None else None)
        return "configured" if row is not None else "created"

    def set_status(self, k: Key, status: dict, resource_version: str | None = None) -> bool:
        """Replace an object's status; False if the object is gone. With `resource_version`,
        only if the object is still at that version (else Conflict)."""
        with self.tx():
            row = self._raw(k)
            if row is None:
                return False
            self._precondition(k, resource_version, row[2])
            text = _encode(status)
            if row[1] == text:
                return True
            rv = self._record("MODIFIED", k, row[0], text)
            self.db.execute("UPDATE objects SET status=?, rv=? WHERE kind=? AND namespace=? AND name=?",
                            (text, rv, k.kind, k.namespace, k.name))
        return True

    def delete(self, k: Key, resource_version: str | None = None) -> bool:
        """Delete an object; False if there was none. With `resource_version`, only that version."""
        with self.tx():
            row = self._raw(k)
            if row is None:
                return False
            self._precondition(k, resource_version, row[2])
            self.db.execute("DELETE FROM objects WHERE kind=? AND namespace=? AND name=?",
                            (k.kind, k.namespace, k.name))
            self._record("DELETED", k, row[0], row[1])
        return True

    # ---- events (what `describe` shows at the end) -------------------------------------

    def event(self, k: Key, type_: str, reason: str, message: str) -> None:
        with self.tx():
            self.db.execute("INSERT INTO events (ts, kind, namespace, name, type, reason, message) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", (time.time(), k.kind, k.namespace, k.name,
                                                             type_, reason, message))
            self.db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - 5000")

    def events(self, k: Key) -> list[tuple[float, str, str, str]]:
        return self.db.execute("SELECT ts, type, reason, message FROM events WHERE kind=? AND namespace=? "
                               "AND name=? ORDER BY id", (k.kind, k.namespace, k.name)).fetchall()

    # ---- what nsk created in the kernel ------------------------------------------------

    def own(self, kind: str, name: str, detail: str = "") -> None:
        with self.tx():
            self.db.execute("INSERT OR REPLACE INTO owned VALUES (?, ?, ?)", (kind, name, detail))

    def disown(self, kind: str, name: str) -> None:
        with self.tx():
            self.db.execute("DELETE FROM owned WHERE kind=? AND name=?", (kind, name))

    def owned(self, kind: str | None = None) -> list[tuple[str, str, str]]:
        if kind is None:
            return self.db.execute("SELECT kind, name, detail FROM owned").fetchall()
        return self.db.execute("SELECT kind, name, detail FROM owned WHERE kind=?", (kind,)).fetchall()
