"""The fault suite's table, printed after the run (what the closing notes quote)."""

from tests.faults.test_faults import fault_table


def pytest_terminal_summary(terminalreporter) -> None:
    lines = fault_table()
    if len(lines) > 1:
        terminalreporter.section("faults: rows per fault")
        for line in lines:
            terminalreporter.write_line(line)
