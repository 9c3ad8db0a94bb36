"""Python code generated at run time (compiled expressions, the joiner's arrival loops), kept readable:
each source is registered in :mod:`linecache` under a name of its own, so a traceback shows the generated
line and pdb can list it, and is kept in :data:`SOURCES` for ``python -m joiner explain``.
"""

from __future__ import annotations

import itertools
import linecache
from typing import Any

# file name -> source, in the order they were made: a handful per joiner, made at start-up. Bounded, for
# processes that build engines by the thousand (the property tests): the oldest are forgotten
SOURCES: dict[str, str] = {}
LIMIT = 512
_serial = itertools.count(1)


def load(source: str, name: str, scope: dict[str, Any]) -> dict[str, Any]:
    """Run ``source`` (top-level definitions) in ``scope`` and return it. The code's file name is
    ``<generated: {name} #n>``; its lines stay in linecache for tracebacks and debuggers."""
    filename = f"<generated: {name} #{next(_serial)}>"
    lines = [line + "\n" for line in source.splitlines()]
    # (size, mtime None: never checked against a file, lines, name): linecache keeps such an entry
    linecache.cache[filename] = (len(source), None, lines, filename)
    SOURCES[filename] = source
    while len(SOURCES) > LIMIT:
        oldest = next(iter(SOURCES))
        del SOURCES[oldest]
        linecache.cache.pop(oldest, None)
    exec(compile(source, filename, "exec"), scope)  # noqa: S102 - our own generated code
    return scope


def sources_named(prefix: str) -> dict[str, str]:
    """The registered sources whose name starts with ``prefix`` (``arrival loop``, ``jsonata``...)."""
    return {name: text for name, text in SOURCES.items() if name.startswith(f"<generated: {prefix}")}
