"""The joiner's engine: pure (no FastAPI, Dapr or asyncio), driven by the service, replay, tests and benchmarks.

* :mod:`~joiner.engine.plan` — `where` split into hash keys, per-stream filters and a residual.
* :mod:`~joiner.engine.join` — the symmetric hash join per window (generated arrival loops) and the naive reference.
* :mod:`~joiner.engine.codegen` — the Python generated for the join's projections and arrival loops.
* :mod:`~joiner.engine.windows` — tumbling windows: which window, which are due, lateness, early split.
* :mod:`~joiner.engine.eventtime` — event time from a field or the CloudEvent, and the watermark.
* :mod:`~joiner.engine.table` — ``join: table``: versions per key by event time, deletes.
* :mod:`~joiner.engine.dedup` — redelivered events recognised by id or key field, bounded, with a TTL.
* :mod:`~joiner.engine.aggregate` — optional per-window aggregation after ``select``.
* :mod:`~joiner.engine.state` — the one state interface (windows, table, dedup) and its memory implementation.
* :mod:`~joiner.engine.paths` — a field of an event by its path.
"""
