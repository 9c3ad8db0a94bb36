"""Every setting of the joiner's one table of names is documented, under its variables and its YAML key."""

from __future__ import annotations

from pathlib import Path

import pytest

from joiner.config.names import NAMES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _docs() -> str:
    return "\n".join(page.read_text() for page in sorted(DOCS.glob("*.md")))


@pytest.mark.parametrize("name", NAMES, ids=lambda name: name.field)
def test_the_setting_is_documented(name):
    text = _docs()
    assert [variable for variable in name.env if variable not in text] == []
    path = name.yaml[0]
    key = path.split(".")[-1]
    # as code or as YAML, not as a word of the prose ("field", "format" would always be found)
    assert f"`{path}`" in text or f"`{key}`" in text or f"{key}:" in text, path
