"""Deduplication of redelivered events, driven by a hand-held clock."""

from __future__ import annotations

import pytest

from joiner.engine.dedup import Deduplicator, dedup_key
from joiner.engine.state import MemoryStore


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _dedup(ttl: float = 60, max_entries: int = 100, clock: Clock | None = None, store: MemoryStore | None = None):
    clock = clock or Clock()
    store = store or MemoryStore()
    return Deduplicator(store, "dedup", ttl, max_entries, clock), clock, store


def test_first_sight_is_new_and_a_repeat_within_the_ttl_is_a_duplicate():
    dedup, clock, _ = _dedup(ttl=60)

    assert dedup.seen("e-1") is False
    clock.now += 59.9
    assert dedup.seen("e-1") is True
    assert dedup.seen("e-2") is False

    assert dedup.duplicates == 1


def test_a_key_is_accepted_again_once_the_ttl_has_passed():
    dedup, clock, _ = _dedup(ttl=60)
    dedup.seen("e-1")  # recorded at 1000

    clock.now = 1060.0  # [1000, 1060) is the remembered span

    assert dedup.seen("e-1") is False
    assert dedup.expired == 1
    assert dedup.duplicates == 0


def test_a_duplicate_does_not_refresh_the_recorded_time():
    dedup, clock, store = _dedup(ttl=60)
    dedup.seen("e-1")  # recorded at 1000
    clock.now = 1050.0
    assert dedup.seen("e-1") is True

    clock.now = 1061.0  # 61 s after the first sight, 11 s after the duplicate

    assert dedup.seen("e-1") is False
    assert store.get("dedup", "e-1") == 1061.0


def test_expired_entries_are_forgotten_from_the_oldest_on_the_next_call():
    dedup, clock, store = _dedup(ttl=10)
    for offset, key in ((0, "a"), (4, "b"), (8, "c")):
        clock.now = 1000.0 + offset
        dedup.seen(key)

    clock.now = 1014.5  # a (1000) and b (1004) have expired, c (1008) has not
    dedup.seen("d")

    assert list(store.items("dedup")) == [("c", 1008.0), ("d", 1014.5)]
    assert dedup.expired == 2
    assert len(dedup) == 2


def test_the_bound_evicts_the_oldest_entries_first():
    dedup, clock, store = _dedup(ttl=3600, max_entries=3)
    for key in ("a", "b", "c"):
        dedup.seen(key)
        clock.now += 1

    assert dedup.seen("d") is False  # full: a goes
    assert dedup.seen("e") is False  # then b

    assert [key for key, _ in store.items("dedup")] == ["c", "d", "e"]
    assert dedup.evicted == 2
    assert dedup.seen("c") is True  # still remembered
    assert dedup.seen("a") is False  # forgotten early: accepted again, and c (the oldest) goes
    assert [key for key, _ in store.items("dedup")] == ["d", "e", "a"]
    assert dedup.evicted == 3


def test_expiry_is_not_counted_as_eviction():
    dedup, clock, _ = _dedup(ttl=5, max_entries=2)
    dedup.seen("a")
    dedup.seen("b")

    clock.now += 5
    dedup.seen("c")

    assert dedup.evicted == 0
    assert dedup.expired == 2


def test_the_memory_lives_in_the_store_so_a_new_deduplicator_continues_it():
    store = MemoryStore()
    clock = Clock()
    first = Deduplicator(store, "dedup/tenants", 60, 100, clock)
    first.seen(("tenants", "id", "e-1"))

    second = Deduplicator(store, "dedup/tenants", 60, 100, clock)  # e.g. after a restart on a durable store
    other_namespace = Deduplicator(store, "dedup/poweruse", 60, 100, clock)

    assert second.seen(("tenants", "id", "e-1")) is True
    assert other_namespace.seen(("tenants", "id", "e-1")) is False


def test_many_expiries_leave_only_live_entries():
    dedup, clock, store = _dedup(ttl=10, max_entries=10_000)
    for index in range(5_000):
        clock.now = 1000.0 + index * 0.5
        assert dedup.seen(index) is False

    # now = 1000 + 4999 * 0.5 = 3499.5; entries recorded at or before 3489.5 (index <= 4979) expired
    assert store.size("dedup") == 20
    assert next(store.items("dedup")) == (4980, 3490.0)
    assert dedup.expired == 4980
    assert dedup.evicted == 0


def test_no_key_is_never_a_duplicate_and_is_not_recorded():
    dedup, _, store = _dedup()

    assert [dedup.seen(None), dedup.seen(None)] == [False, False]
    assert store.size("dedup") == 0
    assert dedup.duplicates == 0


@pytest.mark.parametrize(("ttl", "max_entries"), [(0, 10), (-1, 10), (10, 0)])
def test_nonsense_bounds_are_refused(ttl, max_entries):
    with pytest.raises(ValueError):
        Deduplicator(MemoryStore(), "dedup", ttl, max_entries, Clock())


# dedup_key


def test_key_from_the_configured_field():
    data = {"reading": {"id": "r-7"}, "kwh_use": 3}

    assert dedup_key("poweruse", "ce-1", data, "reading.id") == ("poweruse", "field", ("str", "r-7"))


def test_key_from_the_event_id_when_no_field_is_configured():
    assert dedup_key("tenants", "ce-1", {"tenant_id": "t"}, None) == ("tenants", "id", "ce-1")


@pytest.mark.parametrize(
    "data",
    [{"other": 1}, {"reading": "not an object"}, {"reading": {"id": None}}, ["not", "an", "object"], None],
)
def test_key_falls_back_to_the_event_id_when_the_field_is_absent_or_null(data):
    assert dedup_key("poweruse", "ce-9", data, "reading.id") == ("poweruse", "id", "ce-9")


@pytest.mark.parametrize("event_id", [None, ""])
def test_no_key_without_field_or_id(event_id):
    assert dedup_key("poweruse", event_id, {"x": 1}, "reading.id") is None
    assert dedup_key("poweruse", event_id, {"x": 1}, None) is None


def test_keys_of_1_1_0_and_true_differ():
    keys = {dedup_key("s", None, {"k": value}, "k") for value in (1, 1.0, True, "1")}

    assert keys == {
        ("s", "field", ("int", 1)),
        ("s", "field", ("float", 1.0)),
        ("s", "field", ("bool", True)),
        ("s", "field", ("str", "1")),
    }
    assert len(keys) == 4


def test_object_and_list_values_are_keyed_by_canonical_json():
    first = dedup_key("s", None, {"k": {"b": 2, "a": [1, "x"]}}, "k")
    reordered = dedup_key("s", None, {"k": {"a": [1, "x"], "b": 2}}, "k")

    assert first == reordered == ("s", "field", ("dict", '{"a":[1,"x"],"b":2}'))
    assert dedup_key("s", None, {"k": [1, 2]}, "k") == ("s", "field", ("list", "[1,2]"))


def test_the_stream_is_part_of_the_key():
    assert dedup_key("tenants", "ce-1", {}, None) != dedup_key("poweruse", "ce-1", {}, None)


def test_keys_feed_the_deduplicator():
    dedup, _, _ = _dedup()

    first = dedup.seen(dedup_key("s", "ce-1", {"k": 1}, "k"))
    same_value_other_id = dedup.seen(dedup_key("s", "ce-2", {"k": 1}, "k"))
    float_value = dedup.seen(dedup_key("s", "ce-3", {"k": 1.0}, "k"))

    assert (first, same_value_other_id, float_value) == (False, True, False)


def test_merged_entries_keep_time_order_the_earlier_time_and_the_bound():
    dedup, clock, _ = _dedup(ttl=60, max_entries=3)
    clock.now = 1010.0
    dedup.seen("new-1")
    dedup.seen("both")  # also in the previous run's, which saw it at 1000
    dedup.merge([("old-1", 995.0), ("both", 1000.0), ("old-2", 1005.0)])

    assert dedup.entries() == [("both", 1000.0), ("old-2", 1005.0), ("new-1", 1010.0)]  # old-1 went for the bound
    assert dedup.evicted == 1
    clock.now = 1060.0  # "both" expires first: the order is what expiry relies on
    assert dedup.seen("both") is False
    assert dedup.seen("old-2") is True
