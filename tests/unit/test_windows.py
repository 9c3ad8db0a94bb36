"""Tumbling processing-time windows, driven by a hand-held clock."""

from __future__ import annotations

import pytest

from joiner.engine.windows import Event, TumblingWindows, Window

STREAMS = ("tenants", "poweruse")


def _windows(size: float = 20) -> TumblingWindows:
    return TumblingWindows(size, STREAMS)


def _event(n: int) -> Event:
    return Event(id=f"e{n}", data={"n": n})


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


def test_window_id_is_the_start_in_milliseconds():
    assert _windows(20).window_at(1_700_000_005.0).id == "1700000000000"


def test_add_returns_the_window_and_buffers_per_stream():
    windows = _windows()

    window = windows.add("tenants", _event(1), now=41.5)
    windows.add("poweruse", _event(2), now=45.0)
    windows.add("tenants", _event(3), now=59.0)

    assert window == Window(40.0, 60.0)
    [closed] = windows.close_all()
    assert closed.window == Window(40.0, 60.0)
    assert closed.events == {"tenants": [_event(1), _event(3)], "poweruse": [_event(2)]}
    assert closed.size == 3


def test_a_window_has_an_empty_list_for_a_stream_without_events():
    windows = _windows()
    windows.add("tenants", _event(1), now=1.0)

    [closed] = windows.close_all()

    assert closed.events["poweruse"] == []


def test_close_due_returns_nothing_before_the_end():
    windows = _windows()
    windows.add("tenants", _event(1), now=41.5)

    assert windows.close_due(59.999) == []
    assert windows.buffered == 1


def test_close_due_returns_the_window_at_exactly_its_end():
    windows = _windows()
    windows.add("tenants", _event(1), now=41.5)

    closed = windows.close_due(60.0)

    assert [c.window for c in closed] == [Window(40.0, 60.0)]
    assert closed[0].events["tenants"] == [_event(1)]
    assert windows.buffered == 0


def test_close_due_returns_several_due_windows_oldest_first_and_removes_them():
    windows = _windows()
    windows.add("tenants", _event(3), now=45.0)
    windows.add("tenants", _event(1), now=5.0)
    windows.add("tenants", _event(2), now=25.0)
    windows.add("tenants", _event(4), now=65.0)  # still open at 60

    closed = windows.close_due(60.0)

    assert [c.window.start for c in closed] == [0.0, 20.0, 40.0]
    assert [c.events["tenants"][0].id for c in closed] == ["e1", "e2", "e3"]
    assert windows.close_due(60.0) == []  # removed
    assert windows.buffered == 1


def test_event_at_a_boundary_goes_to_the_next_window():
    windows = _windows()

    window = windows.add("tenants", _event(1), now=60.0)

    assert window == Window(60.0, 80.0)
    assert windows.close_due(60.0) == []
    assert [c.window for c in windows.close_due(80.0)] == [Window(60.0, 80.0)]


def test_close_all_returns_every_open_window_oldest_first():
    windows = _windows()
    windows.add("poweruse", _event(2), now=130.0)
    windows.add("tenants", _event(1), now=10.0)

    closed = windows.close_all()

    assert [c.window for c in closed] == [Window(0.0, 20.0), Window(120.0, 140.0)]
    assert windows.close_all() == []
    assert windows.buffered == 0


def test_buffered_counts_events_over_all_open_windows_and_streams():
    windows = _windows()
    assert windows.buffered == 0

    windows.add("tenants", _event(1), now=1.0)
    windows.add("poweruse", _event(2), now=2.0)
    windows.add("poweruse", _event(3), now=21.0)

    assert windows.buffered == 3
    windows.close_due(20.0)
    assert windows.buffered == 1


def test_fractional_window_size():
    windows = TumblingWindows(0.5, STREAMS)

    assert windows.window_at(1.7) == Window(1.5, 2.0)


@pytest.mark.parametrize("size", [0, -1, -0.5, float("nan")])
def test_size_must_be_positive(size):
    with pytest.raises(ValueError, match="window size must be positive"):
        TumblingWindows(size, STREAMS)
