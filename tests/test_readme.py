"""The READMEs: an entry point (short), and a Japanese one that says the same thing section by section."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EN, JA = (ROOT / "README.md").read_text(encoding="utf-8"), (ROOT / "README.ja.md").read_text(encoding="utf-8")


def _sections(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, flags=re.M)


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def _inline_commands(text: str) -> set[str]:
    """Commands a reader types, quoted inline: `make ...`, `llmlab ...`, `--set ...`, `LLMLAB_...`."""
    spans = re.findall(r"`([^`\n]+)`", text)
    return {s for s in spans if re.match(r"(make |llmlab |--|LLMLAB_|source |\.venv/bin/)", s)}


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(((?:docs|bench)/[^)#]+)\)", text)


def test_the_readme_is_an_entry_point() -> None:
    assert len(EN.splitlines()) <= 250, "README.md is the entry point: move detail to docs/"
    assert "Open in Colab" not in EN.replace('no "Open in Colab" badge', "")  # no badge without a public URL


def test_the_japanese_readme_mirrors_the_english_section_by_section() -> None:
    assert len(_sections(JA)) == len(_sections(EN)), (_sections(EN), _sections(JA))
    assert _code_blocks(JA) == _code_blocks(EN)  # the same commands, in the same order
    assert _inline_commands(JA) == _inline_commands(EN), _inline_commands(EN) ^ _inline_commands(JA)
    assert _links(JA) == _links(EN)


def test_every_page_the_readmes_link_exists() -> None:
    links = set(_links(EN)) | set(_links(JA))
    assert links and all((ROOT / link).is_file() for link in links), sorted(links)
    for page in (ROOT / "docs").glob("*.md"):  # every docs page is reachable from the entry point
        assert f"docs/{page.name}" in links, f"README.md links no docs/{page.name}"
