"""Exactly once among replicas (``JOINER_REPLICA`` with ``state.journal``; docs/scaling.md).

Replicas of the joiner share the readings' queue: a reading goes to one of them, but a redelivery (an
acknowledgement lost with a broker's connection, or a replica killed after it journaled a delivery and before
it answered) may go to another one. That replica's dedup has never seen it, so without more both would bill
it. So each event of a shared stream is *claimed* before it is taken in: ``claim.<stream>.<event id>`` is
created in the state store with the replica's name, first write wins, and an event another replica claimed
is answered SUCCESS and counted (``claimed_elsewhere``), not joined.

The order is what makes it safe, with the journal (joiner.journal) written first:

1. the delivery is journaled (a replica that dies after this replays it at its next start);
2. its events are claimed (an event claimed by a replica that dies is in that replica's journal);
3. the events this replica owns are taken in, in journal order (:class:`Turns`), at their arrival time;
4. the delivery is answered.

A replay claims again: an event claimed meanwhile by another replica (it was redelivered there after this one
died between 1 and 2) is skipped, one this replica owns is taken in. A claim that cannot be made (the store
failing) answers its event RETRY; at a replay it is tried again for a while, then the event is taken in
and counted (``claims_unchecked``), since an event in the journal must not be lost.

A broadcast stream (every replica has a consumer group of its own: ``JOINER_BROADCAST``, by default the
first stream) is never claimed. With a broker that partitions both streams by key (Kafka), none is.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Iterable

from streaming_runtime.cloudevents import bulk_entries, delivery_of, is_bulk, read_body
from streaming_runtime.sidecar import SidecarError, SidecarPort

log = logging.getLogger("joiner")

OTHERS = "SUCCESS"  # the answer for an event another replica claimed: it is that replica's to bill
UNKNOWN = "RETRY"  # the answer for an event whose claim could not be made
REPLAY_ATTEMPTS = 8  # a replay's claims are tried this often (0.25 s doubling: about a minute in all)


class Claims:
    def __init__(
        self,
        sink: SidecarPort,
        store: str,
        replica: str,
        streams: list[str],
        ttl_seconds: float,
        broadcast: tuple[int, ...] = (0,),
    ) -> None:
        self.sink = sink  # not the replica's own keys: the claims are shared
        self.store = store
        self.replica = replica
        self.streams = streams
        self.broadcast = broadcast  # the streams every replica takes in full: never claimed
        self.metadata = {"ttlInSeconds": str(max(1, math.ceil(ttl_seconds)))}
        self.elsewhere: Counter = Counter()  # stream -> events another replica claimed
        self.failures = 0  # claims that could not be made (answered RETRY)
        self.unchecked = 0  # events a replay took in without a claim

    def shared(self, index: int) -> bool:
        """Whether stream ``index`` is shared among the replicas (claimed), not broadcast."""
        return index not in self.broadcast

    def key(self, index: int, event_id: str) -> str:
        return f"claim.{self.streams[index]}.{event_id}"

    async def _owners(self, index: int, event_ids: list[str]) -> list[str | None]:
        """Who owns each event: this replica's name, another's, or None when the store could not say.
        One call to the store for a delivery's events (a second one reads them back when some were taken)."""
        if not event_ids:
            return []
        keys = [self.key(index, event_id) for event_id in event_ids]
        try:
            held = await self.sink.create_states(self.store, dict.fromkeys(keys, self.replica.encode()), self.metadata)
        except SidecarError as error:
            log.warning("claims of %d %s event(s) not made: %s", len(keys), self.streams[index], error)
            return [None] * len(keys)
        if len(held) < len(keys):
            log.warning(
                "claims of %d of %d %s event(s) not made", len(keys) - len(held), len(keys), self.streams[index]
            )
        return [held[key].decode(errors="replace") if key in held else None for key in keys]

    async def claim(self, index: int, event_ids: Iterable[str]) -> dict[str, str]:
        """Claim a live delivery's events: the answer for each one not this replica's (OTHERS, UNKNOWN)."""
        ids = list(dict.fromkeys(event_ids))
        owners = await self._owners(index, ids)
        answers: dict[str, str] = {}
        for event_id, owner in zip(ids, owners):
            if owner is None:
                self.failures += 1
                answers[event_id] = UNKNOWN
            elif owner != self.replica:
                self.elsewhere[self.streams[index]] += 1
                answers[event_id] = OTHERS
        return answers

    async def settle(self, index: int, event_ids: Iterable[str]) -> set[str]:
        """Claim a replayed delivery's events, retrying what the store does not answer: the ids another
        replica owns (skipped). What stays unanswered is this replica's (counted, logged)."""
        pending = list(dict.fromkeys(event_ids))
        others: set[str] = set()
        delay = 0.25
        for attempt in range(REPLAY_ATTEMPTS):
            owners = await self._owners(index, pending)
            others |= {event_id for event_id, owner in zip(pending, owners) if owner not in (None, self.replica)}
            pending = [event_id for event_id, owner in zip(pending, owners) if owner is None]
            if not pending:
                break
            if attempt < REPLAY_ATTEMPTS - 1:
                await asyncio.sleep(delay)
                delay *= 2
        if pending:
            self.unchecked += len(pending)
            log.error(
                "state store %s: %d replayed %s event(s) taken in without a claim (the store did not answer): "
                "one another replica also took would be billed twice",
                self.store,
                len(pending),
                self.streams[index],
            )
        self.elsewhere[self.streams[index]] += len(others)
        return others


class Turns:
    """Deliveries taken in in the order of their journal sequence numbers, whatever order their writes finish
    in: a replay takes them in that order, so live and replayed windows and rows are the same. A sequence
    number is ``done`` once its delivery was taken in or given up; ``next`` is the first not done (a
    checkpoint covers every delivery below it)."""

    def __init__(self) -> None:
        self.next = 0
        self._done: set[int] = set()
        self._waiting: dict[int, asyncio.Future[None]] = {}

    async def wait(self, seq: int) -> None:
        """Until every delivery before ``seq`` is done."""
        if seq > self.next:
            await self._waiting.setdefault(seq, asyncio.get_running_loop().create_future())

    def done(self, seq: int) -> None:
        self._done.add(seq)
        while self.next in self._done:
            self._done.discard(self.next)
            self.next += 1
        for waiting in [waiting for waiting in self._waiting if waiting <= self.next]:
            future = self._waiting.pop(waiting)
            if not future.done():
                future.set_result(None)


def event_ids(body: bytes, max_bytes: int) -> list[str]:
    """The CloudEvent ids of a delivery's events (single or bulk), read as :meth:`Joiner.ingest` reads them;
    what cannot be read has none (ingest answers it DROP), nor does an event delivered without an id."""
    try:
        document = read_body(body, max_bytes=max_bytes)
        if is_bulk(document):
            return [
                parsed.id for _, parsed in bulk_entries(document) if not isinstance(parsed, Exception) and parsed.id
            ]
        delivery = delivery_of(document)
    except Exception:  # noqa: BLE001 - malformed: ingest drops it, with its reason
        return []
    return [delivery.id] if delivery.id else []
