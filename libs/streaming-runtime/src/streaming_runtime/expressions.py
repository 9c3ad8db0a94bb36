"""JSONata expressions, compiled once at start-up.

Settings written for the original project keep working: before parsing, the source is
normalised outside string literals, backquoted names and comments:

* CEL-style operators become JSONata's: ``==`` -> ``=``, ``&&`` -> ``and``, ``||`` -> ``or``,
  ``!x`` / ``!(x)`` -> ``$not(x)`` (``!=`` is JSONata already);
* a trailing comma before ``]``, ``}`` or ``)`` is dropped (the example's ``MESSAGE_EXPR`` has them).

Parse errors are reported against the text the user wrote, with line and column.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonata
from jsonata.jexception import JException

from streaming_runtime.errors import EvaluationError, ExpressionError

_NAME = r"(?:\$?[A-Za-z_][A-Za-z0-9_]*|`[^`]*`)"
_NOT_OPERAND = re.compile(rf"\s*({_NAME}(?:\s*\.\s*{_NAME})*)")
_STEP = re.compile(rf"\.\s*{_NAME}")


@dataclass(frozen=True)
class Normalized:
    """Rewritten source, and for each of its characters the index it came from in the original."""

    text: str
    origin: tuple[int, ...]

    def original_index(self, index: int) -> int:
        if not self.origin:
            return 0
        return self.origin[max(0, min(index, len(self.origin) - 1))]


def normalize(source: str) -> Normalized:
    """Rewrite CEL-style operators and drop trailing commas, outside literals (see module doc)."""
    out: list[str] = []
    origin: list[int] = []

    def emit(text: str, at: int) -> None:
        out.append(text)
        origin.extend([at] * len(text))

    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch in "\"'`":
            end = _end_of_quoted(source, i)
            emit_span(source, i, end, out, origin)
            i = end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
            emit_span(source, i, end, out, origin)
            i = end
        elif source.startswith("==", i):
            emit("=", i)
            i += 2
        elif source.startswith("&&", i):
            emit(" and ", i)
            i += 2
        elif source.startswith("||", i):
            emit(" or ", i)
            i += 2
        elif ch == "!" and not source.startswith("!=", i):
            i = _rewrite_not(source, i, emit)
        elif ch == "," and _closes_next(source, i + 1):
            i += 1  # trailing comma
        else:
            emit(ch, i)
            i += 1
    return Normalized("".join(out), tuple(origin))


def emit_span(source: str, start: int, end: int, out: list[str], origin: list[int]) -> None:
    out.append(source[start:end])
    origin.extend(range(start, end))


def _end_of_quoted(source: str, start: int) -> int:
    quote, i = source[start], start + 1
    while i < len(source):
        if source[i] == "\\" and quote != "`":
            i += 2
            continue
        if source[i] == quote:
            return i + 1
        i += 1
    return len(source)  # unterminated: let the parser report it


def _closes_next(source: str, start: int) -> bool:
    """Whether only whitespace or comments stand between ``start`` and a closing bracket."""
    i = start
    while i < len(source):
        if source[i].isspace():
            i += 1
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                return False
            i = end + 2
        else:
            return source[i] in "]})"
    return False


def _rewrite_not(source: str, at: int, emit) -> int:
    rest = source[at + 1 :]
    stripped = rest.lstrip()
    if stripped.startswith("("):
        emit("$not", at)
        return at + 1 + (len(rest) - len(stripped))
    match = _NOT_OPERAND.match(rest)
    if not match:
        emit("!", at)  # not an alias we know: the parser reports it where the user wrote it
        return at + 1
    operand_start = at + 1 + match.start(1)
    # calls and predicates belong to the operand: `!$exists(a.b)` is `$not($exists(a.b))`
    operand_end = _postfix_end(source, at + 1 + match.end(1))
    inner = normalize(source[operand_start:operand_end])
    emit("$not(", at)
    for char, offset in zip(inner.text, inner.origin):
        emit(char, operand_start + offset)
    emit(")", operand_end - 1)
    return operand_end


def _postfix_end(source: str, i: int) -> int:
    """Extend an operand over the calls ``(...)``, predicates ``[...]`` and ``.name`` steps after it."""
    while True:
        j = i
        while j < len(source) and source[j].isspace():
            j += 1
        if j < len(source) and source[j] in "([":
            end = _end_of_group(source, j)
            if end is None:
                return i  # unbalanced: the parser reports it
            i = end
            continue
        step = _STEP.match(source, j)
        if step is None:
            return i
        i = step.end()


def _end_of_group(source: str, start: int) -> int | None:
    """Index just past the bracket that closes the one at ``start`` (skipping literals and comments)."""
    depth, i = 0, start
    while i < len(source):
        ch = source[i]
        if ch in "\"'`":
            i = _end_of_quoted(source, i)
            continue
        if source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                return None
            i = end + 2
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


@dataclass(frozen=True)
class Expression:
    """A parsed JSONata expression, or one node of one (see :meth:`conjuncts`).

    ``setting`` names where it came from, for messages. ``program`` is the parsed jsonata-python program
    (shared by the conjuncts of one expression): the reference evaluator, and what the compiler
    (:mod:`streaming_runtime.jsonata_compiler`) evaluates the parts outside its subset with.
    """

    setting: str
    source: str
    normalized: str
    program: jsonata.Jsonata = field(repr=False, compare=False)
    _node: Any = field(default=None, repr=False, compare=False)

    def evaluate(self, data: Any, bindings: Mapping[str, Any] | None = None) -> Any:
        """The result (``None`` when JSONata's result is undefined); raises EvaluationError."""
        try:
            if self._node is None:
                return self.program.evaluate(data, dict(bindings) if bindings else None)
            frame = self.program.create_frame(self.program.environment)
            for name, value in (bindings or {}).items():
                frame.bind(name, value)
            frame.bind("$", data)
            return self.program.eval(self._node, data, frame)
        except JException as error:
            raise EvaluationError(f"{self.setting}: {_describe(error)}") from None
        except (RecursionError, TypeError, ValueError, ArithmeticError, AttributeError) as error:
            raise EvaluationError(f"{self.setting}: {type(error).__name__}: {error}") from None

    @property
    def tree(self) -> Any:
        return self.program.ast if self._node is None else self._node

    def conjuncts(self) -> list[Expression]:
        """The operands of the top-level ``and`` chain (the expression itself if there is none)."""
        parts: list[Any] = []
        _split_and(self.tree, parts)
        if len(parts) == 1:
            return [self]
        return [Expression(self.setting, self.source, self.normalized, self.program, part) for part in parts]

    def paths_under(self, roots: set[str]) -> dict[str, frozenset[tuple[str, ...]]]:
        """Field paths the expression reads below each of ``roots``, such as
        ``{"poweruse": {("power_use",), ("tenant_id",)}}`` for ``poweruse.power_use >= 1 and ...``."""
        found: dict[str, set[tuple[str, ...]]] = {root: set() for root in roots}
        for steps in _paths(self.tree):
            if steps and steps[0] in found and len(steps) > 1:
                found[steps[0]].add(tuple(steps[1:]))
        return {root: frozenset(paths) for root, paths in found.items()}

    def roots_used(self, roots: set[str]) -> set[str]:
        """Which of ``roots`` the expression reads at all."""
        return {steps[0] for steps in _paths(self.tree) if steps and steps[0] in roots}


def _split_and(node: Any, into: list[Any]) -> None:
    if getattr(node, "type", None) == "binary" and getattr(node, "value", None) == "and":
        _split_and(node.lhs, into)
        _split_and(node.rhs, into)
    else:
        into.append(node)


def truthy(value: Any) -> bool:
    """JSONata's ``$boolean`` cast, which decides whether a ``where`` accepts a pair."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        return value != ""
    if isinstance(value, list):
        return any(truthy(item) for item in value)
    if isinstance(value, dict):
        return bool(value)
    return False  # functions and other values are false, as in JSONata


def compile_expression(source: str, *, setting: str) -> Expression:
    """Parse once; raises ExpressionError naming the setting, the problem and where it is."""
    if source is None or not source.strip():
        raise ExpressionError(f"{setting} is empty: expected a JSONata expression")
    normalized = normalize(source)
    try:
        program = jsonata.Jsonata(normalized.text)
    except JException as error:
        # jsonata reports the offset just past the offending token
        location = max(0, (getattr(error, "location", None) or 0) - 1)
        index = normalized.original_index(location)
        raise ExpressionError(
            f"{setting} does not parse: {_describe(error)} at {_line_column(source, index)}: {_excerpt(source, index)}"
        ) from None
    except KeyError as error:
        # jsonata-python raises KeyError (not S0204) for an operator it does not know, such as `~`
        symbol = str(error.args[0]) if error.args else "?"
        index = normalized.original_index(_find_outside_literals(normalized.text, symbol))
        raise ExpressionError(
            f"{setting} does not parse: {_describe(JException('S0204', index, symbol))} at "
            f"{_line_column(source, index)}: {_excerpt(source, index)}"
        ) from None
    except RecursionError:
        raise ExpressionError(f"{setting} does not parse: it is nested too deeply") from None
    return Expression(setting=setting, source=source, normalized=normalized.text, program=program)


def _find_outside_literals(text: str, symbol: str) -> int:
    """Index of the first ``symbol`` outside string literals, backquoted names and comments."""
    i = 0
    while i < len(text):
        if text[i] in "\"'`":
            i = _end_of_quoted(text, i)
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
        elif text.startswith(symbol, i) and not text.startswith("!=", i):
            return i
        else:
            i += 1
    return 0


def _describe(error: JException) -> str:
    code = getattr(error, "error", None)
    message = str(error).strip() or "invalid expression"
    return f"{message} (JSONata {code})" if code else message


def _line_column(source: str, index: int) -> str:
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    return f"line {line}, column {column}"


def _excerpt(source: str, index: int, width: int = 24) -> str:
    start = max(0, index - width)
    end = min(len(source), index + width)
    text = " ".join(source[start:end].split())
    return f"near {text!r}"


IMPURE_FUNCTIONS = frozenset({"now", "millis", "random", "uuid", "eval"})
_CHILDREN = (
    "lhs",
    "rhs",
    "steps",
    "expressions",
    "arguments",
    "procedure",
    "expression",
    "stages",
    "predicate",
    "condition",
    "then",
    "_else",
    "body",
    "group",
    "update",
    "delete",
)


def children(node: Any) -> Iterator[Any]:
    """The direct sub-nodes of a jsonata-python syntax-tree node (lists and object pairs flattened)."""
    for attribute in _CHILDREN:
        child = getattr(node, attribute, None)
        if child is None or child is node:
            continue
        if isinstance(child, (list, tuple)):
            yield from (item for item in child if item is not None)
        else:
            yield child
    for pair in getattr(node, "lhs_object", None) or []:
        yield from (item for item in pair if item is not None)


def reads_variables(tree: Any) -> bool:
    """Whether an expression reads a variable (``$id``...) or calls an impure function (``$now()``),
    i.e. whether its value can change between evaluations on the same input."""
    kind = getattr(tree, "type", None)
    if kind == "function":
        procedure: Any = getattr(tree, "procedure", None)
        if getattr(procedure, "type", None) != "variable" or str(procedure.value) in IMPURE_FUNCTIONS:
            return True
        return any(reads_variables(argument) for argument in tree.arguments or [])
    if kind == "variable":
        return True
    return any(reads_variables(child) for child in children(tree))


def _paths(node: Any) -> Iterator[list[str]]:
    """Every name path in a jsonata-python syntax tree, as lists of step names."""
    if node is None:
        return
    if getattr(node, "type", None) == "path":
        names: list[str] = []
        for step in getattr(node, "steps", None) or []:
            if getattr(step, "type", None) != "name":
                break
            names.append(str(step.value))
        if names:
            yield names
    for child in children(node):
        yield from _paths(child)
