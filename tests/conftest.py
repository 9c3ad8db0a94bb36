import os

import pytest
from hypothesis import settings

# CI runs the property tests on a fixed set of examples (a new random counterexample should
# surface in development, not block an unrelated change); locally they explore anew each run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
