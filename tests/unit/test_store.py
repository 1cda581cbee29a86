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
