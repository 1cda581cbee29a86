"""The store's Kubernetes semantics: uid and resourceVersion, conditional writes (409),
a change log a reader resumes from, and 410 when it fell behind the compaction."""

from __future__ import annotations

import pytest

from nsk.api.objects import Key
from nsk.errors import Conflict, Gone, NotFound
from nsk.store import Store
from nsk.store import sqlite
from nsk.store.informer import Informer


def svc(name: str, port: int = 80, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": port}]}}


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path), create=True)
    yield s
    s.close()


def test_every_object_has_a_uid_and_a_resource_version_that_moves_with_each_write(store):
    store.put(svc("web"))
    first = store.get("Service", "default", "web")
    assert first["metadata"]["uid"] and first["metadata"]["resourceVersion"] == str(store.revision())
    store.put(svc("web", 81))
    second = store.get("Service", "default", "web")
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert second["metadata"]["generation"] == 2


def test_a_write_of_a_stale_resource_version_is_a_conflict_and_changes_nothing(store):
    store.put(svc("web"))
    mine = store.get("Service", "default", "web")
    theirs = store.get("Service", "default", "web")
    theirs["spec"]["ports"][0]["port"] = 81
    assert store.put(theirs) == "configured"
    mine["spec"]["ports"][0]["port"] = 82
    with pytest.raises(Conflict) as e:
        store.put(mine)
    assert e.value.code == 409 and "has been modified" in str(e.value)
    assert store.get("Service", "default", "web")["spec"]["ports"][0]["port"] == 81
    with pytest.raises(Conflict):
        store.set_status(Key("Service", "default", "web"), {"x": 1}, resource_version=mine["metadata"]["resourceVersion"])
    with pytest.raises(Conflict):
        store.delete(Key("Service", "default", "web"), resource_version=mine["metadata"]["resourceVersion"])
    assert store.get("Service", "default", "web") is not None


def test_an_update_of_a_deleted_object_does_not_bring_it_back(store):
    store.put(svc("web"))
    read = store.get("Service", "default", "web")
    store.delete(Key("Service", "default", "web"))
    with pytest.raises(NotFound):
        store.put(read)
    assert store.get("Service", "default", "web") is None


def test_status_and_spec_are_written_apart(store):
    store.put(svc("web"))
    k = Key("Service", "default", "web")
    store.set_status(k, {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}})
    store.put(svc("web", 81))  # an apply carries no status: it keeps the one written
    got = store.get("Service", "default", "web")
    assert got["status"]["loadBalancer"]["ingress"][0]["ip"] == "198.51.100.1"
    assert got["spec"]["ports"][0]["port"] == 81


def test_watch_resumes_from_a_revision_and_carries_each_write(store):
    store.put(svc("a"))
    since = store.revision()
    store.put(svc("b"))
    store.put(svc("a", 81))
    store.set_status(Key("Service", "default", "b"), {"s": 1})
    store.delete(Key("Service", "default", "a"))
    store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    events, rev = store.watch(("Service",), since)
    assert [(e.type, e.key.name) for e in events] == [("ADDED", "b"), ("MODIFIED", "a"), ("MODIFIED", "b"),
                                                      ("DELETED", "a")]
    assert events[1].object["spec"]["ports"][0]["port"] == 81  # the object as that write left it
    assert events[2].object["status"] == {"s": 1}
    assert events[3].object["spec"]["ports"][0]["port"] == 81  # a deletion carries the last state
    assert rev == store.revision()
    assert store.watch(("Service",), rev) == ([], rev)


def test_a_watch_from_before_the_compaction_is_gone(store, monkeypatch):
    monkeypatch.setattr(sqlite, "HISTORY", 10)
    monkeypatch.setattr(sqlite, "COMPACT_EVERY", 5)
    store.put(svc("a"))
    old = store.revision()
    for i in range(30):
        store.put(svc("a", 1000 + i))
    with pytest.raises(Gone) as e:
        store.watch(("Service",), old)
    assert e.value.code == 410
    events, _ = store.watch(("Service",), store.revision() - 3)
    assert len(events) == 3


def test_an_informer_follows_another_writer_and_relists_when_it_fell_behind(tmp_path, monkeypatch):
    writer = Store(str(tmp_path), create=True)
    reader = Store(str(tmp_path))
    informer = Informer(reader, ("Service", "Endpoints"))
    writer.put(svc("a"))
    assert informer.sync() == {Key("Service", "default", "a")}
    writer.put(svc("b", namespace="kube-system"))
    writer.delete(Key("Service", "default", "a"))
    assert informer.sync() == {Key("Service", "default", "a"), Key("Service", "kube-system", "b")}
    assert informer.list("Service") == writer.list("Service")
    assert informer.sync() == set()
    monkeypatch.setattr(sqlite, "HISTORY", 10)
    monkeypatch.setattr(sqlite, "COMPACT_EVERY", 5)
    for i in range(30):
        writer.put(svc(f"s{i}"))
    informer.sync()  # Gone underneath: a relist
    assert informer.list("Service") == writer.list("Service")
    assert informer.revision == writer.revision()
    writer.close()
    reader.close()


def test_a_writer_watching_its_own_store_gets_back_what_it_wrote_without_a_decode(tmp_path):
    """The control plane keeps its last writes decoded: its informer takes them back as they
    are (the objects equal to what another process decodes), and a write rolled back whose
    revision another write then takes never passes for it."""
    me = Store(str(tmp_path), create=True)
    me.keep_decoded = 2
    other = Store(str(tmp_path))
    mine = Informer(me, ("Service",))
    theirs = Informer(other, ("Service",))
    mine.sync()
    theirs.sync()
    me.put(svc("a"))
    kept = me._decoded[me.revision()][2]
    mine.sync()
    theirs.sync()
    assert mine.get("Service", "default", "a") is kept
    assert mine.list("Service") == theirs.list("Service") == other.list("Service")
    assert me.put(svc("a")) == "unchanged" and me.put(svc("a", 81)) == "configured"
    assert me.get("Service", "default", "a")["metadata"]["generation"] == 2
    # a write rolled back; another process's write takes the same revision
    rev = me.revision()
    with pytest.raises(RuntimeError), me.tx():
        me.put(svc("b"))
        raise RuntimeError("undone")
    other.put(svc("c", 82))
    assert other.revision() == rev + 1 and (rev + 1) in me._decoded
    mine.sync()
    theirs.sync()
    assert mine.get("Service", "default", "b") is None
    assert mine.list("Service") == theirs.list("Service") == other.list("Service")
    # only the last keep_decoded writes are kept
    for i in range(4):
        me.put(svc(f"d{i}"))
    assert len(me._decoded) == 2
    mine.sync()
    theirs.sync()
    assert mine.list("Service") == theirs.list("Service")
    me.close()
    other.close()


def test_a_store_is_made_whole_or_not_at_all(tmp_path, monkeypatch):
    """A kill during `nsk up`'s first moments must not leave a store without tables."""
    calls = []

    def dying(src, dst):
        calls.append(dst)
        raise KeyboardInterrupt  # what Ctrl-C (or the kill) does just before the store is in place
    monkeypatch.setattr(sqlite.os, "rename", dying)
    with pytest.raises(KeyboardInterrupt):
        Store(str(tmp_path), create=True)
    assert calls and sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-made
    with pytest.raises(FileNotFoundError):
        Store(str(tmp_path))  # a reader sees "not up", not a table-less store
    monkeypatch.undo()
    s = Store(str(tmp_path), create=True)
    s.put(svc("web"))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    s.close()


def _writer(directory: str, n: int, seed: int, rounds: int) -> None:
    """A process writing Pods and their statuses as fast as it can (a kubelet, a CLI)."""
    import random
    rng = random.Random(seed)
    s = Store(directory)
    for r in range(rounds):
        with s.tx():
            for i in rng.sample(range(n), 10):
                name = f"p{seed}-{i}"
                s.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                       "spec": {"containers": [{"name": "c", "image": "x"}], "nodeName": f"node-{r % 3}"}})
                s.set_status(Key("Pod", "default", name), {"phase": "Running", "round": r})
        if rng.random() < 0.2:
            s.delete(Key("Pod", "default", f"p{seed}-{rng.randrange(n)}"))
    s.close()


def _reader(directory: str, rounds: int, out) -> None:
    """A process reading as every reader does (an informer's list and watch, and plain
    gets), checking that what it sees is whole: a snapshot agrees with the watch replayed up
    to the same revision, and no read fails."""
    try:
        s = Store(directory)
        inf = Informer(s, ("Pod",))
        for _ in range(rounds):
            inf.sync()
            lists, rev = s.snapshot(("Pod",))
            if rev == inf.revision:
                got = {(p["metadata"]["name"], p["metadata"]["resourceVersion"]) for p in inf.list("Pod")}
                assert got == {(p["metadata"]["name"], p["metadata"]["resourceVersion"]) for p in lists["Pod"]}
            for p in lists["Pod"]:
                assert int(p["metadata"]["resourceVersion"]) <= rev
            s.list("Pod")
        s.close()
        out.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the test
        out.put(f"{type(e).__name__}: {e}")


def test_concurrent_writers_and_readers_in_other_processes_never_see_a_torn_store(tmp_path):
    """#16: `nsk up` of 1,000 Pods once read "database disk image is malformed" while the
    control plane wrote statuses. Writers and readers in separate processes (spawned: no
    SQLite state crosses a fork), then PRAGMA integrity_check after each round."""
    import multiprocessing
    import sqlite3
    ctx = multiprocessing.get_context("spawn")
    Store(str(tmp_path), create=True).close()
    for round_ in range(3):
        out = ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(str(tmp_path), 50, seed + 10 * round_, 40)) for seed in range(3)]
        procs += [ctx.Process(target=_reader, args=(str(tmp_path), 150, out)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        assert sorted(out.get(timeout=5) for _ in range(3)) == ["ok"] * 3
        db = sqlite3.connect(str(tmp_path / "store.db"))
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.close()
