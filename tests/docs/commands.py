"""The shell commands that README.md and docs/ show, read out of their fenced blocks and checked.

A block with the info string ``bash`` holds commands a person types (no prompts, no output). Each is
checked without being run: a ``make`` target exists in the Makefile, a ``python -m`` module can be
imported, a script or repository path it names exists. A block marked ``bash runnable`` is also run
(quick commands that need only the Python environment and write nothing into the repository).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell"}
FENCE = re.compile(r"^```(?P<info>[^`]*)$")
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
OPERATORS = {"&&", "||", ";", "|", "&"}
# a word naming something in the repository: it starts with one of its top-level entries
REPO_ENTRIES = tuple(sorted(p.name for p in ROOT.iterdir() if not p.name.startswith(".")))


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    runnable: bool
    text: str

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> list[Block]:
    found: list[Block] = []
    lines = document.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index].strip())
        if fence is None:
            index += 1
            continue
        words = fence["info"].split()
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        language = words[0] if words else ""
        found.append(Block(document, index + 1, language, "runnable" in words[1:], "\n".join(lines[index + 1 : end])))
        index = end + 1
    return found


def shell_blocks() -> list[Block]:
    return [b for document in DOCUMENTS for b in blocks(document) if b.language in SHELL_LANGUAGES]


def commands(text: str) -> list[list[str]]:
    """The simple commands of a block: continuation lines joined, comments dropped, split at operators."""
    result: list[list[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        current: list[str] = []
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        for word in lexer:
            if word in OPERATORS:
                if current:
                    result.append(current)
                current = []
            else:
                current.append(word)
        if current:
            result.append(current)
    return result


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*):", text, flags=re.M))


def problems(command: list[str]) -> list[str]:
    """What is wrong with one command as written; [] when nothing is."""
    found: list[str] = []
    while command and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", command[0]):
        command = command[1:]  # VAR=value before a command
    if not command:
        return found
    program, args = command[0], command[1:]
    if program == "make":
        targets = makefile_targets()
        for arg in args:
            if not arg.startswith("-") and "=" not in arg and arg not in targets:
                found.append(f"make: no target {arg!r} in the Makefile")
    if Path(program).name in {"python", "python3"} and "-m" in args[:-1]:
        module = args[args.index("-m") + 1]
        if importlib.util.find_spec(module) is None:
            found.append(f"python -m {module}: no such module in the project's environment")
    if program == "cd" and args and not (ROOT / args[0]).is_dir():
        found.append(f"cd {args[0]}: no such directory in the repository")
    for word in command:
        for part in re.split(r"[=,]", word):
            part = part.removeprefix("./")
            if part.startswith(REPO_ENTRIES) and "/" in part:
                path = part.rstrip("/")
                if not any(ROOT.glob(path)) and not _generated(path):
                    found.append(f"{path}: no such file in the repository")
    return found


def _generated(path: str) -> bool:
    """Paths that exist only once a command has made them (git-ignored)."""
    return path.startswith((".venv", ".devstack")) or "/secrets/" in path + "/"


def broken_links(document: Path) -> list[str]:
    found = []
    for line_number, line in enumerate(document.read_text().splitlines(), 1):
        for link in LINK.finditer(line):
            target = link["target"]
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor of the same page
            path = (document.parent / target.partition("#")[0]).resolve()
            if not path.exists():
                found.append(f"{_shown(document)}:{line_number}: link to {target}, which does not exist")
    return found


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
