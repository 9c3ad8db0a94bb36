"""The joiner's counters for the dashboard: its ``GET /stats``, asked through Dapr service invocation
(``/v1.0/invoke/<PROC_JOINER_APP_ID>/method/stats`` on billable-proc's sidecar; the Configuration's
accessControl lets billable-proc GET /stats and nothing else of the joiner).

Asked only while someone looks (a stream of the dashboard's events is open, or its data is read), at most
once every ``every`` seconds. Rates per second come from two answers in a row. When the joiner cannot be
reached its health is "unknown" since the first failure, with the reason; nothing here raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from streaming_runtime.logs import printable

EVERY_SECONDS = 3.0
TIMEOUT_SECONDS = 2.0
# the counters shown, each the sum over the joiner's streams when it counts per stream
RATES = ("accepted", "filtered", "dropped", "late")
COUNTS = (
    *RATES,
    "duplicates",
    "dead_lettered",
    "windows_closed",
    "deliveries_failed",
    "windows_parked",
    "rows_emitted",
)

Fetch = Callable[[], Awaitable[Any]]


class JoinerHealth:
    def __init__(
        self,
        app_id: str,
        fetch: Fetch | None = None,
        dapr_http_endpoint: str = "http://127.0.0.1:3500",
        dapr_api_token: str | None = None,
        every: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app_id = app_id
        self.every = every
        self.clock = clock
        self._endpoint = dapr_http_endpoint
        self._headers = {"dapr-api-token": dapr_api_token} if dapr_api_token else {}
        self._fetch = fetch or self._invoke
        self._lock = asyncio.Lock()
        self.checked: float | None = None
        self.ok_at: float | None = None
        self.unknown_since: float | None = clock()  # unknown until the first answer
        self.error: str | None = "not asked yet"
        self.counts: dict[str, Any] = {}
        self.rates: dict[str, float | None] = dict.fromkeys(RATES)
        self._previous: tuple[float, dict[str, int]] | None = None

    async def refresh(self) -> None:
        """Ask the joiner again if the last answer is older than ``every`` seconds."""
        if self.checked is not None and self.clock() - self.checked < self.every:
            return
        async with self._lock:
            if self.checked is not None and self.clock() - self.checked < self.every:
                return  # another viewer asked meanwhile
            self.checked = self.clock()
            try:
                answer = await self._fetch()
                problem = (
                    None if isinstance(answer, dict) else f"/stats answered {type(answer).__name__}, not an object"
                )
            except Exception as error:  # noqa: BLE001 - an unreachable joiner is shown as unknown, never raised
                answer, problem = None, printable(f"{type(error).__name__}: {error}", 300)
            if problem is not None or not isinstance(answer, dict):
                self._failed(problem or "no answer")
            else:
                self._answered(answer)

    def _failed(self, problem: str) -> None:
        if self.unknown_since is None:
            self.unknown_since = self.checked
        self.error = problem
        self._previous = None  # rates start again from the next two answers
        self.rates = dict.fromkeys(RATES)

    def _answered(self, stats: dict[str, Any]) -> None:
        now = self.checked or self.clock()
        totals = {name: _total(stats.get(name)) for name in COUNTS}
        if self._previous is not None:
            then, before = self._previous
            elapsed = now - then
            self.rates = {
                name: (totals[name] - before[name]) / elapsed
                if elapsed > 0 and totals[name] >= before[name]  # less: the joiner restarted
                else None
                for name in RATES
            }
        self._previous = (now, totals)
        self.counts = {
            name: {"total": totals[name], "per_stream": stats[name] if isinstance(stats.get(name), dict) else None}
            for name in COUNTS
        }
        self.ok_at, self.unknown_since, self.error = now, None, None

    def as_dict(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "status": "ok" if self.unknown_since is None else "unknown",
            "checked_at": self.checked,
            "ok_at": self.ok_at,
            "unknown_since": self.unknown_since,
            "error": self.error,
            "rates": self.rates,
            "counts": self.counts,
        }

    async def _invoke(self) -> Any:
        async with httpx.AsyncClient(base_url=self._endpoint, headers=self._headers, timeout=TIMEOUT_SECONDS) as client:
            answer = await client.get(f"/v1.0/invoke/{self.app_id}/method/stats")
        if not answer.is_success:
            raise RuntimeError(f"HTTP {answer.status_code} from the sidecar: {answer.text[:200]}")
        return answer.json()


def _total(value: Any) -> int:
    """A counter of /stats: a number, or a number per stream (summed)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, dict):
        return sum(_total(v) for v in value.values())
    return 0
