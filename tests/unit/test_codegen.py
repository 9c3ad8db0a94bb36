"""The engine's code generation (joiner.engine.codegen): the indenting Source builder, the compiler's API it
uses, and the facts the loops are built from (the rows they make are tested by test_join and the property
tests)."""

from __future__ import annotations

from joiner.engine.codegen import Source
from joiner.engine.join import JoinEngine
from streaming_runtime import generated
from streaming_runtime.expressions import compile_expression
from streaming_runtime.jsonata_compiler import CodeGenerator, namespace

STREAMS = ("tenants", "poweruse")


def _source_of(function) -> list[str]:
    return generated.SOURCES[function.__code__.co_filename].splitlines()


def test_source_indents_blocks_and_an_empty_block_is_pass():
    source = Source()
    with source.block("def f(a):"):
        with source.block("try:"):
            pass
        with source.block("except Exception:"):
            source.line("return 1", "    # a statement's own indentation stays, relative to the block")
        source.line("return 2")
    f = source.define("f", "test codegen", {})
    assert f(None) == 2
    assert _source_of(f) == [
        "def f(a):",
        "    try:",
        "        pass",
        "    except Exception:",
        "        return 1",
        "            # a statement's own indentation stays, relative to the block",
        "    return 2",
    ]


def test_the_compilers_statements_land_at_the_blocks_depth_and_read_the_given_locals():
    expression = compile_expression("a.x > 1 and a.y", setting="where")
    generator = CodeGenerator(("a",), trusted_inputs=True, program=expression.program)
    generator.given_path(("a", "x"), "f0")
    source = Source()
    with source.block("def f(a, f0):"):
        value = source.code(generator, expression.tree)
        source.line(f"return {value}")
    f = source.define("f", "test codegen", namespace())
    assert f({"x": 0, "y": True}, 2) is True  # f0, not a.x, is read
    lines = _source_of(f)
    assert not any("'x'" in line for line in lines)
    assert any(line.startswith("        t") for line in lines)  # the `and`'s right side, one level deeper
    assert generator.take_lines() == []  # the Source took them
    assert generator.reads == {"a"}


def test_temporaries_continue_after_another_generators():
    expression = compile_expression("a.x + 1", setting="select")
    first = CodeGenerator(("a",), program=expression.program)
    first.node(expression.tree, 0)
    second = CodeGenerator(("a",), program=expression.program, temps_taken=first.temps)
    second.node(expression.tree, 0)
    assigned = [{line.split(" = ")[0] for line in g.take_lines() if " = " in line} for g in (first, second)]
    assert assigned[0] and assigned[1] and not assigned[0] & assigned[1]


def test_the_arrival_loop_binds_the_partners_event_only_when_the_row_reads_it():
    where = compile_expression("tenants.a = poweruse.a", setting="where")

    def loop(select: str) -> list[str]:
        engine = JoinEngine(STREAMS, where, compile_expression(select, setting="select"), native=False)
        return _source_of(engine._generated[0])

    assert not any("= partner[0]" in line for line in loop('{"x": tenants.x, "y": poweruse.y}'))
    # poweruse.k decides a condition, so it is not in poweruse's projection: the row reads the event
    assert any(line.strip() == "poweruse = partner[0]" for line in loop('{"x": poweruse.k ? tenants.x : 1}'))
