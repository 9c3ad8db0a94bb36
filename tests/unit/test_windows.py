"""Tumbling processing-time windows, driven by a hand-held clock; states are plain lists here."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joiner.engine.windows import TumblingWindows, Window


def _windows(size: float = 20) -> TumblingWindows[list]:
    return TumblingWindows(size, list)


def _add(windows: TumblingWindows[list], item: object, now: float) -> Window:
    window, state = windows.state_at(now)
    state.append(item)
    return window


@pytest.mark.parametrize(
    ("when", "start", "end"),
    [
        (41.5, 40.0, 60.0),
        (40.0, 40.0, 60.0),
        (59.999, 40.0, 60.0),
        (0.0, 0.0, 20.0),
        (1_700_000_005.0, 1_700_000_000.0, 1_700_000_020.0),
    ],
)
def test_window_at_aligns_to_multiples_of_the_size(when, start, end):
    assert _windows(20).window_at(when) == Window(start, end)


def test_window_at_does_not_open_a_window():
    windows = _windows()

    windows.window_at(41.5)

    assert windows.states() == []
    assert windows.close_all() == []


def test_window_id_is_the_start_in_milliseconds():
    assert _windows(20).window_at(1_700_000_005.0).id == "1700000000000"


def test_fractional_window_size():
    windows = TumblingWindows(0.5, list)

    assert windows.window_at(1.7) == Window(1.5, 2.0)
    assert windows.window_at(1.7).id == "1500"


@pytest.mark.parametrize("size", [0, -1, -0.5, float("nan")])
def test_size_must_be_positive(size):
    with pytest.raises(ValueError, match="window size must be positive"):
        TumblingWindows(size, list)


# --- state_at --------------------------------------------------------------------------------------


def test_state_at_returns_the_aligned_window_and_a_new_state():
    windows = _windows()

    window, state = windows.state_at(41.5)

    assert window == Window(40.0, 60.0)
    assert window.part == 0
    assert state == []


def test_state_at_creates_the_state_once_per_window():
    made = []

    def factory() -> list:
        made.append(1)
        return []

    windows = TumblingWindows(20, factory)

    first = windows.state_at(41.5)
    second = windows.state_at(59.0)
    third = windows.state_at(40.0)

    assert len(made) == 1
    assert first[1] is second[1] is third[1]
    assert first[0] == second[0] == third[0] == Window(40.0, 60.0)


def test_state_at_gives_each_window_its_own_state():
    windows = _windows()

    _add(windows, "e1", now=41.5)
    _add(windows, "e2", now=45.0)
    _add(windows, "e3", now=61.0)

    assert sorted(windows.states()) == [["e1", "e2"], ["e3"]]


# --- close_due -------------------------------------------------------------------------------------


def test_close_due_returns_nothing_before_the_end():
    windows = _windows()
    _add(windows, "e1", now=41.5)

    assert windows.close_due(59.999) == []
    assert windows.states() == [["e1"]]


def test_close_due_returns_the_window_at_exactly_its_end_and_removes_it():
    windows = _windows()
    _add(windows, "e1", now=41.5)

    closed = windows.close_due(60.0)

    assert closed == [(Window(40.0, 60.0), ["e1"])]
    assert windows.states() == []
    assert windows.close_due(60.0) == []


def test_close_due_after_the_end_also_closes():
    windows = _windows()
    _add(windows, "e1", now=41.5)

    assert windows.close_due(1_000.0) == [(Window(40.0, 60.0), ["e1"])]


def test_close_due_returns_several_due_windows_oldest_first_and_removes_them():
    windows = _windows()
    _add(windows, "e3", now=45.0)
    _add(windows, "e1", now=5.0)
    _add(windows, "e2", now=25.0)
    _add(windows, "e4", now=65.0)  # still open at 60

    closed = windows.close_due(60.0)

    assert [window.start for window, _ in closed] == [0.0, 20.0, 40.0]
    assert [state for _, state in closed] == [["e1"], ["e2"], ["e3"]]
    assert windows.close_due(60.0) == []  # removed
    assert windows.states() == [["e4"]]


def test_a_closed_window_reopens_with_a_fresh_state():
    windows = _windows()
    _add(windows, "e1", now=41.5)
    [(_, old)] = windows.close_due(60.0)

    window, state = windows.state_at(42.0)  # late arrival for a closed range

    assert window == Window(40.0, 60.0)
    assert state == [] and state is not old


def test_event_at_a_boundary_goes_to_the_next_window():
    windows = _windows()

    window = _add(windows, "e1", now=60.0)

    assert window == Window(60.0, 80.0)
    assert windows.close_due(60.0) == []
    assert windows.close_due(80.0) == [(Window(60.0, 80.0), ["e1"])]


# --- split -----------------------------------------------------------------------------------------


def test_split_returns_the_closed_part_and_continues_the_range_in_a_fresh_state():
    windows = _windows()
    window = _add(windows, "e1", now=41.5)
    _add(windows, "e2", now=42.0)

    closed = windows.split(window)

    assert closed == (Window(40.0, 60.0), ["e1", "e2"])
    continued, state = windows.state_at(43.0)
    assert continued == Window(40.0, 60.0, 1)
    assert continued.id == "40000-1"
    assert state == []
    assert state is not closed[1]


def test_split_parts_keep_counting_and_close_at_the_end_of_the_range():
    windows = _windows()
    first = _add(windows, "e1", now=41.0)
    windows.split(first)
    second = _add(windows, "e2", now=42.0)
    windows.split(second)
    third = _add(windows, "e3", now=43.0)

    assert (first.part, second.part, third.part) == (0, 1, 2)
    assert [w.id for w in (first, second, third)] == ["40000", "40000-1", "40000-2"]
    assert windows.close_due(59.9) == []
    assert windows.close_due(60.0) == [(Window(40.0, 60.0, 2), ["e3"])]


def test_split_leaves_other_windows_alone():
    windows = _windows()
    window = _add(windows, "e1", now=1.0)
    _add(windows, "e2", now=21.0)

    windows.split(window)

    assert windows.close_all() == [(Window(0.0, 20.0, 1), []), (Window(20.0, 40.0), ["e2"])]


# --- close_all -------------------------------------------------------------------------------------


def test_close_all_returns_every_open_window_oldest_first():
    windows = _windows()
    _add(windows, "e2", now=130.0)
    _add(windows, "e1", now=10.0)

    closed = windows.close_all()

    assert closed == [(Window(0.0, 20.0), ["e1"]), (Window(120.0, 140.0), ["e2"])]
    assert windows.close_all() == []
    assert windows.states() == []


def test_states_lists_every_open_state():
    windows = _windows()
    assert windows.states() == []

    _add(windows, "e1", now=1.0)
    _add(windows, "e2", now=2.0)
    _add(windows, "e3", now=21.0)

    assert sorted(windows.states()) == [["e1", "e2"], ["e3"]]
    windows.close_due(20.0)
    assert windows.states() == [["e3"]]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["open", "due", "split", "reopen", "all"]), st.integers(0, 200)), max_size=30
    )
)
def test_the_oldest_open_windows_end_is_kept_through_every_change(steps):
    """earliest_end is kept as windows open and close (close_due relies on it to skip its scan)."""
    windows = TumblingWindows(10, dict)
    for step, at in steps:
        if step == "open":
            windows.state_at(float(at))
        elif step == "due":
            windows.close_due(float(at))
        elif step == "split" and windows.open_count:
            windows.split(windows.open_windows()[0][0])
        elif step == "reopen":
            windows.reopen(windows.window_at(float(at)))
        elif step == "all":
            windows.close_all()
        ends = [window.end for window, _ in windows.open_windows()]
        assert windows.earliest_end() == (min(ends) if ends else None)
