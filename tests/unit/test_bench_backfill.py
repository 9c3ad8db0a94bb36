"""bench/backfill.py --small: replay and DuckDB over the same generated files give the same rows per window."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_small_backfill_benchmark_finds_the_same_rows_as_duckdb():
    pytest.importorskip("duckdb")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "backfill.py"), "--small"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same rows per window as DuckDB: yes" in done.stdout
    assert "rows: 50,049 in 10 windows" in done.stdout  # fixed seed: the same data every run
