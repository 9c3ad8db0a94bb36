"""``python -m joiner explain --config joiner.yaml``: what the joiner would run for a configuration, without
running it: the plan (join shape, filters pushed down to each stream, what is left for the pairs), how each
expression is evaluated (compiled to Python, or by jsonata-python), and the Python the engine generated for
it: each arrival loop, projection and compiled expression, as a traceback or pdb would show it
(:mod:`streaming_runtime.generated`). A configuration error is one line and exit 2, as at start-up."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from joiner.config import config_from_yaml
from joiner.core import JoinCore, build_engine
from streaming_runtime import generated
from streaming_runtime.errors import ConfigError


def explain(config_text: str, origin: str, out: TextIO) -> None:
    config = config_from_yaml(config_text, origin)
    before = set(generated.SOURCES)
    engine = build_engine(config)
    core = JoinCore(config, engine, on_window=lambda window, rows: None)
    plan = engine.plan
    print(f"# {origin}", file=out)
    print(f"plan: {core.describe()}", file=out)
    print("expressions:", file=out)
    for name, fast in (("where", plan.where), ("select", plan.select)):
        print(f"  {name} ({', '.join(fast.variables)}): {fast.evaluator}", file=out)
    for stream, filters in zip(plan.streams, plan.filters):
        for fast in filters:
            print(f"  filter on {stream} alone: {fast.evaluator}", file=out)
    for fast in plan.residual:
        print(f"  residual on the pairs: {fast.evaluator}", file=out)
    print(
        "arrival loops: 'native' is the C loop of join_kernel (joiner.engine.native); the generated Python loop "
        "below is what runs for a plan the C loop does not take",
        file=out,
    )
    made = [(name, source) for name, source in generated.SOURCES.items() if name not in before]
    print(f"generated code ({len(made)} sources):", file=out)
    for name, source in made:
        print(f"\n# {name}", file=out)
        print(source, file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m joiner explain", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="the Joiner's YAML (as JOINER_CONFIG)")
    args = parser.parse_args(argv)
    try:
        text = args.config.read_text()
    except OSError as error:
        print(f"joiner explain: --config {args.config}: {error.strerror}", file=sys.stderr)
        return 2
    try:
        explain(text, str(args.config), sys.stdout)
    except ConfigError as error:
        print(f"joiner explain: configuration error: {error}", file=sys.stderr)
        return 2
    return 0
