"""The joiner's engine: pure (no FastAPI, Dapr or asyncio), driven by the service, tests and benchmarks.

* :mod:`joiner.engine.windows` — which window an event belongs to, the buffers, which windows are due.
* :mod:`joiner.engine.join` — checking an event against the query, and joining a closed window.
"""
