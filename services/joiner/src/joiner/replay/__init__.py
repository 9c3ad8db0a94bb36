"""``python -m joiner replay``: the joiner's processing over files of events, for backfills and checks.

    python -m joiner replay --config joiner.yaml \\
        --input tenants=tenants.jsonl --input poweruse=poweruse.jsonl.gz [--late late.jsonl]

Each input file holds one JSON object per line; a file ending ``.gz`` (or starting with gzip's magic
bytes) is read through gzip. Files are read in order and merged by event time (at each step the
earliest head of the files goes next; each file keeps its own order, so events that are out of order
within a file stay so and meet the grace period and lateness as they would live). The configuration
must name the event time field (``eventTime.field``): a replay has no arrival time. One JSON line per
closed window is printed on stdout, in closing order:
``{"window_start": ..., "window_end": ..., "window_id": ..., "rows": [...]}``; late events go to
``--late`` (or stderr). Same input, same output, every time.

A bad line is skipped, reported on stderr as ``skipped <file>:<line>: <reason>``, and the replay goes
on: a line that is not UTF-8, not JSON, or holds a value the joiner refuses as poison
(:func:`~streaming_runtime.values.value_problem`: non-finite numbers, integers beyond 64 bits, lone
surrogates, deep nesting); one without an event time, or with one outside the years 1970-9999 (the
window start and end are printed in RFC 3339, which has four-digit years; times before the epoch are
taken for mistakes); one the processor refuses as malformed; and one that meets an unexpected error
(reported with the exception's type). Blank lines are ignored. A summary line ends stderr; a replay
that runs longer than a few seconds also says every few seconds how far it is.

As a backfill tool it streams: files are read 256 KiB at a time, and what it holds is the open
windows, not the input. Lines are decoded with msgspec, a block of them in one call where each is a
flat object of plain values with a number for its time; what it cannot take goes the way of the live
joiner (Python's json and value_problem), for the same outcome and reason. Windows are written with
msgspec too, in large writes, as bytes: the values Python's json would write, very large and very small
floats in their shortest form (``1e16``, not ``1e+16``). Consecutive events of one stream in the merged
order go to the core in one call (:meth:`~joiner.core.JoinCore.offer_many`), its clock at the batch's
latest event time; a stream deduplicated by ``dedup.keyFields`` is batched by equal event times, so that
each key is remembered at its own time.
"""

from joiner.replay.cli import main
from joiner.replay.run import replay

__all__ = ["main", "replay"]
