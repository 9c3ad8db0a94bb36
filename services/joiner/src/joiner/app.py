"""The joiner service: a thin shell of FastAPI and Dapr around :class:`joiner.core.JoinCore`.

* one POST route per input stream, fed by declarative Dapr Subscriptions (single or bulk deliveries);
* a window task that closes windows on time (processing time) or when input goes idle (event time);
* a sender task that delivers each closed window's rows, in order, to every target, and one that
  publishes late events to the late topic.

Subscriber answers follow how daprd reads them: ``SUCCESS`` (kept), ``DROP`` (malformed: daprd
sends it to the Subscription's dead-letter topic). Never a 4xx/5xx for a bad event, since
daprd retries those, and no exception leaves a route: an error of our own met on some input is
reported (:class:`~streaming_runtime.logs.ErrorReport`), counted and answered DROP, so it costs that
event (kept in the dead-letter topic) and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from joiner.claims import OTHERS, Claims, event_ids
from joiner.config import JoinerConfig, StreamSource, load_config
from joiner.core import JoinCore, LateEvent, build_engine
from joiner.deadletters import DeadLetters
from joiner.engine.join import JoinEngine
from joiner.handover.store import Handover
from joiner.journal import Journal
from joiner.metrics import StatsCollector, registry_of
from joiner.recovery import Recovery
from joiner.replica import history_guard, state_sink
from joiner.runrecord import RunRecord
from joiner.sender import MAX_PARKED_BYTES, PARKED_RETRY_SECONDS, ROWS_PER_CALL, WindowSender
from joiner.stats import JoinerStats, Stats
from joiner.tracing import NO_TRACING, Tracing, from_environ
from streaming_runtime.cloudevents import bulk_entries, delivery_of, ensure_parse_depth, is_bulk, read_body
from streaming_runtime.errors import MalformedEvent, PayloadTooLarge
from streaming_runtime.logs import ErrorReport, LogBudget, printable
from streaming_runtime.metrics import add_metrics_route
from streaming_runtime.service import read_limited
from streaming_runtime.settings import DEFAULT_MAX_BODY_BYTES, ServiceSettings
from streaming_runtime.sidecar import Sidecar, SidecarError, SidecarPort
from streaming_runtime.tokens import require_app_token

log = logging.getLogger("joiner")

# a bulk delivery holds up to maxMessagesCount events (100 in components/): its body may be that many
# times an event's limit, else one large delivery would send every entry in it to the dead letters
BULK_BODY_BYTES = 16 * 1024 * 1024
NOTHING: Mapping[str, str] = {}


class JoinerSettings(ServiceSettings):
    """Service settings; the join itself is read by :func:`joiner.config.load_config`."""

    max_bulk_body_bytes: int = Field(BULK_BODY_BYTES, validation_alias="MAX_BULK_BODY_BYTES", gt=0)
    # one call to a target at most: billable-proc's MAX_BODY_BYTES (the same default, DEFAULT_MAX_BODY_BYTES)
    max_call_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, validation_alias="MAX_CALL_BYTES", gt=0)
    parked_retry_seconds: float = Field(PARKED_RETRY_SECONDS, validation_alias="PARKED_RETRY_SECONDS", gt=0)
    # parked windows' rows kept at most (JSON bytes); past it the oldest is given up, counted and logged
    max_parked_bytes: int = Field(MAX_PARKED_BYTES, validation_alias="MAX_PARKED_BYTES", gt=0)


class Joiner:
    """The service around a :class:`~joiner.core.JoinCore`: deliveries in, windows and late events out."""

    def __init__(
        self,
        config: JoinerConfig,
        engine: JoinEngine,
        sink: SidecarPort,
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = 1024 * 1024,
        retry_base_delay: float = 0.25,
        rows_per_call: int = ROWS_PER_CALL,
        max_bulk_body_bytes: int = BULK_BODY_BYTES,
        max_call_bytes: int = DEFAULT_MAX_BODY_BYTES,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.config = config
        self.sink = sink
        self.max_body_bytes = max_body_bytes
        self.max_bulk_body_bytes = max(max_bulk_body_bytes, max_body_bytes)
        self.errors = ErrorReport(log)
        self.drop_log = LogBudget(log)
        self.dead_letters = DeadLetters(config.dead_letters, sink, max_body_bytes)
        self.dead_letters.replica = config.replica
        self.sender = WindowSender(
            config, sink, self.errors, clock, retry_base_delay, rows_per_call, max_call_bytes=max_call_bytes
        )
        self.outbox = self.sender.outbox
        self.late_box: asyncio.Queue[LateEvent] = asyncio.Queue()
        self.core = JoinCore(
            config,
            engine,
            on_window=self.sender.enqueue,
            on_late=self.late_box.put_nowait,
            clock=clock,
            errors=self.errors,
        )
        self.stream_index = {source.name: index for index, source in enumerate(config.sources)}
        self.bulk_deliveries: Counter = Counter()
        self.late_published = 0
        # windows close only once the previous run's are back: else a window both runs had could close
        # before its handed-over events join it
        self.taken_over = asyncio.Event()
        # one replica of several keeps its state under keys of its own (joiner.replica)
        state = state_sink(sink, config.replica)
        self.handover = (
            Handover(state, config.state_store, self.core, self.sender, self.errors) if config.state_store else None
        )
        self.run_record = RunRecord(state, config.state_store, self._holding) if config.state_store else None
        self.stopping = False
        self.replaying = False
        self.journal = Journal(state, config.state_store) if config.journal and config.state_store else None
        self.journal_ready = asyncio.Event()  # live deliveries wait for the recovery (journal.start) first
        self.recovery = (
            Recovery(self.journal, state, config.state_store, self.core, self.sender, self.errors, self._replay)
            if self.journal is not None and config.state_store
            else None
        )
        if self.recovery is not None:
            self.sender.on_sent = self.recovery.schedule
        else:
            self.journal_ready.set()
        if config.state_store is None:
            self.taken_over.set()

        # one replica of several, with the journal: each event of a shared stream is claimed (joiner.claims)
        self.claims = (
            Claims(
                sink,
                config.state_store,
                config.replica,
                [s.name for s in config.sources],
                config.dedup_ttl,
                config.broadcast_streams,
            )
            if config.replica and self.journal is not None and config.state_store and config.dedup_ttl
            else None
        )
        self.in_flight: dict[int, float] = {}  # seq -> arrival, of claimed deliveries not taken in yet
        self.settled = asyncio.Event()  # set when none is in flight
        self.settled.set()
        self.core.hold = self._held_back
        # a new replica's history of the first stream, kept out of a processing-time window (joiner.replica)
        self.history = history_guard(
            config.replica, config.join_mode, config.event_time is not None, config.window_seconds, clock()
        )
        self.report = JoinerStats(self.core, self.sender, self.dead_letters, self)
        # a span per window delivered, linked to the deliveries that fed it (joiner.tracing)
        self.tracing = self.sender.tracing = tracing
        tracing.follow(self.core)

    @property
    def stats(self) -> Stats:  # the core's counters, for tests
        return self.core.stats

    # -- deliveries ---------------------------------------------------------------------------

    def ingest(self, source: StreamSource, body: bytes, settled: Mapping[str, str] = NOTHING) -> dict[str, Any]:
        """Answer for one delivery (single or bulk): malformed events DROP, with a log line; an error of
        our own on some input DROPs what it was met on and is reported, never raised. ``settled``: events
        (by CloudEvent id) answered as given and not taken in (another replica's, joiner.claims)."""
        try:
            return self._ingest(source, body, settled)
        except Exception as error:  # noqa: BLE001 - the route's last line of defence, see the module doc
            self.errors(f"delivery to {source.route}", error, f"{len(body)} bytes")
            return self._drop_unexpected(source, body)

    def _ingest(self, source: StreamSource, body: bytes, settled: Mapping[str, str]) -> dict[str, Any]:
        try:
            if len(body) > self.max_body_bytes and b'"entries"' not in body:  # cannot be bulk: refuse unparsed
                raise PayloadTooLarge(f"payload of {len(body)} bytes exceeds the limit of {self.max_body_bytes} bytes")
            document = read_body(body, max_bytes=self.max_bulk_body_bytes)
            if is_bulk(document):
                return self._ingest_bulk(source, document, len(body), settled)
            if len(body) > self.max_body_bytes:  # only bulk deliveries may be larger than one event
                raise PayloadTooLarge(f"payload of {len(body)} bytes exceeds the limit of {self.max_body_bytes} bytes")
            delivery = delivery_of(document)
        except MalformedEvent as error:
            return self.drop(source, None, error, body)
        if delivery.id is not None and delivery.id in settled:
            return {"status": settled[delivery.id]}
        index = self.stream_index[source.name]
        broadcast = index in self.config.broadcast_streams
        if broadcast and self.history is not None and not self.replaying and self.history.skips(delivery.time):
            return {"status": "SUCCESS"}
        if self.tracing.enabled:  # before the core takes it: it may close the window it goes into
            self.tracing.seen(index, ((document, delivery.data, delivery.time),))
        try:
            self.core.offer(index, delivery.data, delivery.id, delivery.time, len(body))
        except MalformedEvent as error:
            return self.drop(source, delivery.id, error, body)
        return {"status": "SUCCESS"}

    def _ingest_bulk(
        self, source: StreamSource, document: dict[str, Any], size: int, settled: Mapping[str, str]
    ) -> dict[str, Any]:
        """Every entry is read and checked before any is buffered, so that an answer is per entry and an
        entry that is refused costs no other."""
        self.bulk_deliveries[source.name] += 1
        statuses: dict[str, str] = {}
        entry_ids: list[str] = []
        positions: list[int] = []
        entries: list[tuple[Any, str | None, str | None]] = []
        # no entry can be over an event's limit when the whole delivery is not: then sizes are not measured
        limit = self.max_body_bytes if size > self.max_body_bytes else None
        raw = document["entries"]
        # (a journaled delivery replayed was taken in the first time: never skipped)
        broadcast = self.stream_index[source.name] in self.config.broadcast_streams
        history = self.history if broadcast and not self.replaying else None
        for position, (entry_id, parsed) in enumerate(bulk_entries(document, max_event_bytes=limit)):
            if isinstance(parsed, MalformedEvent):
                self.drop(source, entry_id, parsed, _event_of(raw[position]))
                statuses[entry_id] = "DROP"
                continue
            if parsed.id is not None and parsed.id in settled:
                statuses[entry_id] = settled[parsed.id]
                continue
            statuses[entry_id] = "SUCCESS"
            if history is not None and history.skips(parsed.time):
                continue
            positions.append(position)
            entry_ids.append(entry_id)
            entries.append((parsed.data, parsed.id or entry_id, parsed.time))
        if self.tracing.enabled:
            self.tracing.seen(
                self.stream_index[source.name],
                ((_event_of(raw[p]), entry[0], entry[2]) for p, entry in zip(positions, entries)),
            )
        outcomes = self.core.offer_many(self.stream_index[source.name], entries, size)
        for entry_id, entry, position, outcome in zip(entry_ids, entries, positions, outcomes):
            if isinstance(outcome, MalformedEvent):
                self.drop(source, entry[1], outcome, _event_of(raw[position]))
                statuses[entry_id] = "DROP"
        return {"statuses": [{"entryId": entry_id, "status": status} for entry_id, status in statuses.items()]}

    def _drop_unexpected(self, source: StreamSource, body: bytes) -> dict[str, Any]:
        """DROP for what an unexpected error was met on: each entry of a bulk delivery (daprd reads a bare
        status as one for every entry), or the event."""
        try:
            document = read_body(body, max_bytes=self.max_bulk_body_bytes)
            if is_bulk(document):
                ids = [entry_id for entry_id, _ in bulk_entries(document)]
                self.core.stats.dropped[source.name] += len(ids)
                for entry_id, entry in zip(ids, document["entries"]):
                    self.dead_letters.offer(source.name, entry_id, "an error of the joiner's own", _event_of(entry))
                return {"statuses": [{"entryId": entry_id, "status": "DROP"} for entry_id in ids]}
        except Exception:  # noqa: BLE001 - the body could not be read a second time: one DROP for all
            pass
        self.core.stats.dropped[source.name] += 1
        self.dead_letters.offer(source.name, None, "an error of the joiner's own", body)
        return {"status": "DROP"}

    def drop(
        self, source: StreamSource, event_id: str | None, error: MalformedEvent, event: Any = None
    ) -> dict[str, str]:
        """Count, log (sampled) and, for a stream with ``deadLetter``, publish a copy of a dropped event."""
        self.core.stats.dropped[source.name] += 1
        if event is not None and not self.replaying:  # a replayed drop was dead-lettered the first time
            self.dead_letters.offer(source.name, event_id, str(error), event)
        # a flood of poison must not become a flood of log: every drop is counted, the log samples them
        self.drop_log.warning(
            f"dropped {source.name}",
            "dropped malformed event stream=%s id=%s reason=%s",
            source.name,
            printable(event_id, 80),
            printable(error, 300),
        )
        return {"status": "DROP"}

    # -- handover of open windows (state.store) -------------------------------------------------

    async def take_over(self) -> None:
        """At start: continue the open windows the previous run saved in the state store, then remove them
        there, and say whether the previous run stopped or was killed (:mod:`joiner.runrecord`). Deliveries
        may come in meanwhile: they join the same windows, which wait to close."""
        store = self.config.state_store
        assert store is not None and self.handover is not None, "take_over runs only with a state store"
        try:
            await self.handover.take_over()
            if self.recovery is not None:
                await self.recovery.recover(took_handover=self.handover is not None and self.handover.took_over)
            if self.run_record is not None:
                await self.run_record.check_previous(recovered=self.journal is not None)
        finally:
            self.journal_ready.set()
            self.taken_over.set()

    # -- the journal (state.journal): see joiner.journal -------------------------------------------

    async def receive(self, source: StreamSource, body: bytes) -> dict[str, Any]:
        """Answer for one delivery; with the journal, only once its body is journaled (RETRY if it cannot be).
        While stopping, RETRY: the open windows are being delivered or handed over, and the broker gives the
        delivery to the next joiner."""
        if self.stopping:
            self.drop_log.warning("stopping", "delivery to %s answered RETRY: stopping", source.route)
            return {"status": "RETRY"}
        if self.journal is None:
            return self.ingest(source, body)
        await self.journal_ready.wait()
        if self.claims is not None:
            return await self._receive_claimed(source, body)
        now = self.core.clock()
        seq = self.journal.reserve()
        with self.core.clock_at(now):  # the time the journal records, and its replay takes it in at
            answer = self.ingest(source, body)
        self.journal.turns.done(seq)
        try:
            await self.journal.write(seq, self.stream_index[source.name], now, body)
        except SidecarError as error:
            self.drop_log.warning(
                "journal",
                "delivery to %s answered RETRY, its journal write failed (it comes "
                "again; dedup takes what it already took): %s",
                source.route,
                error,
            )
            return {"status": "RETRY"}
        return answer

    async def _receive_claimed(self, source: StreamSource, body: bytes) -> dict[str, Any]:
        """One replica of several (joiner.claims): journaled, its events claimed, then taken in at its
        turn and at its arrival time; windows wait to close meanwhile (:meth:`_held_back`)."""
        assert self.journal is not None and self.claims is not None
        index = self.stream_index[source.name]
        now = self.core.clock()
        seq = self.journal.reserve()
        self.in_flight[seq] = now
        self.settled.clear()
        try:
            try:
                await self.journal.write(seq, index, now, body)
            except SidecarError as error:
                self.drop_log.warning(
                    "journal", "delivery to %s answered RETRY, its journal write failed: %s", source.route, error
                )
                return {"status": "RETRY"}
            ids = event_ids(body, self.max_bulk_body_bytes) if self.claims.shared(index) else []
            answers = await self.claims.claim(index, ids) if ids else {}
            await self.journal.turns.wait(seq)
            with self.core.clock_at(now):
                return self.ingest(source, body, answers)
        finally:
            self.journal.turns.done(seq)
            del self.in_flight[seq]
            if not self.in_flight:
                self.settled.set()

    def _held_back(self) -> float:
        """Windows close no later than the arrival of a delivery not taken in yet: it goes into its own."""
        return min(self.in_flight.values(), default=math.inf)

    async def _replay(self, pending: list[tuple[int, float, bytes]]) -> None:
        """Journaled deliveries taken in again, in order, each at its time: the same windows and rows (with
        claims, less the events another replica took since)."""
        skips: list[dict[str, str]] = []
        for stream, _, body in pending:
            ids = event_ids(body, self.max_bulk_body_bytes) if self.claims and self.claims.shared(stream) else []
            others = await self.claims.settle(stream, ids) if self.claims and ids else set()
            skips.append(dict.fromkeys(others, OTHERS))
        self.replaying = True
        try:
            for (stream, arrival, body), skip in zip(pending, skips):
                with self.core.clock_at(arrival):
                    self.ingest(self.config.sources[stream], body, skip)
        finally:
            self.replaying = False

    def _holding(self) -> dict[str, int]:
        """What a crash now would lose (for the run record)."""
        states = self.core.windows.states()
        parked = list(self.sender.parked.values())
        return {
            "events": sum(state.count for state in states),
            "windows": len(states),
            "undelivered": len(parked) + self.outbox.qsize(),
            "rows": sum(len(p.rows) for p in parked),
        }

    async def hand_over(self) -> bool:
        """At stop: save the open windows in the state store (:mod:`joiner.handover`); False when they must
        be closed now."""
        return await self.handover.hand_over() if self.handover is not None else False

    async def stop(self) -> None:
        """At shutdown: deliver what is due, then hand over (state.store) or close what is open and send it;
        what is still undelivered after that is handed over too, or counted and logged as lost."""
        with contextlib.suppress(asyncio.TimeoutError):  # claimed deliveries in flight go in first
            await asyncio.wait_for(self.settled.wait(), timeout=10)
        await self._drain(10)
        if await self.hand_over():
            await self._forget_journal()
        else:
            self.close_all()  # what is buffered goes out before we stop
            await self._drain(10)
            if self.journal is not None and self.sender.parked:
                log.error(
                    "stopping with %d undelivered window(s): kept in the journal for the next start",
                    len(self.sender.parked),
                )
            else:
                await self._forget_journal()
                self.sender.give_up()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(self.late_box.join(), self.dead_letters.queue.join()), timeout=5)
        if self.run_record is not None:
            await self.run_record.stopped_cleanly()

    async def _forget_journal(self) -> None:
        if self.recovery is not None:
            await self.recovery.forget()

    async def _drain(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.outbox.join(), timeout=seconds)

    # -- windows ------------------------------------------------------------------------------

    def close_due(self) -> None:
        self.core.tick()

    def close_all(self) -> None:
        self.core.flush()

    async def run_windows(self) -> None:
        """Close windows on time: at each window end (processing time), or when input goes idle."""
        await self.taken_over.wait()
        while True:
            await asyncio.sleep(self.core.next_tick())
            self.core.tick()

    async def run_late_sender(self) -> None:
        """Publish late events to the configured late topic (they are counted and logged either way)."""
        target = self.config.late_target
        while True:
            late = await self.late_box.get()
            if target is not None:
                try:
                    record = late.as_record()
                    if self.config.replica:  # which replica found it late
                        record["replica"] = self.config.replica
                    await self.sink.publish(target.pubsub, target.topic, record)
                    self.late_published += 1
                except SidecarError as error:
                    log.error("late event %s not published to %s: %s", late.id, target, error)
            self.late_box.task_done()

    def figures(self) -> dict[str, Any]:
        """The service's own part of :attr:`report` (``replica`` only for one replica of several)."""
        replica: dict[str, Any] = {"replica": self.config.replica} if self.config.replica else {}
        if self.history is not None:
            replica["history_skipped"] = self.history.skipped
        if self.claims is not None:
            replica["claimed_elsewhere"] = dict(self.claims.elsewhere)
            replica["claim_failures"] = self.claims.failures
            replica["claims_unchecked"] = self.claims.unchecked
        return {
            **replica,
            "bulk_deliveries": dict(self.bulk_deliveries),
            "late_published": self.late_published,
            "journal_failures": self.journal.failures if self.journal else 0,
            "journal_replayed": self.journal.replayed if self.journal else 0,
            "handovers_set_aside": self.handover.set_aside if self.handover else 0,
            "crashes_detected": self.run_record.crashes_detected if self.run_record else 0,
            "events_lost_in_crash": self.run_record.events_lost_in_crash if self.run_record else 0,
            "unexpected_errors": self.errors.total,
        }


def _once(work: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``work`` run at the first call; every call awaits that one run."""
    run: asyncio.Future[None] | None = None

    async def once() -> None:
        nonlocal run
        if run is None:
            run = asyncio.ensure_future(work())
        await asyncio.shield(run)

    return once


async def _after(event: asyncio.Event, work: Any) -> None:
    await event.wait()
    await work


def _event_of(entry: Any) -> Any:
    """A bulk entry's event as delivered (JSON text or an object), or the entry when it has none."""
    return entry.get("event", entry) if isinstance(entry, dict) else entry


def create_app(
    settings: JoinerSettings,
    config: JoinerConfig | None = None,
    sink: SidecarPort | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    config = config or load_config(os.environ)
    engine = build_engine(config)
    ensure_parse_depth()
    state: dict[str, Any] = {}  # "joiner" and its "metrics" registry, set by the lifespan

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sidecar = None
        target = sink
        if target is None:
            sidecar = Sidecar(settings)
            target = sidecar
        joiner = Joiner(
            config,
            engine,
            target,
            clock,
            settings.max_body_bytes,
            max_bulk_body_bytes=settings.max_bulk_body_bytes,
            max_call_bytes=settings.max_call_bytes,
            tracing=from_environ(os.environ, settings.app_id or "joiner"),
        )
        joiner.sender.max_parked_bytes = settings.max_parked_bytes
        state["joiner"] = app.state.joiner = joiner
        state["metrics"] = registry_of(
            StatsCollector(joiner.report.as_dict, engine.streams, joiner.core.describe()),
            joiner.sender.delivery_latency,
        )
        log.info(
            "joining %s over %gs windows -> %s",
            " x ".join(f"{s.name} (route {s.route})" for s in config.sources),
            config.window_seconds,
            ", ".join(str(t) for t in config.targets),
        )
        log.info("plan: %s", joiner.core.describe())
        tasks = [
            asyncio.create_task(joiner.run_windows()),
            asyncio.create_task(joiner.sender.run()),
            asyncio.create_task(joiner.run_late_sender()),
            asyncio.create_task(joiner.sender.run_parked_retries(settings.parked_retry_seconds)),
            asyncio.create_task(joiner.dead_letters.run()),
        ]
        take_over = asyncio.create_task(joiner.take_over()) if config.state_store else None
        if joiner.run_record is not None:
            tasks.append(asyncio.create_task(_after(joiner.taken_over, joiner.run_record.run())))

        async def finish() -> None:
            """Take no more deliveries, stop the timers, deliver or hand over what is open."""
            joiner.stopping = True
            tasks[0].cancel()
            tasks[3].cancel()
            if take_over is not None:
                take_over.cancel()
                await asyncio.gather(take_over, return_exceptions=True)
            await joiner.stop()

        # run by the server at the first signal while it still listens (streaming_runtime.DrainingServer),
        # or here at the end of the lifespan when nothing signalled (tests, an embedding server)
        app.state.drain = finish_once = _once(finish)
        yield
        await finish_once()
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await joiner.tracing.close()
        if sidecar is not None:
            await sidecar.aclose()

    app = FastAPI(title="joiner", lifespan=lifespan)
    require_app_token(app, settings.app_api_token)

    def add_stream_route(source: StreamSource) -> None:
        async def receive(request: Request) -> JSONResponse:
            joiner = state["joiner"]
            try:
                body = await read_limited(request, joiner.max_bulk_body_bytes)
            except MalformedEvent as error:
                return JSONResponse(joiner.drop(source, None, error))
            except Exception as error:  # noqa: BLE001 - e.g. the client went away mid-body
                joiner.errors(f"reading a delivery to {source.route}", error)
                return JSONResponse({"status": "RETRY"})
            return JSONResponse(await joiner.receive(source, body))

        # a plain Starlette route: FastAPI's dependency solving cost more per delivery than the join itself
        # (bench/pipeline.py)
        app.router.add_route(source.route, receive, methods=["POST"], name=f"receive_{source.name}")

    for source in config.sources:
        add_stream_route(source)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: unready while deliveries fail, windows are parked or the outbox backs up (liveness
        stays /healthz: a joiner that cannot deliver must not be restarted and lose its windows)."""
        problems = state["joiner"].sender.problems()
        if problems:
            return JSONResponse({"status": "unready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/deadletters")
    async def dead_letters() -> dict:
        """The parked windows: what each holds, for which target, and why it did not go."""
        sender = state["joiner"].sender
        return {"windows": [parked.summary() for parked in sender.parked.values()], "bytes": sender.parked_bytes}

    @app.post("/deadletters/resend")
    async def resend() -> dict:
        """Re-send every parked window now (billable-proc takes a window it got already for a retry)."""
        return await state["joiner"].sender.resend()

    @app.get("/stats")
    async def stats() -> dict:
        return state["joiner"].report.as_dict()

    add_metrics_route(app, lambda: state.get("metrics"))  # the same counters for Prometheus

    return app
