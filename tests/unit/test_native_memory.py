"""The C loop's tests again, under CPython's debug memory allocator (``PYTHONMALLOC=debug``): it fills
freed memory with a pattern and checks the guard bytes around each block, so a use after free or an
overrun in ``_arrival.c`` crashes this run instead of passing by luck (it once did: a filter's string
was released after the array that held it was freed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_c_loop_tests_pass_under_the_debug_allocator():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-x",
            "tests/unit/test_native_arrival.py",
            "tests/unit/test_engine_properties.py::test_the_c_arrival_loop_equals_the_naive_join",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONMALLOC": "debug", "PYTHONDEVMODE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert " passed" in done.stdout
