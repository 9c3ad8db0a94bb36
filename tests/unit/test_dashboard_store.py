"""The dashboard's memory bounds and odd rows (message_proc.dashboard.store), and the joiner's health when
it stops and starts answering (message_proc.dashboard.joiner)."""

from __future__ import annotations

import asyncio

from message_proc.dashboard.joiner import JoinerHealth
from message_proc.dashboard.store import NO_CUSTOMER, BillingStore


def window(n: int, end: float | None = None) -> dict[str, str]:
    return {"window-id": f"w{n}", "window-end": str(end if end is not None else 1000.0 + 20 * n)}


def test_at_most_max_entries_figures_are_kept_the_oldest_windows_going_first():
    store = BillingStore(max_entries=10)
    for n in range(6):  # 3 tenants each: 18 figures offered
        store.add(window(n), [{"customer_id": 1, "tenant_id": f"t{k}", "tenant_kwh_usage": 1} for k in range(3)], 0.0)
        assert store.entries <= 10
    assert [w.id for w in store.windows.values()] == ["w3", "w4", "w5"]
    assert store.entries == 9 and store.evicted == 3


def test_at_most_max_windows_are_kept():
    store = BillingStore(max_windows=4)
    for n in range(10):
        store.add(window(n), [{"customer_id": 1, "tenant_id": "t", "tenant_kwh_usage": n}], 0.0)
    assert [w.id for w in store.windows.values()] == ["w6", "w7", "w8", "w9"]
    assert store.snapshot()["customers"] == [
        {"customer": "1", "windows": 4, "readings": 4, "kwh": 6 + 7 + 8 + 9, "tenants": 1}
    ]


def test_a_window_larger_than_the_bound_is_kept_alone():
    store = BillingStore(max_entries=2)
    store.add(window(0), [{"customer_id": 1, "tenant_id": "a"}], 0.0)
    store.add(window(1), [{"customer_id": 1, "tenant_id": t} for t in "bcd"], 0.0)
    assert [w.id for w in store.windows.values()] == ["w1"]


def test_a_late_window_past_the_hour_is_left_out_of_the_snapshot():
    store = BillingStore()
    store.add(window(1, 10_000.0), [{"customer_id": 1, "tenant_id": "a", "tenant_kwh_usage": 5}], 0.0)
    store.add(window(2, 1_000.0), [{"customer_id": 2, "tenant_id": "b", "tenant_kwh_usage": 7}], 0.0)  # re-sent, old
    assert [w["id"] for w in store.snapshot()["latest"]] == ["w1"]


def test_rows_without_the_fields_are_counted_without_kwh():
    store = BillingStore()
    rows = [
        {"customer_id": 5, "tenant_id": "a", "tenant_kwh_usage": "12"},  # text: a number still
        {"customer_id": 5, "tenant_id": "a", "tenant_kwh_usage": True},  # not a number
        {"customer_id": 5, "tenant_id": "a", "tenant_kwh_usage": float("nan")},
        {"tenant_id": "b", "tenant_kwh_usage": 3},
        "not a row",
    ]
    store.add({}, rows, 0.0)  # no window headers: a window of its own
    [latest] = store.snapshot()["latest"]
    assert latest["id"] is None
    assert {r["customer"]: (r["tenants"], r["readings"], r["kwh"]) for r in latest["rows"]} == {
        "5": (1, 3, 12),
        NO_CUSTOMER: (2, 2, 3),
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_joiners_health_is_unknown_from_the_first_failure_and_rates_start_again():
    clock = Clock()
    answers: list[object] = [
        {"accepted": {"a": 10}},
        {"accepted": {"a": 30}},
        ConnectionError("refused"),
        ConnectionError("refused"),
        ["not", "an", "object"],
        {"accepted": {"a": 5}},
    ]

    async def fetch() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    health = JoinerHealth("joiner", fetch=fetch, every=1.0, clock=clock)

    def step() -> dict:
        asyncio.run(health.refresh())
        clock.now += 2.0
        return health.as_dict()

    assert step()["status"] == "ok"
    assert step()["rates"]["accepted"] == 10.0  # 20 more in 2 s
    down = step()
    assert (down["status"], down["unknown_since"], down["error"]) == ("unknown", 104.0, "ConnectionError: refused")
    assert step()["unknown_since"] == 104.0  # since the first failure
    assert "not an object" in step()["error"]
    back = step()
    assert back["status"] == "ok" and back["ok_at"] == 110.0
    assert back["rates"]["accepted"] is None  # no two answers in a row since the failures
    assert back["counts"]["accepted"]["total"] == 5
