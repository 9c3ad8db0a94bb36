"""Log lines that input can cause: escaped, and sampled so that a flood of poison is no flood of log."""

import logging

from streaming_runtime.logs import LogBudget, printable


def test_printable_escapes_what_could_start_a_line_and_cuts_long_values():
    assert printable("a\nb\u2028c") == "a\\nb\\u2028c"
    assert printable("x" * 30, limit=10) == "x" * 10 + "...(20 more)"
    assert printable(None) == "(none)"


def test_a_log_budget_logs_a_burst_per_period_then_says_how_many_it_left_out(caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: now[0])
    budget = LogBudget(logging.getLogger("test"), burst=3, period=10.0)
    with caplog.at_level(logging.WARNING):
        for n in range(50):
            budget.warning("dropped poweruse", "dropped %d", n)
        budget.warning("dropped tenants", "dropped tenant")  # another key has its own budget
        now[0] += 10
        budget.warning("dropped poweruse", "dropped %d", 50)
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 0",
        "dropped 1",
        "dropped 2",
        "dropped tenant",
        "47 more like the lines above (dropped poweruse) were not logged in 10s; all are counted",
        "dropped 50",
    ]
