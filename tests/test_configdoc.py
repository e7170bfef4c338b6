"""docs/configuration.md is the page the option rows generate, and names every key."""

from __future__ import annotations

from pathlib import Path

from streamserver.configdoc import markdown
from streamserver.options import OPTIONS

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_page_is_the_generated_one() -> None:
    """Regenerate with: python -m streamserver.configdoc > docs/configuration.md"""
    assert (ROOT / "docs" / "configuration.md").read_text() == markdown()


def test_every_file_key_has_a_row_with_its_default() -> None:
    """Each key of the file is a row of one of the two tables, with its default."""
    text = markdown()
    for option in OPTIONS:
        if option.in_file:
            assert f"| `{option.flag}` | " in text, option.flag
            assert f" | {option.default_text()} | " in text.split(f"| `{option.flag}` | ", 1)[1]
