"""The join engine: a symmetric hash join per window, with the semantics of the naive plan.

The naive plan (:func:`naive_join`) pairs every event of the first stream with every event of the
second in the window, keeps the pairs ``where`` accepts and shapes them with ``select``. The engine
yields the same rows (as a multiset) through the plan of :mod:`joiner.engine.plan`:

* on arrival an event is checked (:class:`MalformedEvent` when it can never be joined: not an
  object, a field the expressions read is missing, or a filter or ``select`` cannot use its types),
  then filtered (an event a filter rejects is in no row: counted, not buffered);
* it is put in its stream's bucket for its key and paired at once with the events of the other
  stream already in the window under that key (each pair is made when its second event arrives,
  so exactly once, while the new event is still in the CPU's cache); the residual decides and
  ``select`` shapes the row, which waits in the window until it closes.

Keys follow JSONata's ``=``: numbers equal across int/float (``1 = 1.0``), never equal to strings or
booleans (``"5" != 5``, ``true != 1``). An event whose key is not a plain value (a JSON null, an
array, an object) is kept aside and paired with every event of the other stream under the full
``where``, so unusual data is slower, never wrong. Without a key conjunct every pair is examined
(a nested loop), with the filters still applied on arrival.

The hot paths are generated Python (:mod:`joiner.engine.codegen`, with the expressions' parts from
:mod:`streaming_runtime.jsonata_compiler`), or for plans of the most common shape a loop in C
(:mod:`joiner.engine.native`); whatever they do not handle goes through :meth:`JoinEngine.accept`, which
evaluates exactly, event by event.

An event with a plain key is buffered in its stream's pending list and filed under its key only when
an event of the other stream looks for partners: when one stream (tenants) arrives before the other
(their readings), the second is never indexed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from joiner.engine.codegen import arrival_loop, projection
from joiner.engine.entries import EXACT_INT
from joiner.engine.native import NotNative, file_pending, native_arrival
from joiner.engine.plan import JoinPlan, _plain_path, plan_join
from streaming_runtime.errors import EvaluationError, MalformedEvent
from streaming_runtime.expressions import Expression, truthy
from streaming_runtime.jsonata_compiler import U, single_variable_roots

_MISSING = object()
_ODD = object()  # a key that is not a plain value
_BOOL = object()  # tags boolean keys: JSONata's true is not 1
_EXACT_INT = EXACT_INT  # ints up to this are keys as they are; beyond, as the float jsonata-python compares

Entry = tuple  # (event data, CloudEvent id[, has projection, *projection]): see JoinEngine._entry

KEPT = True  # accept(): buffered and paired (the processor counts it "accepted")
FILTERED_OUT = False  # accept(): a filter refused it (counted "filtered")


@dataclass
class WindowState:
    """One window: per stream, events by key and events with unusual keys; the rows made so far.

    An accepted event with a plain key is first appended to its stream's ``pending`` (keys, entries)
    and filed in ``buckets`` only when the other stream looks for partners (:meth:`JoinEngine.buckets`):
    a stream whose partners all arrived before it (readings after their tenants) is never indexed."""

    buckets: tuple[dict[Any, list[Entry]], dict[Any, list[Entry]]] = field(default_factory=lambda: ({}, {}))
    pending: tuple[tuple[list, list[Entry]], tuple[list, list[Entry]]] = field(
        default_factory=lambda: (([], []), ([], []))
    )
    odd: tuple[list[Entry], list[Entry]] = field(default_factory=lambda: ([], []))
    rows: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    count: int = 0  # events buffered
    bytes: int = 0  # their size as delivered (JSON), for maxWindowBytes
    pairs: int = 0  # candidate pairs examined
    # join: table: (data, id, event time) of the joined stream, joined with the table when the window closes
    timed: list[tuple[Any, str | None, float]] = field(default_factory=list)


@dataclass
class JoinResult:
    rows: list[Any] = field(default_factory=list)
    pairs: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Accepted:
    accepted: int = 0
    filtered: int = 0
    malformed: list[tuple[Entry, str]] = field(default_factory=list)  # (the entry given, reason)
    failed: list[tuple[Entry, Exception]] = field(default_factory=list)  # an error of our own met on the entry
    kept: list[Entry] = field(default_factory=list)  # with accept_many(kept=True): the entries buffered


class JoinEngine:
    def __init__(self, streams: tuple[str, str], where: Expression, select: Expression, *, native: bool = True) -> None:
        if len(streams) != 2 or streams[0] == streams[1]:
            raise ValueError("a join reads exactly two distinct streams")
        self.streams = streams
        self.plan: JoinPlan = plan_join(streams, where, select)
        required = [sorted(where.paths_under({n})[n] | select.paths_under({n})[n]) for n in streams]
        self._required_top = [frozenset(p[0] for p in paths if len(p) == 1) for paths in required]
        self._required_deep = [[p for p in paths if len(p) > 1] for paths in required]
        self._key_paths = ([k.left for k in self.plan.keys], [k.right for k in self.plan.keys])
        self._select_probe = _can_fail(select.tree) and _fails_with_any_partner(select.tree)
        self._roots = self._projection_roots(select.tree)
        self._project = [projection(self.plan, index, self._roots[index]) for index in (0, 1)]
        self._generated = [self._arrival_loop(index) for index in (0, 1)]
        self.arrival = ["generated" if loop else "per event" for loop in self._generated]
        for index in (0, 1):
            if native and self._generated[index] is not None:
                self._use_native(index)

    def _use_native(self, index: int) -> None:
        """Put the C loop in place of the generated one where the plan has its shape."""
        try:
            if self._required_deep[index]:
                raise NotNative("a path below the top level")
            if self._select_probe:
                raise NotNative("a select that can fail on one event alone")
            self._generated[index] = native_arrival(self.plan, index, self._required_top[index], self._roots)
        except NotNative as why:
            self.arrival[index] += f" (not native: {why})"
        except (ValueError, TypeError) as error:  # the C loop refused a specification: a bug to report, not a stop
            self.arrival[index] += f" (not native: the C loop refused the plan: {error})"
        else:
            self.arrival[index] = "native"

    def describe(self) -> str:
        ingest = ", ".join(f"{name}: {kind}" for name, kind in zip(self.streams, self.arrival))
        return f"{self.plan.describe()}; arrival loop: {ingest}"

    def new_state(self) -> WindowState:
        return WindowState()

    def result(self, state: WindowState) -> JoinResult:
        """What a closed window produced."""
        return JoinResult(rows=state.rows, pairs=state.pairs, errors=state.errors)

    # -- arrival: one event, exactly -------------------------------------------------------------

    def accept(self, state: WindowState, index: int, data: Any, event_id: str | None = None) -> bool:
        """Take one event of stream ``index``: KEPT (buffered, paired) or FILTERED_OUT.

        Raises MalformedEvent (nothing is buffered then)."""
        self.check(index, data)
        if not self.passes_filters(index, data):
            return FILTERED_OUT
        entry = self._entry(index, data, event_id)
        other = 1 - index
        if self.plan.keys:
            key = self._key(index, data)
            if key is _MISSING:
                return FILTERED_OUT  # `undefined = x` is false: this event can never be in a row
            if key is _ODD:
                state.odd[index].append(entry)
                partners = _chain(self.buckets(state, other).values()) + state.odd[other]
                self._pair_all(state, index, entry, partners, [self.plan.where])
            else:
                keys, entries = state.pending[index]
                keys.append(key)
                entries.append(entry)
                self._pair_all(state, index, entry, self.buckets(state, other).get(key, ()), self.plan.residual)
                self._pair_all(state, index, entry, state.odd[other], [self.plan.where])
        else:
            state.odd[index].append(entry)
            self._pair_all(state, index, entry, state.odd[other], self.plan.residual)
        state.count += 1
        return KEPT

    def buckets(self, state: WindowState, index: int) -> dict[Any, list[Entry]]:
        """Stream ``index``'s events by key, its pending ones filed first."""
        keys, entries = state.pending[index]
        if keys:
            file_pending(state.buckets[index], keys, entries)
        return state.buckets[index]

    def unmatched(self, state: WindowState) -> tuple[int, int]:
        """Per stream, the buffered events no event of the other stream shares a key with: they can be in
        no row of the window (a tenant outage shows here). Counted without filing pending events; events
        with unusual keys count only when the other stream has no event at all; (0, 0) without a key."""
        if not self.plan.keys:
            return (0, 0)
        counts = []
        for index in (0, 1):
            other = 1 - index
            theirs = state.buckets[other]
            their_keys = set(theirs) | set(state.pending[other][0])
            mine = sum(len(entries) for key, entries in state.buckets[index].items() if key not in their_keys)
            mine += sum(1 for key in state.pending[index][0] if key not in their_keys)
            if not their_keys and not state.odd[other]:
                mine += len(state.odd[index])
            counts.append(mine if not state.odd[other] else 0)  # an unusual key may match any: not counted
        return counts[0], counts[1]

    def buffered(self, state: WindowState, index: int) -> list[tuple[Any, str | None]]:
        """``(data, id)`` of every event of stream ``index`` the window holds (filtered ones are not held)."""
        held = [entry for bucket in state.buckets[index].values() for entry in bucket]
        held += state.pending[index][1] + state.odd[index]
        return [(entry[0], entry[1]) for entry in held]

    def check(self, index: int, data: Any) -> None:
        """Raise MalformedEvent saying why ``data`` can never take part in the join."""
        stream = self.streams[index]
        if data.__class__ is not dict:
            raise MalformedEvent(f"{stream} event is {_json_type(data)}, not a JSON object")
        if not self._required_top[index] <= data.keys():
            missing = sorted(self._required_top[index] - data.keys())
            raise MalformedEvent(f"{stream} event has no field {missing[0]} (used by the expressions)")
        for path in self._required_deep[index]:
            if _lookup(data, path) is _MISSING:
                raise MalformedEvent(f"{stream} event has no field {'.'.join(path)} (used by the expressions)")
        if self._select_probe:
            values: list[Any] = [U, U]
            values[index] = data
            try:
                self.plan.select(*values)
            except EvaluationError as error:
                raise MalformedEvent(f"{stream} event does not fit the expressions: {error}") from None

    def keeps(self, index: int, data: Any) -> bool:
        """Whether :meth:`accept` would keep the event (not malformed, not filtered), without taking it."""
        try:
            self.check(index, data)
            return self.passes_filters(index, data) and (not self.plan.keys or self._key(index, data) is not _MISSING)
        except MalformedEvent:
            return False

    def passes_filters(self, index: int, data: dict) -> bool:
        """Whether the conditions of ``where`` on this stream alone hold; MalformedEvent if they fail."""
        for condition in self.plan.filters[index]:
            try:
                if not is_true(condition(data)):
                    return False
            except EvaluationError as error:
                raise MalformedEvent(f"{self.streams[index]} event does not fit the expressions: {error}") from None
        return True

    def plain_key(self, index: int, data: dict) -> Any:
        """The event's join key, or None when it is missing or not a plain value (null, array...)."""
        key = self._key(index, data)
        return None if key is _MISSING or key is _ODD else key

    def _key(self, index: int, data: dict) -> Any:
        paths = self._key_paths[index]
        if len(paths) == 1:
            return _key_value(_lookup(data, paths[0]))
        parts = []
        for path in paths:
            part = _key_value(_lookup(data, path))
            if part is _MISSING or part is _ODD:
                return part
            parts.append(part)
        return tuple(parts)

    def _pair_all(
        self, state: WindowState, index: int, entry: Entry, partners: Iterable[Entry], conditions: list
    ) -> None:
        for partner in partners:
            state.pairs += 1
            if index == 0:
                self.pair(state, entry, partner, conditions)
            else:
                self.pair(state, partner, entry, conditions)

    def pair(self, state: WindowState, left: Entry, right: Entry, conditions: list) -> None:
        """Make the row of one candidate pair (entries of the first and second stream) if
        ``conditions`` hold; an evaluation error is recorded, not raised. Callers count pairs."""
        try:
            for condition in conditions:
                if not is_true(condition(left[0], right[0])):
                    return
            row = self.plan.select(left[0], right[0])
        except EvaluationError as error:
            state.errors.append(f"{self.streams[0]} {left[1]} x {self.streams[1]} {right[1]}: {error}")
            return
        if row is not None:
            state.rows.append(row)

    # -- arrival: many events, generated loop ---------------------------------------------------

    def accept_many(self, state: WindowState, index: int, entries: list[Entry], *, kept: bool = False) -> Accepted:
        """Take a batch of ``(data, id)`` of stream ``index``; malformed ones are reported, not raised.
        ``kept``: also say which were kept (``Accepted.kept``: their entries as buffered, ``entry[0]`` the
        event), for the watermark, which only they move."""
        outcome = Accepted()
        held = (len(state.pending[index][1]), len(state.odd[index]))  # every kept event is appended to one
        slow: list[Entry] = entries
        generated = self._generated[index]
        if generated is not None:
            slow = []
            other = 1 - index
            accepted, filtered, pairs = generated(
                entries,
                *state.pending[index],
                self.buckets(state, other),
                state.odd[other],
                state.rows,
                slow,
                self._odd_pair(state, index),
            )
            state.count += accepted
            state.pairs += pairs
            outcome.accepted, outcome.filtered = accepted, filtered
        for entry in slow:  # what the generated loop left to the exact path
            try:
                if self.accept(state, index, entry[0], entry[1]):
                    outcome.accepted += 1
                else:
                    outcome.filtered += 1
            except MalformedEvent as error:
                outcome.malformed.append((entry, str(error)))
            except Exception as error:  # noqa: BLE001 - an error of our own costs this entry alone
                outcome.failed.append((entry, error))
        if kept:  # this stream's pending and odd events only grow while it arrives
            outcome.kept = state.pending[index][1][held[0] :] + state.odd[index][held[1] :]
        return outcome

    def _odd_pair(self, state: WindowState, index: int) -> Callable[[Entry, Entry, bool], None]:
        """For generated code: pair ``mine`` (of stream ``index``) with ``theirs`` exactly.

        ``full`` says whether the whole ``where`` must be checked (a partner with an unusual key)
        or only the residual (same key, but the fast path could not compute the row)."""

        def pair(mine: Entry, theirs: Entry, full: bool) -> None:
            conditions = [self.plan.where] if full else self.plan.residual
            if index == 0:
                self.pair(state, mine, theirs, conditions)
            else:
                self.pair(state, theirs, mine, conditions)

        return pair

    # Buffered entries are (data, id, True, *projection): the projection holds the values of the parts
    # of `select` that read this event only, computed once on arrival, so pairing reads them instead of
    # evaluating them again for every partner; (data, id, False) when they are outside the fast path.

    def _projection_roots(self, tree: Any) -> tuple[list[Any], list[Any]]:
        first = single_variable_roots(tree, self.streams[0])
        taken = {id(node) for node in first}
        second = [node for node in single_variable_roots(tree, self.streams[1]) if id(node) not in taken]
        return first, second

    def _probe_function(self, index: int) -> Callable[[dict], bool]:
        """True when ``select`` evaluates on this event alone (the arrival check), else False."""
        select = self.plan.select

        def probe(data: dict) -> bool:
            values: list[Any] = [U, U]
            values[index] = data
            try:
                select(*values)
            except EvaluationError:
                return False
            return True

        return probe

    def _entry(self, index: int, data: dict, event_id: str | None) -> Entry:
        """A buffered entry: ``(data, id, True, *projection)``, or ``(data, id, False)`` without one."""
        project = self._project[index]
        values = project(data) if project is not None else None
        return (data, event_id, False) if values is None else (data, event_id, True, *values)

    def _arrival_loop(self, index: int) -> Callable[..., tuple[int, int, int]] | None:
        """The generated arrival loop of stream ``index`` (:func:`~joiner.engine.codegen.arrival_loop`), or
        None when the plan is outside it: it reads top-level fields only and pairs through both projections."""
        if self._required_deep[index] or any(project is None for project in self._project):
            return None
        probe = self._probe_function(index) if self._select_probe else None
        return arrival_loop(self.plan, index, self._required_top[index], self._roots, probe)


def naive_join(
    streams: tuple[str, str], where: Expression, select: Expression, lefts: Iterable[Any], rights: Iterable[Any]
) -> JoinResult:
    """The reference: every pair, ``where`` then ``select``, by the jsonata-python evaluator."""
    result = JoinResult()
    rights = list(rights)
    for left in lefts:
        for right in rights:
            result.pairs += 1
            binding = {streams[0]: left, streams[1]: right}
            try:
                if not truthy(where.evaluate(binding)):
                    continue
                row = select.evaluate(binding)
            except EvaluationError as error:
                result.errors.append(str(error))
                continue
            if row is not None:
                result.rows.append(row)
    return result


def is_true(value: Any) -> bool:
    """JSONata truthiness of a condition's result (fast for booleans)."""
    return value is True or (value is not False and truthy(value))


def _key_value(value: Any) -> Any:
    cls = value.__class__
    if cls is str:
        return value
    if cls is int:
        # jsonata-python's `=` compares numbers as floats (2**53 + 1 = 2**53): so do keys beyond 2**53
        return value if -_EXACT_INT <= value <= _EXACT_INT else float(value)
    if cls is float:
        return value if value == value and value not in (float("inf"), float("-inf")) else _ODD
    if cls is bool:
        return (_BOOL, value)
    if value is _MISSING:
        return _MISSING
    return _ODD


def key_to_json(key: Any) -> list:
    """A plain key (see :meth:`JoinEngine.plain_key`) as JSON, its type kept: ``1``, ``1.0``-as-float
    keys, ``true`` and ``"1"`` stay apart, and composite keys stay composite."""
    cls = key.__class__
    if cls is str:
        return ["s", key]
    if cls is int:
        return ["i", key]
    if cls is float:
        return ["f", key]
    if cls is tuple and len(key) == 2 and key[0] is _BOOL:
        return ["b", key[1]]
    if cls is tuple:
        return ["t", [key_to_json(part) for part in key]]
    raise ValueError(f"not a plain key: {key!r}")


def key_from_json(value: Any) -> Any:
    """The plain key :func:`key_to_json` wrote; ValueError for anything else."""
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"not an encoded key: {value!r}")
    kind, content = value
    if kind == "s" and isinstance(content, str):
        return content
    if kind == "i" and isinstance(content, int) and not isinstance(content, bool):
        return content
    if kind == "f" and isinstance(content, (int, float)) and not isinstance(content, bool):
        return float(content)
    if kind == "b" and isinstance(content, bool):
        return (_BOOL, content)
    if kind == "t" and isinstance(content, list):
        return tuple(key_from_json(part) for part in content)
    raise ValueError(f"not an encoded key: {value!r}")


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    value = data
    for step in path:
        if value.__class__ is dict:
            value = value.get(step, _MISSING)
            if value is _MISSING:
                return _MISSING
        elif isinstance(value, list):
            return value  # JSONata maps paths over arrays: not a plain key, the full where decides
        else:
            return _MISSING
    return value


def _chain(groups: Iterable[list]) -> list:
    out: list = []
    for group in groups:
        out.extend(group)
    return out


def _can_fail(tree: Any) -> bool:
    """Whether an expression can raise on one stream's values: anything beyond paths, literals
    and object/array constructors of them."""
    kind = getattr(tree, "type", None)
    if kind in ("path", "string", "number", "value", "name"):
        return False
    if kind == "unary" and getattr(tree, "value", None) in ("{", "["):
        children = (
            [value for _, value in (tree.lhs_object or [])] if tree.value == "{" else list(tree.expressions or [])
        )
        return any(_can_fail(child) for child in children)
    return True


_OPERATORS = frozenset({"+", "-", "*", "/", "%", "=", "!=", "<", "<=", ">", ">=", "&"})


def _fails_with_any_partner(tree: Any) -> bool:
    """Whether ``select`` failing on one stream's event alone (the other undefined) means it fails with
    every partner, so the event can never be in a row: true when every part is always evaluated and
    its type errors depend on its own operands (paths, literals, constructors, arithmetic, comparisons,
    ``&``); not with ``? :``, ``and``, ``or`` or calls, where a partner can avoid the failing part
    (``a.z = 1 ? "one" : b.y + 1`` fails alone on ``b.y = "s"`` but not with ``a.z = 1``)."""
    kind = getattr(tree, "type", None)
    if kind == "path":
        return _plain_path(tree) is not None  # a predicate is evaluated per item, conditionally
    if kind in ("string", "number", "value", "name"):
        return True
    if kind == "binary":
        return tree.value in _OPERATORS and _fails_with_any_partner(tree.lhs) and _fails_with_any_partner(tree.rhs)
    if kind == "block":
        return all(_fails_with_any_partner(child) for child in tree.expressions or [])
    if kind == "unary" and tree.value == "-":
        return _fails_with_any_partner(tree.expression)
    if kind == "unary" and tree.value in ("{", "["):
        children = (
            [value for _, value in (tree.lhs_object or [])] if tree.value == "{" else list(tree.expressions or [])
        )
        return all(_fails_with_any_partner(child) for child in children)
    return False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
