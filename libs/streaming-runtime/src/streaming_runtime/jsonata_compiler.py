"""Compile the common subset of JSONata to Python functions, with jsonata-python as the reference.

The reference evaluator interprets the syntax tree on every call (tens of microseconds). For the
subset below this module generates Python source once and ``exec``-s it into a plain function of the
named variables (``def f(tenants, poweruse): ...``), which runs in well under a microsecond.

Subset: paths of plain names below a variable (``tenants.customer_id``), string/number/boolean
literals, ``= != < <= > >=``, ``and or``, ``+ - * / %`` and unary ``-``, ``&``, ``? :``, ``( )``,
object constructors with literal keys, array constructors, and ``$not $boolean $exists $string
$number $lowercase $uppercase $length $abs $floor $ceil``.

Exactness rule: the generated code handles only the cases whose JSONata result is plain (strings,
non-boolean finite numbers, booleans, undefined). Whenever it meets anything else — a JSON null, an
array or object where a scalar is expected, a type error, a division by zero — it raises
:class:`Fallback`, and the caller evaluates the same input with the reference evaluator, which gives
the true result or the true error. So results always equal jsonata-python's.

Outside the subset: given the parsed program, a node the generator does not know (``$contains``,
a predicate, a lambda) is evaluated by jsonata-python from inside the generated code, and when it is
a pure function of plain fields, memoised on their typed values (streams repeat their values).

API used by the joiner's engine
-------------------------------

The joiner writes its arrival loops and projections itself (``joiner.engine.codegen``) and has
:class:`CodeGenerator` emit the expressions' parts inside them. What it relies on, and nothing else:

* ``CodeGenerator(variables, trusted_inputs=True, program=expression.program, ref_name=..., bound=...,
  temps_taken=...)``: ``bound`` names the variables that hold a value where the code runs (a part left to
  the reference evaluator gets ``U`` for the others); ``temps_taken`` starts the temporaries after another
  generator's, for code that runs while that one's values are still live;
* :meth:`CodeGenerator.given_path` and :meth:`CodeGenerator.given_value`: a path or a node whose value the
  caller's code already holds in a local, so the generated code reads the local instead;
* :meth:`CodeGenerator.node`, then :meth:`CodeGenerator.take_lines`: the statements computing a node,
  indented relative to the depth given (0: the caller indents them), and the name holding its value;
* :attr:`CodeGenerator.reads`: the variables the emitted code reads (so the caller binds only those);
  :attr:`CodeGenerator.temps`: how many temporaries it took;
* :meth:`CodeGenerator.references`: what the scope of the generated code must hold for the parts left to
  the reference evaluator, with :func:`namespace` for the rest;
* :func:`single_variable_roots`, :data:`U`, :class:`Fallback`, :class:`NotCompilable`, and
  ``streaming_runtime.expressions.Expression.program`` (the parsed program those parts are evaluated by).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from jsonata.functions import Functions as _JFunctions
from jsonata.utils import Utils as _JUtils

from streaming_runtime import generated
from streaming_runtime.expressions import IMPURE_FUNCTIONS, Expression


class Fallback(Exception):
    """Raised by generated code for an input outside the fast path."""


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"


U = _Undefined()
_FALLBACK = Fallback()
_NUMBER = (int, float)


def _fail() -> Any:
    raise _FALLBACK


def _value(v: Any) -> Any:
    """A path's end value: scalars pass, undefined stays, anything else (null, arrays, objects) falls back."""
    cls = v.__class__
    if cls is str or cls is int or cls is bool or v is U:
        return v
    if cls is float and math.isfinite(v):
        return v
    raise _FALLBACK


def _bool(v: Any) -> bool:
    """JSONata's boolean cast on fast-path values (undefined is false)."""
    cls = v.__class__
    if cls is bool:
        return v
    if cls is str:
        return v != ""
    if cls is int or cls is float:
        return v != 0
    if v is U:
        return False
    raise _FALLBACK


def _is_number(v: Any) -> bool:
    cls = v.__class__
    return cls is int or cls is float


def _eq(a: Any, b: Any) -> bool:
    if a is U or b is U:
        return False
    ca, cb = a.__class__, b.__class__
    if (ca is int or ca is float) and (cb is int or cb is float):
        return float(a) == float(b)  # as jsonata-python, which makes 2**53 + 1 = 2**53 true
    if ca is cb:
        return a == b if ca is str or ca is bool else _JUtils.is_deep_equal(a, b)  # [1] != [true]
    if ca in (str, int, float, bool) and cb in (str, int, float, bool):
        return False  # different JSON types are never equal
    raise _FALLBACK


def _compare(a: Any, b: Any, op: Callable[[Any, Any], bool]) -> Any:
    ca, cb = a.__class__, b.__class__
    if (ca is int or ca is float) and (cb is int or cb is float):
        return op(a, b) if ca is cb else op(float(a), float(b))  # jsonata-python: an int and a float as floats
    if ca is str and cb is str:
        return op(a, b)
    if (a is U and cb in (str, int, float)) or (b is U and ca in (str, int, float)) or (a is U and b is U):
        return U
    raise _FALLBACK  # type errors are reported by the reference evaluator


def _arith(a: Any, b: Any, op: str) -> Any:
    na, nb = _is_number(a), _is_number(b)
    if na and nb:
        x, y = float(a), float(b)
        if op == "+":
            r = x + y
        elif op == "-":
            r = x - y
        elif op == "*":
            r = x * y
        elif op == "/":
            if y == 0:
                raise _FALLBACK
            r = x / y
        else:
            if y == 0:
                raise _FALLBACK
            r = int(math.fmod(x, y))
        if not math.isfinite(r):
            raise _FALLBACK
        return _JUtils.convert_number(r)
    if (a is U and (nb or b is U)) or (b is U and na):
        return U
    raise _FALLBACK


def _neg(a: Any) -> Any:
    if _is_number(a):
        return _JUtils.convert_number(-float(a))
    if a is U:
        return U
    raise _FALLBACK


def _string_of(v: Any) -> str:
    cls = v.__class__
    if cls is str:
        return v
    if v is U:
        return ""
    if cls is int and abs(v) < 10**15:
        return str(v)
    raise _FALLBACK  # float and boolean formatting: leave to the reference


def _concat(a: Any, b: Any) -> str:
    return _string_of(a) + _string_of(b)


def _fn_string(v: Any) -> Any:
    return U if v is U else _string_of(v)


def _fn_not(v: Any) -> Any:
    return U if v is U else not _bool(v)


def _fn_boolean(v: Any) -> Any:
    return U if v is U else _bool(v)


def _fn_exists(v: Any) -> bool:
    return v is not U


def _fn_number(v: Any) -> Any:
    if v is U:
        return U
    if _is_number(v):
        return _JUtils.convert_number(v)  # as jsonata-python converts every numeric function result
    raise _FALLBACK


def _fn_lowercase(v: Any) -> Any:
    if v is U:
        return v
    if v.__class__ is str:
        return v.casefold()  # jsonata-python's $lowercase
    raise _FALLBACK


def _fn_uppercase(v: Any) -> Any:
    if v is U:
        return v
    if v.__class__ is str:
        return v.upper()
    raise _FALLBACK


def _fn_length(v: Any) -> Any:
    if v is U:
        return U
    if v.__class__ is str:
        return len(v)
    raise _FALLBACK


def _numeric_fn(name: str) -> Callable[[Any], Any]:
    reference = {"abs": _JFunctions.abs, "floor": _JFunctions.floor, "ceil": _JFunctions.ceil}[name]

    def apply(v: Any) -> Any:
        if v is U:
            return U
        if _is_number(v):
            return _JUtils.convert_number(reference(v))  # exactly as jsonata-python calls it
        raise _FALLBACK

    return apply


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "not": _fn_not,
    "boolean": _fn_boolean,
    "exists": _fn_exists,
    "string": _fn_string,
    "number": _fn_number,
    "lowercase": _fn_lowercase,
    "uppercase": _fn_uppercase,
    "length": _fn_length,
    "abs": _numeric_fn("abs"),
    "floor": _numeric_fn("floor"),
    "ceil": _numeric_fn("ceil"),
}
_COMPARISONS = {"<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge"}
_EXACT_INT = 2**53  # ints up to this compare with floats in Python as after a conversion to float
_PATH_STEP_FLAGS = ("stages", "predicate", "group", "focus", "index", "tuple", "keep_array", "ancestor")


class NotCompilable(Exception):
    """The expression uses something outside the subset (the message says what)."""


@dataclass(frozen=True)
class Compiled:
    function: Callable[..., Any] | None
    reason: str  # why it was not compiled ("" when it was)
    source: str = ""
    delegated: int = 0  # parts left to the reference evaluator inside compiled code


def compile_tree(tree: Any, variables: tuple[str, ...], program: Any = None) -> Compiled:
    """Python function of ``variables`` for a jsonata-python syntax tree, or why not.

    With ``program`` (the parsed jsonata.Jsonata the tree belongs to), parts outside the subset are
    evaluated by the reference evaluator from inside the compiled code, so only they pay its price.
    """
    generator = CodeGenerator(variables, program=program)
    try:
        result = generator.node(tree, 1)
    except NotCompilable as reason:
        return Compiled(None, str(reason))
    whole = bool(generator.ref_nodes) and generator.ref_nodes[0] is tree
    generator.emit(f"return None if {result} is U else {result}", 1)
    params = ", ".join(variables)
    source = f"def compiled({params}):\n" + "\n".join(generator.take_lines())
    scope = namespace()
    scope.update(generator.references())
    generated.load(source, f"jsonata of {', '.join(variables)}", scope)
    return Compiled(scope["compiled"], generator.ref_reasons[0] if whole else "", source, len(generator.ref_nodes))


_MEMO_LIMIT = 65_536


def make_reference_call(program: Any, nodes: list[Any], variables: tuple[str, ...]) -> Callable[..., Any]:
    """``ref(k, *values)``: node ``k`` evaluated by jsonata-python; Fallback unless the value is plain.

    A node that is a pure function of the plain fields it reads is memoised on their values
    (typed, so 1, 1.0 and true stay apart): streams repeat values (tenant ids, panel ids), and the
    reference evaluator costs tens of microseconds a call.
    """
    inputs = [_memo_inputs(node, variables) for node in nodes]
    memos: list[dict[tuple, Any]] = [{} for _ in nodes]

    def evaluate(index: int, values: tuple) -> Any:
        data = {name: value for name, value in zip(variables, values) if value is not U}
        try:
            frame = program.create_frame(program.environment)
            frame.bind("$", data)
            result = program.eval(nodes[index], data, frame)
        except Exception:  # the full reference evaluation reports the real error
            return _FALLBACK
        if result is None:
            return U
        try:
            return _value(result)
        except Fallback:
            return _FALLBACK

    def ref(index: int, *values: Any) -> Any:
        paths = inputs[index]
        if paths is None:
            result = evaluate(index, values)
        else:
            key = _memo_key(paths, values)
            memo = memos[index]
            result = memo.get(key, _FALLBACK) if key is not None else _FALLBACK
            if result is _FALLBACK and (key is None or key not in memo):
                result = evaluate(index, values)
                if key is not None:
                    if len(memo) >= _MEMO_LIMIT:
                        memo.clear()
                    memo[key] = result
        if result is _FALLBACK:
            raise _FALLBACK
        return result

    return ref


def _memo_inputs(node: Any, variables: tuple[str, ...]) -> list[tuple[int, tuple[str, ...]]] | None:
    """(variable position, field path) of every field the node reads, or None if not memoisable."""
    paths: list[tuple[int, tuple[str, ...]]] = []

    def visit(item: Any) -> bool:
        if item is None:
            return True
        if isinstance(item, (list, tuple)):
            return all(visit(x) for x in item)
        kind = getattr(item, "type", None)
        if kind in ("string", "number", "value"):
            return True
        if kind == "path":
            steps = item.steps or []
            if any(getattr(step, flag, None) for step in [item, *steps] for flag in _PATH_STEP_FLAGS):
                return False
            if not steps or any(getattr(step, "type", None) != "name" for step in steps):
                return False
            names = [str(step.value) for step in steps]
            if names[0] not in variables or len(names) < 2:
                return False
            paths.append((variables.index(names[0]), tuple(names[1:])))
            return True
        if kind == "function":
            procedure = item.procedure
            if getattr(procedure, "type", None) != "variable" or str(procedure.value) in IMPURE_FUNCTIONS:
                return False
            return visit(item.arguments or [])
        if kind in ("binary", "condition", "block") or (kind == "unary" and item.value in ("-", "[", "{")):
            children = [
                getattr(item, name, None)
                for name in ("lhs", "rhs", "expression", "expressions", "condition", "then", "_else")
            ]
            children += list(getattr(item, "lhs_object", None) or [])
            return all(visit(child) for child in children)
        return False

    return sorted(set(paths)) if visit(node) else None


def _memo_key(paths: list[tuple[int, tuple[str, ...]]], values: tuple) -> tuple | None:
    key = []
    for position, path in paths:
        value = values[position]
        for step in path:
            if value.__class__ is dict:
                value = value.get(step, U)
            else:
                value = U
                break
        cls = value.__class__
        if not (cls is str or cls is int or cls is float or cls is bool or value is None or value is U):
            return None  # arrays and objects: evaluate without memo
        key.append((cls, value))
    return tuple(key)


def single_variable_roots(tree: Any, left: str) -> list[Any]:
    """Largest subtrees that read only ``left`` (or nothing) and are always evaluated."""
    roots: list[Any] = []

    def reads_only_left(node: Any) -> bool:
        if node is None:
            return True
        if isinstance(node, (list, tuple)):
            return all(reads_only_left(item) for item in node)
        kind = getattr(node, "type", None)
        if kind == "path":
            steps = node.steps or []
            return bool(steps) and getattr(steps[0], "value", None) == left
        if kind in ("string", "number", "value"):
            return True
        if kind == "function":
            return getattr(node.procedure, "type", None) == "variable" and reads_only_left(node.arguments or [])
        if kind in ("condition", "variable", "block"):
            return False  # keep it simple: hoist operators, calls and paths only
        children = [getattr(node, name, None) for name in ("lhs", "rhs", "expression", "expressions")]
        children += [value for _, value in (getattr(node, "lhs_object", None) or [])]
        return all(reads_only_left(child) for child in children if child is not None)

    def visit(node: Any) -> None:
        kind = getattr(node, "type", None)
        if kind in ("string", "number", "value"):
            return
        if (
            reads_only_left(node)
            and kind in ("path", "binary", "unary", "function")
            and not (kind == "binary" and node.value in ("and", "or"))
        ):
            roots.append(node)
            return
        if kind == "binary":
            visit(node.lhs)
            if node.value not in ("and", "or"):  # the right side of and/or is conditional
                visit(node.rhs)
        elif kind == "unary":
            for child in [node.expression] if node.value == "-" else node.expressions or []:
                visit(child)
            for _, value in node.lhs_object or []:
                visit(value)

    visit(tree)
    return roots


def namespace() -> dict[str, Any]:
    """What generated code may refer to."""
    return {
        "U": U,
        "Fallback": Fallback,
        "_fail": _fail,
        "_value": _value,
        "_bool": _bool,
        "_eq": _eq,
        "_arith": _arith,
        "_neg": _neg,
        "_concat": _concat,
        "_compare": _compare,
        "_lt": lambda a, b: a < b,
        "_le": lambda a, b: a <= b,
        "_gt": lambda a, b: a > b,
        "_ge": lambda a, b: a >= b,
        **{f"_fn_{name}": function for name, function in _FUNCTIONS.items()},
    }


def _is_literal(code: str) -> bool:
    return code[:1] in "'\"0123456789-" or code in ("True", "False")


class CodeGenerator:
    """Emits Python for a jsonata-python syntax tree (see the module docstring for the subset, and for
    the part of this class the joiner's engine uses).

    ``trusted_inputs``: the variables are known to be dicts of JSON values as ``json.loads`` makes them
    without NaN/Infinity (the joiner checks events on arrival), which drops per-step type checks.
    ``bound``: the variables holding a value where the code runs (default: all of them).
    ``temps_taken``: temporaries are numbered after this, so they do not overwrite another generator's.
    """

    def __init__(
        self,
        variables: tuple[str, ...],
        trusted_inputs: bool = False,
        program: Any = None,
        ref_name: str = "_ref",
        *,
        bound: Collection[str] | None = None,
        temps_taken: int = 0,
    ) -> None:
        self.variables = variables
        self.trusted = trusted_inputs
        self.program = program  # when set, parts outside the subset call the reference evaluator
        self.ref_name = ref_name
        self.ref_nodes: list[Any] = []
        self.ref_reasons: list[str] = []
        self._bound = set(variables if bound is None else bound)
        self._defined: set[str] = set()  # names known never to hold U (lets constructors skip checks)
        self._lines: list[str] = []
        self._count = temps_taken
        self._given: dict[int, str] = {}  # id(node) -> the local holding its value
        self._paths: dict[tuple[str, ...], str] = {}  # paths computed unconditionally so far
        self._reads: set[str] = set()
        self.branch = 0  # >0 inside a conditional branch, where nothing is remembered

    # -- the surface the joiner's engine uses (module docstring) ---------------------------------

    def given_path(self, path: tuple[str, ...], name: str) -> None:
        """The caller's code holds the value of ``path`` (variable first) in ``name``, as a path's end
        value (passed through ``_value``): code for that path reads ``name``."""
        self._paths[path] = name

    def given_value(self, node: Any, name: str, *, defined: bool = False) -> None:
        """The caller's code holds the value of ``node`` in ``name`` (``defined``: never ``U``, which lets
        constructors drop their checks): code for that node reads ``name``."""
        self._given[id(node)] = name
        if defined:
            self._defined.add(name)

    def take_lines(self) -> list[str]:
        """The statements emitted since the last call, indented by the depths given to :meth:`node`."""
        lines, self._lines = self._lines, []
        return lines

    @property
    def reads(self) -> frozenset[str]:
        """The variables the code emitted so far reads (a path below one, a reference call given one)."""
        return frozenset(self._reads)

    @property
    def temps(self) -> int:
        """How many temporaries (``t1``, ``t2``, ...) are taken, counting ``temps_taken``."""
        return self._count

    # -- emitting ---------------------------------------------------------------------------------

    def emit(self, line: str, depth: int) -> None:
        self._lines.append("    " * depth + line)

    def temp(self) -> str:
        self._count += 1
        return f"t{self._count}"

    def node(self, node: Any, depth: int) -> str:
        """Emit code computing ``node``; return the name (or literal) holding its value."""
        if id(node) in self._given:
            return self._given[id(node)]
        kind = getattr(node, "type", None)
        handler = getattr(self, f"_{kind}", None)
        try:
            if handler is None:
                raise NotCompilable(f"{kind or type(node).__name__} expressions are not compiled")
            return handler(node, depth)
        except NotCompilable as reason:
            if self.program is None:
                raise
            return self._delegate(node, depth, str(reason))

    def _delegate(self, node: Any, depth: int, reason: str) -> str:
        """Evaluate ``node`` with the reference evaluator, from the generated code."""
        index = len(self.ref_nodes)
        self.ref_nodes.append(node)
        self.ref_reasons.append(reason)
        arguments = ", ".join(name if name in self._bound else "U" for name in self.variables)
        self._reads.update(name for name in self.variables if name in self._bound)
        out = self.temp()
        self.emit(f"{out} = {self.ref_name}({index}, {arguments})", depth)
        return out

    def references(self) -> dict[str, Any]:
        if not self.ref_nodes:
            return {}
        return {self.ref_name: make_reference_call(self.program, self.ref_nodes, self.variables)}

    def _literal(self, text: str, depth: int) -> str:
        # a name, not the literal: generated code writes `x.__class__` and `x is U`, which for a
        # literal are a SyntaxError (`1.__class__`) or a SyntaxWarning (`1 is U`)
        out = self.temp()
        self.emit(f"{out} = {text}", depth)
        return out

    def _string(self, node: Any, depth: int) -> str:
        return self._literal(repr(str(node.value)), depth)

    def _number(self, node: Any, depth: int) -> str:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise NotCompilable("unusual number literal")
        return self._literal(repr(value), depth)

    def _value(self, node: Any, depth: int) -> str:
        if node.value is True or node.value is False:
            return self._literal(repr(node.value), depth)
        raise NotCompilable("null literals are not compiled")

    def _block(self, node: Any, depth: int) -> str:
        expressions = node.expressions or []
        if len(expressions) != 1:
            raise NotCompilable("blocks with several expressions are not compiled")
        return self.node(expressions[0], depth)

    def _path(self, node: Any, depth: int) -> str:
        steps = node.steps or []
        names = []
        for step in [node, *steps]:
            if any(getattr(step, flag, None) for flag in _PATH_STEP_FLAGS):
                raise NotCompilable("paths with predicates, indexes or grouping are not compiled")
        for step in steps:
            if getattr(step, "type", None) != "name":
                raise NotCompilable("only paths of plain names are compiled")
            names.append(str(step.value))
        if not names:
            raise NotCompilable("empty path")
        if tuple(names) in self._paths:
            return self._paths[tuple(names)]
        out = self.temp()
        if names[0] not in self.variables:
            # the input holds only the named variables: any other field is undefined
            self.emit(f"{out} = U", depth)
            return out
        if len(names) == 1:
            raise NotCompilable("a whole stream event used as a value is not compiled")
        current = names[0]
        self._reads.add(current)
        for position, step in enumerate(names[1:]):
            if position == 0 and self.trusted:
                self.emit(f"{out} = {current}.get({step!r}, U)", depth)
            else:
                self.emit(
                    f"{out} = {current}.get({step!r}, U) if {current}.__class__ is dict else "
                    f"(U if {current} is U or {current}.__class__ in (str, int, float, bool) else _fail())",
                    depth,
                )
            current = out
        plain = ("str", "int", "float") if self.trusted else ("str", "int")
        test = " and ".join(f"{out}.__class__ is not {name}" for name in plain)
        self.emit(f"if {test}: {out} = _value({out})", depth)
        if not self.branch:
            self._paths[tuple(names)] = out
        return out

    def _binary(self, node: Any, depth: int) -> str:
        op = str(node.value)
        if op in ("and", "or"):
            return self._boolean(node, op, depth)
        left = self.node(node.lhs, depth)
        right = self.node(node.rhs, depth)
        out = self.temp()
        if op == "=":
            self.emit(
                f"{out} = ({left} == {right}) if {left}.__class__ is {right}.__class__ is str else _eq({left}, {right})",
                depth,
            )
        elif op == "!=":
            self.emit(f"{out} = False if {left} is U or {right} is U else not _eq({left}, {right})", depth)
        elif op in _COMPARISONS:
            # inline the number-number case; anything else goes through _compare. jsonata-python
            # compares an int with a float as two floats, which differs from Python's exact comparison
            # only for ints beyond 2**53: those go through _compare too
            checks = []
            for side, child in ((left, node.lhs), (right, node.rhs)):
                if getattr(child, "type", None) != "number":
                    checks.append(
                        f"({side}.__class__ is float or ({side}.__class__ is int and "
                        f"-{_EXACT_INT} <= {side} <= {_EXACT_INT}))"
                    )
                elif abs(child.value) > _EXACT_INT:
                    checks.append("False")
            numeric = " and ".join(checks) or "True"
            self.emit(
                f"{out} = ({left} {op} {right}) if {numeric} else _compare({left}, {right}, {_COMPARISONS[op]})", depth
            )
        elif op in ("+", "-", "*", "/", "%"):
            self.emit(f"{out} = _arith({left}, {right}, {op!r})", depth)
        elif op == "&":
            self.emit(f"{out} = _concat({left}, {right})", depth)
        else:
            raise NotCompilable(f"operator {op} is not compiled")
        return out

    def _boolean(self, node: Any, op: str, depth: int) -> str:
        out = self.temp()
        left = self.node(node.lhs, depth)
        self.emit(f"{out} = _bool({left})", depth)
        self.emit(f"if {'' if op == 'and' else 'not '}{out}:", depth)
        self.branch += 1
        right = self.node(node.rhs, depth + 1)
        self.branch -= 1
        self.emit(f"{out} = _bool({right})", depth + 1)
        return out

    def _unary(self, node: Any, depth: int) -> str:
        op = str(node.value)
        if op == "-":
            inner = self.node(node.expression, depth)
            out = self.temp()
            self.emit(f"{out} = _neg({inner})", depth)
            return out
        if op == "{":
            return self._object(node, depth)
        if op == "[":
            return self._array(node, depth)
        raise NotCompilable(f"unary {op} is not compiled")

    def _object(self, node: Any, depth: int) -> str:
        pairs = list(node.lhs_object or [])
        keys = []
        for key, _ in pairs:
            if getattr(key, "type", None) != "string":
                raise NotCompilable("object keys must be string literals to be compiled")
            keys.append(str(key.value))
        if len(set(keys)) != len(keys):
            raise NotCompilable("duplicate object keys are left to the reference evaluator")
        values = [self.node(value, depth) for _, value in pairs]
        out = self.temp()
        literal = ", ".join(f"{key!r}: {value}" for key, value in zip(keys, values))
        unknown = [value for value in values if value not in self._defined and not _is_literal(value)]
        if not unknown:
            self.emit(f"{out} = {{{literal}}}", depth)
            return out
        defined = " and ".join(f"{value} is not U" for value in unknown)
        self.emit(f"if {defined}:", depth)
        self.emit(f"{out} = {{{literal}}}", depth + 1)
        self.emit("else:", depth)
        self.emit(f"{out} = {{}}", depth + 1)
        for key, value in zip(keys, values):
            self.emit(f"if {value} is not U: {out}[{key!r}] = {value}", depth + 1)
        return out

    def _array(self, node: Any, depth: int) -> str:
        items = [self.node(item, depth) for item in node.expressions or []]
        out = self.temp()
        self.emit(f"{out} = [v for v in ({', '.join(items)}{',' if len(items) == 1 else ''}) if v is not U]", depth)
        return out

    def _condition(self, node: Any, depth: int) -> str:
        condition = self.node(node.condition, depth)
        out = self.temp()
        self.emit(f"if _bool({condition}):", depth)
        self.branch += 1
        then = self.node(node.then, depth + 1)
        self.emit(f"{out} = {then}", depth + 1)
        self.emit("else:", depth)
        if node._else is None:
            self.emit(f"{out} = U", depth + 1)
        else:
            otherwise = self.node(node._else, depth + 1)
            self.emit(f"{out} = {otherwise}", depth + 1)
        self.branch -= 1
        return out

    def _function(self, node: Any, depth: int) -> str:
        procedure = node.procedure
        name = str(getattr(procedure, "value", ""))
        if getattr(procedure, "type", None) != "variable" or name not in _FUNCTIONS:
            raise NotCompilable(f"function ${name} is not compiled")
        arguments = node.arguments or []
        if len(arguments) != 1:
            raise NotCompilable(f"${name} with {len(arguments)} arguments is not compiled")
        argument = self.node(arguments[0], depth)
        out = self.temp()
        self.emit(f"{out} = _fn_{name}({argument})", depth)
        return out


class FastExpression:
    """An expression over named variables: compiled where possible, the reference evaluator otherwise.

    ``evaluator`` says which ("compiled" or "reference: <why>"), for the start-up log.
    """

    def __init__(self, expression: Expression, variables: tuple[str, ...]) -> None:
        self.expression = expression
        self.variables = variables
        compiled = compile_tree(expression.tree, variables, program=expression.program)
        self._fast = compiled.function
        if compiled.function is None:
            self.evaluator = f"reference ({compiled.reason})"
        elif compiled.reason:
            self.evaluator = f"reference, memoised on its inputs ({compiled.reason})"
        elif compiled.delegated:
            self.evaluator = f"compiled, {compiled.delegated} part(s) by the reference evaluator"
        else:
            self.evaluator = "compiled"

    @property
    def compiled(self) -> bool:
        return self._fast is not None

    def __call__(self, *values: Any) -> Any:
        """The result (None when undefined); raises EvaluationError like the reference."""
        if self._fast is not None:
            try:
                return self._fast(*values)
            except Fallback:
                pass
            except (TypeError, ValueError, ArithmeticError, AttributeError, RecursionError):
                pass  # anything unexpected: the reference decides
        return self.reference(*values)

    def reference(self, *values: Any) -> Any:
        """The reference evaluator's answer; a variable passed as ``U`` is left unbound."""
        return self.expression.evaluate({name: v for name, v in zip(self.variables, values) if v is not U})
