"""The join engine against the naive plan: the same rows, as a multiset, whatever the query, data and order.

Hypothesis draws a ``where`` from a small grammar over streams ``a`` and ``b`` (fields x, y, z), a
``select`` from a list, and events whose values collide across types (1, 1.0, "1", true, null, [1],
...). The events are fed in a random order, one by one (``accept``) or in batches (``accept_many``);
the rows must be those :func:`naive_join` (jsonata-python over every pair) gives for the events that
are not malformed. ``json.dumps`` tells 1 from 1.0, so the number types of the rows count too.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from joiner.engine.join import FILTERED_OUT, KEPT, JoinEngine, naive_join
from streaming_runtime.errors import MalformedEvent
from streaming_runtime.expressions import compile_expression

STREAMS = ("a", "b")
FIELDS = ("x", "y", "z")

CONJUNCTS = [
    "a.x = b.x",
    "a.y = b.y",
    "b.x = a.x",
    "a.z > 1",
    "b.z >= 0.5",
    "a.x != b.y",
    'a.x & "" = b.x & ""',
    "a.y + b.y > 2",
    "$not(a.z = 0)",
    # beyond the basic grammar: a key below the top level, a filter outside the compiled subset
    "a.x.k = b.x",
    "a.z in [1, 2]",
    # the shapes the C arrival loop takes: a field against a number, either way round
    "b.z < 1",
    "1 <= a.z",
    "a.z = 1",
    "b.y != 0.5",
]
SELECTS = [
    '{"ax": a.x, "by": b.y}',
    '{"a": a.x, "b": b.x, "z": [a.z, b.z]}',
    "[a.x, b.x]",
    "a.y + b.y",
    "a.z * 2",
    'a.x & "-" & b.x',
    '"const"',
    "1",
    '{"k": 1.5, "y": b.y}',
    'a.z > 1 ? {"big": a.z} : {"small": b.z}',
    '{"n": $count([a.x, b.x])}',  # partly outside the compiled subset
    'a.z = 1 ? "one" : b.y + 1',  # b.y + 1 fails on "a" only where a.z != 1
    '{"s": a.x = 1 and b.y * 2}',
    '{"bz": b.z, "ax": a.x, "az": a.z, "bx": b.x}',
]
# designed to collide (1 = 1.0, "1" != 1, true != 1) and to mix types; 2**53 + 1 = 2**53 in jsonata-python
DOMAIN = [1, 1.0, 2, "1", "a", True, False, None, [1], {"k": 1}, 0.5]
LARGE = [2**53 + 1, float(2**53)]
MISSING = object()

values = st.one_of(st.sampled_from(DOMAIN), st.sampled_from(DOMAIN), st.sampled_from(DOMAIN), st.sampled_from(LARGE))


@st.composite
def wheres(draw) -> str:
    parts = draw(st.lists(st.sampled_from(CONJUNCTS), min_size=1, max_size=3))
    if draw(st.booleans()) and draw(st.booleans()):  # sometimes an `or` of two
        left, right = draw(st.sampled_from(CONJUNCTS)), draw(st.sampled_from(CONJUNCTS))
        parts.insert(draw(st.integers(0, len(parts))), f"({left} or {right})")
    return " and ".join(parts)


@st.composite
def events(draw) -> dict[str, Any]:
    fields = {name: draw(values) for name in FIELDS}
    if draw(st.integers(0, 9)) == 0:  # sometimes a missing field
        fields[draw(st.sampled_from(FIELDS))] = MISSING
    return {name: value for name, value in fields.items() if value is not MISSING}


EVENT_LISTS = st.lists(events(), max_size=8)


def _canonical(rows: list[Any]) -> Counter:
    return Counter(json.dumps(row, sort_keys=True) for row in rows)


def _engine(where: str, select: str, native: bool = True) -> JoinEngine:
    return JoinEngine(
        STREAMS,
        compile_expression(where, setting="stream.where"),
        compile_expression(select, setting="stream.select"),
        native=native,
    )


def _malformed(engine: JoinEngine, index: int, data: Any) -> str | None:
    """Why the event is malformed (None when it is not): decided alone, in a scratch window."""
    try:
        engine.accept(engine.new_state(), index, data)
    except MalformedEvent as error:
        return str(error)
    return None


def _deliver(engine: JoinEngine, arrivals: list[tuple[int, int, Any]], batches: list[int] | None):
    """Feed (stream index, event number, data) in order: one by one, or as batches of the given sizes
    (cut where the stream changes). Returns the state, the events reported malformed and how many
    were reported accepted."""
    state = engine.new_state()
    malformed: set[tuple[int, int]] = set()
    accepted = 0
    if batches is None:
        for index, number, data in arrivals:
            try:
                taken = engine.accept(state, index, data, f"{STREAMS[index]}{number}")
            except MalformedEvent as error:
                assert str(error)
                malformed.add((index, number))
                continue
            assert taken is KEPT or taken is FILTERED_OUT
            accepted += taken is KEPT
        return state, malformed, accepted
    position, sizes = 0, iter(batches)
    while position < len(arrivals):
        index = arrivals[position][0]
        size = next(sizes, 8)
        batch = []
        while position < len(arrivals) and len(batch) < size and arrivals[position][0] == index:
            batch.append(arrivals[position])
            position += 1
        entries = [(data, f"{STREAMS[index]}{number}") for _, number, data in batch]
        result = engine.accept_many(state, index, entries)
        assert all(reason for _, reason in result.malformed)
        assert result.accepted + result.filtered + len(result.malformed) == len(batch)
        numbers = {f"{STREAMS[index]}{number}": number for _, number, _ in batch}
        malformed |= {(index, numbers[entry[1]]) for entry, _ in result.malformed}
        accepted += result.accepted
    return state, malformed, accepted


@settings(max_examples=300, deadline=None)
@given(
    where=wheres(),
    select=st.sampled_from(SELECTS),
    lefts=EVENT_LISTS,
    rights=EVENT_LISTS,
    data=st.data(),
)
@example(  # a type error in a branch that a partner may avoid does not make the event malformed
    where="a.x = b.x",
    select='a.z = 1 ? "one" : b.y + 1',
    lefts=[{"x": 1, "y": 1, "z": 1}],
    rights=[{"x": 1.0, "y": "a", "z": 1}],
    data=None,
)
@example(  # ints beyond 2**53 are equal to their float in jsonata-python's `=`
    where="a.x = b.x",
    select='{"ax": a.x, "by": b.y}',
    lefts=[{"x": 2**53 + 1, "y": 1, "z": 1}],
    rights=[{"x": float(2**53), "y": 2, "z": 1}],
    data=None,
)
@example(
    where="a.x = b.x",
    select="[a.x, b.x]",
    lefts=[{"x": 2**53 + 1, "y": 1, "z": 1}],
    rights=[{"x": 2**53, "y": 2, "z": 1}],
    data=None,
)
@example(
    where="a.x = b.x and a.z > 1",
    select='{"ax": a.x, "by": b.y}',
    lefts=[{"x": 2**53 + 1, "y": 1, "z": 2}],
    rights=[{"x": 2**53, "y": 2, "z": 1}],
    data=None,
)
@example(  # the arriving side's projected `a.x = 1` is read for each partner: the partner's own code must not
    # overwrite it (it did: the second partner saw the first one's b.y in its place)
    where="a.x = b.x",
    select='{"s": a.x = 1 and b.y * 2}',
    lefts=[{"x": 1, "y": 1, "z": 1}],
    rights=[{"x": 1, "y": 1, "z": 1}, {"x": 1, "y": False, "z": 1}],  # reversed, in a batch: the bad partner first
    data=None,
)
def test_engine_rows_equal_the_naive_join(where, select, lefts, rights, data):
    # the C arrival loop where the plan has its shape, and the generated Python loop, both against naive
    for native in (True, False):
        _check_engine_against_naive(_engine(where, select, native), where, select, lefts, rights, data)


def _check_engine_against_naive(engine, where, select, lefts, rights, data):
    tagged = [(0, n, event) for n, event in enumerate(lefts)] + [(1, n, event) for n, event in enumerate(rights)]
    reasons = {(index, number): _malformed(engine, index, event) for index, number, event in tagged}
    malformed = {key for key, reason in reasons.items() if reason is not None}
    # malformed for its types (not for its shape): it could never be in a row
    unusable = {key for key, reason in reasons.items() if reason is not None and "does not fit" in reason}

    def naive(excluded: set) -> Any:
        return naive_join(
            STREAMS,
            compile_expression(where, setting="stream.where"),
            compile_expression(select, setting="stream.select"),
            [event for n, event in enumerate(lefts) if (0, n) not in excluded],
            [event for n, event in enumerate(rights) if (1, n) not in excluded],
        )

    naive_result = naive(malformed)
    expected = _canonical(naive_result.rows)
    assert _canonical(naive(malformed - unusable).rows) == expected, f"{where=} {select=}: an unusable event joins"

    deliveries = []
    for attempt in range(2):
        if data is None:  # an explicit example: in order, then reversed and in batches
            order = tagged if attempt == 0 else list(reversed(tagged))
            batches = None if attempt == 0 else [3, 1, 2]
        else:
            order = data.draw(st.permutations(tagged), label=f"order {attempt}")
            batched = data.draw(st.booleans(), label=f"batched {attempt}")
            batches = (
                data.draw(st.lists(st.integers(1, 5), max_size=16), label=f"batches {attempt}") if batched else None
            )
        state, reported, accepted = _deliver(engine, order, batches)
        result = engine.result(state)

        assert reported == malformed, f"where={where!r} select={select!r}: malformed {reported} != {malformed}"
        assert accepted == state.count
        assert _canonical(result.rows) == expected, (
            f"where={where!r} select={select!r} order={[(i, n) for i, n, _ in order]} batches={batches}\n"
            f"engine: {sorted(_canonical(result.rows).elements())}\nnaive:  {sorted(expected.elements())}"
        )
        # every error the engine records is a pair the naive plan also fails on (it may fail on more)
        assert len(result.errors) <= len(naive_result.errors)
        deliveries.append((state.count, state.pairs, len(result.errors)))

    # what is buffered, how many pairs are examined and which fail do not depend on the order
    assert deliveries[0] == deliveries[1]


def test_the_grammar_reaches_both_plans_and_the_generated_loop():
    # the property above is only as good as the plans it reaches
    described = [
        _engine(where, select).describe()
        for where, select in [
            ("a.x = b.x and a.z > 1", '{"ax": a.x, "by": b.y}'),
            ("a.x != b.y and b.z >= 0.5", "[a.x, b.x]"),
            ("a.x = b.x and a.y = b.y", "a.y + b.y"),
        ]
    ]

    assert described[0].startswith("hash join on a.x = b.x") and "a: native, b: native" in described[0]
    assert described[1].startswith("nested loop")
    assert described[2].startswith("hash join on a.x = b.x, a.y = b.y") and "a: generated" in described[2]
    assert "a: generated" in _engine("a.x = b.x and a.z > 1", '{"ax": a.x, "by": b.y}', native=False).describe()


# -- the C arrival loop's shape: hash keys, `field <op> number` filters, an object of fields -------

NATIVE_KEYS = ["a.x = b.x", "a.y = b.y", "b.x = a.x"]
NATIVE_FILTERS = [
    "a.z > 1",
    "b.z >= 0.5",
    "b.z < 1",
    "1 <= a.z",
    "a.z = 1",
    "b.y != 0.5",
    "0.5 > b.z",
    "a.y <= 2",
    'a.y = "a"',
    '"1" != b.z',
    'b.y = "1"',
]
CONSTANTS = ['"c"', "1.5", "1", "true", "false", "null", '""']
PATHS = [f"{stream}.{name}" for stream in STREAMS for name in FIELDS]


@st.composite
def native_queries(draw) -> tuple[str, str]:
    keys = draw(st.lists(st.sampled_from(NATIVE_KEYS), min_size=1, max_size=2))
    filters = draw(st.lists(st.sampled_from(NATIVE_FILTERS), max_size=3))
    parts = draw(st.permutations(keys + filters))
    # a row of both streams (a select of one stream only is computed whole on arrival, another shape)
    values = [draw(st.sampled_from(PATHS[:3])), draw(st.sampled_from(PATHS[3:]))]
    values = draw(st.permutations(values + draw(st.lists(st.sampled_from(PATHS + CONSTANTS), max_size=3))))
    select = "{" + ", ".join(f'"k{n}": {path}' for n, path in enumerate(values)) + "}"
    return " and ".join(parts), select


@settings(max_examples=300, deadline=None)
@given(query=native_queries(), lefts=EVENT_LISTS, rights=EVENT_LISTS, data=st.data())
def test_the_c_arrival_loop_equals_the_naive_join(query, lefts, rights, data):
    where, select = query
    engine = _engine(where, select)
    assert engine.describe().endswith("arrival loop: a: native, b: native")  # the grammar reaches it
    _check_engine_against_naive(engine, where, select, lefts, rights, data)
