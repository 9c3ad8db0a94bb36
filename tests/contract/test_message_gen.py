import pytest

from message_gen.app import create_app
from message_gen.settings import GeneratorSettings
from streaming_runtime.errors import ConfigError
from tests.contract.support import RecordingSidecar, serve, wait_for

pytestmark = pytest.mark.anyio


def settings(**values) -> GeneratorSettings:
    base = {
        "MESSAGE_EXPR": '[{"n": 1}, {"n": 2},]',
        "CLUSTER_STREAM": "redis-stream",
        "STREAM_TOPIC": "tenants",
        "MESSAGE_COUNT": 3,
        "MESSAGE_DELAY": "0s",
    }
    return GeneratorSettings(**{**base, **values})


async def test_publishes_message_count_messages_in_turn():
    sidecar = RecordingSidecar()
    app = create_app(settings(), publisher=sidecar)
    async with serve(app) as client:
        await wait_for(lambda: app.state.stats.finished, what="generator finished")
        answer = (await client.get("/stats")).json()
    assert sidecar.publications == [
        ("redis-stream", "tenants", {"n": 1}),
        ("redis-stream", "tenants", {"n": 2}),
        ("redis-stream", "tenants", {"n": 1}),
    ]
    assert answer == {"published": 3, "failed": 0, "finished": True}


async def test_a_refused_publish_is_retried_not_skipped():
    sidecar = RecordingSidecar(failures=1)
    app = create_app(settings(MESSAGE_COUNT=2), publisher=sidecar)
    async with serve(app) as client:
        await wait_for(lambda: len(sidecar.publications) == 2, what="two publications")
        answer = (await client.get("/stats")).json()
    assert [data for *_, data in sidecar.publications] == [{"n": 1}, {"n": 2}]
    assert answer["failed"] == 1 and answer["published"] == 2


async def test_expression_sees_id_and_timestamp():
    sidecar = RecordingSidecar()
    app = create_app(settings(MESSAGE_EXPR='{"id": $id, "ts": $timestamp}', MESSAGE_COUNT=2), publisher=sidecar)
    async with serve(app):
        await wait_for(lambda: len(sidecar.publications) == 2, what="two publications")
    first, second = (data for *_, data in sidecar.publications)
    assert (first["id"], second["id"]) == (1, 2)
    assert second["ts"] >= first["ts"] > 1_600_000_000_000


def test_an_expression_that_does_not_parse_stops_start_up():
    with pytest.raises(ConfigError, match=r"MESSAGE_EXPR does not parse: .* at line 1, column"):
        create_app(settings(MESSAGE_EXPR="[1, 2"), publisher=RecordingSidecar())


def test_an_expression_that_fails_on_the_first_message_stops_start_up():
    with pytest.raises(ConfigError, match="MESSAGE_EXPR fails on the first message"):
        create_app(settings(MESSAGE_EXPR='"a" - 1'), publisher=RecordingSidecar())


async def test_message_batch_publishes_in_bulk_and_stops_at_message_count():
    sidecar = RecordingSidecar()
    app = create_app(settings(MESSAGE_EXPR="[1, 2, 3]", MESSAGE_COUNT=7, MESSAGE_BATCH=3), publisher=sidecar)
    async with serve(app):
        await wait_for(lambda: app.state.stats.finished, what="generator finished")
    assert [data for *_, data in sidecar.publications] == [1, 2, 3, 1, 2, 3, 1]
    assert sidecar.bulk_calls == 2  # 3 + 3 in bulk, the last one alone


async def test_each_message_has_its_own_cloudevent_id_and_a_retry_keeps_it():
    sidecar = RecordingSidecar(failures=1)  # the first publish of message 1 is refused, then tried again
    app = create_app(settings(MESSAGE_COUNT=5, MESSAGE_BATCH=2), publisher=sidecar)
    async with serve(app):
        await wait_for(lambda: app.state.stats.finished, what="generator finished")
    prefixes = {event_id.rsplit("-", 1)[0] for event_id in sidecar.event_ids}
    [prefix] = prefixes  # one run: one prefix, the topic and the run's start
    assert prefix.startswith("tenants-") and [event_id.rsplit("-", 1)[1] for event_id in sidecar.event_ids] == [
        "1",
        "2",
        "3",
        "4",
        "5",
    ]
    assert sidecar.attempted_ids[0] == sidecar.attempted_ids[1] == sidecar.event_ids[:2]  # refused, then again


async def test_message_partition_key_keys_each_message_by_its_field():
    """MESSAGE_PARTITION_KEY (Kafka's partitionKey): each message keyed by its own field, single and bulk."""
    expr = '[{"tenant_id": "t" & $string($id % 2), "n": $id}, {"n": 0}]'
    for batch in (1, 4):
        sidecar = RecordingSidecar()
        app = create_app(
            settings(MESSAGE_EXPR=expr, MESSAGE_COUNT=4, MESSAGE_BATCH=batch, MESSAGE_PARTITION_KEY="tenant_id"),
            publisher=sidecar,
        )
        async with serve(app):
            await wait_for(lambda app=app: app.state.stats.finished, what="generator finished")
        keyed = [(data.get("tenant_id"), key) for (*_, data), key in zip(sidecar.publications, sidecar.keys)]
        assert keyed and all(key == (tenant or "") for tenant, key in keyed), keyed


class GatedSidecar(RecordingSidecar):
    """Its publish calls wait at a gate: one is in flight while the test looks."""

    def __init__(self) -> None:
        super().__init__()
        import asyncio

        self.gate = asyncio.Event()
        self.waiting = 0

    async def publish(self, pubsub, topic, data, event_id=None, key=None):
        self.waiting += 1
        await self.gate.wait()
        await super().publish(pubsub, topic, data, event_id, key)


async def test_a_drain_lets_the_publish_in_flight_complete_and_starts_no_other():
    import asyncio

    sidecar = GatedSidecar()
    app = create_app(settings(MESSAGE_COUNT=0), publisher=sidecar)
    async with serve(app) as client:
        await wait_for(lambda: sidecar.waiting == 1, what="a publish in flight")
        drain = asyncio.ensure_future(app.state.drain())
        await asyncio.sleep(0)
        assert not drain.done()  # it waits for the publish, not cancels it
        sidecar.gate.set()
        await drain
        answer = (await client.get("/stats")).json()
    assert sidecar.waiting == 1 and len(sidecar.publications) == 1
    assert answer == {"published": 1, "failed": 0, "finished": False}
