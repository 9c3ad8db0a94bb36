"""``python -m joiner explain`` and the generated code behind it (streaming_runtime.generated): every source
the engine makes is registered, so tracebacks and pdb show its lines; the example's loops are pinned by a
golden file (UPDATE_GOLDEN=1 rewrites it after an intended change of the code generators)."""

from __future__ import annotations

import io
import linecache
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

from joiner.config import config_from_yaml
from joiner.core import build_engine
from joiner.explain import explain
from streaming_runtime import generated

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "services" / "joiner" / "joiner.yaml"
GOLDEN = ROOT / "tests" / "data" / "golden" / "explain-example.txt"


def explained(text: str, origin: str = "joiner.yaml") -> str:
    out = io.StringIO()
    explain(text, origin, out)
    return re.sub(r" #\d+>", " #n>", out.getvalue())  # serials depend on what the process built before


def test_the_examples_plan_and_generated_loops_are_those_of_the_golden_file():
    text = explained(EXAMPLE.read_text())
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert "hash join on tenants.tenant_id = poweruse.tenant_id" in text
    assert "# <generated: arrival loop poweruse #n>" in text and "def accept_many(" in text


def test_every_generated_source_is_registered_for_tracebacks_and_debuggers():
    engine = build_engine(config_from_yaml(EXAMPLE.read_text()))
    functions = [engine.plan.where._fast, engine.plan.select._fast, *engine._project]
    for function in functions:
        filename = function.__code__.co_filename
        assert filename.startswith("<generated: ") and filename in generated.SOURCES
        first = generated.SOURCES[filename].splitlines()[0]
        assert linecache.getline(filename, 1).rstrip("\n") == first


def test_a_traceback_through_generated_code_shows_its_line():
    scope = generated.load("def broken(x):\n    y = x + 1\n    return y / 0\n", "test source", {})
    try:
        scope["broken"](1)
    except ZeroDivisionError:
        shown = traceback.format_exc()
    assert 'File "<generated: test source #' in shown
    assert "return y / 0" in shown


def test_the_registry_forgets_the_oldest_sources_past_its_limit():
    names = [next(iter(generated.load(f"def f{n}():\n    return {n}\n", f"bulk {n}", {}))) for n in range(3)]
    assert names  # each load returns its scope
    for n in range(generated.LIMIT + 10):
        generated.load(f"v = {n}\n", f"filler {n}", {})
    assert len(generated.SOURCES) <= generated.LIMIT
    assert not generated.sources_named("bulk ")
    assert all(name in linecache.cache for name in generated.SOURCES)


def test_a_bad_configuration_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "joiner.yaml"
    config.write_text(EXAMPLE.read_text().replace("tenants.tenant_id == poweruse.tenant_id", "tenants.tenant_id === x"))
    done = subprocess.run(
        [sys.executable, "-m", "joiner", "explain", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("joiner explain: configuration error: ") and "does not parse" in line, line
    assert "Traceback" not in done.stderr
