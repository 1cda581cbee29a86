"""The cluster's object store: SQLite in WAL mode under /run/nsk/<cluster>/ (as k3s keeps
its objects in SQLite through kine).

Any process may read and write it: the CLI writes what the user applies, the control
plane writes status. A write bumps one revision counter; after each commit the writer
sends a datagram to the control plane's socket, which wakes its controllers (a watch).
SQLite gives the atomic, crash-safe writes and concurrent readers; the spec and the status
of an object live in separate columns, so a user's `apply` and the kubelet's status update
never overwrite each other (the status subresource).

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

from nsk.api.objects import Key, key

RUN_ROOT = "/run/nsk"
NOTIFY = "notify.sock"
WATCH_DIR = "watch"  # one datagram socket per other watcher

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, namespace, name));
CREATE TABLE IF NOT EXISTS owned (
    kind TEXT NOT NULL, name TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL, type TEXT NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL);
"""


def cluster_dir(cluster: str) -> str:
    return os.path.join(RUN_ROOT, cluster)


def now_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


class Store:
    def __init__(self, directory: str, create: bool = False):
        self.dir = directory
        db = os.path.join(directory, "store.db")
        if not create and not os.path.exists(db):
            raise FileNotFoundError(db)
        self.db = sqlite3.connect(db, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        if create:
            self.db.executescript(_SCHEMA)
        self._depth = 0
        self._tx_revisions = 0  # revisions the open transaction has taken (0: nothing to announce)
        self.own_revisions = 0  # revisions this connection's committed writes took
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
            self.own_revisions += took
            if took:
                self.wake()

    def wake(self) -> None:
        """Tell the control plane, and every other watcher (the DNS servers), that a write happened."""
        paths = [os.path.join(self.dir, NOTIFY)]
        watch = os.path.join(self.dir, WATCH_DIR)
        with contextlib.suppress(OSError):
            paths += [os.path.join(watch, n) for n in os.listdir(watch)]
        for path in paths:
            with contextlib.suppress(OSError):
                self._notify.sendto(b"!", path)

    def _bump(self) -> int:
        self._tx_revisions += 1
        cur = self.db.execute("SELECT v FROM meta WHERE k='revision'").fetchone()
        rev = int(cur[0]) + 1 if cur else 1
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (str(rev),))
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

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        row = self.db.execute("SELECT body, status, rv FROM objects WHERE kind=? AND namespace=? AND name=?",
                              (kind, namespace, name)).fetchone()
        return self._row(*row) if row else None

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        if namespace is None:
            rows = self.db.execute("SELECT body, status, rv FROM objects WHERE kind=? ORDER BY namespace, name",
                                   (kind,))
        else:
            rows = self.db.execute("SELECT body, status, rv FROM objects WHERE kind=? AND namespace=? "
                                   "ORDER BY name", (kind, namespace))
        return [self._row(*r) for r in rows]

    def put(self, obj: dict) -> str:
        """Create or update an object's spec (never its status): 'created', 'configured' or 'unchanged'."""
        k = key(obj)
        body = {kk: v for kk, v in obj.items() if kk != "status"}
        meta = dict(body.get("metadata") or {})
        meta.pop("resourceVersion", None)
        with self.tx():
            old = self.get(k.kind, k.namespace, k.name)
            if old is not None:
                meta["uid"] = old["metadata"]["uid"]
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
                meta["generation"] = old["metadata"].get("generation", 1)
                old_body = {kk: v for kk, v in old.items() if kk != "status"}
                old_body["metadata"] = {kk: v for kk, v in old_body["metadata"].items() if kk != "resourceVersion"}
                if old_body == {**body, "metadata": meta}:
                    return "unchanged"
                if old_body.get("spec") != body.get("spec"):
                    meta["generation"] += 1
            else:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", now_iso())
                meta.setdefault("generation", 1)
            body["metadata"] = meta
            rv = self._bump()
            self.db.execute(
                "INSERT INTO objects (kind, namespace, name, rv, body) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, namespace, name) DO UPDATE SET rv=excluded.rv, body=excluded.body",
                (k.kind, k.namespace, k.name, rv, json.dumps(body, sort_keys=True)))
        return "configured" if old is not None else "created"

    def set_status(self, k: Key, status: dict) -> bool:
        """Replace an object's status; False if the object is gone."""
        with self.tx():
            row = self.db.execute("SELECT status FROM objects WHERE kind=? AND namespace=? AND name=?",
                                  (k.kind, k.namespace, k.name)).fetchone()
            if row is None:
                return False
            text = json.dumps(status, sort_keys=True)
            if row[0] == text:
                return True
            rv = self._bump()
            self.db.execute("UPDATE objects SET status=?, rv=? WHERE kind=? AND namespace=? AND name=?",
                            (text, rv, k.kind, k.namespace, k.name))
        return True

    def delete(self, k: Key) -> bool:
        with self.tx():
            cur = self.db.execute("DELETE FROM objects WHERE kind=? AND namespace=? AND name=?",
                                  (k.kind, k.namespace, k.name))
            if cur.rowcount:
                self._bump()
        return bool(cur.rowcount)

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
