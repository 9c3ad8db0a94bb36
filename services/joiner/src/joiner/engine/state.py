"""The one state interface behind window buffers, table state and dedup memory.

The engine keeps every piece of state it must not lose through :class:`StateStore`, so the
in-process :class:`MemoryStore` used today can later be swapped for a durable store on a Dapr
state store without touching the engine. For that swap to be safe, users of the interface keep
to the contract below and assume nothing about where the state lives:

* State is split into *namespaces* (``"dedup/tenants"``, ``"window/1700000000000"``, …); a key is
  unique within its namespace only.
* Keys and values should be JSON-encodable (str, int, float, bool, None, and lists, tuples and
  dicts of those), because a durable store has to serialise them.
* A stored value may be a copy: after changing a value you got from ``get``, ``put`` it again.
  (``MemoryStore`` keeps references, so forgetting this would pass here and break later.)
* ``items`` yields in insertion order, oldest first; ``put`` on an existing key replaces the
  value and keeps the key's place. Callers such as the deduplicator rely on this order to find
  the oldest entry without scanning. Do not change a namespace while iterating it: take what you
  need (``list(...)`` or one ``next(...)``) first.
* Removing a key that is absent is not an error.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class StateStore(Protocol):
    """Namespaced key/value state, iterable in insertion order (see the module docstring)."""

    def get(self, namespace: str, key: Hashable, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when there is none."""
        ...

    def put(self, namespace: str, key: Hashable, value: Any) -> None:
        """Store ``value``; an existing key keeps its place in the order."""
        ...

    def delete(self, namespace: str, key: Hashable) -> None:
        """Forget ``key``; nothing happens when it is absent."""
        ...

    def items(self, namespace: str) -> Iterator[tuple[Hashable, Any]]:
        """``(key, value)`` pairs, oldest put first; lazy, so do not change the namespace meanwhile."""
        ...

    def pop(self, namespace: str, key: Hashable, default: Any = None) -> Any:
        """Remove ``key`` and return its value, or ``default`` when it is absent."""
        ...

    def size(self, namespace: str) -> int:
        """How many keys the namespace holds."""
        ...


class MemoryStore:
    """The in-process :class:`StateStore`: one ordered dict per namespace.

    ``OrderedDict`` rather than ``dict`` because taking the first item of a plain dict after many
    deletions from its front scans the deleted slots; the ordered dict's linked list keeps
    "oldest entry" O(1), which the deduplicator's eviction depends on. Empty namespaces are dropped
    so short-lived namespaces (one per window) do not accumulate.
    """

    def __init__(self) -> None:
        self._namespaces: dict[str, OrderedDict[Hashable, Any]] = {}

    def get(self, namespace: str, key: Hashable, default: Any = None) -> Any:
        entries = self._namespaces.get(namespace)
        return default if entries is None else entries.get(key, default)

    def put(self, namespace: str, key: Hashable, value: Any) -> None:
        entries = self._namespaces.get(namespace)
        if entries is None:
            entries = self._namespaces[namespace] = OrderedDict()
        entries[key] = value

    def delete(self, namespace: str, key: Hashable) -> None:
        self.pop(namespace, key)

    def items(self, namespace: str) -> Iterator[tuple[Hashable, Any]]:
        entries = self._namespaces.get(namespace)
        return iter(()) if entries is None else iter(entries.items())

    def pop(self, namespace: str, key: Hashable, default: Any = None) -> Any:
        entries = self._namespaces.get(namespace)
        if entries is None or key not in entries:
            return default
        value = entries.pop(key)
        if not entries:
            del self._namespaces[namespace]
        return value

    def size(self, namespace: str) -> int:
        entries = self._namespaces.get(namespace)
        return 0 if entries is None else len(entries)

    def namespaces(self) -> list[str]:
        """The namespaces that hold at least one key (for stats and tests; not part of the protocol)."""
        return list(self._namespaces)
