"""``python -m streaming_migrate manifests-all.yaml [-o out.yaml]``: the original project's manifests as this
project's Dapr Components, Subscriptions and Deployments (see :mod:`streaming_migrate`).

The resources go to ``--output`` (or standard output); notes and warnings go to standard error and,
as comments, to the top of the output. Exit 0; 1 with ``--strict`` when there were warnings; 2 when
the input cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streaming_migrate import migrate_text
from streaming_runtime.errors import ConfigError

PROG = "python -m streaming_migrate"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", type=Path, help="the original manifests (multi-document YAML)")
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    parser.add_argument(
        "--registry", default="power-usage", help="registry/prefix of this project's images (default: %(default)s)"
    )
    parser.add_argument("--tag", default="dev", help="tag of this project's images (default: %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when anything was not carried over")
    args = parser.parse_args(argv)

    try:
        text = args.input.read_text()
    except OSError as error:
        print(f"{PROG}: error: cannot read {args.input}: {error.strerror}", file=sys.stderr)
        return 2
    try:
        migration = migrate_text(text, registry=args.registry, tag=args.tag)
    except ConfigError as error:
        print(f"{PROG}: error: {args.input}: {error}", file=sys.stderr)
        return 2

    output = migration.to_yaml()
    if args.output:
        args.output.write_text(output)
    else:
        sys.stdout.write(output)
    for line in migration.notes:
        print(f"note: {line}", file=sys.stderr)
    for line in migration.warnings:
        print(f"warning: {line}", file=sys.stderr)
    written = f"{len(migration.resources)} resources" + (f" to {args.output}" if args.output else "")
    print(f"{PROG}: {written}, {len(migration.warnings)} warnings", file=sys.stderr)
    return 1 if args.strict and migration.warnings else 0


if __name__ == "__main__":
    sys.exit(main())
