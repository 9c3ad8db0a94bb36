"""The command line: ``python -m joiner replay``'s arguments, checked, and its exit status."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

import joiner.replay  # the package: its docstring is the command's description
from joiner.replay.run import replay
from streaming_runtime.errors import ConfigError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m joiner replay",
        description=joiner.replay.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, type=Path, help="a Joiner YAML (with eventTime.field)")
    parser.add_argument(
        "--input",
        required=True,
        action="append",
        metavar="STREAM=FILE",
        help="a stream's events, one JSON object per line, gzipped or not (repeat per stream)",
    )
    parser.add_argument("--late", type=Path, help="write late events here (default: stderr)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="joiner replay: %(message)s")  # late events are output, not logged
    inputs = []
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            print(f"joiner replay: --input {item!r}: expected STREAM=FILE", file=sys.stderr)
            return 2
        if not Path(path).is_file():
            print(f"joiner replay: --input {item!r}: no such file", file=sys.stderr)
            return 2
        inputs.append((name, Path(path)))
    try:
        config_text = args.config.read_text()
    except OSError as error:
        print(f"joiner replay: --config {args.config}: {error.strerror}", file=sys.stderr)
        return 2
    late = open(args.late, "w", encoding="utf-8") if args.late else contextlib.nullcontext(sys.stderr)  # noqa: SIM115
    with late as late_out:
        try:
            return replay(config_text, inputs, sys.stdout, late_out, str(args.config))
        except ConfigError as error:
            print(f"joiner replay: configuration error: {error}", file=sys.stderr)
            return 2
