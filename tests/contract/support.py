"""In-process contract tests: each service's ASGI app with its lifespan run, called through httpx.
Outbound calls to the sidecar go to recording fakes (these are not end-to-end tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from streaming_runtime.sidecar import SidecarError, SidecarPort, dumps


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


async def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} not met within {timeout}s")


class RecordingSidecar:
    """Stands in for the sidecar in contract tests: records invoke/publish calls, can fail on demand."""

    def __init__(self, failures: int = 0) -> None:
        self.invocations: list[tuple[str, str, Any, dict[str, str]]] = []
        self.publications: list[tuple[str, str, Any]] = []
        self.failures = failures
        self.attempts = 0
        self.bulk_calls = 0
        self.extensions: list[dict] = []
        self.event_ids: list[str | None] = []  # the cloudevent.id asked for each publication
        self.keys: list[str | None] = []  # the partitionKey asked for each message, failed publishes too
        self.attempted_ids: list[list[str | None]] = []  # per publish call, failed ones too
        # a state store: values kept as bytes, as a real one keeps them; state_down fails its calls
        self.state: dict[tuple[str, str], bytes] = {}
        self.state_down = False
        self.state_metadata: dict[tuple[str, str], dict[str, str]] = {}

    def _maybe_fail(self) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise SidecarError("sidecar unavailable (test)")

    async def invoke(self, app_id: str, method: str, data: Any, headers: dict[str, str] | None = None) -> None:
        dumps(data)  # as the real client does first: what JSON cannot hold raises UnsendableBody
        self._maybe_fail()
        self.invocations.append((app_id, method, data, dict(headers or {})))

    async def publish(
        self, pubsub: str, topic: str, data: Any, event_id: str | None = None, key: str | None = None
    ) -> None:
        dumps(data)
        self.keys.append(key)
        self.attempted_ids.append([event_id])
        self._maybe_fail()
        self.publications.append((pubsub, topic, data))
        self.event_ids.append(event_id)

    async def publish_event(
        self, pubsub: str, topic: str, data: Any, event_type: str, extensions: dict[str, str]
    ) -> None:
        self._maybe_fail()
        self.publications.append((pubsub, topic, data))
        self.extensions.append(dict(extensions, type=event_type))

    async def publish_many(
        self,
        pubsub: str,
        topic: str,
        items: list[Any],
        event_ids: list[str] | None = None,
        keys: list[str] | None = None,
    ) -> None:
        self.keys.extend(keys if keys is not None else [None] * len(items))
        ids: list[str | None] = list(event_ids) if event_ids else [None] * len(items)
        self.attempted_ids.append(ids)
        self._maybe_fail()
        self.bulk_calls += 1
        self.publications.extend((pubsub, topic, item) for item in items)
        self.event_ids.extend(ids)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        return None

    def _state_call(self) -> None:
        if self.state_down:
            raise SidecarError("state store unavailable (test)")

    async def get_state(self, store: str, key: str) -> Any:
        data = await self.get_state_bytes(store, key)
        return None if data is None else json.loads(data)

    async def get_state_bytes(self, store: str, key: str) -> bytes | None:
        self._state_call()
        return self.state.get((store, key))

    async def save_state(self, store: str, key: str, value: Any) -> None:
        await self.save_state_bytes(store, key, json.dumps(value).encode())

    async def save_state_bytes(self, store: str, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self._state_call()
        self.state[(store, key)] = bytes(data)
        self.state_metadata[(store, key)] = dict(metadata or {})

    async def create_states(
        self, store: str, items: dict[str, bytes], metadata: dict[str, str] | None = None
    ) -> dict[str, bytes]:
        self._state_call()
        for key, data in items.items():
            if (store, key) not in self.state:
                self.state[(store, key)] = bytes(data)
                self.state_metadata[(store, key)] = dict(metadata or {})
        return {key: self.state[(store, key)] for key in items}

    async def delete_state(self, store: str, key: str) -> None:
        self._state_call()
        self.state.pop((store, key), None)


_THE_FAKE_IS_A_SIDECAR: SidecarPort = RecordingSidecar()  # checked by `make typecheck`


class ManualClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
