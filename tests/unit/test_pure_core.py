"""The pure parts, the expressions, their compiler and the join engine, run without the web stack: nothing
of them imports FastAPI, uvicorn, the Dapr SDK or an HTTP client (those are streaming-runtime's `service`
extra, for what runs a service). Checked in a fresh interpreter, where nothing else imported them first."""

from __future__ import annotations

import subprocess
import sys

PURE = [
    "streaming_runtime.expressions",
    "streaming_runtime.jsonata_compiler",
    "streaming_runtime.cloudevents",
    "streaming_runtime.settings",
    "streaming_runtime.generated",
    "joiner.config",
    "joiner.engine.join",
    "joiner.engine.table",
    "joiner.engine.aggregate",
    "joiner.core",
    "joiner.modes",
    "joiner.handover.snapshot",
    "joiner.replay",
]
WEB = ("fastapi", "starlette", "uvicorn", "dapr", "httpx", "grpc")


def test_the_expressions_compiler_and_engine_import_nothing_of_the_web_stack():
    code = (
        "import sys\n"
        f"for name in {PURE!r}:\n"
        "    __import__(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({WEB!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
