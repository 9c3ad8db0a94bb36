"""The Python the engine generates for its hot paths: per stream, the projection and the arrival loop (with the
filters inside it), as ``python -m joiner explain`` shows them.

They are written with :class:`Source`, which does the indenting, and the parts of the expressions inside them
are emitted by the JSONata compiler through its documented API (``streaming_runtime.jsonata_compiler``, "API
used by the joiner's engine"), which also says what the emitted code reads. What the loops do and when the
engine uses them: :mod:`joiner.engine.join`; the entries they build and read: :mod:`joiner.engine.entries`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from joiner.engine.entries import EXACT_INT, PROJECTION_AT
from joiner.engine.plan import JoinPlan
from streaming_runtime import generated
from streaming_runtime.jsonata_compiler import CodeGenerator, NotCompilable, namespace

INDENT = "    "


class Source:
    """Python source built statement by statement: what is emitted inside :meth:`block` is indented under
    its header, so no caller writes indentation."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._depth = 0

    def line(self, *statements: str) -> None:
        """Statements at the current depth (a statement's own leading spaces stay, relative to it)."""
        self._lines.extend(INDENT * self._depth + statement for statement in statements)

    def code(self, generator: CodeGenerator, tree: Any) -> str:
        """The statements ``generator`` emits for ``tree``, here; the name (or literal) holding its value."""
        value = generator.node(tree, 0)
        self.line(*generator.take_lines())
        return value

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        """``header`` (``try:``, ``if ...:``), then what the ``with`` body emits, one level deeper (``pass``
        when it emits nothing)."""
        self.line(header)
        start = len(self._lines)
        self._depth += 1
        yield
        if len(self._lines) == start:
            self.line("pass")
        self._depth -= 1

    def define(self, function: str, name: str, scope: dict[str, Any]) -> Any:
        """Run the source in ``scope``, registered as ``name`` (:mod:`streaming_runtime.generated`), and
        return what it defined as ``function``."""
        return generated.load("\n".join(self._lines), name, scope)[function]


def projection(plan: JoinPlan, index: int, roots: Sequence[Any]) -> Callable[[dict], tuple | None] | None:
    """``project(event)``: the values of ``roots`` (the parts of ``select`` that read stream ``index`` only),
    or None when one is undefined or outside the fast path; None instead of a function when not compiled."""
    name = plan.streams[index]
    program = plan.select.expression.program
    generator = CodeGenerator(plan.streams, trusted_inputs=True, program=program, bound={name})
    source = Source()
    try:
        with source.block(f"def project({name}):"):
            with source.block("try:"):
                values = [source.code(generator, root) for root in roots]
            with source.block("except Fallback:"):
                source.line("return None")
            undefined = " or ".join(f"{value} is U" for value in values) or "False"
            source.line(f"return None if {undefined} else ({''.join(value + ', ' for value in values)})")
    except NotCompilable:
        return None
    return source.define("project", f"projection {name}", {**namespace(), **generator.references()})


def arrival_loop(
    plan: JoinPlan,
    index: int,
    required: frozenset[str],
    roots: tuple[Sequence[Any], Sequence[Any]],
    probe: Callable[[dict], bool] | None,
) -> Callable[..., tuple[int, int, int]] | None:
    """The arrival loop of stream ``index`` as Python, or None when the plan is outside it.

    It takes events whose key is a string or an integer, reading the top-level fields ``required`` and the
    projections of both streams (the parts of ``select`` in ``roots``, see :func:`projection`); every other
    event goes to ``slow``, and pairs whose row it cannot compute go to ``pair`` (exact evaluation).
    ``probe``: the check that ``select`` evaluates on the event alone, when it can fail so.
    """
    if plan.residual or not plan.keys:
        return None
    keys = [part.left if index == 0 else part.right for part in plan.keys]
    if any(len(path) != 1 for path in keys) or not all(condition.compiled for condition in plan.filters[index]):
        return None
    try:
        return _ArrivalLoop(plan, index, [path[0] for path in keys], required, roots, probe).define()
    except NotCompilable:
        return None


class _ArrivalLoop:
    """One stream's arrival loop, section by section, in the order the loop runs them."""

    def __init__(
        self,
        plan: JoinPlan,
        index: int,
        keys: list[str],
        required: frozenset[str],
        roots: tuple[Sequence[Any], Sequence[Any]],
        probe: Callable[[dict], bool] | None,
    ) -> None:
        self.plan, self.index, self.keys, self.roots, self.probe = plan, index, keys, roots, probe
        self.mine, self.other = plan.streams[index], plan.streams[1 - index]
        # every required field is read once into a local, those the filters read first: a filtered event
        # only needs the others to be present
        mine = self.mine
        self.filter_fields = sorted(
            {path[0] for condition in plan.filters[index] for path in condition.expression.paths_under({mine})[mine]}
        )
        self.fields = self.filter_fields + sorted(required - set(self.filter_fields))
        self.local = {field: f"f{position}" for position, field in enumerate(self.fields)}
        self.read: dict[tuple[str, ...], str] = {(mine, field): name for field, name in self.local.items()}
        program = plan.select.expression.program
        self.projector = CodeGenerator(
            plan.streams, trusted_inputs=True, program=program, ref_name="_ref_project", bound={mine}
        )
        for path, name in self.read.items():
            self.projector.given_path(path, name)
        self.source = Source()
        self.scope: dict[str, Any] = {**namespace(), "REQUIRED": required, "EXACT": EXACT_INT, "probe": probe}

    def define(self) -> Callable[..., tuple[int, int, int]]:
        source = self.source
        with source.block(
            "def accept_many(entries, pending_keys, pending_entries, theirs, their_odd, rows, slow, pair):"
        ):
            source.line(
                "accepted = filtered = pairs = 0",
                "filtered_now = False",
                "append = rows.append",
                "add_key, add_entry = pending_keys.append, pending_entries.append",
            )
            with source.block("for entry in entries:"):
                self._check()
                self._filter()
                _read_fields(
                    source, self.mine, [(field, self.local[field]) for field in self.fields[len(self.filter_fields) :]]
                )
                key = self._key()
                projected = self._buffer(key)
                self._pair(key, projected)
            source.line("return accepted, filtered, pairs")
        self.scope.update(self.projector.references())
        return source.define("accept_many", f"arrival loop {self.mine}", self.scope)

    def _check(self) -> None:
        """The event must be an object with the fields the filters read (and, with the probe, one ``select``
        evaluates on alone); any other goes to the exact path, which says why."""
        source, mine = self.source, self.mine
        source.line(f"{mine} = entry[0]")
        with source.block(f"if {mine}.__class__ is not dict:"):
            _to_slow(source)
        _read_fields(source, mine, [(field, self.local[field]) for field in self.filter_fields])
        if self.probe is not None:  # before the filters, as accept checks before it filters (malformed, not filtered)
            with source.block(f"if not probe({mine}):"):
                _to_slow(source)

    def _filter(self) -> None:
        source = self.source
        with source.block("try:"):
            self.scope.update(_filters(source, self.plan, self.index, self.read))
        with source.block("except Fallback:"):
            _to_slow(source)
        with source.block("if filtered_now:"):
            with source.block(
                f"if REQUIRED <= {self.mine}.keys():  # a missing field makes it malformed, not filtered"
            ):
                source.line("filtered += 1")
            with source.block("else:"):
                source.line("slow.append(entry)")
            source.line("continue")

    def _key(self) -> str:
        """The event's key from the fields' locals; an event whose key is not a string or an exact integer
        goes to the exact path. Returns the key's expression."""
        parts = [f"k{position}" for position in range(len(self.keys))]
        for part, field in zip(parts, self.keys):
            self.source.line(f"{part} = {self.local[field]}")
            with self.source.block(
                f"if {part}.__class__ is not str and ({part}.__class__ is not int or not -EXACT <= {part} <= EXACT):"
            ):
                _to_slow(self.source)
        return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"

    def _buffer(self, key: str) -> list[str]:
        """The entry, its projection computed (see joiner.engine.entries), put in the pending list under
        ``key``. Returns the names holding the projection's values."""
        source, mine = self.source, self.mine
        with source.block("try:"):
            projected = [source.code(self.projector, root) for root in self.roots[self.index]]
            fresh = [value for value in projected if value not in self.local.values()]  # fields are never U
            undefined = " or ".join(f"{value} is U" for value in fresh) or "False"
            own = "".join(", " + value for value in projected)
            source.line(f"entry = ({mine}, entry[1], False) if {undefined} else ({mine}, entry[1], True{own})")
        with source.block("except Fallback:"):
            source.line(f"entry = ({mine}, entry[1], False)")
        source.line(f"add_key({key})", "add_entry(entry)", "accepted += 1")
        return projected

    def _pair(self, key: str, projected: list[str]) -> None:
        """Pairs with the other stream's entries under ``key``, rows from both projections; then with its
        entries of unusual keys, exactly."""
        source = self.source
        select = self._row_generator(projected)
        row = select.node(self.plan.select.expression.tree, 0)
        row_code = select.take_lines()
        self.scope.update(select.references())
        source.line(f"partners = theirs.get({key})")
        with source.block("if partners:"):
            source.line("pairs += len(partners)", "mine_ok = entry[2]")
            with source.block("for partner in partners:"):
                with source.block("if not mine_ok or not partner[2]:"):
                    source.line("pair(entry, partner, False)", "continue")
                if self.other in select.reads:  # the row reads the partner's event, not only its projection
                    source.line(f"{self.other} = partner[0]")
                with source.block("try:"):
                    source.line(*row_code)
                with source.block("except Fallback:"):
                    source.line("pair(entry, partner, False)", "continue")
                with source.block(f"if {row} is not U:"):
                    source.line(f"append({row})")
        with source.block("if their_odd:"):
            source.line("pairs += len(their_odd)")
            with source.block("for partner in their_odd:"):
                source.line("pair(entry, partner, True)")

    def _row_generator(self, projected: list[str]) -> CodeGenerator:
        """The generator of the row's code, which reads the projections: the event's locals, the partner's entry."""
        # it runs once per partner and reads the projection's temporaries, computed once per entry: its own
        # temporaries must not reuse their names (a second partner would read the first one's values)
        select = CodeGenerator(
            self.plan.streams,
            trusted_inputs=True,
            program=self.plan.select.expression.program,
            ref_name="_ref_select",
            temps_taken=self.projector.temps,
        )
        # defined: the row is computed only for entries whose projections have no undefined value
        for root, value in zip(self.roots[self.index], projected):
            select.given_value(root, value, defined=True)
        for position, root in enumerate(self.roots[1 - self.index]):
            select.given_value(root, f"partner[{PROJECTION_AT + position}]", defined=True)
        return select


def _read_fields(source: Source, event: str, fields: list[tuple[str, str]]) -> None:
    """Read ``(field, local)`` of ``event``: a missing field is a KeyError, a value outside the fast path a
    Fallback; either sends the event to the exact path."""
    with source.block("try:"):
        for field, name in fields:
            source.line(
                f"{name} = {event}[{field!r}]",
                f"if {name}.__class__ is not str and {name}.__class__ is not int and {name}.__class__ is not float: "
                f"{name} = _value({name})",
            )
    with source.block("except (KeyError, Fallback):"):
        _to_slow(source)


def _filters(source: Source, plan: JoinPlan, index: int, read: dict[tuple[str, ...], str]) -> dict[str, Any]:
    """Statements setting ``filtered_now`` when a filter of stream ``index`` refuses the event (the loop counts
    it once the event is known well-formed), reading the fields ``read`` holds; what their scope needs."""
    generator = CodeGenerator(
        (plan.streams[index],), trusted_inputs=True, program=plan.where.expression.program, ref_name="_ref_filter"
    )
    for path, name in read.items():
        generator.given_path(path, name)
    source.line("filtered_now = False")
    with ExitStack() as nested:
        for position, condition in enumerate(plan.filters[index]):
            if position:  # each filter is evaluated only if the ones before it passed
                nested.enter_context(source.block("else:"))
            result = source.code(generator, condition.expression.tree)
            with source.block(f"if {result} is not True and not _bool({result}):"):
                source.line("filtered_now = True")
    return generator.references()


def _to_slow(source: Source) -> None:
    source.line("slow.append(entry)", "continue")
