"""Every command README.md and docs/ show works as written (see tests/docs/commands.py), and their
links lead somewhere."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.docs.commands import DOCUMENTS, ROOT, Block, broken_links, commands, problems, shell_blocks

BLOCKS = shell_blocks()
RUNNABLE = [b for b in BLOCKS if b.runnable]
README_MAX_LINES = 120  # about two screens


def test_the_docs_show_commands_and_run_some_of_them():
    assert len(BLOCKS) >= 10
    assert len(RUNNABLE) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.where)
def test_each_command_shown_names_what_exists(block: Block):
    found = [f"{' '.join(c)}: {p}" for c in commands(block.text) for p in problems(c)]
    assert found == [], f"{block.where}: " + "; ".join(found)


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.where)
def test_each_runnable_block_runs(block: Block, tmp_path):
    before = _repository_state()
    environ = os.environ | {
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(ROOT / ".venv"),
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, (
        f"{block.where} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    )
    assert _repository_state() == before, f"{block.where} changed files of the repository"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_each_link_leads_to_a_file_of_the_repository(document):
    assert broken_links(document) == []


def test_the_readme_fits_on_about_two_screens():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; reference material belongs in docs/"


# ---- the checks themselves


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("make help test-unit", []),
        ("make WINDOW=5s run", []),
        ("make no-such-target", ["make: no target 'no-such-target' in the Makefile"]),
        ("python -m streaming_migrate --help", []),
        (
            "python -m joiner.no_such_module",
            ["python -m joiner.no_such_module: no such module in the project's environment"],
        ),
        ("bash scripts/install-dapr-crds.sh", []),
        ("bash scripts/no-such.sh", ["scripts/no-such.sh: no such file in the repository"]),
        ("kubectl apply -k ./deploy/overlays/nowhere", ["deploy/overlays/nowhere: no such file in the repository"]),
        ("cd deploy/overlays/dev && kustomize build .", []),
        ("cd nowhere", ["cd nowhere: no such directory in the repository"]),
        ("X=1 python3 -m devstack --help # a comment naming scripts/none.sh", []),
    ],
)
def test_the_static_check_finds_what_does_not_exist(text, expected):
    assert [p for c in commands(text) for p in problems(c)] == expected


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("")
    page.write_text("[ok](there.md) [web](https://example.org) [anchor](#x) [gone](no-such-page.md#part)\n")
    assert broken_links(page) == ["page.md:1: link to no-such-page.md#part, which does not exist"]


def _repository_state() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
