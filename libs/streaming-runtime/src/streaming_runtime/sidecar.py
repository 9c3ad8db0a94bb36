"""Talking to the Dapr sidecar from async code.

* Publishing goes through the Dapr Python SDK's asyncio gRPC client.
* Service invocation is a POST to the sidecar's HTTP API with ``dapr-app-id``: the SDK's
  HTTP invoke cannot be used inside a running event loop (dapr/python-sdk#564) and defaults to GET.

Both clients are created once, in the service's lifespan, after the sidecar answers its
outbound health check (the SDK constructor otherwise blocks on that check).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Protocol, runtime_checkable

import httpx

from streaming_runtime.errors import StreamingRuntimeError
from streaming_runtime.settings import ServiceSettings


class SidecarError(StreamingRuntimeError):
    """The sidecar refused or failed a call."""


class UnsendableBody(SidecarError):
    """What was to be sent cannot be written as JSON: no retry can send it."""


class Refused(SidecarError):
    """The receiver refused the call itself (HTTP 4xx but 404, 408 and 429: too large, bad, unauthorised):
    the same call would be refused again, so it is not retried unchanged."""


class Publisher(Protocol):
    """``event_id``/``event_ids``: the CloudEvent id Dapr gives the event (metadata ``cloudevent.id``): the
    same id for a retry of the same message lets a subscriber that deduplicates recognise it. ``key``/``keys``:
    the message key (metadata ``partitionKey``), which a partitioned broker (Kafka) places the message by."""

    async def publish(
        self, pubsub: str, topic: str, data: Any, event_id: str | None = None, key: str | None = None
    ) -> None: ...

    async def publish_many(
        self,
        pubsub: str,
        topic: str,
        items: list[Any],
        event_ids: list[str] | None = None,
        keys: list[str] | None = None,
    ) -> None: ...


@runtime_checkable
class SidecarPort(Publisher, Protocol):
    """What an app asks of its sidecar: :class:`Sidecar` is the real one; a test's fake must be one too
    (tests/contract/support.py declares its fake as this type, which the type check verifies)."""

    async def wait_ready(self, timeout: float = 60.0) -> None: ...

    async def invoke(self, app_id: str, method: str, data: Any, headers: dict[str, str] | None = None) -> None: ...

    async def publish_event(
        self, pubsub: str, topic: str, data: Any, event_type: str, extensions: dict[str, str]
    ) -> None: ...

    async def get_state(self, store: str, key: str) -> Any | None: ...

    async def get_state_bytes(self, store: str, key: str) -> bytes | None: ...

    async def save_state(self, store: str, key: str, value: Any) -> None: ...

    async def save_state_bytes(
        self, store: str, key: str, data: bytes, metadata: dict[str, str] | None = None
    ) -> None: ...

    async def create_states(
        self, store: str, items: dict[str, bytes], metadata: dict[str, str] | None = None
    ) -> dict[str, bytes]: ...

    async def delete_state(self, store: str, key: str) -> None: ...


def dumps(data: Any) -> bytes:
    """Compact JSON, UTF-8; UnsendableBody for what JSON cannot hold (NaN, infinities, lone surrogates,
    objects json does not know), never a value another reader would refuse."""
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as error:  # UnicodeEncodeError is a ValueError
        raise UnsendableBody(f"not JSON: {type(error).__name__}: {str(error)[:200]}") from None


class Sidecar:
    """The app's sidecar: readiness, publish and state (SDK, gRPC), invoke (HTTP)."""

    def __init__(self, settings: ServiceSettings, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        headers = {"dapr-api-token": settings.dapr_api_token} if settings.dapr_api_token else {}
        self._http = http or httpx.AsyncClient(
            base_url=settings.dapr_http_endpoint, headers=headers, timeout=httpx.Timeout(30.0)
        )
        self._grpc = None

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the sidecar can reach its components (``/v1.0/healthz/outbound``)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                answer = await self._http.get("/v1.0/healthz/outbound", timeout=2.0)
                if answer.is_success:
                    return
                last = f"HTTP {answer.status_code}"
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}"
            await asyncio.sleep(0.2)
        raise SidecarError(
            f"Dapr sidecar at {self._settings.dapr_http_endpoint} not ready after {timeout:.0f}s ({last})"
        )

    async def publish(
        self, pubsub: str, topic: str, data: Any, event_id: str | None = None, key: str | None = None
    ) -> None:
        body = dumps(data)  # UnsendableBody before any call
        client = await self._grpc_client()
        try:
            await client.publish_event(
                pubsub_name=pubsub,
                topic_name=topic,
                data=body,
                data_content_type="application/json",
                publish_metadata=_publish_metadata(event_id, key),
            )
        except Exception as error:  # grpc.aio.AioRpcError and SDK errors carry the sidecar's reason
            raise SidecarError(f"publish to {pubsub}/{topic} failed: {_grpc_reason(error)}") from None

    async def publish_event(
        self, pubsub: str, topic: str, data: Any, event_type: str, extensions: dict[str, str]
    ) -> None:
        """Publish our own CloudEvent: ``data`` stays the payload subscribers get, and ``extensions``
        (lower-case alphanumeric names) travel as CloudEvent extension attributes, which Dapr passes on."""
        envelope = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": self._settings.app_id or "streaming-runtime",
            "type": event_type,
            "datacontenttype": "application/json",
            "data": data,
            **extensions,
        }
        body = dumps(envelope)
        client = await self._grpc_client()
        try:
            await client.publish_event(
                pubsub_name=pubsub,
                topic_name=topic,
                data=body,
                data_content_type="application/cloudevents+json",
            )
        except Exception as error:
            raise SidecarError(f"publish to {pubsub}/{topic} failed: {_grpc_reason(error)}") from None

    async def publish_many(
        self,
        pubsub: str,
        topic: str,
        items: list[Any],
        event_ids: list[str] | None = None,
        keys: list[str] | None = None,
    ) -> None:
        """Bulk publish (one call, one event per item). Raises SidecarError naming how many failed."""
        from dapr.clients import BulkPublishEntry

        bodies: list[Any] = [dumps(item) for item in items]
        if event_ids is not None or keys is not None:
            ids: list[str | None] = list(event_ids) if event_ids is not None else [None] * len(bodies)
            keyed: list[str | None] = list(keys) if keys is not None else [None] * len(bodies)
            bodies = [
                BulkPublishEntry(
                    entry_id=str(n), event=body, content_type="application/json", metadata=_publish_metadata(i, k)
                )
                for n, (body, i, k) in enumerate(zip(bodies, ids, keyed))
            ]
        client = await self._grpc_client()
        try:
            answer = await client.publish_events(
                pubsub_name=pubsub,
                topic_name=topic,
                data=bodies,
                data_content_type="application/json",
            )
        except Exception as error:
            raise SidecarError(f"bulk publish to {pubsub}/{topic} failed: {_grpc_reason(error)}") from None
        failed = getattr(answer, "failed_entries", None) or []
        if failed:
            raise SidecarError(f"bulk publish to {pubsub}/{topic}: {len(failed)} of {len(items)} entries failed")

    async def invoke(self, app_id: str, method: str, data: Any, headers: dict[str, str] | None = None) -> None:
        try:
            answer = await self._http.post(
                f"/v1.0/invoke/{app_id}/method/{method.lstrip('/')}",
                content=dumps(data),
                headers={"content-type": "application/json", **(headers or {})},
            )
        except httpx.HTTPError as error:
            raise SidecarError(f"invoke {app_id}/{method} failed: {type(error).__name__}: {error}") from None
        if not answer.is_success:
            message = f"invoke {app_id}/{method} answered HTTP {answer.status_code}: {answer.text[:200]}"
            if 400 <= answer.status_code < 500 and answer.status_code not in (404, 408, 429):
                raise Refused(message)
            raise SidecarError(message)

    async def get_state(self, store: str, key: str) -> Any | None:
        """The JSON value saved under ``key`` in a state store component; None when there is none."""
        data = await self.get_state_bytes(store, key)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError as error:
            raise SidecarError(f"state {key!r} in {store} is not JSON: {error}") from None

    async def get_state_bytes(self, store: str, key: str) -> bytes | None:
        client = await self._grpc_client()
        try:
            answer = await client.get_state(store_name=store, key=key)
        except Exception as error:
            raise SidecarError(f"get {key!r} from state store {store} failed: {_grpc_reason(error)}") from None
        return answer.data or None

    async def save_state(self, store: str, key: str, value: Any) -> None:
        await self.save_state_bytes(store, key, dumps(value))

    async def save_state_bytes(self, store: str, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Save raw bytes; one call must stay under daprd's request limit (``--max-body-size``, 4 MiB).
        ``metadata``: the state store's, such as ``{"ttlInSeconds": "3600"}``."""
        client = await self._grpc_client()
        try:
            await client.save_state(store_name=store, key=key, value=data, state_metadata=metadata or {})
        except Exception as error:
            raise SidecarError(f"save {key!r} to state store {store} failed: {_grpc_reason(error)}") from None

    async def create_states(
        self, store: str, items: dict[str, bytes], metadata: dict[str, str] | None = None
    ) -> dict[str, bytes]:
        """Each item saved under its key unless the key holds something already (first-write-wins: several
        processes may race for one key, one wins), in one call; what each key holds afterwards, ours or the
        winner's. A key left out of the answer could not be told (its store failed).

        With first-write concurrency and no ETag, Dapr's Redis store refuses a key that exists with a generic
        error, not an ETag mismatch, and a bulk save fails as a whole: so after a refusal the keys are read."""
        from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

        if not items:
            return {}
        client = await self._grpc_client()
        # the SDK (1.19) puts a bulk item's options into the request as they are, so they must already be the
        # protocol's message (its save_state converts them; save_bulk_state does not)
        first_write = StateOptions(concurrency=Concurrency.first_write).get_proto()
        states = [StateItem(key, data, options=first_write, metadata=metadata or {}) for key, data in items.items()]
        try:
            await client.save_bulk_state(store_name=store, states=states)
            return dict(items)
        except Exception as error:
            refused = _grpc_reason(error)
        try:
            answer = await client.get_bulk_state(store_name=store, keys=list(items), parallelism=8)
        except Exception as error:
            raise SidecarError(
                f"create {len(items)} key(s) in state store {store} failed ({refused}), and reading them back "
                f"too: {_grpc_reason(error)}"
            ) from None
        held = {item.key: item.data for item in answer.items if item.data and not item.error}
        if not held:  # nothing was there and nothing was made: the save failed for its own reason
            raise SidecarError(f"create {len(items)} key(s) in state store {store} failed: {refused}")
        return held

    async def delete_state(self, store: str, key: str) -> None:
        client = await self._grpc_client()
        try:
            await client.delete_state(store_name=store, key=key)
        except Exception as error:
            raise SidecarError(f"delete {key!r} from state store {store} failed: {_grpc_reason(error)}") from None

    async def aclose(self) -> None:
        if self._grpc is not None:
            await self._grpc.close()
        await self._http.aclose()

    async def connect(self, timeout: float = 60.0) -> None:
        """Make the gRPC client now (once the sidecar is ready), so that the first call does not pay for it."""
        await self.wait_ready(timeout)
        await self._grpc_client()

    async def _grpc_client(self):
        if self._grpc is None:
            from dapr.aio.clients import DaprClient  # imported late: it reads DAPR_* settings

            # the SDK's constructor waits for the sidecar with blocking sleeps (up to DAPR_HEALTH_TIMEOUT,
            # 60 s): on the event loop that would stop every delivery. Asked here first, without blocking,
            # a sidecar that is not up is a SidecarError now (the caller retries), and the constructor's
            # own check then answers at once
            await self.wait_ready(timeout=2.0)
            self._grpc = DaprClient(address=f"{self._settings.dapr_host}:{self._settings.dapr_grpc_port}")
        return self._grpc


def _publish_metadata(event_id: str | None, key: str | None) -> dict[str, str]:
    metadata = {"cloudevent.id": event_id} if event_id else {}
    return metadata | {"partitionKey": key} if key else metadata


def _grpc_reason(error: Exception) -> str:
    details = getattr(error, "details", None)
    if callable(details):
        try:
            return str(details())
        except Exception:  # pragma: no cover - defensive, the reason is best effort
            pass
    return f"{type(error).__name__}: {error}"
