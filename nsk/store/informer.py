"""A reader's local cache of some kinds, kept current from the store's change log: what
client-go's reflector and indexer are to a controller.

    informer = Informer(store, ("Service", "Endpoints"))
    changed = informer.sync()          # first call lists; later calls apply the watch
    informer.list("Service")           # from memory, consistent at informer.revision

The first `sync` lists every object of its kinds in one read; each later one applies the
changes logged since the revision it last saw. When the log was compacted past that
revision (the reader fell far behind: Gone), it lists again, as a reflector relists on
410. The objects are shared, not copied: a reader that changes one must copy it first.
"""

from __future__ import annotations

from nsk.api.objects import Key, key
from nsk.errors import Gone


class Informer:
    def __init__(self, store, kinds: tuple[str, ...]):
        self.store, self.kinds = store, tuple(kinds)
        self.revision = -1  # nothing read yet
        self._objects: dict[str, dict[Key, dict]] = {k: {} for k in self.kinds}
        self._sorted: dict[str, list[dict] | None] = {k: None for k in self.kinds}

    def sync(self) -> set[Key]:
        """Bring the cache up to the store's revision; the keys that changed (all, on a list)."""
        if self.revision >= 0:
            try:
                events, rev = self.store.watch(self.kinds, self.revision)
            except Gone:
                return self._relist()
            for ev in events:
                bucket = self._objects[ev.key.kind]
                if ev.type == "DELETED":
                    bucket.pop(ev.key, None)
                else:
                    bucket[ev.key] = ev.object
                self._sorted[ev.key.kind] = None
            self.revision = rev
            return {ev.key for ev in events}
        return self._relist()

    def _relist(self) -> set[Key]:
        lists, rev = self.store.snapshot(self.kinds)
        old = {k for bucket in self._objects.values() for k in bucket}
        self._objects = {kind: {key(o): o for o in objs} for kind, objs in lists.items()}
        self._sorted = {kind: objs for kind, objs in lists.items()}
        self.revision = rev
        return old | {k for bucket in self._objects.values() for k in bucket}

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        """The cached objects of `kind`, ordered by namespace and name as Store.list orders them."""
        items = self._sorted[kind]
        if items is None:
            items = self._sorted[kind] = [o for _, o in sorted(self._objects[kind].items())]
        if namespace is None:
            return items
        return [o for o in items if o["metadata"].get("namespace", "") == namespace]

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._objects[kind].get(Key(kind, namespace, name))
