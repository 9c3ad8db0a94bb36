"""The state interface and its in-process implementation."""

from __future__ import annotations

import pytest

from joiner.engine.state import MemoryStore, StateStore


def test_memory_store_satisfies_the_protocol():
    assert isinstance(MemoryStore(), StateStore)


def test_get_returns_what_was_put_and_the_default_otherwise():
    store = MemoryStore()
    store.put("ns", "a", 1)

    assert store.get("ns", "a") == 1
    assert store.get("ns", "b") is None
    assert store.get("ns", "b", "none") == "none"
    assert store.get("other", "a", 0) == 0


def test_a_stored_none_is_returned_rather_than_the_default():
    store = MemoryStore()
    store.put("ns", "a", None)

    assert store.get("ns", "a", "default") is None
    assert store.size("ns") == 1


def test_namespaces_are_separate():
    store = MemoryStore()
    store.put("left", "k", "L")
    store.put("right", "k", "R")

    store.delete("left", "k")

    assert store.get("left", "k") is None
    assert store.get("right", "k") == "R"
    assert store.size("left") == 0
    assert store.size("right") == 1


def test_items_are_in_insertion_order_and_a_replaced_key_keeps_its_place():
    store = MemoryStore()
    for key, value in (("c", 1), ("a", 2), ("b", 3)):
        store.put("ns", key, value)

    store.put("ns", "c", 10)

    assert list(store.items("ns")) == [("c", 10), ("a", 2), ("b", 3)]


def test_a_deleted_and_put_again_key_moves_to_the_end():
    store = MemoryStore()
    for key in ("a", "b", "c"):
        store.put("ns", key, key.upper())

    store.delete("ns", "a")
    store.put("ns", "a", "A2")

    assert list(store.items("ns")) == [("b", "B"), ("c", "C"), ("a", "A2")]


def test_items_of_an_unknown_namespace_is_empty():
    assert list(MemoryStore().items("nothing")) == []


def test_pop_returns_and_removes_the_value():
    store = MemoryStore()
    store.put("ns", ("tenants", "id", "e-1"), 12.5)

    assert store.pop("ns", ("tenants", "id", "e-1")) == 12.5
    assert store.pop("ns", ("tenants", "id", "e-1"), "gone") == "gone"
    assert store.size("ns") == 0


def test_delete_of_an_absent_key_is_not_an_error():
    store = MemoryStore()
    store.put("ns", "a", 1)

    store.delete("ns", "zzz")
    store.delete("never", "a")

    assert list(store.items("ns")) == [("a", 1)]


def test_empty_namespaces_are_dropped():
    store = MemoryStore()
    store.put("window/1", "x", 1)
    store.put("window/2", "y", 2)

    store.delete("window/1", "x")
    store.pop("window/2", "y")

    assert store.namespaces() == []


def test_changing_a_namespace_while_iterating_it_is_refused():
    store = MemoryStore()
    store.put("ns", "a", 1)
    store.put("ns", "b", 2)
    iterator = store.items("ns")
    next(iterator)

    store.delete("ns", "b")

    with pytest.raises(RuntimeError):
        next(iterator)


def test_size_counts_keys_per_namespace():
    store = MemoryStore()
    for index in range(5):
        store.put("ns", index, index * index)
    store.put("ns", 2, -1)

    assert store.size("ns") == 5
    assert store.size("empty") == 0
