"""RabbitMQ's own throughput on this machine, without Dapr: the physical reference of bench/pipeline.py.

The same readings (the same JSON bodies, the same count) are published and consumed with aio-pika, asking
of RabbitMQ what components/rabbit-stream.yaml asks: a durable fanout exchange named by the topic, a durable
queue bound to it, persistent messages (deliveryMode 2), publisher confirms, prefetch 100, one ack per
message. Publisher and consumer run in two processes, as poweruse-gen's and the joiner's sidecars do.

Two ways to wait for the confirms:

* ``each``: the next message is published once the last one is confirmed (what Dapr's RabbitMQ
  component does, even inside a bulk publish);
* ``batch``: a batch of 100 is published, then its 100 confirms are awaited together (what a bulk publish
  of 100 needs to answer: all of them are on disk).

msgs/s is the count over the time from the first publish to the last message consumed.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.synchronize import Event
from typing import Literal

import aio_pika

Confirm = Literal["each", "batch"]
PREFETCH = 100  # rabbit-stream's prefetchCount
BATCH = 100  # poweruse-gen's MESSAGE_BATCH in the pipeline run


async def _declare(channel: aio_pika.abc.AbstractChannel, topic: str, queue_name: str) -> aio_pika.abc.AbstractQueue:
    exchange = await channel.declare_exchange(topic, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(queue_name, durable=True)
    await queue.bind(exchange)
    return queue


async def _consume(url: str, topic: str, queue_name: str, count: int, ready: Event) -> float:
    """Consume ``count`` messages, acking each; the wall-clock time of the last one."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await _declare(channel, topic, queue_name)
        ready.set()
        seen = 0
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                seen += 1
                if seen >= count:
                    return time.time()
    return time.time()


def _consumer(url: str, topic: str, queue_name: str, count: int, ready: Event, done: multiprocessing.Queue) -> None:
    done.put(asyncio.run(_consume(url, topic, queue_name, count, ready)))


async def _publish(url: str, topic: str, bodies: Sequence[bytes], confirm: Confirm) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(topic, aio_pika.ExchangeType.FANOUT, durable=True)

        def message(body: bytes) -> aio_pika.Message:
            return aio_pika.Message(
                body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )

        for start in range(0, len(bodies), BATCH):
            batch = bodies[start : start + BATCH]
            if confirm == "each":
                for body in batch:
                    await exchange.publish(message(body), routing_key="")
            else:
                await asyncio.gather(*(exchange.publish(message(body), routing_key="") for body in batch))


def run_baseline(url: str, bodies: Sequence[bytes], confirm: Confirm, topic: str = "poweruse-baseline") -> dict:
    """Publish ``bodies`` and consume them (another process) through the broker at ``url``."""
    queue_name = f"{topic}-{confirm}"
    context = multiprocessing.get_context("fork")
    ready, done = context.Event(), context.Queue()
    consumer = context.Process(target=_consumer, args=(url, topic, queue_name, len(bodies), ready, done))
    consumer.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the baseline's consumer did not declare its queue within 30 s")
        started = time.time()
        asyncio.run(_publish(url, topic, bodies, confirm))
        published = time.time()
        last = done.get(timeout=120)
    finally:
        consumer.join(10)
        if consumer.is_alive():
            consumer.kill()
    elapsed = last - started
    return {
        "confirm": confirm,
        "messages": len(bodies),
        "elapsed": elapsed,
        "msgs_per_s": len(bodies) / elapsed if elapsed > 0 else float("nan"),
        "publish_per_s": len(bodies) / (published - started) if published > started else float("nan"),
    }
